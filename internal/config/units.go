package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Size is a byte count written as 65536, "64KB" or "1MB" (powers of 1024,
// as EMQX reads them).
type Size int64

// UnmarshalYAML reads a number or a string with a KB/MB/GB suffix.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*s = Size(v)
	return nil
}

// MarshalYAML writes the plain number.
func (s Size) MarshalYAML() (any, error) { return int64(s), nil }

// ParseSize parses 65536, "64KB", "1MB", "1GB" (also KiB, k, m, g forms).
func ParseSize(str string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(str))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GIB", 1 << 30}, {"MIB", 1 << 20}, {"KIB", 1 << 10}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.m
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("expected a size such as 64KB, got %q", str)
	}
	return int64(n * float64(mult)), nil
}

// Rate is a parsed rate limit: Amount per Per.
type Rate struct {
	Amount float64
	Per    time.Duration
}

// PerSecond is the rate in units per second.
func (r Rate) PerSecond() float64 { return r.Amount / r.Per.Seconds() }

// ParseRate parses "100/s", "64KB/s", "1MB/10s", "6000/m". bytes says
// whether size suffixes are allowed. The empty string is no limit (zero Rate).
func ParseRate(str string, bytes bool) (Rate, error) {
	if strings.TrimSpace(str) == "" {
		return Rate{}, nil
	}
	amount, per, ok := strings.Cut(str, "/")
	if !ok {
		return Rate{}, fmt.Errorf("expected a rate such as %s, got %q", map[bool]string{true: "64KB/s", false: "100/s"}[bytes], str)
	}
	var a float64
	if bytes {
		n, err := ParseSize(amount)
		if err != nil {
			return Rate{}, fmt.Errorf("rate %q: %w", str, err)
		}
		a = float64(n)
	} else {
		n, err := strconv.ParseFloat(strings.TrimSpace(amount), 64)
		if err != nil || n < 0 {
			return Rate{}, fmt.Errorf("rate %q: expected a number before the /", str)
		}
		a = n
	}
	var d time.Duration
	switch p := strings.TrimSpace(per); p {
	case "s":
		d = time.Second
	case "m":
		d = time.Minute
	case "h":
		d = time.Hour
	default:
		var err error
		if d, err = time.ParseDuration(p); err != nil || d <= 0 {
			return Rate{}, fmt.Errorf("rate %q: the period after / must be s, m, h or a duration such as 10s", str)
		}
	}
	if a <= 0 {
		return Rate{}, fmt.Errorf("rate %q must be positive", str)
	}
	return Rate{Amount: a, Per: d}, nil
}

// AccessRule is one parsed access rule: allow or deny a prefix (all: every address).
type AccessRule struct {
	Allow  bool
	All    bool
	Prefix netip.Prefix
}

// ParseAccessRule parses "allow|deny <ip>|<CIDR>|all".
func ParseAccessRule(s string) (AccessRule, error) {
	f := strings.Fields(s)
	if len(f) != 2 || (f[0] != "allow" && f[0] != "deny") {
		return AccessRule{}, fmt.Errorf("%q is not \"allow|deny <ip>|<CIDR>|all\"", s)
	}
	r := AccessRule{Allow: f[0] == "allow"}
	if f[1] == "all" {
		r.All = true
		return r, nil
	}
	if strings.Contains(f[1], "/") {
		p, err := netip.ParsePrefix(f[1])
		if err != nil {
			return AccessRule{}, fmt.Errorf("%q: bad CIDR: %w", s, err)
		}
		r.Prefix = p.Masked()
		return r, nil
	}
	a, err := netip.ParseAddr(f[1])
	if err != nil {
		return AccessRule{}, fmt.Errorf("%q: bad address: %w", s, err)
	}
	r.Prefix = netip.PrefixFrom(a, a.BitLen())
	return r, nil
}

// MQTTVersion is an upstream session's MQTT version: 4 (3.1.1), 5, or
// auto (0): MQTT 5, falling back to 3.1.1 for a server that refuses it.
type MQTTVersion int

// UnmarshalYAML reads auto, 4, 5, "3.1.1" or "5.0".
func (v *MQTTVersion) UnmarshalYAML(n *yaml.Node) error {
	switch strings.ToLower(strings.TrimSpace(n.Value)) {
	case "auto", "":
		*v = 0
	case "4", "3.1.1":
		*v = 4
	case "5", "5.0":
		*v = 5
	default:
		return fmt.Errorf("line %d: protocol_version %q is not one of auto, 4 (MQTT 3.1.1), 5", n.Line, n.Value)
	}
	return nil
}

// MarshalYAML writes auto, 4 or 5.
func (v MQTTVersion) MarshalYAML() (any, error) {
	if v == 0 {
		return "auto", nil
	}
	return int(v), nil
}

// Package emqxconf imports an EMQX ExProto configuration into exgate's:
// EMQX 5.x/6.x HOCON (a gateway.exproto block in emqx.conf, read with a real
// HOCON parser: includes, substitutions, ${ENV} references, objects merged
// by path) or EMQX 4.x's etc/plugins/emqx_exproto.conf (key = value lines).
// Every setting is either mapped to its exgate key or reported with the
// reason it was not: nothing is dropped silently.
package emqxconf

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gurkankaymak/hocon"

	"github.com/exgate/exgate/internal/config"
)

// Note is a setting that was not carried over, or carried over with a
// change worth knowing.
type Note struct {
	Key, Value, Why string
}

// Elsewhere reports a note about a setting outside the ExProto gateway
// (the node, the cluster, other gateways): never exgate's, and many.
func Elsewhere(n Note) bool {
	return n.Why == whyOutside || n.Why == whyOtherGateway
}

const (
	whyOutside      = "outside gateway.exproto: not exgate's business"
	whyOtherGateway = "another EMQX gateway: exgate serves ExProto only"
)

func (n Note) String() string {
	k := strings.ToLower(n.Key)
	for _, secret := range []string{"password", "secret", "token", "cookie"} {
		if strings.Contains(k, secret) && n.Value != "" {
			n.Value = "[redacted]"
		}
	}
	if n.Value == "" {
		return fmt.Sprintf("%s: %s", n.Key, n.Why)
	}
	return fmt.Sprintf("%s = %s: %s", n.Key, n.Value, n.Why)
}

// Result is an imported configuration.
type Result struct {
	Config *config.Config
	Format string // "emqx5" or "emqx4"
	// Unmapped are settings exgate has no equivalent for; Changed are
	// mapped with a difference the operator should know.
	Unmapped, Changed []Note
}

// Import reads path, detects its format and maps it.
func Import(path string) (*Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if isEMQX4(b) {
		return importV4(b)
	}
	abs, _ := filepath.Abs(path)
	if q := quoteAtValues(b); !bytes.Equal(q, b) {
		// EMQX's own HOCON reader takes unquoted values with '@'
		// (node.name = emqx@127.0.0.1) that the HOCON spec, and so this
		// parser, refuse: parse a quoted copy, beside the original so
		// that its includes resolve the same.
		if f, err := os.CreateTemp(filepath.Dir(abs), ".exgate-import-*.conf"); err == nil {
			defer os.Remove(f.Name())
			_, werr := f.Write(q)
			if cerr := f.Close(); werr == nil && cerr == nil {
				abs = f.Name()
			}
		}
	}
	cfg, err := hocon.ParseResource(abs)
	if err != nil {
		return nil, fmt.Errorf("parse HOCON: %w", err)
	}
	return importV5(toNative(cfg.GetRoot()))
}

// quoteAtValues quotes unquoted words that contain '@' (node names such
// as emqx@127.0.0.1, as values or in lists), leaving quoted strings and
// comments alone.
func quoteAtValues(b []byte) []byte {
	var out bytes.Buffer
	for _, line := range strings.SplitAfter(string(b), "\n") {
		inQuote := false
		for i := 0; i < len(line); {
			c := line[i]
			switch {
			case inQuote:
				if c == '\\' && i+1 < len(line) {
					out.WriteString(line[i : i+2])
					i += 2
					continue
				}
				if c == '"' {
					inQuote = false
				}
			case c == '"':
				inQuote = true
			case c == '#' || strings.HasPrefix(line[i:], "//"):
				out.WriteString(line[i:])
				i = len(line)
				continue
			case isWordByte(c):
				j := i
				for j < len(line) && isWordByte(line[j]) {
					j++
				}
				if w := line[i:j]; strings.Contains(w, "@") {
					out.WriteString(`"` + w + `"`)
				} else {
					out.WriteString(w)
				}
				i = j
				continue
			}
			out.WriteByte(c)
			i++
		}
	}
	return out.Bytes()
}

func isWordByte(c byte) bool {
	return c == '_' || c == '.' || c == '-' || c == '@' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// isEMQX4 reports whether b looks like emqx_exproto.conf: "exproto.x = y" lines.
func isEMQX4(b []byte) bool {
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		return strings.HasPrefix(line, "exproto.") && strings.Contains(line, "=") && !strings.Contains(line, "{")
	}
	return false
}

// toNative turns HOCON values into maps, slices, strings, numbers, bools
// and durations.
func toNative(v hocon.Value) any {
	switch x := v.(type) {
	case hocon.Object:
		m := make(map[string]any, len(x))
		for k, val := range x {
			m[k] = toNative(val)
		}
		return m
	case hocon.Array:
		out := make([]any, len(x))
		for i, val := range x {
			out[i] = toNative(val)
		}
		return out
	case hocon.String:
		return strings.Trim(string(x), `"`)
	case hocon.Int:
		return int(x)
	case hocon.Float64:
		return float64(x)
	case hocon.Float32:
		return float64(x)
	case hocon.Boolean:
		return bool(x)
	case hocon.Duration:
		return time.Duration(x)
	case hocon.Null:
		return nil
	case nil:
		return nil
	}
	// Concatenations ("0.0.0.0:"${port}) and the like: their text.
	return strings.ReplaceAll(v.String(), `"`, "")
}

// leaf is one setting: its dotted key and value.
type leaf struct {
	key string
	val any
}

// flatten lists every leaf under prefix, sorted by key, lists being leaves.
func flatten(prefix string, v any, out *[]leaf) {
	if m, ok := v.(map[string]any); ok {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			flatten(p, m[k], out)
		}
		if len(m) == 0 && prefix != "" {
			*out = append(*out, leaf{prefix, m})
		}
		return
	}
	*out = append(*out, leaf{prefix, v})
}

func str(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case time.Duration:
		return x.String()
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = str(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	return fmt.Sprint(v)
}

func boolean(v any) (bool, error) {
	switch x := v.(type) {
	case bool:
		return x, nil
	case string:
		switch strings.ToLower(x) {
		case "true", "on", "yes":
			return true, nil
		case "false", "off", "no":
			return false, nil
		}
	}
	return false, fmt.Errorf("not a boolean: %v", v)
}

// duration reads "30s", "5m", 30000 (ms, as EMQX reads bare numbers) or a
// parsed duration; infinity is reported by ok=false.
func duration(v any) (d time.Duration, infinite bool, err error) {
	switch x := v.(type) {
	case time.Duration:
		return x, false, nil
	case int:
		return time.Duration(x) * time.Millisecond, false, nil
	case string:
		if x == "infinity" {
			return 0, true, nil
		}
		if n, err := strconv.Atoi(x); err == nil {
			return time.Duration(n) * time.Millisecond, false, nil
		}
		d, err := time.ParseDuration(x)
		return d, false, err
	}
	return 0, false, fmt.Errorf("not a duration: %v", v)
}

func integer(v any) (n int, infinite bool, err error) {
	switch x := v.(type) {
	case int:
		return x, false, nil
	case float64:
		return int(x), false, nil
	case string:
		if x == "infinity" {
			return 0, true, nil
		}
		n, err := strconv.Atoi(x)
		return n, false, err
	}
	return 0, false, fmt.Errorf("not a number: %v", v)
}

func size(v any) (config.Size, error) {
	n, err := config.ParseSize(str(v))
	return config.Size(n), err
}

func strList(v any) []string {
	switch x := v.(type) {
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			out = append(out, str(e))
		}
		return out
	case string:
		var out []string
		for _, p := range strings.Split(x, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
		return out
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

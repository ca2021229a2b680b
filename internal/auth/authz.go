package auth

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/exgate/exgate/internal/config"
)

// Who is the client an authorization check is about.
type Who struct {
	ClientID, Username string
	Peer               net.Addr
}

// Authorizer checks topics against its sources in order — inline rules,
// an EMQX acl.conf file, an HTTP service — and the first with an answer
// decides; none falls back to no_match. Rules are checked on the topic as
// the client gave it, before any mountpoint (spec §2 "Publish").
type Authorizer struct {
	rules   []rule
	http    *httpCaller
	log     *slog.Logger
	noMatch bool
}

// rule is one compiled rule of either source.
type rule struct {
	allow              bool
	who                func(Who) bool
	publish, subscribe bool
	topics             []topicPattern
}

type topicPattern struct {
	eq     bool // match literally, wildcards and all
	filter string
}

// NewAuthorizer compiles the sources; with none and no_match allow it
// returns nil, which callers treat as "allow all".
func NewAuthorizer(c config.Authorization, log *slog.Logger) (*Authorizer, error) {
	if len(c.Rules) == 0 && c.File == "" && c.HTTP == nil && c.NoMatch != "deny" {
		return nil, nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Authorizer{noMatch: c.NoMatch != "deny", log: log}
	for _, r := range c.Rules {
		cr := rule{allow: r.Permission == "allow", publish: r.Action != "subscribe", subscribe: r.Action != "publish"}
		cr.who = whoMatcher(r.ClientID, r.Username, r.IPAddr)
		for _, t := range r.Topics {
			if lit, ok := strings.CutPrefix(t, "eq "); ok {
				cr.topics = append(cr.topics, topicPattern{eq: true, filter: lit})
			} else {
				cr.topics = append(cr.topics, topicPattern{filter: t})
			}
		}
		a.rules = append(a.rules, cr)
	}
	if c.File != "" {
		rules, err := ParseACLFile(c.File)
		if err != nil {
			return nil, fmt.Errorf("authorization.file: %w", err)
		}
		a.rules = append(a.rules, rules...)
	}
	if h := c.HTTP; h != nil {
		hc, err := newHTTPCaller(h.Method, h.URL, h.Headers, h.Body, h.RequestTimeout, 8, h.SSLOptions)
		if err != nil {
			return nil, fmt.Errorf("authorization.http: %w", err)
		}
		a.http = hc
	}
	return a, nil
}

// Remote reports a source outside this process (HTTP), whose answer a
// check may wait for; nil has none.
func (a *Authorizer) Remote() bool { return a != nil && a.http != nil }

// Close releases the HTTP authorizer's idle connections.
func (a *Authorizer) Close() {
	if a != nil && a.http != nil {
		a.http.client.CloseIdleConnections()
	}
}

func whoMatcher(clientID, username, ipaddr string) func(Who) bool {
	var ipnet *net.IPNet
	if ipaddr != "" {
		ipnet = parseCIDR(ipaddr)
	}
	return func(w Who) bool {
		if clientID != "" && clientID != w.ClientID {
			return false
		}
		if username != "" && username != w.Username {
			return false
		}
		if ipnet != nil && !ipnet.Contains(peerIP(w.Peer)) {
			return false
		}
		return true
	}
}

func parseCIDR(s string) *net.IPNet {
	if !strings.Contains(s, "/") {
		if strings.Contains(s, ":") {
			s += "/128"
		} else {
			s += "/32"
		}
	}
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		return &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(32, 32)} // matches nothing real
	}
	return n
}

func peerIP(a net.Addr) net.IP {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP
	case *net.UDPAddr:
		return a.IP
	}
	return nil
}

func peerHost(a net.Addr) string {
	if ip := peerIP(a); ip != nil {
		return ip.String()
	}
	if a == nil {
		return ""
	}
	h, _, _ := net.SplitHostPort(a.String())
	return h
}

// Allow reports whether who may publish to (publish) or subscribe to topic.
// An HTTP authorizer's request ends with ctx (and its own timeout).
func (a *Authorizer) Allow(ctx context.Context, who Who, publish bool, topic string) bool {
	if a == nil {
		return true
	}
	t := stripShare(topic)
	for _, r := range a.rules {
		if (publish && !r.publish) || (!publish && !r.subscribe) || !r.who(who) {
			continue
		}
		for _, p := range r.topics {
			if p.matches(who, t) {
				return r.allow
			}
		}
	}
	if a.http != nil {
		if ans, ok := a.askHTTP(ctx, who, publish, topic); ok {
			return ans
		}
	}
	return a.noMatch
}

func (p topicPattern) matches(w Who, topic string) bool {
	f := expand(p.filter, w)
	if p.eq {
		return f == topic
	}
	return Match(topic, f)
}

// expand substitutes the placeholders EMQX allows in a rule's topic
// (${clientid}, ${username}, %c, %u). Checked on every publish, so without
// a strings.Replacer (one built per call was over 90 % of a check's CPU).
func expand(f string, w Who) string {
	if !strings.ContainsAny(f, "$%") {
		return f
	}
	var b strings.Builder
	for i := 0; i < len(f); {
		switch rest := f[i:]; {
		case strings.HasPrefix(rest, "${clientid}"):
			b.WriteString(w.ClientID)
			i += len("${clientid}")
		case strings.HasPrefix(rest, "${username}"):
			b.WriteString(w.Username)
			i += len("${username}")
		case strings.HasPrefix(rest, "%c"):
			b.WriteString(w.ClientID)
			i += 2
		case strings.HasPrefix(rest, "%u"):
			b.WriteString(w.Username)
			i += 2
		default:
			b.WriteByte(f[i])
			i++
		}
	}
	return b.String()
}

// askHTTP is EMQX's HTTP authorizer: 200 {"result": "allow"|"deny"|"ignore"},
// 204 allows; anything else has no answer.
func (a *Authorizer) askHTTP(ctx context.Context, w Who, publish bool, topic string) (allow, ok bool) {
	action := "subscribe"
	if publish {
		action = "publish"
	}
	vars := map[string]string{"clientid": w.ClientID, "username": w.Username, "peerhost": peerHost(w.Peer), "action": action, "topic": topic}
	status, body, err := a.http.call(ctx, vars)
	switch {
	case err != nil:
		a.log.Warn("HTTP authorization failed; no answer", "url", a.http.url, "error", err)
		return false, false
	case status == http.StatusNoContent:
		return true, true
	case status != http.StatusOK:
		return false, false
	}
	var ans struct {
		Result string `json:"result"`
	}
	if json.Unmarshal(body, &ans) != nil {
		return false, false
	}
	switch ans.Result {
	case "allow":
		return true, true
	case "deny":
		return false, true
	}
	return false, false
}

func stripShare(t string) string {
	if rest, ok := strings.CutPrefix(t, "$share/"); ok {
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			return rest[i+1:]
		}
	}
	if rest, ok := strings.CutPrefix(t, "$queue/"); ok {
		return rest
	}
	return t
}

// Match reports whether topic (which may itself be a filter, for a
// subscription) is covered by filter. A wildcard in topic is matched only by
// the same or a wider wildcard.
func Match(topic, filter string) bool {
	tl := strings.Split(topic, "/")
	fl := strings.Split(filter, "/")
	if strings.HasPrefix(topic, "$") != strings.HasPrefix(filter, "$") && fl[0] != tl[0] {
		return false // [MQTT-4.7.2-1] $-topics need an explicit first level
	}
	for i, f := range fl {
		if f == "#" {
			return true
		}
		if i >= len(tl) {
			return false
		}
		switch {
		case f == "+":
			if tl[i] == "#" {
				return false
			}
		case f != tl[i]:
			return false
		}
	}
	return len(tl) == len(fl)
}

package auth

import (
	"net"
	"strings"

	"github.com/exgate/exgate/internal/config"
)

// Who is the client an authorization check is about.
type Who struct {
	ClientID, Username string
	Peer               net.Addr
}

// Authorizer applies an ordered rule list; the first matching rule decides
// and no match falls back to no_match. Rules are checked on the topic as the
// client gave it, before any mountpoint (spec §2 "Publish").
type Authorizer struct {
	rules   []rule
	noMatch bool
}

type rule struct {
	allow              bool
	clientID, user     string
	ipnet              *net.IPNet
	publish, subscribe bool
	topics             []string
}

// NewAuthorizer compiles the rules; with no rules and no_match allow it
// returns nil, which callers treat as "allow all".
func NewAuthorizer(c config.Authorization) *Authorizer {
	if len(c.Rules) == 0 && c.NoMatch != "deny" {
		return nil
	}
	a := &Authorizer{noMatch: c.NoMatch != "deny"}
	for _, r := range c.Rules {
		cr := rule{
			allow: r.Permission == "allow", clientID: r.ClientID, user: r.Username,
			publish: r.Action != "subscribe", subscribe: r.Action != "publish", topics: r.Topics,
		}
		if r.IPAddr != "" {
			cr.ipnet = parseCIDR(r.IPAddr)
		}
		a.rules = append(a.rules, cr)
	}
	return a
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

// Allow reports whether who may publish to (publish) or subscribe to topic.
func (a *Authorizer) Allow(who Who, publish bool, topic string) bool {
	if a == nil {
		return true
	}
	topic = stripShare(topic)
	for _, r := range a.rules {
		if !r.matchesWho(who) || (publish && !r.publish) || (!publish && !r.subscribe) {
			continue
		}
		for _, t := range r.topics {
			if r.matchesTopic(who, t, topic) {
				return r.allow
			}
		}
	}
	return a.noMatch
}

func (r *rule) matchesWho(w Who) bool {
	if r.clientID != "" && r.clientID != w.ClientID {
		return false
	}
	if r.user != "" && r.user != w.Username {
		return false
	}
	if r.ipnet != nil {
		ta, ok := w.Peer.(*net.TCPAddr)
		if !ok || !r.ipnet.Contains(ta.IP) {
			return false
		}
	}
	return true
}

func (r *rule) matchesTopic(w Who, ruleTopic, topic string) bool {
	if lit, ok := strings.CutPrefix(ruleTopic, "eq "); ok {
		return lit == topic
	}
	f := strings.NewReplacer("${clientid}", w.ClientID, "${username}", w.Username).Replace(ruleTopic)
	return Match(topic, f)
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

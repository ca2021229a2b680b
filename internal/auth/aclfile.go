package auth

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"unicode"
)

// ParseACLFile reads an EMQX acl.conf: Erlang terms, one rule each,
//
//	{allow, {username, {re, "^dashboard$"}}, subscribe, ["$SYS/#"]}.
//	{allow, {ipaddr, "127.0.0.1"}, all, ["$SYS/#", "#"]}.
//	{deny, all, subscribe, ["$SYS/#", {eq, "#"}]}.
//	{allow, all}.
//
// Who is all, {username|clientid, "x" | {re, "regex"}}, {ipaddr, "CIDR"},
// {ipaddrs, ["CIDR", …]}, or {'and'|'or', [Who, …]}; the action publish,
// subscribe or all (also {publish, [options]}); topics use ${clientid} and
// ${username} (or EMQX 4's %c and %u) and {eq, "t"} for a literal match.
func ParseACLFile(path string) ([]rule, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p := &termParser{src: string(b), line: 1}
	var rules []rule
	for {
		p.skip()
		if p.pos >= len(p.src) {
			return rules, nil
		}
		line := p.line
		t, err := p.term()
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, p.line, err)
		}
		p.skip()
		if !p.eat('.') {
			return nil, fmt.Errorf("%s:%d: a rule must end with '.'", path, p.line)
		}
		r, err := compileRule(t)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		rules = append(rules, r)
	}
}

// Erlang term values: atom, string, tuple, list.
type (
	atom  string
	tuple []any
)

type termParser struct {
	src  string
	pos  int
	line int
}

func (p *termParser) skip() {
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		switch {
		case c == '\n':
			p.line++
			p.pos++
		case c == ' ' || c == '\t' || c == '\r':
			p.pos++
		case c == '%':
			for p.pos < len(p.src) && p.src[p.pos] != '\n' {
				p.pos++
			}
		default:
			return
		}
	}
}

func (p *termParser) eat(c byte) bool {
	p.skip()
	if p.pos < len(p.src) && p.src[p.pos] == c {
		p.pos++
		return true
	}
	return false
}

func (p *termParser) term() (any, error) {
	p.skip()
	if p.pos >= len(p.src) {
		return nil, fmt.Errorf("unexpected end of file")
	}
	switch c := p.src[p.pos]; {
	case c == '{' || c == '[':
		p.pos++
		end := byte('}')
		if c == '[' {
			end = ']'
		}
		var items []any
		if p.eat(end) {
			return wrap(c, items), nil
		}
		for {
			t, err := p.term()
			if err != nil {
				return nil, err
			}
			items = append(items, t)
			if p.eat(end) {
				return wrap(c, items), nil
			}
			if !p.eat(',') {
				return nil, fmt.Errorf("expected ',' or '%c'", end)
			}
		}
	case c == '"':
		var b strings.Builder
		for p.pos++; p.pos < len(p.src); p.pos++ {
			switch ch := p.src[p.pos]; ch {
			case '\\':
				p.pos++
				if p.pos < len(p.src) {
					b.WriteByte(p.src[p.pos])
				}
			case '"':
				p.pos++
				return b.String(), nil
			default:
				b.WriteByte(ch)
			}
		}
		return nil, fmt.Errorf("unterminated string")
	case c == '\'':
		end := strings.IndexByte(p.src[p.pos+1:], '\'')
		if end < 0 {
			return nil, fmt.Errorf("unterminated quoted atom")
		}
		a := atom(p.src[p.pos+1 : p.pos+1+end])
		p.pos += end + 2
		return a, nil
	case unicode.IsLetter(rune(c)):
		start := p.pos
		for p.pos < len(p.src) && (unicode.IsLetter(rune(p.src[p.pos])) || unicode.IsDigit(rune(p.src[p.pos])) || p.src[p.pos] == '_') {
			p.pos++
		}
		return atom(p.src[start:p.pos]), nil
	default:
		return nil, fmt.Errorf("unexpected %q", c)
	}
}

func wrap(open byte, items []any) any {
	if open == '{' {
		return tuple(items)
	}
	return items
}

func compileRule(t any) (rule, error) {
	tp, ok := t.(tuple)
	if !ok || (len(tp) != 2 && len(tp) != 4) {
		return rule{}, fmt.Errorf("a rule is {allow|deny, Who, Action, Topics} or {allow|deny, all}")
	}
	perm, _ := tp[0].(atom)
	if perm != "allow" && perm != "deny" {
		return rule{}, fmt.Errorf("permission must be allow or deny")
	}
	r := rule{allow: perm == "allow", publish: true, subscribe: true}
	if len(tp) == 2 {
		if a, _ := tp[1].(atom); a != "all" {
			return rule{}, fmt.Errorf("a two-element rule must be {%s, all}", perm)
		}
		r.who = func(Who) bool { return true }
		r.topics = []topicPattern{{filter: "#"}, {filter: "$SYS/#"}}
		return r, nil
	}
	var err error
	if r.who, err = compileWho(tp[1]); err != nil {
		return rule{}, err
	}
	action := tp[2]
	if at, ok := action.(tuple); ok && len(at) > 0 {
		action = at[0] // {publish, [{qos, …}, {retain, …}]}: options are not checked
	}
	switch a, _ := action.(atom); a {
	case "publish":
		r.subscribe = false
	case "subscribe":
		r.publish = false
	case "all":
	default:
		return rule{}, fmt.Errorf("action must be publish, subscribe or all")
	}
	list, ok := tp[3].([]any)
	if !ok {
		return rule{}, fmt.Errorf("topics must be a list")
	}
	for _, x := range list {
		switch v := x.(type) {
		case string:
			r.topics = append(r.topics, topicPattern{filter: v})
		case tuple:
			if len(v) == 2 && v[0] == atom("eq") {
				if s, ok := v[1].(string); ok {
					r.topics = append(r.topics, topicPattern{eq: true, filter: s})
					continue
				}
			}
			return rule{}, fmt.Errorf("a topic is \"filter\" or {eq, \"topic\"}")
		default:
			return rule{}, fmt.Errorf("a topic is \"filter\" or {eq, \"topic\"}")
		}
	}
	return r, nil
}

func compileWho(t any) (func(Who) bool, error) {
	if a, ok := t.(atom); ok && a == "all" {
		return func(Who) bool { return true }, nil
	}
	tp, ok := t.(tuple)
	if !ok || len(tp) != 2 {
		return nil, fmt.Errorf("who must be all or a {kind, value} tuple")
	}
	kind, _ := tp[0].(atom)
	switch kind {
	case "username", "clientid", "user":
		get := func(w Who) string { return w.Username }
		if kind == "clientid" {
			get = func(w Who) string { return w.ClientID }
		}
		switch v := tp[1].(type) {
		case string:
			return func(w Who) bool { return get(w) == v }, nil
		case tuple:
			if len(v) == 2 && v[0] == atom("re") {
				if s, ok := v[1].(string); ok {
					re, err := regexp.Compile(s)
					if err != nil {
						return nil, fmt.Errorf("bad regex %q: %w", s, err)
					}
					return func(w Who) bool { return re.MatchString(get(w)) }, nil
				}
			}
		}
		return nil, fmt.Errorf("%s takes \"value\" or {re, \"regex\"}", kind)
	case "ipaddr":
		s, ok := tp[1].(string)
		if !ok {
			return nil, fmt.Errorf("ipaddr takes \"CIDR\"")
		}
		return whoMatcher("", "", s), nil
	case "ipaddrs":
		l, ok := tp[1].([]any)
		if !ok {
			return nil, fmt.Errorf("ipaddrs takes a list")
		}
		var ms []func(Who) bool
		for _, x := range l {
			s, ok := x.(string)
			if !ok {
				return nil, fmt.Errorf("ipaddrs takes a list of \"CIDR\"")
			}
			ms = append(ms, whoMatcher("", "", s))
		}
		return func(w Who) bool {
			for _, m := range ms {
				if m(w) {
					return true
				}
			}
			return false
		}, nil
	case "and", "or":
		l, ok := tp[1].([]any)
		if !ok {
			return nil, fmt.Errorf("%s takes a list", kind)
		}
		var ms []func(Who) bool
		for _, x := range l {
			m, err := compileWho(x)
			if err != nil {
				return nil, err
			}
			ms = append(ms, m)
		}
		return func(w Who) bool {
			for _, m := range ms {
				if m(w) != (kind == "and") {
					return kind == "or"
				}
			}
			return kind == "and"
		}, nil
	}
	return nil, fmt.Errorf("unknown who %q", kind)
}

// YAML errors rewritten to name the key's path, not just a line.

package config

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

var (
	lineRE    = regexp.MustCompile(`line (\d+): `)
	unknownRE = regexp.MustCompile(`field \S+ not found in type \S+`)
	typeRE    = regexp.MustCompile("cannot unmarshal (!!\\w+) `([^`]*)` into (\\S+)")
)

// parserErrRE matches the syntax errors yaml's parser (not its scanner)
// reports: their line is counted from 0, and for an unclosed flow
// collection it is the line where the collection opened.
var parserErrRE = regexp.MustCompile(`^yaml: line (\d+): (did not find expected (key|node content|'-' indicator|',' or '\]'|',' or '\}'|<document start>))$`)

// syntaxLine corrects the line of a parser error and says what it means.
func syntaxLine(err error) error {
	m := parserErrRE.FindStringSubmatch(err.Error())
	if m == nil {
		return errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
	}
	n, _ := strconv.Atoi(m[1])
	n++
	msg := fmt.Sprintf("line %d: %s", n, m[2])
	switch m[3] {
	case "',' or '}'":
		msg += fmt.Sprintf(" (the { opened on line %d is not closed, or two entries lack a comma)", n)
	case "',' or ']'":
		msg += fmt.Sprintf(" (the [ opened on line %d is not closed, or two items lack a comma)", n)
	case "key":
		msg += " (wrong indentation on or after this line?)"
	}
	return errors.New(msg)
}

// withPaths rewrites yaml's "line N:" messages to name the key's path too.
// When several keys share a line (flow style), the one whose value the
// message quotes, or else the innermost, is named.
func withPaths(src []byte, err error) error {
	var root yaml.Node
	if yaml.Unmarshal(src, &root) != nil {
		return fmt.Errorf("invalid YAML: %w", syntaxLine(err))
	}
	type spot struct{ path, value string }
	lines := map[int][]spot{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := strings.TrimPrefix(path+"."+k.Value, ".")
				lines[k.Line] = append(lines[k.Line], spot{p, v.Value})
				walk(v, p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				lines[c.Line] = append(lines[c.Line], spot{p, c.Value})
				walk(c, p)
			}
		}
	}
	walk(&root, "")
	var out []string
	for _, part := range strings.Split(strings.TrimPrefix(err.Error(), "yaml: unmarshal errors:\n"), "\n") {
		part = strings.TrimSpace(part)
		m := lineRE.FindStringSubmatch(part)
		if m != nil {
			n, _ := strconv.Atoi(m[1])
			if spots := lines[n]; len(spots) > 0 {
				best := spots[len(spots)-1].path
				for _, sp := range spots {
					if sp.value != "" && strings.Contains(part, "`"+sp.value+"`") {
						best = sp.path
					}
				}
				part = strings.Replace(part, m[0], fmt.Sprintf("%s (line %d): ", best, n), 1)
			}
		}
		part = unknownRE.ReplaceAllString(part, "unknown key")
		part = typeRE.ReplaceAllStringFunc(part, func(m string) string {
			sm := typeRE.FindStringSubmatch(m)
			want := map[string]string{"time.Duration": "a duration such as 30s", "int": "a whole number", "bool": "true or false", "string": "a string"}[sm[3]]
			if want == "" {
				want = sm[3]
			}
			return fmt.Sprintf("expected %s, got %s", want, sm[2])
		})
		out = append(out, part)
	}
	return errors.New(strings.Join(out, "; "))
}

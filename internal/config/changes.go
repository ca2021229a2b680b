package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"sort"

	"go.yaml.in/yaml/v3"
)

// Changes are the gateway settings changed through the management API:
// whether the gateway runs, and its listeners. They are kept in a file of
// their own (api.changes_file), not written into the configuration file
// (which may be read-only, and whose comments are the operator's), and
// applied over it at every start and reload, so a change outlives both —
// as EMQX keeps its dashboard's changes in cluster.hocon. Delete the file
// (then reload) to go back to the configuration file alone.
type Changes struct {
	Enable *bool `yaml:"enable,omitempty"`
	// Listeners by type, then name; a nil listener was deleted.
	Listeners map[string]map[string]*Listener `yaml:"listeners,omitempty"`
}

// changesHeader starts the file, for whoever opens it.
const changesHeader = "# Changes made through exgate's management API. They apply over the\n" +
	"# configuration file at every start and reload; delete this file (then\n" +
	"# reload) to go back to the configuration file alone. A listener set to\n" +
	"# null was deleted.\n"

// Changes is where changes made through the API are kept: ChangesFile
// if set, else api_changes.yaml beside the API keys.
func (a API) Changes() string {
	if a.ChangesFile != "" {
		return a.ChangesFile
	}
	return filepath.Join(filepath.Dir(a.Keys()), "api_changes.yaml")
}

// LoadChanges reads a changes file; a missing file holds no changes.
func LoadChanges(path string) (*Changes, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Changes{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read API changes: %w", err)
	}
	ch := &Changes{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(ch); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %w", path, withPaths(b, err))
	}
	for typ := range ch.Listeners {
		if !ValidListenerType(typ) {
			return nil, fmt.Errorf("%s: listeners: unknown type %q (tcp, ssl, udp, dtls)", path, typ)
		}
	}
	return ch, nil
}

// Empty reports whether there is no change.
func (ch *Changes) Empty() bool { return ch.Enable == nil && len(ch.Listeners) == 0 }

// Clone returns a copy that can be edited without touching ch (listeners
// are replaced, never edited in place, so they are shared).
func (ch *Changes) Clone() *Changes {
	c := &Changes{Enable: ch.Enable, Listeners: map[string]map[string]*Listener{}}
	for typ, m := range ch.Listeners {
		c.Listeners[typ] = maps.Clone(m)
	}
	return c
}

// SetListener records a new or changed listener; nil records its deletion.
func (ch *Changes) SetListener(typ, name string, l *Listener) {
	if ch.Listeners == nil {
		ch.Listeners = map[string]map[string]*Listener{}
	}
	if ch.Listeners[typ] == nil {
		ch.Listeners[typ] = map[string]*Listener{}
	}
	ch.Listeners[typ][name] = l
}

// Save writes the changes to path (readable by exgate's user alone, as
// listeners may carry credentials), replacing the file in one step. An
// empty set of changes removes the file.
func (ch *Changes) Save(path string) error {
	if ch.Empty() {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("save API changes: %w", err)
		}
		return nil
	}
	b, err := yaml.Marshal(ch)
	if err != nil {
		return fmt.Errorf("save API changes: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save API changes: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".api_changes-*")
	if err != nil {
		return fmt.Errorf("save API changes: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if _, err := tmp.Write(append([]byte(changesHeader), b...)); err != nil {
		tmp.Close()
		return fmt.Errorf("save API changes: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save API changes: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save API changes: %w", err)
	}
	return nil
}

// Apply puts the changes over c's gateway settings and says, one line
// each, which of them replace what the configuration file says. c's
// listener maps are copied before they are changed: c may be a running
// configuration that others read.
func (ch *Changes) Apply(c *Config) (notes []string) {
	x := &c.Gateway.ExProto
	if ch.Enable != nil {
		if x.Enabled() != *ch.Enable {
			notes = append(notes, fmt.Sprintf("gateway.exproto.enable is %v (changed through the API)", *ch.Enable))
		}
		x.Enable = ch.Enable
	}
	types := make([]string, 0, len(ch.Listeners))
	for typ := range ch.Listeners {
		types = append(types, typ)
	}
	sort.Strings(types)
	for _, typ := range types {
		m := x.Listeners.byType(typ)
		if m == nil {
			continue
		}
		next := maps.Clone(*m)
		if next == nil {
			next = map[string]*Listener{}
		}
		names := make([]string, 0, len(ch.Listeners[typ]))
		for n := range ch.Listeners[typ] {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			l := ch.Listeners[typ][name]
			prev, had := next[name]
			switch {
			case l == nil && had:
				delete(next, name)
				notes = append(notes, fmt.Sprintf("listener %s:%s was deleted through the API", typ, name))
			case l != nil && !had:
				next[name] = l
				notes = append(notes, fmt.Sprintf("listener %s:%s was created through the API", typ, name))
			case l != nil && !Same(prev, l):
				next[name] = l
				notes = append(notes, fmt.Sprintf("listener %s:%s was changed through the API", typ, name))
			}
		}
		*m = next
	}
	return notes
}

// byType returns the map of listeners of one type, or nil for an unknown type.
func (ls *Listeners) byType(typ string) *map[string]*Listener {
	switch typ {
	case "tcp":
		return &ls.TCP
	case "ssl":
		return &ls.SSL
	case "udp":
		return &ls.UDP
	case "dtls":
		return &ls.DTLS
	}
	return nil
}

// Find returns the listener typ:name, or nil.
func (ls *Listeners) Find(typ, name string) *Listener {
	if m := ls.byType(typ); m != nil {
		return (*m)[name]
	}
	return nil
}

// ValidListenerType reports whether typ is one of tcp, ssl, udp, dtls.
func ValidListenerType(typ string) bool { return (&Listeners{}).byType(typ) != nil }

// Same reports whether two configuration values say the same, by their YAML.
func Same(a, b any) bool {
	ya, erra := yaml.Marshal(a)
	yb, errb := yaml.Marshal(b)
	return erra == nil && errb == nil && bytes.Equal(ya, yb)
}

// DecodeListener decodes a listener's settings over into: keys doc leaves
// out keep into's values, null clears one. Unknown keys and wrong types
// are errors that name the key.
func DecodeListener(doc map[string]any, into *Listener) error {
	b, err := yaml.Marshal(doc)
	if err != nil {
		return fmt.Errorf("listener: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(into); err != nil && !errors.Is(err, io.EOF) {
		return withPaths(b, err)
	}
	return nil
}

// Clone returns a deep copy of l.
func (l *Listener) Clone() *Listener {
	b, err := yaml.Marshal(l)
	if err != nil {
		panic(fmt.Sprintf("config: marshal: %v", err)) // plain structs always marshal
	}
	c := &Listener{}
	if err := yaml.Unmarshal(b, c); err != nil {
		panic(fmt.Sprintf("config: a listener does not read back: %v", err))
	}
	return c
}

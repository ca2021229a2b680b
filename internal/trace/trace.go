// Package trace writes what one client, or one topic, does to a file for a
// while: its events, and the bytes it sends and receives (hex, capped), so
// an operator can see a single device's conversation without turning the
// whole log to debug.
package trace

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/exgate/exgate/internal/auth"
)

// maxBytes caps the bytes of one event written in hex.
const maxBytes = 256

// Spec says what to trace.
type Spec struct {
	Name     string        `json:"name"`
	ClientID string        `json:"clientid,omitempty"`
	Topic    string        `json:"topic,omitempty"` // a filter: publishes, deliveries, subscriptions
	Duration time.Duration `json:"-"`
}

// Info describes a trace.
type Info struct {
	Spec
	File   string    `json:"file"`
	Until  time.Time `json:"until"`
	Active bool      `json:"active"`
}

type run struct {
	Info
	mu    sync.Mutex
	f     *os.File
	w     *bufio.Writer
	timer *time.Timer
}

// Tracer runs traces. Safe for concurrent use; Event costs an atomic load
// when nothing is traced.
type Tracer struct {
	dir    string
	active atomic.Int32
	mu     sync.Mutex
	runs   map[string]*run
}

// New writes traces under dir.
func New(dir string) *Tracer { return &Tracer{dir: dir, runs: map[string]*run{}} }

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// Start begins a trace; its name must be new and file-safe.
func (t *Tracer) Start(s Spec) (Info, error) {
	if !nameRE.MatchString(s.Name) {
		return Info{}, errors.New("name: 1 to 64 letters, digits, '.', '_' or '-'")
	}
	if (s.ClientID == "") == (s.Topic == "") {
		return Info{}, errors.New("give exactly one of clientid and topic")
	}
	if s.Duration <= 0 || s.Duration > 24*time.Hour {
		return Info{}, errors.New("duration: more than 0 and at most 24h")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, dup := t.runs[s.Name]; dup {
		return Info{}, fmt.Errorf("a trace %q exists", s.Name)
	}
	if err := os.MkdirAll(t.dir, 0o750); err != nil {
		return Info{}, err
	}
	path := filepath.Join(t.dir, s.Name+".log")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return Info{}, err
	}
	r := &run{Info: Info{Spec: s, File: path, Until: time.Now().Add(s.Duration), Active: true}, f: f, w: bufio.NewWriter(f)}
	r.timer = time.AfterFunc(s.Duration, func() { t.finish(r) })
	t.runs[s.Name] = r
	t.active.Add(1)
	fmt.Fprintf(r.w, "%s trace %s started: clientid=%q topic=%q for %v\n", stamp(time.Now()), s.Name, s.ClientID, s.Topic, s.Duration)
	return r.Info, nil
}

// finish stops writing a run (at expiry or Stop); its file stays.
func (t *Tracer) finish(r *run) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.Active {
		return
	}
	r.Active = false
	r.timer.Stop()
	fmt.Fprintf(r.w, "%s trace %s stopped\n", stamp(time.Now()), r.Name)
	_ = r.w.Flush()
	_ = r.f.Close()
	t.active.Add(-1)
}

// Stop ends and forgets a trace; its file stays.
func (t *Tracer) Stop(name string) error {
	t.mu.Lock()
	r, ok := t.runs[name]
	delete(t.runs, name)
	t.mu.Unlock()
	if !ok {
		return fmt.Errorf("no trace %q", name)
	}
	t.finish(r)
	return nil
}

// List returns the traces, active or finished, by name.
func (t *Tracer) List() []Info {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Info, 0, len(t.runs))
	for _, r := range t.runs {
		r.mu.Lock()
		out = append(out, r.Info)
		r.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// File returns a trace's file, flushed.
func (t *Tracer) File(name string) (string, error) {
	t.mu.Lock()
	r, ok := t.runs[name]
	t.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("no trace %q", name)
	}
	r.mu.Lock()
	if r.Active {
		_ = r.w.Flush()
	}
	r.mu.Unlock()
	return r.File, nil
}

// Active reports whether any trace runs.
func (t *Tracer) Active() bool { return t != nil && t.active.Load() > 0 }

// Event records one thing a device did, to every trace it matches: by
// clientid, or by topic for events that have one.
func (t *Tracer) Event(clientID, conn, event, topic string, data []byte) {
	if t == nil || t.active.Load() == 0 {
		return
	}
	t.mu.Lock()
	var hits []*run
	for _, r := range t.runs {
		if (r.ClientID != "" && r.ClientID == clientID) || (r.Topic != "" && topic != "" && auth.Match(topic, r.Topic)) {
			hits = append(hits, r)
		}
	}
	t.mu.Unlock()
	if len(hits) == 0 {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s clientid=%q conn=%s event=%s", stamp(time.Now()), clientID, conn, event)
	if topic != "" {
		fmt.Fprintf(&b, " topic=%q", topic)
	}
	if data != nil {
		shown := data
		if len(shown) > maxBytes {
			shown = shown[:maxBytes]
		}
		fmt.Fprintf(&b, " bytes=%d hex=%s", len(data), hex.EncodeToString(shown))
		if len(data) > maxBytes {
			b.WriteString("…")
		}
	}
	b.WriteByte('\n')
	for _, r := range hits {
		r.mu.Lock()
		if r.Active {
			_, _ = r.w.WriteString(b.String())
		}
		r.mu.Unlock()
	}
}

// Close ends every trace.
func (t *Tracer) Close() {
	t.mu.Lock()
	runs := make([]*run, 0, len(t.runs))
	for _, r := range t.runs {
		runs = append(runs, r)
	}
	t.mu.Unlock()
	for _, r := range runs {
		t.finish(r)
	}
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

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
	Bytes  int64     `json:"bytes"`
	// Stopped says why a trace ended early (its byte cap).
	Stopped string `json:"stopped,omitempty"`
	started time.Time
}

type run struct {
	Info
	mu    sync.Mutex
	f     *os.File
	w     *bufio.Writer
	timer *time.Timer
}

// Limits bound what traces may take: an operator's mistake (or a stolen
// API key) must not fill the disk or run out of descriptors.
type Limits struct {
	// MaxActive traces at once (each holds one open file). Default 30.
	MaxActive int
	// MaxBytes per trace; a trace that reaches it stops with a note.
	// Default 100 MiB.
	MaxBytes int64
	// Kept is how many traces (finished ones included) List remembers;
	// the oldest finished one is forgotten first (its file stays).
	// Default 100.
	Kept int
}

// Tracer runs traces. Safe for concurrent use; Event costs an atomic load
// when nothing is traced.
type Tracer struct {
	dir    string
	lim    Limits
	active atomic.Int32
	mu     sync.Mutex
	runs   map[string]*run
}

// New writes traces under dir within lim (zero fields take the defaults).
func New(dir string, lim Limits) *Tracer {
	if lim.MaxActive <= 0 {
		lim.MaxActive = 30
	}
	if lim.MaxBytes <= 0 {
		lim.MaxBytes = 100 << 20
	}
	if lim.Kept < lim.MaxActive {
		lim.Kept = max(100, lim.MaxActive)
	}
	return &Tracer{dir: dir, lim: lim, runs: map[string]*run{}}
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Start begins a trace; its name must be new and file-safe.
func (t *Tracer) Start(s Spec) (Info, error) {
	if !nameRE.MatchString(s.Name) {
		return Info{}, errors.New("name: 1 to 64 letters, digits, '_' or '-'")
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
	if n := int(t.active.Load()); n >= t.lim.MaxActive {
		return Info{}, fmt.Errorf("%d traces are active, the most allowed (trace.max_active): stop one first", n)
	}
	if err := os.MkdirAll(t.dir, 0o750); err != nil {
		return Info{}, err
	}
	// Every active trace may still grow to its cap: the disk must hold that.
	need := t.lim.MaxBytes * int64(t.active.Load()+1)
	if free, ok := freeBytes(t.dir); ok && free < need {
		return Info{}, fmt.Errorf("%d MiB free under %s, but the active traces and this one may write %d MiB (trace.max_bytes)", free>>20, t.dir, need>>20)
	}
	t.forgetOldest()
	path := filepath.Join(t.dir, s.Name+".log")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return Info{}, err
	}
	r := &run{Info: Info{Spec: s, File: path, Until: time.Now().Add(s.Duration), Active: true, started: time.Now()}, f: f, w: bufio.NewWriter(f)}
	r.timer = time.AfterFunc(s.Duration, func() { t.finish(r) })
	t.runs[s.Name] = r
	t.active.Add(1)
	fmt.Fprintf(r.w, "%s trace %s started: clientid=%q topic=%q for %v\n", stamp(time.Now()), s.Name, s.ClientID, s.Topic, s.Duration)
	return r.Info, nil
}

// forgetOldest makes room in the list for one more trace by forgetting
// the oldest finished one. Called with t.mu held.
func (t *Tracer) forgetOldest() {
	if len(t.runs) < t.lim.Kept {
		return
	}
	var oldest *run
	for _, r := range t.runs {
		r.mu.Lock()
		if !r.Active && (oldest == nil || r.started.Before(oldest.started)) {
			oldest = r
		}
		r.mu.Unlock()
	}
	if oldest != nil {
		delete(t.runs, oldest.Name)
	}
}

// finish stops writing a run (at expiry or Stop); its file stays.
func (t *Tracer) finish(r *run) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t.finishLocked(r, "")
}

// finishLocked is finish with r.mu held; why, if set, is written and kept.
func (t *Tracer) finishLocked(r *run, why string) {
	if !r.Active {
		return
	}
	r.Active = false
	r.Stopped = why
	r.timer.Stop()
	if why != "" {
		fmt.Fprintf(r.w, "%s trace %s stopped: %s\n", stamp(time.Now()), r.Name, why)
	} else {
		fmt.Fprintf(r.w, "%s trace %s stopped\n", stamp(time.Now()), r.Name)
	}
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
	line := b.String()
	for _, r := range hits {
		r.mu.Lock()
		if r.Active {
			if r.Bytes+int64(len(line)) > t.lim.MaxBytes {
				t.finishLocked(r, fmt.Sprintf("its byte cap of %d bytes (trace.max_bytes) was reached", t.lim.MaxBytes))
			} else {
				n, _ := r.w.WriteString(line)
				r.Bytes += int64(n)
			}
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

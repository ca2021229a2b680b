// Package bench is exgate's load tool: device fleets over TCP, TLS and UDP
// that echo, publish, subscribe and connect, against any exgate, and the
// baselines they are compared with in the same run (a raw TCP echo server,
// MQTT clients speaking to a broker directly). It measures; it asserts
// nothing.
package bench

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Result is one measured run.
type Result struct {
	Scenario string  `json:"scenario"`
	Target   string  `json:"target"` // exgate, raw-tcp, mqtt-embedded, mosquitto
	Devices  int     `json:"devices"`
	Ops      int64   `json:"ops"` // round trips, messages or connects
	Seconds  float64 `json:"seconds"`
	Rate     float64 `json:"rate"` // ops per second
	// Latency percentiles in microseconds (echo and connects).
	P50  float64 `json:"p50_us,omitempty"`
	P90  float64 `json:"p90_us,omitempty"`
	P99  float64 `json:"p99_us,omitempty"`
	P999 float64 `json:"p999_us,omitempty"`
	// Errors by cause.
	Errors map[string]int64 `json:"errors,omitempty"`
	// Procs: CPU and memory of the processes under test during the run.
	Procs map[string]ProcUsage `json:"procs,omitempty"`
	// Ratio to the baseline of the same scenario, when there is one.
	Ratio    float64 `json:"ratio,omitempty"`
	Baseline string  `json:"baseline,omitempty"`
	// HandlerMS (fan-out through exgate): milliseconds from the first
	// publish until the handler had answered every delivery.
	HandlerMS float64 `json:"handler_ms,omitempty"`
	// Pairs, when set, says Rate and Ratio are medians of this many
	// interleaved pairs; Ops, Seconds and latencies are the last run's.
	Pairs int    `json:"pairs,omitempty"`
	Note  string `json:"note,omitempty"`
}

// ProcUsage is one process's share of a run.
type ProcUsage struct {
	CPUSeconds float64 `json:"cpu_s"`
	CPUPerOpUS float64 `json:"cpu_per_op_us"`
	// HeldCPUPerOpUS is CPU per op until the hold, while every device was
	// still connected: a storm's connects without their closing.
	HeldCPUPerOpUS float64 `json:"held_cpu_per_op_us,omitempty"`
	RSSBytes       int64   `json:"rss_bytes"`
	// RSSPerDevice is the RSS growth over the run divided by devices
	// (connect storm).
	RSSPerDevice float64 `json:"rss_per_device_bytes,omitempty"`
	// SettledRSSPerDevice is the same at the end of a hold: the devices
	// idle, the gateway settled.
	SettledRSSPerDevice float64 `json:"settled_rss_per_device_bytes,omitempty"`
	// Goroutines of the gateway, from its /metrics (go_goroutines).
	Goroutines int `json:"goroutines,omitempty"`
}

// KeepMemory takes the memory figures (RSS, RSS per device, goroutines)
// from held, a reading made while every device was still connected, and
// keeps r's CPU figures.
func (r *Result) KeepMemory(held Result) {
	for name, p := range held.Procs {
		q := r.Procs[name]
		q.RSSBytes, q.RSSPerDevice, q.SettledRSSPerDevice = p.RSSBytes, p.RSSPerDevice, p.SettledRSSPerDevice
		if r.Ops > 0 {
			q.HeldCPUPerOpUS = p.CPUSeconds * 1e6 / float64(r.Ops)
		}
		if p.Goroutines > 0 {
			q.Goroutines = p.Goroutines
		}
		if r.Procs == nil {
			r.Procs = map[string]ProcUsage{}
		}
		r.Procs[name] = q
	}
}

// Goroutines reads go_goroutines from a Prometheus endpoint; 0 if it cannot.
func Goroutines(metricsURL string) int {
	return int(Metrics(metricsURL, "go_goroutines")[""])
}

// Metrics reads the samples of one metric from a Prometheus endpoint, keyed
// by their labels as written ("" without labels, `reason="x"` with); nil if
// it cannot.
func Metrics(metricsURL, name string) map[string]float64 {
	if metricsURL == "" {
		return nil
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(metricsURL)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		labels := ""
		if rest[0] == '{' {
			end := strings.IndexByte(rest, '}')
			if end < 0 {
				continue
			}
			labels, rest = rest[1:end], rest[end+1:]
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64); err == nil {
			out[labels] = v
		}
	}
	return out
}

// errorCounts counts errors by cause; safe for concurrent use.
type errorCounts struct {
	mu sync.Mutex
	m  map[string]int64
}

func (e *errorCounts) add(cause string) {
	e.mu.Lock()
	if e.m == nil {
		e.m = map[string]int64{}
	}
	e.m[cause]++
	e.mu.Unlock()
}

func (e *errorCounts) snapshot() map[string]int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.m) == 0 {
		return nil
	}
	return maps.Clone(e.m)
}

// cause names an error for the errors-by-cause table.
func cause(err error) string {
	s := err.Error()
	for _, c := range []string{"timeout", "connection refused", "connection reset", "EOF", "broken pipe", "refused"} {
		if strings.Contains(s, c) {
			return c
		}
	}
	if len(s) > 40 {
		s = s[:40]
	}
	return s
}

// latencies collects samples from many goroutines.
type latencies struct {
	mu  sync.Mutex
	all []time.Duration
}

func (l *latencies) merge(s []time.Duration) {
	l.mu.Lock()
	l.all = append(l.all, s...)
	l.mu.Unlock()
}

// fill sets the percentiles of r from the samples.
func (l *latencies) fill(r *Result) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.all) == 0 {
		return
	}
	slices.Sort(l.all)
	p := func(q float64) float64 {
		i := int(q * float64(len(l.all)-1))
		return float64(l.all[i].Nanoseconds()) / 1e3
	}
	r.P50, r.P90, r.P99, r.P999 = p(0.50), p(0.90), p(0.99), p(0.999)
}

// procStat reads a process's CPU time and resident memory from /proc.
func procStat(pid int) (cpu time.Duration, rss int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// Fields after the command name (which may contain spaces).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	cpu = time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
	b, err = os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return cpu, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			rss = kb << 10
		}
	}
	return cpu, rss, nil
}

// Watch samples named processes around a run.
type Watch struct {
	pids  map[string]int
	start map[string]time.Duration
	rss0  map[string]int64
}

// NewWatch starts watching; pids maps a name (gateway, handler, …) to a
// pid. The load tool itself is watched too, as "load tool": it shares the
// cores with what it measures, and its CPU per op says how much of a run's
// time is the instrument's.
func NewWatch(pids map[string]int) *Watch {
	w := &Watch{pids: map[string]int{"load tool": os.Getpid()}, start: map[string]time.Duration{}, rss0: map[string]int64{}}
	maps.Copy(w.pids, pids)
	for n, pid := range w.pids {
		w.start[n], w.rss0[n], _ = procStat(pid)
	}
	return w
}

// Restart counts CPU from now on (RSS growth still from NewWatch): a
// run calls it where the work it measures begins.
func (w *Watch) Restart() {
	if w == nil {
		return
	}
	for n, pid := range w.pids {
		w.start[n], _, _ = procStat(pid)
	}
}

// Done fills r.Procs with each process's CPU per op and RSS.
func (w *Watch) Done(r *Result, devices int) {
	if w == nil || len(w.pids) == 0 {
		return
	}
	r.Procs = map[string]ProcUsage{}
	for n, pid := range w.pids {
		cpu, rss, err := procStat(pid)
		if err != nil {
			continue
		}
		u := ProcUsage{CPUSeconds: (cpu - w.start[n]).Seconds(), RSSBytes: rss}
		if r.Ops > 0 {
			u.CPUPerOpUS = u.CPUSeconds * 1e6 / float64(r.Ops)
		}
		if devices > 0 {
			u.RSSPerDevice = float64(rss-w.rss0[n]) / float64(devices)
		}
		r.Procs[n] = u
	}
}

// progress prints a live line to w every second until stop is closed.
func progress(w io.Writer, label string, count func() (int64, string), stop <-chan struct{}) {
	if w == nil {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last int64
	for {
		select {
		case <-stop:
			fmt.Fprintln(w)
			return
		case <-t.C:
			n, extra := count()
			fmt.Fprintf(w, "\r%-12s %10d ops  %9.0f/s  %s   ", label, n, float64(n-last), extra)
			last = n
		}
	}
}

package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLogTails: when a process of the suite does not come up, the error
// carries the last lines of each process's log (the logs' folder is gone
// by the time anyone reads it), and says nothing of empty logs.
func TestLogTails(t *testing.T) {
	dir := t.TempDir()
	lines := make([]string, 8)
	for i := range lines {
		lines[i] = "line " + string(rune('a'+i))
	}
	if err := os.WriteFile(filepath.Join(dir, "exgate.log"), []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "quiet.log"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got := logTails(dir)
	want := "\nexgate.log:\n  line d\n  line e\n  line f\n  line g\n  line h"
	if got != want {
		t.Errorf("logTails = %q, want %q", got, want)
	}
}

// TestWatchCountsTheLoadToolFromItsStart: every Watch reports the load
// tool's own CPU too, counted from when the watch began, not from when the
// process did.
func TestWatchCountsTheLoadToolFromItsStart(t *testing.T) {
	for { // spend 50 ms of CPU first (USER_HZ ticks: 10 ms each)
		cpu, _, err := procStat(os.Getpid())
		if err != nil {
			t.Skip("no /proc:", err)
		}
		if cpu >= 50*time.Millisecond {
			break
		}
	}
	w := NewWatch(nil)
	var r Result
	r.Ops = 1
	w.Done(&r, 0)
	p, ok := r.Procs["load tool"]
	if !ok {
		t.Fatalf("no load tool figure in %v", r.Procs)
	}
	if p.CPUSeconds > 0.03 {
		t.Errorf("load tool CPU %.2f s over an empty watch: counted from the process's start", p.CPUSeconds)
	}
}

// TestMarkdownColumns: each process's CPU per operation lands in its own
// column, the broker's (mosquitto) included, so a row's total can be read
// across.
func TestMarkdownColumns(t *testing.T) {
	r := &Report{Date: "d", CPUs: 2, Scale: 1, Results: []Result{{
		Scenario: "fan-in qos1", Target: "exgate native on mosquitto", Devices: 100, Ops: 10, Rate: 16408,
		Procs: map[string]ProcUsage{
			"gateway": {CPUPerOpUS: 43}, "handler-json-ext": {CPUPerOpUS: 20.3},
			"load tool": {CPUPerOpUS: 24.1}, "mosquitto": {CPUPerOpUS: 23.4},
		},
	}}}
	lines := strings.Split(strings.TrimSpace(r.Markdown()), "\n")
	header, row := strings.Split(lines[len(lines)-3], "|"), strings.Split(lines[len(lines)-1], "|")
	if len(header) != len(row) {
		t.Fatalf("header has %d cells, row %d:\n%s\n%s", len(header), len(row), lines[len(lines)-3], lines[len(lines)-1])
	}
	want := map[string]string{"gateway CPU µs/op": "43.0", "handler CPU µs/op": "20.3", "load tool CPU µs/op": "24.1", "mosquitto CPU µs/op": "23.4"}
	for i, h := range header {
		name := strings.TrimSpace(h)
		if w, ok := want[name]; ok {
			if got := strings.TrimSpace(row[i]); got != w {
				t.Errorf("column %q = %q, want %q", name, got, w)
			}
			delete(want, name)
		}
	}
	if len(want) > 0 {
		t.Errorf("columns missing: %v", want)
	}
}

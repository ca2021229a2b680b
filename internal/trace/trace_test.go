package trace

import (
	"os"
	"sort"
	"strings"
	"testing"
	"time"
)

func TestNamesAreFileSafe(t *testing.T) {
	tr := New(t.TempDir(), Limits{})
	defer tr.Close()
	for _, name := range []string{"", ".", "..", "...", "a.b", "a/b", "a b", strings.Repeat("x", 65)} {
		if _, err := tr.Start(Spec{Name: name, ClientID: "c", Duration: time.Minute}); err == nil {
			t.Errorf("name %q accepted", name)
		}
	}
	if _, err := tr.Start(Spec{Name: "ok_Name-1", ClientID: "c", Duration: time.Minute}); err != nil {
		t.Fatal(err)
	}
}

func TestActiveTracesAreBounded(t *testing.T) {
	tr := New(t.TempDir(), Limits{MaxActive: 2, Kept: 3})
	defer tr.Close()
	start := func(name string) error {
		_, err := tr.Start(Spec{Name: name, ClientID: "c", Duration: time.Minute})
		return err
	}
	if err := start("a"); err != nil {
		t.Fatal(err)
	}
	if err := start("b"); err != nil {
		t.Fatal(err)
	}
	if err := start("c"); err == nil || !strings.Contains(err.Error(), "max_active") {
		t.Fatalf("a third active trace: %v", err)
	}
	if err := tr.Stop("a"); err != nil {
		t.Fatal(err)
	}
	if err := start("c"); err != nil {
		t.Fatalf("after a stop: %v", err)
	}
	// A stopped trace is forgotten at once; one that ran its time stays in
	// the list, up to Kept, the oldest finished one forgotten first (its
	// file stays).
	for _, n := range []string{"b", "c"} {
		if err := tr.Stop(n); err != nil {
			t.Fatal(err)
		}
	}
	if l := tr.List(); len(l) != 0 {
		t.Fatalf("stopped traces still listed: %v", l)
	}
	var files []string
	for _, n := range []string{"d", "e", "f", "g"} {
		info, err := tr.Start(Spec{Name: n, ClientID: "c", Duration: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, info.File)
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if i, ok := listed(tr, n); ok && !i.Active {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("trace %s did not end after its 10ms", n)
			}
		}
	}
	var names []string
	for _, i := range tr.List() {
		names = append(names, i.Name)
	}
	sort.Strings(names)
	if strings.Join(names, ",") != "e,f,g" {
		t.Fatalf("traces remembered: %v, want the three newest, e, f and g", names)
	}
	if _, err := os.Stat(files[0]); err != nil {
		t.Fatalf("the forgotten trace's file: %v", err)
	}
}

// listed returns the trace named n as List shows it.
func listed(tr *Tracer, n string) (Info, bool) {
	for _, i := range tr.List() {
		if i.Name == n {
			return i, true
		}
	}
	return Info{}, false
}

func TestByteCapStopsATrace(t *testing.T) {
	tr := New(t.TempDir(), Limits{MaxBytes: 1000})
	defer tr.Close()
	info, err := tr.Start(Spec{Name: "big", ClientID: "dev", Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		tr.Event("dev", "conn", "recv", "", make([]byte, 100))
	}
	l := tr.List()
	if len(l) != 1 || l[0].Active || !strings.Contains(l[0].Stopped, "byte cap") || l[0].Bytes > 1000 {
		t.Fatalf("after 100 events over a 1000-byte cap: %+v", l)
	}
	b, err := os.ReadFile(info.File)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "byte cap") || len(b) > 1500 {
		t.Fatalf("trace file of %d bytes, note present: %v", len(b), strings.Contains(string(b), "byte cap"))
	}
	if tr.Active() {
		t.Fatal("a stopped trace still counts as active")
	}
}

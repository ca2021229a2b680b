package trace

import (
	"os"
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
	// Finished traces are remembered up to Kept, the oldest forgotten first.
	for _, n := range []string{"b", "c"} {
		if err := tr.Stop(n); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"d", "e", "f", "g"} {
		if err := start(n); err != nil {
			t.Fatal(err)
		}
		_ = tr.Stop(n)
		time.Sleep(time.Millisecond) // distinct start times
	}
	if l := tr.List(); len(l) > 3 {
		t.Fatalf("%d traces remembered, want at most 3", len(l))
	}
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

package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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

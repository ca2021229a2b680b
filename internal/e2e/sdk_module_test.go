package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The first handler of docs/handlers.md builds in a module of its own,
// outside this repository, with the replace directive the page shows: what
// a handler author outside the project does.
func TestSDKFromAnotherModule(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a module: skipped with -short")
	}
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "handlers.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```go\n")
	program, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 || !strings.Contains(program, "package main") {
		t.Fatal("docs/handlers.md no longer starts with a Go program")
	}
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(program), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("mod", "init", "example.com/myhandler")
	run("mod", "edit", "-require=github.com/exgate/exgate@v0.0.0", "-replace=github.com/exgate/exgate="+repo)
	run("mod", "tidy")
	run("build", "-o", filepath.Join(dir, "handler"), ".")
	if _, err := os.Stat(filepath.Join(dir, "handler")); err != nil {
		t.Fatal(err)
	}
}

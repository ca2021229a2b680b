// Package archtest checks the shape of the code: every package says what
// it is for, and imports point one way along the data path
// (listener → channel → handler/broker; adapter → channel; nothing below
// imports the gateway, the API or the command).
package archtest

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/exgate/exgate/"

// matches reports whether an import is a forbidden one: "x/" forbids
// everything under x, "x" forbids x itself.
func matches(inner, bad string) bool {
	if strings.HasSuffix(bad, "/") {
		return strings.HasPrefix(inner, bad)
	}
	return inner == bad
}

// forbidden lists, per package, module packages it must not import.
var forbidden = map[string][]string{
	"internal/listener":        {"internal/channel", "internal/handler", "internal/adapter", "internal/broker", "internal/gateway", "internal/api"},
	"internal/channel":         {"internal/listener", "internal/handler", "internal/adapter", "internal/gateway", "internal/api", "internal/broker/embedded", "internal/broker/mqtt"},
	"internal/handler":         {"internal/channel", "internal/adapter", "internal/gateway", "internal/api", "internal/listener"},
	"internal/broker":          {"internal/channel", "internal/gateway", "internal/api", "internal/handler", "internal/listener"},
	"internal/broker/embedded": {"internal/channel", "internal/gateway", "internal/api"},
	"internal/broker/mqtt":     {"internal/channel", "internal/gateway", "internal/api"},
	"internal/adapter":         {"internal/gateway", "internal/api", "internal/listener", "internal/handler"},
	"internal/auth":            {"internal/channel", "internal/gateway", "internal/api"},
	"internal/config":          {"internal/"}, // the leaf everyone reads
	"internal/workers":         {"internal/"}, // a leaf: goroutines for anyone
	"internal/pbcodec":         {"internal/"}, // a leaf: the wire codec
	"internal/gateway":         {"internal/api", "cmd/"},
	"sdk":                      {"internal/gateway", "internal/api", "cmd/"},
	"sdk/framing":              {"internal/", "sdk"},
}

func TestArchitecture(t *testing.T) {
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); n == "node_modules" || n == ".git" || n == "testdata" || n == "bin" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") || strings.HasSuffix(path, ".pb.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		rel = filepath.ToSlash(rel)
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p := strings.Trim(imp.Path.Value, `"`)
			inner, ok := strings.CutPrefix(p, module)
			if !ok {
				continue
			}
			if strings.HasPrefix(inner, "cmd/") || (inner == "internal/api" && !strings.HasPrefix(rel, "cmd/")) {
				t.Errorf("%s imports %s: only cmd wires the API and nothing imports cmd", path, p)
			}
			for _, bad := range forbidden[rel] {
				if matches(inner, bad) {
					t.Errorf("%s imports %s, against the data path's direction", path, p)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestPackageDocs: every package (and command) says what it is for.
func TestPackageDocs(t *testing.T) {
	root := filepath.Join("..", "..")
	docs := map[string]bool{}
	seen := map[string]bool{}
	_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			if d != nil && d.IsDir() && (d.Name() == "node_modules" || d.Name() == ".git" || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		dir := filepath.Dir(path)
		seen[dir] = true
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.PackageClauseOnly|parser.ParseComments)
		if err == nil && f.Doc != nil && len(strings.TrimSpace(f.Doc.Text())) > 20 {
			docs[dir] = true
		}
		return nil
	})
	for dir := range seen {
		if !docs[dir] {
			t.Errorf("%s has no package doc comment", dir)
		}
	}
}

package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Changes round-trip through their file, apply over a configuration
// without touching the maps it shares, say what they replace, and an empty
// set removes the file.
func TestChangesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "api_changes.yaml")
	off := false
	ch := &Changes{Enable: &off}
	ch.SetListener("tcp", "default", nil)
	ch.SetListener("udp", "u", &Listener{Bind: "127.0.0.1:0"})
	if err := ch.Save(path); err != nil {
		t.Fatal(err)
	}
	got, err := LoadChanges(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Enable == nil || *got.Enable || got.Listeners["tcp"]["default"] != nil || got.Listeners["udp"]["u"].Bind != "127.0.0.1:0" {
		t.Fatalf("read back: %+v", got)
	}
	if _, present := got.Listeners["tcp"]["default"]; !present {
		t.Fatal("the deletion was not kept")
	}

	c := Default()
	shared := c.Gateway.ExProto.Listeners.TCP
	notes := got.Apply(c)
	want := []string{"gateway.exproto.enable is false", "listener tcp:default was deleted", "listener udp:u was created"}
	if len(notes) != len(want) {
		t.Fatalf("notes: %q", notes)
	}
	for i, w := range want {
		if !strings.HasPrefix(notes[i], w) {
			t.Errorf("note %d: %q, want %q…", i, notes[i], w)
		}
	}
	if shared["default"] == nil {
		t.Fatal("Apply changed a map the configuration shared")
	}
	if c.Gateway.ExProto.Listeners.TCP["default"] != nil || c.Gateway.ExProto.Listeners.UDP["u"] == nil || c.Gateway.ExProto.Enabled() {
		t.Fatalf("applied: %+v", c.Gateway.ExProto.Listeners)
	}
	if n := got.Apply(c); len(n) != 0 { // applied already: nothing left to replace
		t.Fatalf("second apply: %q", n)
	}

	if err := (&Changes{}).Save(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("empty changes left the file: %v", err)
	}
	if got, err := LoadChanges(path); err != nil || !got.Empty() {
		t.Fatalf("a missing file: %+v %v", got, err)
	}
	if err := os.WriteFile(path, []byte("listeners: {pigeon: {x: {bind: 1}}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadChanges(path); err == nil || !strings.Contains(err.Error(), "pigeon") {
		t.Fatalf("unknown type: %v", err)
	}
	if err := os.WriteFile(path, []byte("enabel: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadChanges(path); err == nil || !strings.Contains(err.Error(), "enabel") {
		t.Fatalf("unknown key: %v", err)
	}
}

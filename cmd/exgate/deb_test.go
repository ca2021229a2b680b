package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// needTool finds a tool a test needs; under CI its absence is a failure.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing (scripts/deps.sh installs it)", name)
		}
		t.Skipf("%s is not installed", name)
	}
	return p
}

// The .deb installs (dpkg, into a scratch root), its exgate runs and checks
// the configuration it ships, and its systemd unit passes systemd-analyze
// verify.
func TestDebPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a package: skipped with -short")
	}
	needTool(t, "dpkg-deb")
	dpkg := needTool(t, "dpkg")
	analyze := needTool(t, "systemd-analyze")
	out := t.TempDir()
	cmd := exec.Command(filepath.Join("..", "..", "scripts", "deb.sh"))
	cmd.Env = append(os.Environ(), "OUT="+out)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/deb.sh: %v\n%s", err, b)
	}
	deb := strings.TrimSpace(string(b[strings.LastIndexByte(strings.TrimSpace(string(b)), '\n')+1:]))
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(dpkg, "--root="+root, "--force-script-chrootless", "--force-not-root", "-i", deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, b)
	}
	bin := filepath.Join(root, "usr/bin/exgate")
	if b, err := exec.Command(bin, "version").CombinedOutput(); err != nil || !strings.HasPrefix(string(b), "exgate ") || strings.HasPrefix(string(b), "exgate dev") {
		t.Fatalf("installed exgate version: %v %q (want a stamped version)", err, b)
	}
	if b, err := exec.Command(bin, "config", "check", "-c", filepath.Join(root, "etc/exgate/exgate.yaml")).CombinedOutput(); err != nil {
		t.Fatalf("config check of the packaged configuration: %v\n%s", err, b)
	}
	unit, err := os.ReadFile(filepath.Join(root, "lib/systemd/system/exgate.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes", "ExecReload="} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the unit lacks %s", want)
		}
	}
	// verify checks ExecStart exists: point it at the installed binary.
	check := filepath.Join(t.TempDir(), "exgate.service")
	if err := os.WriteFile(check, []byte(strings.ReplaceAll(string(unit), "/usr/bin/exgate", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(analyze, "verify", check).CombinedOutput(); err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, b)
	}
}

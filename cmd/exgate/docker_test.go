package main

import (
	"bufio"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The Dockerfile cannot be built here (no registry to pull its Go build
// image from), so it is checked instead: its final image is an empty base
// with a non-root user, the ports and the state volume; what it copies from
// the source tree exists; its build command, run here as written, makes a
// static binary with the version stamped in; and the configuration it
// ships passes config check.
func TestDockerfile(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary: skipped with -short")
	}
	root := filepath.Join("..", "..")
	f, err := os.Open(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type instr struct{ op, args string }
	var stages [][]instr // per FROM
	s := bufio.NewScanner(f)
	var cont string
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cont += strings.TrimSuffix(line, "\\") + " "
			continue
		}
		line, cont = cont+line, ""
		op, args, _ := strings.Cut(line, " ")
		op = strings.ToUpper(op)
		if op == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			continue // ARG before FROM
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], instr{op, strings.TrimSpace(args)})
	}
	if len(stages) < 2 {
		t.Fatalf("want a build stage and an image stage, got %d stages", len(stages))
	}
	final := stages[len(stages)-1]
	find := func(st []instr, op string) []string {
		var out []string
		for _, in := range st {
			if in.op == op {
				out = append(out, in.args)
			}
		}
		return out
	}
	if from := final[0].args; from != "scratch" {
		t.Errorf("final image FROM %s, want scratch (nothing but the binary)", from)
	}
	if u := find(final, "USER"); len(u) != 1 || !regexp.MustCompile(`^[1-9]\d*(:[1-9]\d*)?$`).MatchString(u[0]) {
		t.Errorf("USER %v: want one numeric non-root user (a scratch image has no /etc/passwd)", u)
	}
	expose := strings.Fields(strings.Join(find(final, "EXPOSE"), " "))
	for _, p := range []string{"7993", "1883"} {
		if !slices.Contains(expose, p) {
			t.Errorf("EXPOSE %v lacks %s", expose, p)
		}
	}
	if v := find(final, "VOLUME"); len(v) != 1 || !strings.Contains(v[0], "/var/lib/exgate") {
		t.Errorf("VOLUME %v, want /var/lib/exgate (API keys, changes, traces)", v)
	}
	entry := find(final, "ENTRYPOINT")
	if len(entry) != 1 || !strings.Contains(entry[0], `"/usr/bin/exgate"`) || !strings.Contains(entry[0], `"/etc/exgate/exgate.yaml"`) {
		t.Fatalf("ENTRYPOINT %v", entry)
	}
	var copiedBinary, copiedConfig bool
	for _, c := range find(final, "COPY") {
		fields := strings.Fields(c)
		src, dst := fields[len(fields)-2], fields[len(fields)-1]
		if !strings.Contains(c, "--from=") {
			if _, err := os.Stat(filepath.Join(root, src)); err != nil {
				t.Errorf("COPY %s: %v", src, err)
			}
		}
		copiedBinary = copiedBinary || dst == "/usr/bin/exgate"
		copiedConfig = copiedConfig || dst == "/etc/exgate/exgate.yaml"
	}
	if !copiedBinary || !copiedConfig {
		t.Fatalf("the image lacks the binary or the configuration its ENTRYPOINT names")
	}

	// The build stage's go build, as written, with VERSION given.
	var build string
	for _, r := range find(stages[0], "RUN") {
		if strings.Contains(r, "go build") {
			build, _, _ = strings.Cut(r, "&&")
		}
	}
	if !strings.Contains(build, "CGO_ENABLED=0") {
		t.Fatalf("the build command %q does not make a static binary (CGO_ENABLED=0)", build)
	}
	bin := filepath.Join(t.TempDir(), "exgate")
	build = strings.ReplaceAll(strings.ReplaceAll(build, "${VERSION}", "9.9.9-docker"), "-o /exgate ", "-o "+bin+" ")
	if !strings.Contains(build, bin) {
		t.Fatalf("the build command %q does not write -o /exgate, which the image copies", build)
	}
	cmd := exec.Command("sh", "-c", build)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", build, err, b)
	}
	ef, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Fatal("the image's binary is dynamically linked: a scratch image has no libc")
		}
	}
	if b, err := exec.Command(bin, "version").CombinedOutput(); err != nil || !strings.Contains(string(b), "9.9.9-docker") {
		t.Fatalf("version of the image's binary: %v %q", err, b)
	}
	if b, err := exec.Command(bin, "config", "check", "-c", filepath.Join(root, "packaging", "exgate.yaml")).CombinedOutput(); err != nil {
		t.Fatalf("config check of the configuration the image ships: %v\n%s", err, b)
	}
}

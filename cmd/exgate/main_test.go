package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/testhandler"
)

// binary is the exgate binary built once for these tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "exgate-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "exgate")
	if out, err := exec.Command("go", "build", "-race", "-o", binary, ".").CombinedOutput(); err != nil {
		panic("build exgate: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func run(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "exgate.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestVersion(t *testing.T) {
	out, _, err := run(t, "version")
	if err != nil || !strings.HasPrefix(out, "exgate ") {
		t.Fatalf("version: %q %v", out, err)
	}
}

func TestConfigDefaultsRoundTrip(t *testing.T) {
	out, _, err := run(t, "config", "defaults")
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse([]byte(out))
	if err != nil {
		t.Fatalf("printed defaults do not parse: %v\n%s", err, out)
	}
	if !bytes.Equal(c.YAML(), config.Default().YAML()) {
		t.Fatalf("printed defaults differ from the defaults:\n%s", out)
	}
	for _, key := range []string{"max_messages_per_delivery: 16", "bind: 127.0.0.1:9100", "bind: 0.0.0.0:7993", "request_timeout: 30s", "service_name: ConnectionUnaryHandler"} {
		if !strings.Contains(out, key) {
			t.Errorf("defaults lack %q", key)
		}
	}
	if _, _, err := run(t, "config", "check", "-c", writeFile(t, out)); err != nil {
		t.Fatalf("config check of the defaults: %v", err)
	}
}

func TestConfigCheckNamesTheKey(t *testing.T) {
	for _, c := range []struct{ name, body, want string }{
		{"unknown key", "gateway:\n  exproto:\n    listeners:\n      tcp:\n        default:\n          bnid: 1\n", "gateway.exproto.listeners.tcp.default.bnid"},
		{"wrong type", "gateway:\n  exproto:\n    idle_timeout: soon\n", "gateway.exproto.idle_timeout"},
		{"impossible value", "gateway:\n  exproto:\n    max_messages_per_delivery: 0\n", "gateway.exproto.max_messages_per_delivery: must be at least 1"},
		{"bad service", "gateway:\n  exproto:\n    handler: {service_name: Foo}\n", "gateway.exproto.handler.service_name"},
		{"bad bind", "gateway:\n  exproto:\n    server: {bind: nowhere}\n", "gateway.exproto.server.bind"},
		{"bad handler address", "gateway:\n  exproto:\n    handler: {address: \"ftp://x:1\"}\n", "gateway.exproto.handler.address"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, stderr, err := run(t, "config", "check", "-c", writeFile(t, c.body))
			if err == nil {
				t.Fatal("config check accepted a bad config")
			}
			if !strings.Contains(stderr, c.want) {
				t.Fatalf("error %q does not mention %q", stderr, c.want)
			}
		})
	}
	// serve refuses it at start too.
	_, stderr, err := run(t, "serve", "-c", writeFile(t, "gateway: {exproto: {idle_timeout: -1s}}\n"))
	if err == nil || !strings.Contains(stderr, "gateway.exproto.idle_timeout") {
		t.Fatalf("serve with a bad config: %v %q", err, stderr)
	}
}

// TestServeAndSignal runs the real binary with a handler, a device, and a
// SIGTERM: the device gets OnSocketClosed and the process exits cleanly.
func TestServeAndSignal(t *testing.T) {
	h := testhandler.Start(t)
	cfg := writeFile(t, `
log: {level: info}
broker: {embedded: {listeners: {tcp: {bind: "127.0.0.1:0"}}}}
gateway:
  exproto:
    server: {bind: "127.0.0.1:0"}
    handler: {address: "http://`+h.Addr+`"}
    listeners:
      tcp:
        default: {bind: "127.0.0.1:0"}
`)
	cmd := exec.Command(binary, "-c", cfg)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	lines := make(chan string, 100)
	go func() {
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()
	var started string
	timeout := time.After(20 * time.Second)
	for started == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("exgate exited before it started")
			}
			if strings.Contains(l, "exgate started") {
				started = l
			}
		case <-timeout:
			t.Fatal("exgate did not log its start")
		}
	}
	addr := func(key string) string {
		m := regexp.MustCompile(regexp.QuoteMeta(key) + `=(\S+)`).FindStringSubmatch(started)
		if m == nil {
			t.Fatalf("start line lacks %s: %s", key, started)
		}
		return m[1]
	}
	h.Attach(t, addr("adapter"))
	dev, err := net.Dial("tcp", addr("tcp:default"))
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	b, _ := json.Marshal(testhandler.Frame{Type: testhandler.Connect, ClientInfo: &testhandler.ClientInfo{ClientID: "bin"}})
	if _, err := dev.Write(b); err != nil {
		t.Fatal(err)
	}
	var ack testhandler.Frame
	_ = dev.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := json.NewDecoder(dev).Decode(&ack); err != nil || ack.Type != testhandler.Connack || *ack.Code != 0 {
		t.Fatalf("CONNACK %+v %v", ack, err)
	}
	conn := h.Conns()[0]

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range lines { // keep draining so the process never blocks on stderr
		}
	}()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exgate exited with %v after SIGTERM", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("exgate did not stop after SIGTERM")
	}
	if r, ok := h.Closed(conn); !ok || r != "{shutdown,gateway_stopped}" {
		t.Fatalf("device's OnSocketClosed: %q %v", r, ok)
	}
}

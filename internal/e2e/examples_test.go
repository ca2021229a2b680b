package e2e

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/testhandler"
)

// runHandler starts an example handler process listening on addr; it is
// killed when the test ends.
func runHandler(t *testing.T, addr string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			select {
			case lines <- s.Text():
			default:
			}
		}
		close(lines)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		for l := range lines {
			t.Log(name + ": " + l)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not listen on %s", name, addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startForExample runs a gateway whose handler (at handlerAddr) is an
// example process, started by start once the adapter address is known.
func startForExample(t *testing.T, handlerAddr string, start func(adapter string)) *env {
	t.Helper()
	adapter := freeAddr(t)
	h := testhandler.Start(t) // unused by the gateway; keeps the helper's bookkeeping
	e := startWith(t, options{handler: h}, func(c *config.Config) {
		c.Gateway.ExProto.Server.Bind = adapter
		c.Gateway.ExProto.Handler.Address = config.Addresses{"http://" + handlerAddr}
	})
	start(adapter)
	// The gateway dialled the handler before it was up: wait for its
	// channel to connect (it retries with backoff).
	deadline := time.Now().Add(30 * time.Second)
	for !e.g.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("the gateway never reached the example handler")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return e
}

func echoes(t *testing.T, e *env) {
	t.Helper()
	c, err := net.Dial("tcp", e.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for { // the handler's channel back to the adapter may still be connecting
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write([]byte("ping!")); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 5)
		if _, err := io.ReadFull(c, got); err == nil && string(got) == "ping!" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no echo; got %q", got)
		}
	}
}

func TestPythonEchoExample(t *testing.T) {
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import grpc, google.protobuf").Run(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("python3-grpcio / python3-protobuf missing (scripts/deps.sh installs them)")
		}
		t.Skip("Debian's python3-grpcio is not installed")
	}
	addr := freeAddr(t)
	e := startForExample(t, addr, func(adapter string) {
		runHandler(t, addr, py, filepath.Join("..", "..", "examples", "python", "echo_handler.py"), "--listen", addr, "--adapter", adapter)
	})
	echoes(t, e)
}

func TestNodeEchoExample(t *testing.T) {
	dir := filepath.Join("..", "..", "examples", "node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@grpc", "grpc-js")); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("examples/node/node_modules missing (scripts/deps.sh runs npm install)")
		}
		t.Skip("run npm install in examples/node")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("node is not installed (Debian package nodejs; scripts/deps.sh installs it)")
		}
		t.Skip("node is not installed")
	}
	addr := freeAddr(t)
	e := startForExample(t, addr, func(adapter string) {
		runHandler(t, addr, node, filepath.Join(dir, "echo_handler.js"), "--listen", addr, "--adapter", adapter)
	})
	echoes(t, e)
}

func TestGoJSONDemoExample(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "jsondemo")
	if out, err := exec.Command("go", "build", "-o", bin, "../../examples/jsondemo").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	addr := freeAddr(t)
	e := startForExample(t, addr, func(adapter string) {
		runHandler(t, addr, bin, "-listen", addr, "-adapter", adapter)
	})
	c, err := net.Dial("tcp", e.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d := &device{t: t, conn: c, dec: jsonDecoder(c)}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	d.send(Frame{Type: testhandler.Connect, ClientInfo: &testhandler.ClientInfo{ClientID: "demo"}})
	if f := d.recv(); f.Type != testhandler.Connack || *f.Code != 0 {
		t.Fatalf("%+v", f)
	}
	d.send(Frame{Type: testhandler.Subscribe, Topic: "d/#", QoS: 1})
	if f := d.recv(); f.Type != testhandler.Suback {
		t.Fatalf("%+v", f)
	}
	e.mqtt("app").pub("d/1", 1, false, "hi")
	if f := d.recv(); f.Type != testhandler.Publish || f.Payload != "hi" {
		t.Fatalf("%+v", f)
	}
	_ = strings.Contains
}

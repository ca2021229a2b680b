package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/testbroker"
	"github.com/exgate/exgate/internal/testcert"
	"github.com/exgate/exgate/internal/testdns"
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
	for _, key := range []string{"max_messages_per_delivery: 0", "bind: 127.0.0.1:9100", "bind: 0.0.0.0:7993", "request_timeout: 30s", "service_name: ConnectionUnaryHandler"} {
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
		{"impossible value", "gateway:\n  exproto:\n    max_messages_per_delivery: -1\n", "gateway.exproto.max_messages_per_delivery: must be 0 (by service) or more"},
		{"an open API off loopback", "api: {bind: \"0.0.0.0:18083\", auth: none}\n", "api.auth: none is only allowed on a loopback api.bind"},
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

// node is one exgate process of a test.
type node struct {
	path  string // its configuration file
	cmd   *exec.Cmd
	lines chan string
	start string   // the "exgate started" log line
	early []string // the lines before it
	done  chan error

	mu   sync.Mutex
	tail []string // its last lines, logged if the test fails
}

// tailLines is how many of an exgate process's last log lines a failed
// test shows.
const tailLines = 60

// startNode runs exgate with the config body and waits for its start line.
func startNode(t *testing.T, body string) *node {
	t.Helper()
	return startNodeFile(t, writeFile(t, body))
}

// startNodeFile runs exgate with the config file at path, with env
// ("KEY=value") added to its environment.
func startNodeFile(t *testing.T, path string, env ...string) *node {
	t.Helper()
	n := &node{path: path, cmd: exec.Command(binary, "-c", path), lines: make(chan string, 1000), done: make(chan error, 1)}
	n.cmd.Env = append(os.Environ(), env...)
	stderr, err := n.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			n.mu.Lock()
			n.tail = append(n.tail, s.Text())
			if len(n.tail) > 2*tailLines {
				n.tail = append(n.tail[:0], n.tail[len(n.tail)-tailLines:]...)
			}
			n.mu.Unlock()
			select {
			case n.lines <- s.Text():
			default: // nobody reads: drop, never block the process
			}
		}
		n.done <- n.cmd.Wait()
		close(n.lines)
	}()
	t.Cleanup(func() {
		_ = n.cmd.Process.Kill()
		if t.Failed() {
			n.mu.Lock()
			defer n.mu.Unlock()
			t.Logf("the last log lines of exgate -c %s:\n%s", n.path, strings.Join(n.tail[max(0, len(n.tail)-tailLines):], "\n"))
		}
	})
	timeout := time.After(20 * time.Second)
	for n.start == "" {
		select {
		case l, ok := <-n.lines:
			if !ok {
				t.Fatal("exgate exited before it started")
			}
			if strings.Contains(l, "exgate started") {
				n.start = l
			} else {
				n.early = append(n.early, l)
			}
		case <-timeout:
			t.Fatal("exgate did not log its start")
		}
	}
	return n
}

func (n *node) addr(t *testing.T, key string) string {
	t.Helper()
	m := regexp.MustCompile(regexp.QuoteMeta(key) + `=(\S+)`).FindStringSubmatch(n.start)
	if m == nil {
		t.Fatalf("start line lacks %s: %s", key, n.start)
	}
	return m[1]
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// jsonDevice is a TCP device of the JSON demo protocol.
type jsonDevice struct {
	t   *testing.T
	c   net.Conn
	dec *json.Decoder
}

func dialDevice(t *testing.T, addr string) *jsonDevice {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &jsonDevice{t: t, c: c, dec: json.NewDecoder(c)}
}

func (d *jsonDevice) do(f testhandler.Frame, want int) testhandler.Frame {
	d.t.Helper()
	b, _ := json.Marshal(f)
	if _, err := d.c.Write(b); err != nil {
		d.t.Fatal(err)
	}
	return d.read(want)
}

func (d *jsonDevice) read(want int) testhandler.Frame {
	d.t.Helper()
	var got testhandler.Frame
	_ = d.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := d.dec.Decode(&got); err != nil {
		d.t.Fatalf("device read: %v", err)
	}
	if got.Type != want || (got.Code != nil && *got.Code != 0) {
		d.t.Fatalf("got %+v, want type %d with code 0", got, want)
	}
	return got
}

// TestTwoNodesOneUpstream runs two exgate processes on one mosquitto with
// one handler that only knows node A's adapter.
func TestTwoNodesOneUpstream(t *testing.T) {
	t.Run("static peers", func(t *testing.T) { twoNodesOneUpstream(t, false) })
	t.Run("peers by DNS", func(t *testing.T) { twoNodesOneUpstream(t, true) })
}

// twoNodesOneUpstream: the nodes know each other from cluster.peers, or
// find each other in DNS SRV records (the same records for both, each
// skipping itself).
func twoNodesOneUpstream(t *testing.T, byDNS bool) {
	m := testbroker.Start(t)
	h := testhandler.Start(t)
	adapterA, adapterB := freePort(t), freePort(t)
	clusterConf := func(peerName, peer string) string { return `{peers: {"` + peerName + `": "` + peer + `"}}` }
	if byDNS {
		port := func(a string) string { _, p, _ := net.SplitHostPort(a); return p }
		d := testdns.Start(t, "nodes.test. 1 IN A 127.0.0.1",
			"_exgate._tcp.test. 1 IN SRV 0 0 "+port(adapterA)+" nodes.test.",
			"_exgate._tcp.test. 1 IN SRV 0 0 "+port(adapterB)+" nodes.test.")
		clusterConf = func(string, string) string {
			return `{discovery: {dns: "_exgate._tcp.test", srv: true, interval: 200ms, resolver: "` + d.Addr + `"}}`
		}
	}
	conf := func(name, self, peerName, peer string) string {
		return `
node: {name: ` + name + `}
api: {bind: "127.0.0.1:0"}
broker: {mqtt: {servers: ["tcp://` + m.Addr + `"]}}
cluster: ` + clusterConf(peerName, peer) + `
gateway:
  exproto:
    server: {bind: "` + self + `"}
    handler: {address: "http://` + h.Addr + `"}
    listeners: {tcp: {default: {bind: "127.0.0.1:0"}}}
`
	}
	a := startNode(t, conf("a@test", adapterA, "b@test", adapterB))
	b := startNode(t, conf("b@test", adapterB, "a@test", adapterA))
	h.Attach(t, a.addr(t, "adapter")) // the handler knows node A only
	if byDNS {
		a.waitLine(t, "peer=b@test") // "cluster discovery: peer found"
	}

	// A device on each node; the one on B is served through A's adapter.
	onA := dialDevice(t, a.addr(t, "tcp:default"))
	onA.do(testhandler.Frame{Type: testhandler.Connect, ClientInfo: &testhandler.ClientInfo{ClientID: "c1"}}, testhandler.Connack)
	onA.do(testhandler.Frame{Type: testhandler.Subscribe, Topic: "fleet/#", QoS: 1}, testhandler.Suback)
	onB := dialDevice(t, b.addr(t, "tcp:default"))
	onB.do(testhandler.Frame{Type: testhandler.Connect, ClientInfo: &testhandler.ClientInfo{ClientID: "c2"}}, testhandler.Connack)
	onB.do(testhandler.Frame{Type: testhandler.Publish, Topic: "fleet/b", QoS: 1, Payload: "from B"}, testhandler.Puback)
	if f := onA.read(testhandler.Publish); f.Payload != "from B" || f.Extra["from"] != "c2" {
		t.Fatalf("device on A got %+v", f)
	}
	// The same clientid on node B takes over the session on node A.
	first := h.Conns()[0]
	again := dialDevice(t, b.addr(t, "tcp:default"))
	again.do(testhandler.Frame{Type: testhandler.Connect, ClientInfo: &testhandler.ClientInfo{ClientID: "c1"}}, testhandler.Connack)
	if r := h.WaitClosed(t, first, 10*time.Second); r != "{shutdown,discarded}" {
		t.Fatalf("device on A closed with %q", r)
	}
}

// TestServeAndSignal runs the real binary with a handler, a device, and a
// SIGTERM: the device gets OnSocketClosed and the process exits cleanly.
func TestServeAndSignal(t *testing.T) {
	h := testhandler.Start(t)
	n := startNode(t, `
log: {level: info}
api: {bind: "127.0.0.1:0"}
broker: {embedded: {listeners: {tcp: {bind: "127.0.0.1:0"}}}}
gateway:
  exproto:
    server: {bind: "127.0.0.1:0"}
    handler: {address: "http://`+h.Addr+`"}
    listeners:
      tcp:
        default: {bind: "127.0.0.1:0"}
`)
	h.Attach(t, n.addr(t, "adapter"))
	dev := dialDevice(t, n.addr(t, "tcp:default"))
	dev.do(testhandler.Frame{Type: testhandler.Connect, ClientInfo: &testhandler.ClientInfo{ClientID: "bin"}}, testhandler.Connack)
	conn := h.Conns()[0]

	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range n.lines { // keep draining so the process never blocks on stderr
		}
	}()
	select {
	case err := <-n.done:
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

// TestSecretsNeverLogged runs the binary at debug level through logins
// with every kind of secret, then searches its whole log for them.
func TestSecretsNeverLogged(t *testing.T) {
	secrets := []string{"very-secret-pw1", "very-secret-pw2", "very-secret-jwt", "very-secret-token", "wrong-secret-pw3"}
	authSvc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("password") == "very-secret-pw2" {
			fmt.Fprint(w, `{"result":"allow"}`)
			return
		}
		fmt.Fprint(w, `{"result":"ignore"}`)
	}))
	defer authSvc.Close()
	h := testhandler.Start(t)
	n := startNode(t, `
log: {level: debug}
api: {bind: "127.0.0.1:0"}
broker: {embedded: {listeners: {tcp: {bind: "127.0.0.1:0"}}}}
gateway:
  exproto:
    server: {bind: "127.0.0.1:0", auth_token: very-secret-token}
    handler: {address: "http://`+h.Addr+`"}
    authentication:
      - {mechanism: jwt, algorithm: hmac-based, secret: very-secret-jwt}
      - {mechanism: password_based, backend: http, method: get, url: "`+authSvc.URL+`", body: {password: "${password}", clientid: "${clientid}"}}
      - {mechanism: password_based, backend: built_in_database, users: [{user_id: u1, password: "sha256:salt:362767c0a44c896d968ad6acec8e03e5ce2eb97841be85082aca504b0d8866bd"}]}
    listeners: {tcp: {default: {bind: "127.0.0.1:0"}}}
`)
	h.AttachToken(t, n.addr(t, "adapter"), "very-secret-token")
	// The API key the first start created: its secret must not be logged
	// either, whatever the API is asked.
	keyFile := regexp.MustCompile(`file=(\S+)`).FindStringSubmatch(n.waitLine(t, "no API key existed"))[1]
	cred, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	key, apiSecret, _ := strings.Cut(strings.TrimSpace(string(cred)), ":")
	secrets = append(secrets, apiSecret)
	apiURL := "http://" + regexp.MustCompile(`api=(\S+)`).FindStringSubmatch(n.waitLine(t, "management API"))[1]
	var logs strings.Builder
	for _, n := range n.early {
		logs.WriteString(n + "\n")
	}
	done := make(chan struct{})
	go func() {
		for l := range n.lines {
			logs.WriteString(l + "\n")
		}
		close(done)
	}()
	for _, c := range []struct {
		user, pass string
		code       int
	}{{"u1", "very-secret-pw1", 0}, {"u2", "very-secret-pw2", 0}, {"u1", "wrong-secret-pw3", 1}} {
		d := dialDevice(t, n.addr(t, "tcp:default"))
		b, _ := json.Marshal(testhandler.Frame{Type: testhandler.Connect, ClientInfo: &testhandler.ClientInfo{ClientID: "c-" + c.user, Username: c.user}, Password: c.pass})
		_, _ = d.c.Write(b)
		var ack testhandler.Frame
		_ = d.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if err := d.dec.Decode(&ack); err != nil || *ack.Code != c.code {
			t.Fatalf("%s: %+v %v", c.user, ack, err)
		}
	}
	for _, pw := range []string{apiSecret, "wrong-" + apiSecret} {
		req, _ := http.NewRequest("POST", apiURL+"/api/v5/gateways/exproto/clients/c-u1/subscriptions", strings.NewReader(`{"topic":"x","qos":0}`))
		req.SetBasicAuth(key, pw)
		req.Header.Set("Content-Type", "application/json")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	// A dashboard login: neither its session id nor its CSRF token is logged.
	req, _ := http.NewRequest("POST", apiURL+"/api/v5/login", strings.NewReader(`{"username":"`+key+`","password":"`+apiSecret+`"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var login struct {
		CSRF string `json:"csrf_token"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&login)
	resp.Body.Close()
	if resp.StatusCode != 200 || login.CSRF == "" || len(resp.Cookies()) == 0 {
		t.Fatalf("dashboard login: %d", resp.StatusCode)
	}
	secrets = append(secrets, login.CSRF, resp.Cookies()[0].Value)
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	<-done
	out := logs.String()
	if !strings.Contains(out, "operator subscribed a device") {
		t.Fatalf("the operator subscription was not logged:\n%s", out)
	}
	if !strings.Contains(out, "level=DEBUG") {
		t.Fatalf("no debug log captured:\n%s", out)
	}
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("the log contains the secret %q:\n%s", s, out)
		}
	}
}

func TestUsersCommand(t *testing.T) {
	for _, ext := range []string{".yaml", ".csv"} {
		file := filepath.Join(t.TempDir(), "users"+ext)
		if out, _, err := run(t, "users", "add", "alice", "--password", "pw-a", "-f", file); err != nil || !strings.Contains(out, "added alice") {
			t.Fatalf("add: %q %v", out, err)
		}
		cmd := exec.Command(binary, "users", "add", "bob", "--superuser", "-f", file)
		cmd.Stdin = strings.NewReader("pw-b\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("add from stdin: %s %v", out, err)
		}
		out, _, err := run(t, "users", "list", "-f", file)
		if err != nil || out != "alice\nbob\tsuperuser\n" {
			t.Fatalf("list: %q %v", out, err)
		}
		b, _ := os.ReadFile(file)
		if strings.Contains(string(b), "pw-a") || !strings.Contains(string(b), "$2a$") {
			t.Fatalf("passwords not hashed:\n%s", b)
		}
		if _, _, err := run(t, "users", "delete", "alice", "-f", file); err != nil {
			t.Fatal(err)
		}
		if out, _, _ := run(t, "users", "list", "-f", file); out != "bob\tsuperuser\n" {
			t.Fatalf("after delete: %q", out)
		}
		if _, stderr, err := run(t, "users", "delete", "nobody", "-f", file); err == nil || !strings.Contains(stderr, "no user") {
			t.Fatalf("deleting a missing user: %v %s", err, stderr)
		}
	}
}

func TestConfigImport(t *testing.T) {
	out := filepath.Join(t.TempDir(), "exgate.yaml")
	cmd := exec.Command(binary, "config", "import", "../../internal/emqxconf/testdata/emqx_exproto.conf", "-o", out)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("import: %v\n%s", err, stderr.String())
	}
	for _, want := range []string{"read as emqx4", "not mapped: exproto.listener.protoname.acceptors = 8", "wrote " + out} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("import report lacks %q:\n%s", want, stderr.String())
		}
	}
	if o, _, err := run(t, "config", "check", "-c", out); err != nil || !strings.Contains(o, "ok") {
		t.Fatalf("config check of the import: %q %v", o, err)
	}
}

// waitLine waits for a log line containing want and returns it.
func (n *node) waitLine(t *testing.T, want string) string {
	t.Helper()
	for i, l := range n.early {
		if strings.Contains(l, want) {
			n.early = n.early[i+1:]
			return l
		}
	}
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-n.lines:
			if !ok {
				t.Fatalf("exgate exited before logging %q", want)
			}
			if strings.Contains(l, want) {
				return l
			}
		case <-timeout:
			t.Fatalf("no log line with %q", want)
		}
	}
}

func TestOperatorCLI(t *testing.T) {
	h := testhandler.Start(t)
	n := startNode(t, `
api: {bind: "127.0.0.1:0"}
broker: {embedded: {listeners: {tcp: {bind: "127.0.0.1:0"}}}}
gateway:
  exproto:
    server: {bind: "127.0.0.1:0"}
    handler: {address: "http://`+h.Addr+`"}
    listeners: {tcp: {default: {bind: "127.0.0.1:0"}}}
`)
	h.Attach(t, n.addr(t, "adapter"))
	m := regexp.MustCompile(`api=(\S+)`).FindStringSubmatch(n.waitLine(t, "management API"))
	apiURL := "http://" + m[1]
	d := dialDevice(t, n.addr(t, "tcp:default"))
	d.do(testhandler.Frame{Type: testhandler.Connect, ClientInfo: &testhandler.ClientInfo{ClientID: "cli-dev", Username: "ops"}}, testhandler.Connack)
	d.do(testhandler.Frame{Type: testhandler.Subscribe, Topic: "t/1", QoS: 1}, testhandler.Suback)

	out, _, err := run(t, "clients", "list", "--api", apiURL, "-c", n.path)
	if err != nil || !strings.Contains(out, "CLIENTID") || !strings.Contains(out, "cli-dev") || !strings.Contains(out, "connected") {
		t.Fatalf("clients list: %v\n%s", err, out)
	}
	out, _, err = run(t, "clients", "list", "--api", apiURL, "-c", n.path, "-o", "json", "-f", "clientid=cli-dev")
	var list struct{ Data []map[string]any }
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list.Data) != 1 || list.Data[0]["username"] != "ops" {
		t.Fatalf("clients list -o json: %v\n%s", err, out)
	}
	if out, _, err = run(t, "subscriptions", "list", "cli-dev", "--api", apiURL, "-c", n.path); err != nil || !strings.Contains(out, "t/1") {
		t.Fatalf("subscriptions list: %v\n%s", err, out)
	}
	if out, _, err = run(t, "status", "--api", apiURL, "-c", n.path); err != nil || !strings.Contains(out, "exproto:tcp:default") {
		t.Fatalf("status: %v\n%s", err, out)
	}
	if out, _, err = run(t, "metrics", "--api", apiURL, "-c", n.path); err != nil || !strings.Contains(out, "exgate_client_connected_total 1") {
		t.Fatalf("metrics: %v\n%s", err, out)
	}
	// The API needs the key the first start created (and logged where).
	keyFile := regexp.MustCompile(`file=(\S+)`).FindStringSubmatch(n.waitLine(t, "no API key existed"))[1]
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("bootstrap key file %s: %v %v", keyFile, fi, err)
	}
	cred, _ := os.ReadFile(keyFile)
	key, secret, _ := strings.Cut(strings.TrimSpace(string(cred)), ":")
	if resp, err := http.Get(apiURL + "/api/v5/gateways/exproto"); err != nil || resp.StatusCode != 401 {
		t.Fatalf("the API answered without credentials: %v %v", resp, err)
	}
	if _, stderr, err := run(t, "status", "--api", apiURL, "--api-key", key+":wrong"); err == nil || !strings.Contains(stderr, "BAD_USERNAME_OR_PWD") {
		t.Fatalf("status with a wrong secret: %v %s", err, stderr)
	}
	// The log level changes at runtime.
	req, _ := http.NewRequest("PUT", apiURL+"/api/v5/log", strings.NewReader(`{"level":"debug"}`))
	req.SetBasicAuth(key, secret)
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("set log level: %v %v", resp, err)
	}
	req, _ = http.NewRequest("GET", apiURL+"/api/v5/log", nil)
	req.SetBasicAuth(key, secret)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("get log level: %v %v", resp, err)
	} else if b, _ := io.ReadAll(resp.Body); !strings.Contains(string(b), `"level":"debug"`) {
		t.Fatalf("log level after setting debug: %s", b)
	}
	req, _ = http.NewRequest("PUT", apiURL+"/api/v5/log", strings.NewReader(`{"level":"verbose"}`))
	req.SetBasicAuth(key, secret)
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 400 {
		t.Fatalf("set log level verbose: %v %v, want 400", resp, err)
	} else if b, _ := io.ReadAll(resp.Body); !strings.Contains(string(b), `level \"verbose\" is not one of debug, info, warn, error`) {
		t.Fatalf("set log level verbose: %s", b)
	}
	if out, _, err = run(t, "banned", "add", "clientid", "spammer", "--for", "1h", "--reason", "test", "--api", apiURL, "-c", n.path); err != nil || !strings.Contains(out, "spammer") {
		t.Fatalf("banned add: %v\n%s", err, out)
	}
	if out, _, err = run(t, "banned", "list", "--api", apiURL, "-c", n.path); err != nil || !strings.Contains(out, "spammer") || !strings.Contains(out, "test") {
		t.Fatalf("banned list: %v\n%s", err, out)
	}
	if out, _, err = run(t, "banned", "delete", "clientid", "spammer", "--api", apiURL, "-c", n.path); err != nil || !strings.Contains(out, "lifted") {
		t.Fatalf("banned delete: %v\n%s", err, out)
	}
	if out, _, err = run(t, "clients", "kick", "cli-dev", "--api", apiURL, "-c", n.path); err != nil || !strings.Contains(out, "kicked cli-dev") {
		t.Fatalf("kick: %v\n%s", err, out)
	}
	if l := n.waitLine(t, `msg="client disconnected"`); !strings.Contains(l, "clientid=cli-dev") {
		t.Fatalf("the kicked device's close: %s", l)
	}
	// Debug lines now appear: a device that leaves before authenticating
	// is logged at debug only.
	quiet := dialDevice(t, n.addr(t, "tcp:default"))
	port := quiet.c.LocalAddr().String()
	quiet.c.Close()
	if l := n.waitLine(t, "peer="+port); !strings.Contains(l, `level=DEBUG msg="device closed before it authenticated"`) {
		t.Fatalf("a device closed before authenticating, at debug level: %s", l)
	}
	if _, stderr, err := run(t, "clients", "show", "nobody", "--api", apiURL, "-c", n.path); err == nil || !strings.Contains(stderr, "CLIENTID_NOT_FOUND") {
		t.Fatalf("show a missing client: %v %s", err, stderr)
	}
}

// TestSIGHUPReload changes the configuration file of a running exgate and
// sends SIGHUP: a listener is added, the connected device stays, and a
// broken file is refused with the old configuration kept.
func TestSIGHUPReload(t *testing.T) {
	h := testhandler.Start(t)
	adapter, devices := freePort(t), freePort(t)
	body := func(extra string) string {
		return `
api: {bind: "127.0.0.1:0"}
broker: {embedded: {listeners: {tcp: {bind: "127.0.0.1:0"}}}}
gateway:
  exproto:
    server: {bind: "` + adapter + `"}
    handler: {address: "http://` + h.Addr + `"}
    listeners:
      tcp:
        default: {bind: "` + devices + `"}
` + extra
	}
	path := writeFile(t, body(""))
	n := startNodeFile(t, path)
	h.Attach(t, adapter)
	d := dialDevice(t, devices)
	d.do(testhandler.Frame{Type: testhandler.Connect, ClientInfo: &testhandler.ClientInfo{ClientID: "hup"}}, testhandler.Connack)

	extra := freePort(t)
	if err := os.WriteFile(path, []byte(body("        extra: {bind: \""+extra+"\"}\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = n.cmd.Process.Signal(syscall.SIGHUP)
	n.waitLine(t, "configuration reloaded")
	c, err := net.Dial("tcp", extra)
	if err != nil {
		t.Fatalf("the added listener: %v", err)
	}
	c.Close()
	d.do(testhandler.Frame{Type: testhandler.Publish, Topic: "t", Payload: "p"}, testhandler.Puback) // still connected

	if err := os.WriteFile(path, []byte("gateway: {exproto: {idle_timeout: never}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = n.cmd.Process.Signal(syscall.SIGHUP)
	if l := n.waitLine(t, "reload refused"); !strings.Contains(l, "idle_timeout") {
		t.Fatalf("refusal does not say why: %s", l)
	}
	d.do(testhandler.Frame{Type: testhandler.Publish, Topic: "t", Payload: "p"}, testhandler.Puback)

	// A file emptied by mistake, or one that turns every listener off,
	// would put the running gateway back to defaults or disconnect every
	// device: refused, the running configuration kept.
	for _, c := range []struct{ body, why string }{
		{"", "sets nothing"},
		{"# only a comment\n", "sets nothing"},
		{strings.Replace(body(""), "default: {bind:", "default: {enable: false, bind:", 1), "no enabled listener"},
	} {
		if err := os.WriteFile(path, []byte(c.body), 0o600); err != nil {
			t.Fatal(err)
		}
		_ = n.cmd.Process.Signal(syscall.SIGHUP)
		if l := n.waitLine(t, "reload refused"); !strings.Contains(l, c.why) {
			t.Fatalf("refusal of %q does not say %q: %s", c.body, c.why, l)
		}
		d.do(testhandler.Frame{Type: testhandler.Publish, Topic: "t", Payload: "p"}, testhandler.Puback)
	}
}

// TestAPIKeysCommand: keys are added (the secret printed once), listed
// without secrets, and deleted, in the file beside the configuration.
func TestAPIKeysCommand(t *testing.T) {
	cfg := writeFile(t, "api: {bind: \"127.0.0.1:0\"}\n")
	out, _, err := run(t, "api-keys", "add", "ci", "-c", cfg)
	key, secret, ok := strings.Cut(strings.TrimSpace(out), ":")
	if err != nil || !ok || len(secret) < 40 {
		t.Fatalf("add: %q %v", out, err)
	}
	stored, err := os.ReadFile(filepath.Join(filepath.Dir(cfg), "api_keys"))
	if err != nil || !strings.Contains(string(stored), key) || strings.Contains(string(stored), secret) {
		t.Fatalf("keys file (beside the config, hashed): %v\n%s", err, stored)
	}
	if out, _, err := run(t, "api-keys", "list", "-c", cfg); err != nil || !strings.Contains(out, "ci") || strings.Contains(out, secret) {
		t.Fatalf("list: %q %v", out, err)
	}
	if _, stderr, err := run(t, "api-keys", "add", "ci", "-c", cfg); err == nil || !strings.Contains(stderr, "exists") {
		t.Fatalf("a second key named ci: %v %s", err, stderr)
	}
	if out, _, err := run(t, "api-keys", "delete", "ci", "-c", cfg); err != nil || !strings.Contains(out, "deleted") {
		t.Fatalf("delete: %q %v", out, err)
	}
	if out, _, _ := run(t, "api-keys", "list", "-c", cfg); strings.Contains(out, key) {
		t.Fatalf("deleted key still listed: %s", out)
	}
}

// config check loads the certificate and key files a configuration names,
// as the start would: a missing file or one that holds no certificate is
// refused with the key that names it; good files pass.
func TestConfigCheckLoadsCertificates(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	certs := testcert.New(t)
	ssl := func(cert, key string) string {
		return fmt.Sprintf("gateway:\n  exproto:\n    listeners:\n      ssl:\n        secure:\n          bind: \"127.0.0.1:0\"\n          ssl_options: {certfile: %q, keyfile: %q}\n", cert, key)
	}
	for _, c := range []struct{ name, body, want string }{
		{"missing listener certificate", ssl(filepath.Join(dir, "missing.pem"), certs.ServerKey), "gateway.exproto.listeners.ssl.secure"},
		{"garbage listener certificate", ssl(garbage, garbage), "gateway.exproto.listeners.ssl.secure"},
		{"missing adapter certificate", fmt.Sprintf("gateway:\n  exproto:\n    server: {bind: \"127.0.0.1:0\", ssl_options: {certfile: %q, keyfile: %q}}\n", filepath.Join(dir, "nope.pem"), certs.ServerKey), "gateway.exproto.server"},
		{"missing handler CA", fmt.Sprintf("gateway:\n  exproto:\n    handler: {address: \"https://127.0.0.1:9001\", ssl_options: {cacertfile: %q}}\n", filepath.Join(dir, "ca.pem")), "gateway.exproto.handler.ssl_options"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, stderr, err := run(t, "config", "check", "-c", writeFile(t, c.body))
			if err == nil {
				t.Fatal("config check accepted it")
			}
			if !strings.Contains(stderr, c.want) {
				t.Fatalf("error %q does not name %q", stderr, c.want)
			}
		})
	}
	if out, stderr, err := run(t, "config", "check", "-c", writeFile(t, ssl(certs.ServerCert, certs.ServerKey))); err != nil || !strings.Contains(out, "ok") {
		t.Fatalf("good certificates: %v %q %q", err, out, stderr)
	}
}

// config import sums up the settings outside gateway.exproto in one line
// (a real emqx.conf has dozens); -v lists them.
func TestConfigImportSummarisesTheRest(t *testing.T) {
	path := writeFile(t, `node { name = emqx@127.0.0.1, cookie = c00kie }
cluster.discovery_strategy = manual
listeners.tcp.default.bind = "0.0.0.0:1883"
gateway.exproto {
  server.bind = "127.0.0.1:9100"
  handler.address = "http://127.0.0.1:9001"
  listeners.tcp.default.bind = "0.0.0.0:7993"
}
`)
	_, stderr, err := run(t, "config", "import", path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, "4 settings outside gateway.exproto") || strings.Contains(stderr, "node.name") {
		t.Fatalf("want one summary line for the 4 settings elsewhere:\n%s", stderr)
	}
	_, stderr, err = run(t, "config", "import", "-v", path)
	if err != nil || !strings.Contains(stderr, "node.name = emqx@127.0.0.1") || strings.Contains(stderr, "c00kie") {
		t.Fatalf("-v lists them (the cookie redacted): %v\n%s", err, stderr)
	}
}

// node.gc_percent and node.memory_limit set the Go runtime's GOGC and
// GOMEMLIMIT; the environment's own variables win, with a warning.
func TestMemorySettings(t *testing.T) {
	body := `
log: {level: info}
node: {gc_percent: 400, memory_limit: 512MB}
api: {enable: false}
broker: {embedded: {listeners: {tcp: {bind: "127.0.0.1:0"}}}}
gateway: {exproto: {server: {bind: "127.0.0.1:0"}, listeners: {tcp: {default: {bind: "127.0.0.1:0"}}}}}
`
	n := startNode(t, body)
	early := strings.Join(n.early, "\n")
	if !strings.Contains(early, "gc_percent=400") || !strings.Contains(early, "memory_limit_bytes=536870912") {
		t.Fatalf("memory settings not applied:\n%s", early)
	}
	t.Setenv("GOGC", "50")
	n = startNode(t, body)
	early = strings.Join(n.early, "\n")
	if !strings.Contains(early, "GOGC is set in the environment") || strings.Contains(early, "gc_percent=400 memory") {
		t.Fatalf("GOGC from the environment did not win:\n%s", early)
	}
}

// Changes made through the API outlive a restart and a reload: they are
// kept in api_changes.yaml beside the API keys, put over the configuration
// file at every start (each one logged), and deleting that file (then
// reloading) goes back to the file alone.
func TestAPIChangesSurviveRestart(t *testing.T) {
	h := testhandler.Start(t)
	adapter, extra := freePort(t), freePort(t)
	path := writeFile(t, `
api: {bind: "127.0.0.1:0"}
broker: {embedded: {listeners: {tcp: {bind: "127.0.0.1:0"}}}}
gateway:
  exproto:
    server: {bind: "`+adapter+`"}
    handler: {address: "http://`+h.Addr+`"}
    listeners: {tcp: {default: {bind: "127.0.0.1:0"}}}
`)
	n := startNodeFile(t, path)
	apiURL := "http://" + regexp.MustCompile(`api=(\S+)`).FindStringSubmatch(n.waitLine(t, "management API"))[1]
	cred, err := os.ReadFile(filepath.Join(filepath.Dir(path), "api_keys.bootstrap"))
	if err != nil {
		t.Fatal(err)
	}
	key, secret, _ := strings.Cut(strings.TrimSpace(string(cred)), ":")
	call := func(method, p, body string) int {
		t.Helper()
		req, _ := http.NewRequest(method, apiURL+"/api/v5/gateways/exproto"+p, strings.NewReader(body))
		req.SetBasicAuth(key, secret)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := call("POST", "/listeners", `{"type": "tcp", "name": "extra", "bind": "`+extra+`"}`); code != 201 {
		t.Fatalf("POST listener: %d", code)
	}
	if code := call("DELETE", "/listeners/exproto:tcp:default", ""); code != 204 {
		t.Fatalf("DELETE listener: %d", code)
	}
	if fi, err := os.Stat(filepath.Join(filepath.Dir(path), "api_changes.yaml")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("api_changes.yaml: %v %v", fi, err)
	}
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	n.waitLine(t, "stopped")

	n = startNodeFile(t, path)
	apiURL = "http://" + regexp.MustCompile(`api=(\S+)`).FindStringSubmatch(n.waitLine(t, "management API"))[1]
	n.waitLine(t, "listener tcp:default was deleted through the API")
	n.waitLine(t, "listener tcp:extra was created through the API")
	if strings.Contains(n.start, "tcp:default=") || !strings.Contains(n.start, "tcp:extra="+extra) {
		t.Fatalf("after a restart the listeners are not the API's: %s", n.start)
	}
	_ = n.cmd.Process.Signal(syscall.SIGHUP)
	n.waitLine(t, "configuration reloaded")
	if c, err := net.Dial("tcp", extra); err != nil {
		t.Fatalf("after a reload the API's listener is gone: %v", err)
	} else {
		c.Close()
	}
	if err := os.Remove(filepath.Join(filepath.Dir(path), "api_changes.yaml")); err != nil {
		t.Fatal(err)
	}
	// This time through the API: a PUT without a body re-reads the file.
	if code := call("PUT", "", ""); code != 200 {
		t.Fatalf("PUT reload: %d", code)
	}
	n.waitLine(t, "configuration reloaded")
	if c, err := net.Dial("tcp", extra); err == nil {
		c.Close()
		t.Fatal("without the changes file the API's listener still accepts")
	}
	// A file the gateway cannot take: 400, the running configuration kept.
	if err := os.WriteFile(path, []byte("gateway: {exproto: {idle_timeout: never}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code := call("PUT", "", ""); code != 400 {
		t.Fatalf("PUT reload of a broken file: %d, want 400", code)
	}
	n.waitLine(t, "reload refused")
	if code := call("GET", "", ""); code != 200 {
		t.Fatalf("the gateway after a refused reload: %d", code)
	}
}

// EXGATE_NODE_NAME names the node (the pods of a StatefulSet share one
// configuration file), on the start line and in a reload alike.
func TestNodeNameFromEnvironment(t *testing.T) {
	path := writeFile(t, `
node: {name: from-file@test}
api: {bind: "127.0.0.1:0"}
broker: {embedded: {listeners: {tcp: {bind: "127.0.0.1:0"}}}}
gateway: {exproto: {server: {bind: "127.0.0.1:0"}, listeners: {tcp: {default: {bind: "127.0.0.1:0"}}}}}
`)
	n := startNodeFile(t, path, "EXGATE_NODE_NAME=exgate-3@pods")
	if !strings.Contains(n.start, "node=exgate-3@pods") {
		t.Fatalf("start line: %s", n.start)
	}
	_ = n.cmd.Process.Signal(syscall.SIGHUP)
	if l := n.waitLine(t, "configuration reloaded"); strings.Contains(l, "node") {
		t.Fatalf("a reload took the file's node name for a change: %s", l)
	}
}

// An idle process hands the heap's free memory back to the OS; a busy one
// does not (its activity keeps changing).
func TestReleaseWhenIdle(t *testing.T) {
	func() {
		garbage := make([][]byte, 64)
		for i := range garbage {
			garbage[i] = make([]byte, 1<<20)
		}
		runtime.KeepAlive(garbage)
	}()
	runtime.GC()
	if spareHeap() < 16<<20 {
		t.Skip("the runtime gave the garbage back by itself: nothing to test")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var busy atomic.Int64
	var releases atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		releaseWhenIdle(ctx, 50*time.Millisecond, 5*time.Millisecond, func() int64 { return busy.Add(1) }, func(uint64) { releases.Add(1) })
	}()
	time.Sleep(300 * time.Millisecond)
	if n := releases.Load(); n != 0 {
		t.Fatalf("released %d times while busy", n)
	}
	cancel()
	<-done

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go releaseWhenIdle(ctx, 50*time.Millisecond, 5*time.Millisecond, func() int64 { return 0 }, func(uint64) { releases.Add(1) })
	deadline := time.Now().Add(5 * time.Second)
	for releases.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("an idle process did not release its free heap")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if spare := spareHeap(); spare >= 16<<20 {
		t.Fatalf("after the release %d bytes of spare heap are still held", spare)
	}
}

// The heap floor (node.gc_min_heap) spares a small live heap most of its
// collections, and stop gives the configured GOGC back.
func TestHeapFloor(t *testing.T) {
	gcs := func() uint32 {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.NumGC
	}
	// 256 MiB of short-lived garbage over a live heap of a few MiB: Go's
	// default collects it every few MiB.
	churn := func() uint32 {
		runtime.GC()
		before := gcs()
		var keep []byte
		for range 256 * 16 {
			keep = make([]byte, 64<<10)
		}
		runtime.KeepAlive(keep)
		return gcs() - before
	}
	plain := churn()
	stop := startHeapFloor(128<<20, 100)
	runtime.GC() // the floor applies from the first collection on
	runtime.GC()
	floored := churn()
	stop()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC after stop = %d, want the configured 100 back", got)
	}
	t.Logf("collections for 256 MiB of garbage: %d with Go's default, %d with a 128 MiB floor", plain, floored)
	if floored < 1 || floored > 4 || plain < 2*floored+4 {
		t.Fatalf("collections with a 128 MiB floor = %d, without = %d: the floor did not hold", floored, plain)
	}
	if p := floorPercent(200<<20, 400<<20, 1<<30, 100, 32<<20, 100); p != 100 {
		t.Errorf("a heap above the floor: GOGC %d, want the configured 100", p)
	}
	// 6 MiB live, 2 MiB of roots: GOGC 100 made a goal of 14 MiB.
	if p := floorPercent(6<<20, 14<<20, 100<<20, 100, 32<<20, 100); p != 325 {
		t.Errorf("6 MiB live and 2 MiB of roots under a 32 MiB floor, 100 MiB/s allocated: GOGC %d, want 325", p)
	}
	// The same heap allocating 4 MiB a second: GOGC 100 collects every two
	// seconds, and a floor would only hold memory.
	if p := floorPercent(6<<20, 14<<20, 4<<20, 100, 32<<20, 100); p != 100 {
		t.Errorf("a quiet process under a 32 MiB floor: GOGC %d, want the configured 100", p)
	}
}

// TestBenchEchoServer: `exgate bench echo-server`, the echo baseline run as
// a process of its own, says where it listens, echoes what it is sent, is
// what `exgate bench echo` measures, and stops on SIGTERM.
func TestBenchEchoServer(t *testing.T) {
	cmd, addr := startEchoServer(t)
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping" {
		t.Fatalf("echoed %q (%v)", got, err)
	}
	stdout, stderr, err := run(t, "bench", "echo", "--addr", addr, "--devices", "2", "--duration", "500ms", "--json")
	var r struct{ Ops int }
	if err != nil || json.Unmarshal([]byte(stdout), &r) != nil || r.Ops == 0 {
		t.Fatalf("bench echo against it: %v, %d ops\n%s\n%s", err, r.Ops, stdout, stderr)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exited with %v after SIGTERM", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("did not stop after SIGTERM")
	}
}

// startEchoServer starts `exgate bench echo-server` on a free loopback
// port and returns it with the address it says it listens on.
func startEchoServer(t *testing.T) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(binary, "bench", "echo-server", "--listen", "127.0.0.1:0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "echoing on ")
	if err != nil || !ok {
		t.Fatalf("first line %q (%v)", line, err)
	}
	return cmd, addr
}

// TestBenchEchoPaired: `exgate bench echo --baseline` runs interleaved pairs
// and reports the median of their ratios against the baseline (here the
// same server, so near 1), every pair's ratio in its note, and as text
// calls its rate a median; a paced rate, reading a process's CPU across
// both sides' runs (echo or fanout), or --pairs without a baseline, is
// refused with why.
func TestBenchEchoPaired(t *testing.T) {
	_, addr := startEchoServer(t)
	stdout, stderr, err := run(t, "bench", "echo", "--addr", addr, "--baseline", addr, "--pairs", "2", "--devices", "2", "--duration", "300ms", "--json")
	var r struct {
		Scenario, Baseline, Note string
		Ratio, Rate              float64
	}
	if err != nil || json.Unmarshal([]byte(stdout), &r) != nil {
		t.Fatalf("%v\n%s\n%s", err, stdout, stderr)
	}
	if r.Scenario != "echo, 2 pairs" || r.Baseline != addr || r.Rate <= 0 || r.Ratio < 0.3 || r.Ratio > 3 {
		t.Errorf("scenario %q, baseline %q, rate %.0f, ratio %.2f; want 2 pairs against %s, a ratio near 1", r.Scenario, r.Baseline, r.Rate, r.Ratio, addr)
	}
	if _, list, _ := strings.Cut(r.Note, "ratios: "); strings.Count(list, ", ") != 1 {
		t.Errorf("note %q: want both pairs' ratios", r.Note)
	}
	// As text, the rate is said to be a median, apart from the last run's ops.
	if stdout, stderr, err := run(t, "bench", "echo", "--addr", addr, "--baseline", addr, "--pairs", "1", "--devices", "1", "--duration", "200ms"); err != nil || !strings.Contains(stdout, "echo, 1 pairs: 1 devices, median ") {
		t.Errorf("text report: %v\n%s\n%s", err, stdout, stderr)
	}
	// A paired fan-out reads no process's CPU either.
	if _, stderr, err := run(t, "bench", "fanout", "--pairs", "2", "--gateway-pid", fmt.Sprint(os.Getpid())); err == nil || !strings.Contains(stderr, "--pairs runs 2 × --pairs loads") {
		t.Errorf("fanout --pairs --gateway-pid: err %v, stderr %q", err, stderr)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--baseline", addr, "--rate", "100"}, "paced rate"},
		{[]string{"--baseline", addr, "--gateway-pid", fmt.Sprint(os.Getpid())}, "--gateway-pid"},
		{[]string{"--pairs", "3"}, "--pairs needs --baseline"},
	} {
		args := append([]string{"bench", "echo", "--addr", addr, "--duration", "100ms"}, c.args...)
		_, stderr, err := run(t, args...)
		if err == nil || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: err %v, stderr %q; want a refusal naming %q", c.args, err, stderr, c.want)
		}
	}
}

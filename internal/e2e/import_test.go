package e2e

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fmt"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/emqxconf"
	"github.com/exgate/exgate/internal/testhandler"
)

// imported converts an EMQX sample (with placeholders replaced), checks the
// YAML exgate would write as `exgate config check` does, and returns it.
func imported(t *testing.T, sample string, replace map[string]string) (*config.Config, *emqxconf.Result) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "emqxconf", "testdata", sample))
	if err != nil {
		t.Fatal(err)
	}
	body := string(b)
	for k, v := range replace {
		body = strings.ReplaceAll(body, k, v)
	}
	dir := t.TempDir()
	_ = os.MkdirAll(filepath.Join(dir, "include"), 0o755)
	if inc, err := os.ReadFile(filepath.Join("..", "emqxconf", "testdata", "include", "extra.conf")); err == nil {
		_ = os.WriteFile(filepath.Join(dir, "include", "extra.conf"), inc, 0o600)
	}
	path := filepath.Join(dir, sample)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := emqxconf.Import(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(res.Config.YAML())
	if err != nil {
		t.Fatalf("imported config does not pass config check: %v\n%s", err, res.Config.YAML())
	}
	return cfg, res
}

func hasNote(notes []emqxconf.Note, key string) bool {
	for _, n := range notes {
		if n.Key == key {
			return true
		}
	}
	return false
}

func TestImportEMQX5(t *testing.T) {
	t.Setenv("TCP_PORT", "7993")
	cfg, res := imported(t, "emqx5.conf", nil)
	x := cfg.Gateway.ExProto
	tcp := x.Listeners.TCP["default"]
	if res.Format != "emqx5" || x.Mountpoint != "ct/" || x.IdleTimeout != 45*time.Second || tcp.Bind != "0.0.0.0:7993" ||
		tcp.MaxConnections != 1024000 || tcp.ConnRate() != 1000 || tcp.TCPOptions.Backlog != 1024 || tcp.TCPOptions.Keepalive != "240,30,5" || x.Listeners.UDP["default"].UDPOptions.Recbuf != 64<<10 ||
		x.Handler.SSLOptions != nil {
		t.Fatalf("mapped wrongly:\n%s", cfg.YAML())
	}
	for _, k := range []string{"gateway.exproto.enable_stats", "gateway.exproto.listeners.tcp.default.acceptors", "node.cookie", "dashboard.listeners.http.bind"} {
		if !hasNote(res.Unmapped, k) {
			t.Errorf("%s not reported as unmapped: %v", k, res.Unmapped)
		}
	}
	for _, n := range res.Unmapped {
		if strings.Contains(n.String(), "emqxsecretcookie") {
			t.Errorf("the report shows a secret: %s", n)
		}
	}
	// It starts and behaves as EMQX did: the mountpoint, both listeners.
	e := startWith(t, options{config: cfg}, nil)
	d := e.dial()
	d.connect("imp5", 0)
	m := e.mqtt("app")
	m.sub("ct/#", 0)
	d.send(Frame{Type: testhandler.Publish, Topic: "t", Payload: "p"})
	d.expect(testhandler.Puback, 0)
	m.expect("ct/t", "p")
	u, err := net.Dial("udp", e.g.ListenerAddr("udp:default").String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	_, _ = u.Write([]byte(`{"type":42}`))
	e.h.NthConn(t, 1, 5*time.Second)
}

func TestImportEMQX5WithHTTPAuth(t *testing.T) {
	svc := startAuthService(t, func(w http.ResponseWriter, b map[string]string) {
		if b["password"] == "good" {
			fmt.Fprint(w, `{"result":"allow"}`)
		} else {
			fmt.Fprint(w, `{"result":"deny"}`)
		}
	})
	cfg, _ := imported(t, "emqx5-auth.conf", map[string]string{"http://127.0.0.1:8080/auth": svc.URL + "/auth"})
	a := cfg.Gateway.ExProto.Authentication
	if len(a) != 1 || a[0].Backend != "http" || a[0].Body["password"] != "${password}" || a[0].Headers["content-type"] != "application/json" || a[0].PoolSize != 8 {
		t.Fatalf("authenticator %+v", a)
	}
	e := startWith(t, options{config: cfg}, nil)
	if rc := login(e.dial(), "a1", "u", "good"); rc != 0 {
		t.Fatal(rc)
	}
	if rc := login(e.dial(), "a2", "u", "bad"); rc != int(pb.ResultCode_PERMISSION_DENY) {
		t.Fatal(rc)
	}
}

func TestImportEMQX5SSL(t *testing.T) {
	cfg, res := imported(t, "emqx5-ssl.conf", map[string]string{"CA_FILE": sharedCerts.CAFile, "CERT_FILE": sharedCerts.ServerCert, "KEY_FILE": sharedCerts.ServerKey})
	o := cfg.Gateway.ExProto.Listeners.SSL["default"].SSLOptions
	if o.Verify != "verify_peer" || len(o.Versions) != 2 || o.Ciphers != nil {
		t.Fatalf("ssl options %+v", o)
	}
	if len(res.Changed) < 2 {
		t.Fatalf("tlsv1.1 and OpenSSL cipher names not reported: %v", res.Changed)
	}
	e := startWith(t, options{config: cfg}, nil)
	e.tr, e.certs = "ssl", sharedCerts
	c, err := e.rawDial(true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id := e.h.NthConn(t, 0, 5*time.Second)
	if cn := e.h.Events(id)[0].ConnInfo.GetPeercert().GetCn(); cn != "device-1" {
		t.Fatalf("peer cert %q", cn)
	}
}

func TestImportEMQX4(t *testing.T) {
	cfg, res := imported(t, "emqx_exproto.conf", nil)
	x := cfg.Gateway.ExProto
	l := x.Listeners.TCP["protoname"]
	if res.Format != "emqx4" || l == nil || l.Bind != "0.0.0.0:7993" || l.ConnRate() != 1000 || l.IdleTimeout != 30*time.Second ||
		len(l.AccessRules) != 1 || x.Handler.Address[0] != "http://127.0.0.1:9001" || x.Handler.ServiceName != "ConnectionHandler" || x.Server.Bind != "0.0.0.0:9100" {
		t.Fatalf("mapped wrongly:\n%s", cfg.YAML())
	}
	for _, k := range []string{"exproto.listener.protoname.acceptors", "exproto.listener.protoname.active_n", "exproto.listener.protoname.send_timeout_close"} {
		if !hasNote(res.Unmapped, k) {
			t.Errorf("%s not reported: %v", k, res.Unmapped)
		}
	}
	e := startWith(t, options{config: cfg}, nil)
	e.tr = "tcp"
	c, err := net.Dial("tcp", e.g.ListenerAddr("tcp:protoname").String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d := &device{t: t, conn: c, dec: jsonDecoder(c)}
	d.id = e.h.NthConn(t, 0, 5*time.Second)
	d.connect("imp4", 0) // through the streaming service EMQX 4 used
}

func TestImportEMQX4SSLAndHandlers(t *testing.T) {
	cfg, _ := imported(t, "emqx_exproto_ssl.conf", map[string]string{"CA_FILE": sharedCerts.CAFile, "CERT_FILE": sharedCerts.ServerCert, "KEY_FILE": sharedCerts.ServerKey})
	x := cfg.Gateway.ExProto
	s, u := x.Listeners.SSL["secure"], x.Listeners.UDP["udpgw"]
	if s == nil || u == nil || s.SSLOptions.Verify != "verify_peer" || u.UDPOptions.Recbuf != 64<<10 ||
		s.Handler == nil || u.Handler == nil || u.Handler.Address[0] != "http://127.0.0.1:9002" {
		t.Fatalf("mapped wrongly:\n%s", cfg.YAML())
	}
	e := startWith(t, options{config: cfg}, nil)
	e.tr, e.certs = "ssl", sharedCerts
	c, err := tlsDial(e.g.ListenerAddr("ssl:secure").String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e.h.NthConn(t, 0, 5*time.Second)
}

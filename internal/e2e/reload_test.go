package e2e

import (
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/testhandler"
)

// reloaded returns a copy of e's configuration changed by f, as a file
// re-read would give it.
func reloaded(t *testing.T, e *env, f func(*config.Config)) *config.Config {
	t.Helper()
	c, err := config.Parse(e.cfg.YAML())
	if err != nil {
		t.Fatal(err)
	}
	f(c)
	return c
}

func TestReloadKeepsDevices(t *testing.T) {
	e := start(t, func(c *config.Config) {
		c.Gateway.ExProto.Listeners.UDP = map[string]*config.Listener{"u": {Bind: "127.0.0.1:0"}}
	})
	// The listeners' actual ports, so that the reloaded binds are "unchanged".
	tcpAddr, udpAddr := e.addr(), e.g.ListenerAddr("udp:u").String()
	e.cfg.Gateway.ExProto.Listeners.TCP["default"].Bind = tcpAddr
	e.cfg.Gateway.ExProto.Listeners.UDP["u"].Bind = udpAddr

	d := e.dial()
	d.connect("stay", 0)
	d.subscribe("s/#", 0)
	u, err := net.Dial("udp", udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	_, _ = u.Write([]byte(`{"type":42}`))
	udpID := e.h.NthConn(t, 1, 5*time.Second)

	other := testhandler.Start(t)
	other.Attach(t, e.g.AdapterAddr().String())
	needs, err := e.g.Reload(reloaded(t, e, func(c *config.Config) {
		x := &c.Gateway.ExProto
		x.Mountpoint = "new/"
		x.Handler.Address = config.Addresses{"http://" + other.Addr}
		x.Authorization = config.Authorization{NoMatch: "allow", Rules: []config.Rule{{Permission: "deny", Action: "publish", Topics: []string{"blocked"}}}}
		x.Listeners.TCP["default"].AccessRules = []string{"allow 127.0.0.1"}
		x.Listeners.TCP["default"].MaxConnections = 50
	}))
	if err != nil || len(needs) != 0 {
		t.Fatalf("reload: %v %v", needs, err)
	}
	// Connected devices stay, with what they started with.
	m := e.mqtt("app")
	m.pub("s/x", 0, false, "still here")
	if f := d.expect(testhandler.Publish, 0); f.Payload != "still here" {
		t.Fatal(f)
	}
	if _, closed := e.h.Closed(udpID); closed {
		t.Fatal("the UDP peer was closed by a reload")
	}
	// New devices get the new settings: the new handler, mountpoint and rules.
	n := len(other.Conns())
	c, err := net.Dial("tcp", tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	nd := &device{t: t, conn: c, dec: jsonDecoder(c)}
	nd.id = other.NthConn(t, n, 5*time.Second)
	e.h, nd.t = other, t
	nd.connect("fresh", 0)
	m.sub("new/#", 0)
	nd.send(Frame{Type: testhandler.Publish, Topic: "up", Payload: "p"})
	nd.expect(testhandler.Puback, 0)
	m.expect("new/up", "p")
	nd.send(Frame{Type: testhandler.Publish, Topic: "blocked", QoS: 1, Payload: "p"})
	nd.expect(testhandler.Puback, int(pb.ResultCode_PERMISSION_DENY))
	if st := e.g.Reg.Len(); st < 3 {
		t.Fatalf("%d connections after the reload", st)
	}
}

func TestReloadRebindsOneListener(t *testing.T) {
	e := start(t, func(c *config.Config) {
		c.Gateway.ExProto.Listeners.TCP["other"] = &config.Listener{Bind: "127.0.0.1:0"}
	})
	e.cfg.Gateway.ExProto.Listeners.TCP["default"].Bind = e.addr()
	e.cfg.Gateway.ExProto.Listeners.TCP["other"].Bind = e.g.ListenerAddr("tcp:other").String()
	d := e.dial() // on default, which is rebound
	d.connect("rebound", 0)
	oldOther := e.g.ListenerAddr("tcp:other").String()
	if _, err := e.g.Reload(reloaded(t, e, func(c *config.Config) {
		c.Gateway.ExProto.Listeners.TCP["default"].Bind = "127.0.0.1:0" // a new port
	})); err != nil {
		t.Fatal(err)
	}
	if e.g.ListenerAddr("tcp:other").String() != oldOther {
		t.Fatal("the unchanged listener was rebound")
	}
	// The rebound listener's TCP device is still connected and works.
	d.send(Frame{Type: testhandler.Publish, Topic: "t", Payload: "p"})
	d.expect(testhandler.Puback, 0)
	// The new address accepts devices.
	n := len(e.h.Conns())
	c, err := net.Dial("tcp", e.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e.h.NthConn(t, n, 5*time.Second)
}

func TestReloadRefusesABadConfigWhole(t *testing.T) {
	e := start(t, nil)
	e.cfg.Gateway.ExProto.Listeners.TCP["default"].Bind = e.addr()
	before := e.addr()
	_, err := e.g.Reload(reloaded(t, e, func(c *config.Config) {
		c.Gateway.ExProto.Mountpoint = "changed/"
		c.Gateway.ExProto.Listeners.SSL = map[string]*config.Listener{"bad": {Bind: "127.0.0.1:0",
			SSLOptions: &config.TLSOptions{Certfile: "/missing.pem", Keyfile: "/missing-key.pem"}}}
	}))
	if err == nil || !strings.Contains(err.Error(), "nothing changed") || !strings.Contains(err.Error(), "/missing.pem") {
		t.Fatalf("reload of a bad config: %v", err)
	}
	if e.addr() != before || e.g.ListenerAddr("ssl:bad") != nil {
		t.Fatal("a refused reload changed the listeners")
	}
	m := e.mqtt("app")
	m.sub("#", 0)
	d := e.dial()
	d.connect("after-refusal", 0)
	d.send(Frame{Type: testhandler.Publish, Topic: "t", Payload: "p"})
	d.expect(testhandler.Puback, 0)
	m.expect("t", "p") // the old mountpoint ("") stays
	// What needs a restart is named, and kept.
	needs, err := e.g.Reload(reloaded(t, e, func(c *config.Config) { c.Node.Name = "other@node" }))
	if err != nil || len(needs) != 1 || needs[0] != "node" || e.g.Node() != "exgate@127.0.0.1" {
		t.Fatalf("needs %v, err %v, node %s", needs, err, e.g.Node())
	}
}

// A reload that changes nothing builds nothing (no handler client, chain or
// authorizer is made anew), and a refused reload closes what it built:
// neither leaves goroutines behind, however often it happens.
func TestReloadBuildsNothingNewAndLeaksNothing(t *testing.T) {
	other := testhandler.Start(t) // a second handler, for a listener of its own
	third := testhandler.Start(t) // where refused reloads point the gateway's handler
	e := start(t, func(c *config.Config) {
		c.Gateway.ExProto.Authentication = []config.Authenticator{{Mechanism: "password_based", Backend: "built_in_database",
			Users: []config.User{{UserID: "u", Password: "sha256:salt:362767c0a44c896d968ad6acec8e03e5ce2eb97841be85082aca504b0d8866bd"}}}}
		c.Gateway.ExProto.Authorization.Rules = []config.Rule{{Permission: "deny", Action: "all", Topics: []string{"deny/#"}}}
		c.Gateway.ExProto.Listeners.TCP["own"] = &config.Listener{Bind: "127.0.0.1:0",
			Handler: &config.Handler{Address: config.Addresses{"http://" + other.Addr}}}
	})
	e.cfg.Gateway.ExProto.Listeners.TCP["default"].Bind = e.addr()
	e.cfg.Gateway.ExProto.Listeners.TCP["own"].Bind = e.g.ListenerAddr("tcp:own").String()
	same := func(*config.Config) {}
	if _, err := e.g.Reload(reloaded(t, e, same)); err != nil {
		t.Fatal(err)
	}
	settle := func() int {
		time.Sleep(200 * time.Millisecond)
		return runtime.NumGoroutine()
	}
	base := settle()
	for i := 0; i < 5; i++ {
		if _, err := e.g.Reload(reloaded(t, e, same)); err != nil {
			t.Fatal(err)
		}
	}
	if n := settle(); n > base {
		t.Fatalf("goroutines %d → %d after five reloads of an unchanged configuration: something was built anew", base, n)
	}
	// Refused: a new handler address and a new chain are built, then a
	// listener cannot be made; what was built is closed.
	for i := 0; i < 5; i++ {
		_, err := e.g.Reload(reloaded(t, e, func(c *config.Config) {
			c.Gateway.ExProto.Handler.Address = config.Addresses{"http://" + third.Addr}
			c.Gateway.ExProto.Authentication[0].Users[0].Password = "sha256:salt2:362767c0a44c896d968ad6acec8e03e5ce2eb97841be85082aca504b0d8866bd"
			c.Gateway.ExProto.Listeners.SSL = map[string]*config.Listener{"bad": {Bind: "127.0.0.1:0",
				SSLOptions: &config.TLSOptions{Certfile: "/missing.pem", Keyfile: "/missing-key.pem"}}}
		}))
		if err == nil {
			t.Fatal("a reload with a missing certificate was accepted")
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for n := settle(); n > base; n = settle() {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines %d → %d after five refused reloads: what they built was not closed", base, n)
		}
	}
	e.dial() // the gateway still works with what it had
}

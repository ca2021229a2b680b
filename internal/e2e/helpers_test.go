// Package e2e tests exgate end to end: a real gateway on loopback ports, a
// real gRPC handler speaking the JSON demo protocol, real TCP devices and
// real MQTT clients.
package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/pion/dtls/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/gateway"
	"github.com/exgate/exgate/internal/testbroker"
	"github.com/exgate/exgate/internal/testcert"
	"github.com/exgate/exgate/internal/testhandler"
	"github.com/exgate/exgate/sdk"
)

type Frame = testhandler.Frame

// env is one gateway with its handler.
type env struct {
	t     testing.TB
	g     *gateway.Gateway
	h     *testhandler.Handler
	cfg   *config.Config
	tr    string // transport of the "default" listener: tcp, ssl, udp, dtls
	certs *testcert.Set
	// handshake bounds a TLS/DTLS client handshake; tests that expect a
	// refusal shorten it.
	handshake time.Duration
	upstream  *testbroker.Mosquitto // the external broker, or nil
}

// transports are the device transports the core suite runs over, as
// net/http's tests run over HTTP/1 and HTTP/2; "+mosquitto" runs the same
// test with Debian's mosquitto as the external broker instead of the
// embedded one, "+native" with the handler served over exgate's batched
// stream (service_name: native) instead of ConnectionUnaryHandler.
var transports = []string{"tcp", "ssl", "udp", "dtls", "tcp+mosquitto", "tcp+native"}

// eachMode runs f over TCP with the embedded and with the external broker.
func eachMode(t *testing.T, f func(t *testing.T, tr string)) {
	for _, tr := range []string{"tcp", "tcp+mosquitto"} {
		t.Run(tr, func(t *testing.T) { f(t, tr) })
	}
}

// eachModeAndNative is eachMode and TCP with a native handler.
func eachModeAndNative(t *testing.T, f func(t *testing.T, tr string)) {
	for _, tr := range []string{"tcp", "tcp+mosquitto", "tcp+native"} {
		t.Run(tr, func(t *testing.T) { f(t, tr) })
	}
}

// native reports whether e's handler is served over exgate's native stream.
func (e *env) native() bool { return e.cfg.Gateway.ExProto.Handler.ServiceName == config.Native }

// adapter is where the test calls the gateway as the handler would: its
// ConnectionAdapter, or in native mode the handler's stream (a device must
// have connected first).
func (e *env) adapter() pb.ConnectionAdapterClient {
	if e.native() {
		a := e.h.NativeAdapter()
		if a == nil {
			e.t.Fatalf("no native stream yet: dial a device first")
		}
		return a
	}
	return e.h.Adapter
}

// mqttAddr is where MQTT clients connect: the embedded broker or mosquitto.
func (e *env) mqttAddr() string {
	if e.upstream != nil {
		return e.upstream.Addr
	}
	return e.g.MQTTAddr().String()
}

// external reports whether e runs against an external broker.
func (e *env) external() bool { return e.upstream != nil }

// eachTransport runs f once per transport as a subtest.
func eachTransport(t *testing.T, f func(t *testing.T, tr string)) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) { f(t, tr) })
	}
}

// start runs a gateway and a test handler; mutate adjusts the config. The
// test fails if goroutines are left behind after everything closed.
func start(t *testing.T, mutate func(*config.Config)) *env {
	t.Helper()
	return startWith(t, options{}, mutate)
}

// options vary what start builds.
type options struct {
	handler   *testhandler.Handler // nil: a fresh one serving both services
	logs      io.Writer            // also receives the gateway's log at debug level
	transport string               // "" is tcp
	// overlapOK: the handler may see callbacks of one connection overlap
	// (long-lived streams do not wait for answers).
	overlapOK bool
	// config replaces the default configuration (before the test's own
	// settings: loopback binds, the test handler's address).
	config *config.Config
	// attach connects the handler to the adapter; nil: plain Attach.
	attach func(h *testhandler.Handler, addr string)
}

// startOn is start with the default listener of transport tr.
func startOn(t *testing.T, tr string, mutate func(*config.Config)) *env {
	t.Helper()
	return startWith(t, options{transport: tr}, mutate)
}

func startWith(t testing.TB, o options, mutate func(*config.Config)) *env {
	t.Helper()
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	h := o.handler
	if h == nil {
		h = testhandler.Start(t)
	} else {
		t.Cleanup(h.Stop) // before the leak check runs
	}
	cfg := config.Default()
	if o.config != nil {
		cfg = o.config
	}
	x := &cfg.Gateway.ExProto
	cfg.Broker.Embedded.Listeners.TCP.Bind = "127.0.0.1:0"
	x.Server.Bind = "127.0.0.1:0"
	x.Handler.Address = config.Addresses{"http://" + h.Addr}
	x.Handler.RequestTimeout = 5 * time.Second
	tr := o.transport
	if tr == "" {
		tr = "tcp"
	}
	var upstream *testbroker.Mosquitto
	if base, ok := strings.CutSuffix(tr, "+native"); ok {
		tr = base
		x.Handler.ServiceName = config.Native
	}
	if base, ok := strings.CutSuffix(tr, "+mosquitto"); ok {
		tr = base
		upstream = testbroker.Start(t)
		cfg.Broker.MQTT.Servers = []string{"tcp://" + upstream.Addr}
	}
	certs := testcert.New(t)
	if o.config != nil {
		// An imported configuration keeps its listeners, moved to loopback
		// ports, with the test handler.
		x.Listeners.Each(func(_, _ string, l *config.Listener) {
			l.Bind = "127.0.0.1:0"
			if l.Handler != nil {
				l.Handler.Address = config.Addresses{"http://" + h.Addr}
			}
		})
	} else {
		l := x.Listeners.TCP["default"]
		l.Bind = "127.0.0.1:0"
		x.Listeners.TCP = nil
		tlsOpts := &config.TLSOptions{Certfile: certs.ServerCert, Keyfile: certs.ServerKey, Cacertfile: certs.CAFile, Verify: "verify_peer"}
		switch tr {
		case "tcp":
			x.Listeners.TCP = map[string]*config.Listener{"default": l}
		case "ssl":
			l.SSLOptions = tlsOpts
			x.Listeners.SSL = map[string]*config.Listener{"default": l}
		case "udp":
			x.Listeners.UDP = map[string]*config.Listener{"default": l}
		case "dtls":
			l.DTLSOptions = tlsOpts
			x.Listeners.DTLS = map[string]*config.Listener{"default": l}
		}
	}
	x.CloseFlushTimeout = 5 * time.Second
	if mutate != nil {
		mutate(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	level := slog.LevelWarn
	if os.Getenv("EXGATE_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	var w io.Writer = testWriter{t}
	if o.logs != nil {
		w = io.MultiWriter(w, o.logs)
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
	g, err := gateway.New(cfg, log)
	if err != nil {
		t.Fatalf("gateway: %v", err)
	}
	g.Start()
	if o.attach != nil {
		o.attach(h, g.AdapterAddr().String())
	} else {
		h.Attach(t, g.AdapterAddr().String())
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := g.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if n := h.Overlaps(); n != 0 && !o.overlapOK {
			t.Errorf("handler saw %d overlapping callbacks for one connection", n)
		}
	})
	return &env{t: t, g: g, h: h, cfg: cfg, tr: tr, certs: certs, handshake: 5 * time.Second, upstream: upstream}
}

// listener returns the default listener (a pointer into e.cfg, for mutate funcs).
func defaultListener(c *config.Config) *config.Listener {
	ls := c.Gateway.ExProto.Listeners
	for _, m := range []map[string]*config.Listener{ls.TCP, ls.SSL, ls.UDP, ls.DTLS} {
		if l := m["default"]; l != nil {
			return l
		}
	}
	return nil
}

// addr is the default listener's address.
func (e *env) addr() string { return e.g.ListenerAddr(e.tr + ":default").String() }

// rawDial connects to the default listener over e's transport, with the
// test client certificate when withCert.
func (e *env) rawDial(withCert bool) (net.Conn, error) {
	tc := &tls.Config{RootCAs: e.certs.CAPool, ServerName: "127.0.0.1"}
	if withCert {
		tc.Certificates = []tls.Certificate{e.certs.Client}
	}
	switch e.tr {
	case "ssl":
		return tls.DialWithDialer(&net.Dialer{Timeout: e.handshake}, "tcp", e.addr(), tc)
	case "udp":
		return net.Dial("udp", e.addr())
	case "dtls":
		ua, err := net.ResolveUDPAddr("udp", e.addr())
		if err != nil {
			return nil, err
		}
		opts := []dtls.ClientOption{dtls.WithRootCAs(e.certs.CAPool), dtls.WithServerName("127.0.0.1"),
			dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret)}
		if len(tc.Certificates) > 0 { // pion refuses an empty list
			opts = append(opts, dtls.WithCertificates(tc.Certificates...))
		}
		c, err := dtls.DialWithOptions("udp", ua, opts...)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), e.handshake)
		defer cancel()
		if err := c.HandshakeContext(ctx); err != nil {
			_ = c.Close()
			return nil, err
		}
		return c, nil
	}
	return net.Dial("tcp", e.addr())
}

// testWriter sends log lines to t.Log while the test runs.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// device is a TCP device speaking the JSON demo protocol.
type device struct {
	t    testing.TB
	conn net.Conn
	dec  *json.Decoder
	id   string // conn id, as the handler saw it
	udp  bool   // a UDP device cannot see the gateway close it
}

// sdkRawPublish is one call of a Go handler's adapter client made with
// opts (sdk.Dial): its gRPC code, OK when it succeeded.
func (e *env) sdkRawPublish(t *testing.T, opts ...sdk.ClientOption) codes.Code {
	t.Helper()
	c, err := sdk.Dial(e.g.AdapterAddr().String(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return status.Code(c.RawPublish(ctx5(t), "t", 0, []byte("x")))
}

// dial connects a device and waits for its OnSocketCreated. A UDP device
// exists for the gateway from its first datagram: dial sends a harmless
// frame (type 42, ignored by the handler) to create it.
func (e *env) dial() *device {
	e.t.Helper()
	n := len(e.h.Conns())
	c, err := e.rawDial(false)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = c.Close() })
	d := &device{t: e.t, conn: c, dec: json.NewDecoder(c), udp: e.tr == "udp"}
	if d.udp {
		d.send(Frame{Type: 42})
	}
	d.id = e.h.NthConn(e.t, n, 5*time.Second)
	return d
}

func (d *device) send(f Frame) {
	d.t.Helper()
	b, _ := json.Marshal(f)
	if _, err := d.conn.Write(b); err != nil {
		d.t.Fatalf("device write: %v", err)
	}
}

func (d *device) recv() Frame {
	d.t.Helper()
	_ = d.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var f Frame
	if err := d.dec.Decode(&f); err != nil {
		d.t.Fatalf("device read: %v", err)
	}
	return f
}

// expect reads a frame of type typ and checks its result code.
func (d *device) expect(typ, rc int) Frame {
	d.t.Helper()
	f := d.recv()
	if f.Type != typ {
		d.t.Fatalf("got frame type %d, want %d: %+v", f.Type, typ, f)
	}
	if f.RC != nil && *f.RC != rc {
		d.t.Fatalf("frame type %d: result code %d, want %d", typ, *f.RC, rc)
	}
	return f
}

// connect authenticates as clientid and checks CONNACK.
func (d *device) connect(clientID string, keepalive uint32) {
	d.t.Helper()
	d.send(Frame{Type: testhandler.Connect, ClientInfo: &testhandler.ClientInfo{ProtoName: "demo", ProtoVer: "1", ClientID: clientID, Username: "u-" + clientID}, Password: "pw", Keepalive: keepalive})
	d.expect(testhandler.Connack, 0)
}

func (d *device) subscribe(topic string, qos uint32) {
	d.t.Helper()
	d.send(Frame{Type: testhandler.Subscribe, Topic: topic, QoS: qos})
	d.expect(testhandler.Suback, 0)
}

// expectEOF waits until the gateway closed the socket.
func (d *device) expectEOF(within time.Duration) {
	d.t.Helper()
	if d.udp {
		return
	}
	_ = d.conn.SetReadDeadline(time.Now().Add(within))
	buf := make([]byte, 1024)
	for {
		_, err := d.conn.Read(buf)
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) || isReset(err) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "close notify") || strings.Contains(err.Error(), "conn is closed") {
			return
		}
		d.t.Fatalf("socket not closed within %v: %v", within, err)
	}
}

func isReset(err error) bool { return strings.Contains(err.Error(), "connection reset") }

// mqttClient is an MQTT 3.1.1 client of the embedded broker.
type mqttClient struct {
	mqtt.Client
	t    testing.TB
	msgs chan mqtt.Message
	lost chan error
}

func (e *env) mqtt(clientID string) *mqttClient {
	e.t.Helper()
	m := &mqttClient{t: e.t, msgs: make(chan mqtt.Message, 100), lost: make(chan error, 1)}
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + e.mqttAddr()).SetClientID(clientID).
		SetAutoReconnect(false).SetConnectRetry(false).SetCleanSession(true).
		SetDefaultPublishHandler(func(_ mqtt.Client, msg mqtt.Message) { m.msgs <- msg }).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) { m.lost <- err })
	m.Client = mqtt.NewClient(opts)
	if tok := m.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		e.t.Fatalf("mqtt connect: %v", tok.Error())
	}
	e.t.Cleanup(func() { m.Disconnect(50) })
	return m
}

func (m *mqttClient) sub(topic string, qos byte) {
	m.t.Helper()
	if tok := m.Subscribe(topic, qos, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		m.t.Fatalf("mqtt subscribe: %v", tok.Error())
	}
}

func (m *mqttClient) pub(topic string, qos byte, retained bool, payload string) {
	m.t.Helper()
	if tok := m.Publish(topic, qos, retained, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		m.t.Fatalf("mqtt publish: %v", tok.Error())
	}
}

func (m *mqttClient) expect(topic, payload string) mqtt.Message {
	m.t.Helper()
	select {
	case msg := <-m.msgs:
		if msg.Topic() != topic || string(msg.Payload()) != payload {
			m.t.Fatalf("mqtt got %s %q, want %s %q", msg.Topic(), msg.Payload(), topic, payload)
		}
		return msg
	case <-time.After(5 * time.Second):
		m.t.Fatalf("mqtt: no message on %s", topic)
	}
	return nil
}

// methods lists conn's callbacks in order.
func (e *env) methods(conn string) []string {
	var out []string
	for _, ev := range e.h.Events(conn) {
		out = append(out, ev.Method)
	}
	return out
}

// collector records what goroutines log, for tests that check logs.
type collector struct {
	mu sync.Mutex
	b  strings.Builder
}

func (c *collector) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.Write(p)
}

func (c *collector) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String()
}

func jsonDecoder(c net.Conn) *json.Decoder { return json.NewDecoder(c) }

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// sharedCerts are certificates for the gRPC sides (handler and adapter),
// made once for the package; TestMain removes their directory.
var sharedCerts = func() *testcert.Set {
	dir, err := os.MkdirTemp("", "exgate-certs")
	if err != nil {
		panic(err)
	}
	return testcert.NewIn(dir)
}()

func TestMain(m *testing.M) {
	code := m.Run()
	os.RemoveAll(sharedCerts.Dir)
	os.Exit(code)
}

// handlerTLS is the test handler's server side: it requires exgate's
// client certificate.
func handlerTLS(t testing.TB) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{sharedCerts.Server}, ClientCAs: sharedCerts.CAPool, ClientAuth: tls.RequireAndVerifyClientCert}
}

func tlsDial(addr string) (net.Conn, error) {
	return tls.Dial("tcp", addr, &tls.Config{RootCAs: sharedCerts.CAPool, ServerName: "localhost", Certificates: []tls.Certificate{sharedCerts.Client}})
}

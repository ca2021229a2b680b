package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	pb "github.com/exgate/exgate/exprotopb"

	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/testbroker"
	"github.com/exgate/exgate/internal/testhandler"
)

// startUpstream runs a gateway whose broker is the given mosquitto.
func startUpstream(t *testing.T, m *testbroker.Mosquitto, mutate func(*config.Config)) *env {
	t.Helper()
	e := start(t, func(c *config.Config) {
		c.Broker.MQTT.Servers = []string{"tcp://" + m.Addr}
		if mutate != nil {
			mutate(c)
		}
	})
	e.upstream = m
	return e
}

func TestUpstreamDown(t *testing.T) {
	for _, keep := range []bool{true, false} {
		t.Run(fmt.Sprintf("reconnect=%v", keep), func(t *testing.T) { testUpstreamDown(t, keep) })
	}
}

func testUpstreamDown(t *testing.T, keep bool) {
	m := testbroker.Start(t)
	e := startUpstream(t, m, func(c *config.Config) {
		c.Broker.MQTT.Reconnect = &keep
		c.Broker.MQTT.ReconnectTimeout = 2 * time.Second
	})
	d := e.dial()
	d.connect("before", 0)
	// Before the stop: the gateway may see the connection go while Stop
	// still waits for mosquitto to exit, and its reconnect_timeout starts
	// then (a begin taken after Stop read 1.99986 s once).
	begin := time.Now()
	m.Stop()
	// Its session is gone with the broker, and no other server takes it:
	// the device is closed, at once or after reconnect_timeout.
	if r := e.h.WaitClosed(t, d.id, 10*time.Second); r != "{shutdown,{error,broker_session_lost}}" {
		t.Fatalf("reason %q", r)
	}
	if took := time.Since(begin); keep && took < 2*time.Second {
		t.Fatalf("closed after %v, before reconnect_timeout (2s)", took)
	}
	// A clear error, never a silent drop.
	d2 := e.dial()
	d2.send(Frame{Type: testhandler.Connect, ClientInfo: &testhandler.ClientInfo{ClientID: "after"}})
	d2.expect(testhandler.Connack, int(pb.ResultCode_UNKNOWN))
	resp, err := e.h.Adapter.RawPublish(ctx5(t), &pb.RawPublishRequest{Topic: "t", Qos: 1, Payload: []byte("x")})
	if err != nil || resp.Code != pb.ResultCode_UNKNOWN || !strings.Contains(resp.Message, "broker unavailable") {
		t.Fatalf("raw publish with the broker down: %v %v", resp, err)
	}
}

func TestUpstreamFailoverAndPrefix(t *testing.T) {
	m := testbroker.Start(t)
	dead := testbroker.Start(t)
	dead.Stop()
	e := startUpstream(t, m, func(c *config.Config) {
		c.Broker.MQTT.Servers = []string{"tcp://" + dead.Addr, "tcp://" + m.Addr}
		c.Broker.MQTT.ClientIDPrefix = "gw-"
	})
	d := e.dial()
	d.connect("dev1", 0)
	d.subscribe("down", 1)
	app := e.mqtt("app")
	app.pub("down", 1, false, "via the second server")
	if f := d.expect(testhandler.Publish, 0); f.Payload != "via the second server" {
		t.Fatalf("%+v", f)
	}
	// Upstream the device is "gw-dev1": a client with that id takes it over.
	e.mqtt("gw-dev1")
	if r := e.h.WaitClosed(t, d.id, 5*time.Second); r != "{shutdown,discarded}" {
		t.Fatalf("reason %q", r)
	}
}

func TestUpstreamMQTT311(t *testing.T) {
	m := testbroker.Start(t)
	e := startUpstream(t, m, func(c *config.Config) { c.Broker.MQTT.ProtocolVersion = 4 })
	d := e.dial()
	d.connect("old", 0)
	d.subscribe("v4/#", 2)
	app := e.mqtt("app")
	app.sub("up", 1)
	app.pub("v4/x", 2, false, "down")
	if f := d.expect(testhandler.Publish, 0); f.Payload != "down" || f.QoS != 2 {
		t.Fatalf("%+v", f)
	}
	d.send(Frame{Type: testhandler.Publish, Topic: "up", QoS: 1, Payload: "u"})
	d.expect(testhandler.Puback, 0)
	app.expect("up", "u")
	d.send(Frame{Type: testhandler.RawPublish, Topic: "up", QoS: 1, Payload: "raw"})
	d.expect(testhandler.Puback, 0)
	app.expect("up", "raw")
}

func TestUpstreamAuthAndACL(t *testing.T) {
	m := testbroker.StartWith(t, testbroker.Options{
		Users: map[string]string{"dev": "devpass", "app": "apppass", "gw": "gwpass"},
		ACL:   "user dev\ntopic readwrite dev/#\nuser app\ntopic readwrite #\nuser gw\ntopic write #\n",
	})
	e := startUpstream(t, m, func(c *config.Config) {
		c.Broker.MQTT.Username, c.Broker.MQTT.Password = "gw", "gwpass"
	})
	// The upstream checks the device's own credentials.
	bad := e.dial()
	bad.send(Frame{Type: testhandler.Connect, ClientInfo: &testhandler.ClientInfo{ClientID: "d1", Username: "dev"}, Password: "wrong"})
	bad.expect(testhandler.Connack, int(pb.ResultCode_PERMISSION_DENY))
	d := e.dial()
	d.send(Frame{Type: testhandler.Connect, ClientInfo: &testhandler.ClientInfo{ClientID: "d2", Username: "dev"}, Password: "devpass"})
	d.expect(testhandler.Connack, 0)
	// …and its ACL: QoS 1 publish outside dev/# is refused with PUBACK 0x87.
	d.send(Frame{Type: testhandler.Publish, Topic: "other/x", QoS: 1, Payload: "p"})
	d.expect(testhandler.Puback, int(pb.ResultCode_PERMISSION_DENY))
	d.send(Frame{Type: testhandler.Publish, Topic: "dev/x", QoS: 1, Payload: "p"})
	d.expect(testhandler.Puback, 0)
	// RawPublish uses the gateway's own account.
	resp, err := e.h.Adapter.RawPublish(ctx5(t), &pb.RawPublishRequest{Topic: "any/t", Qos: 1, Payload: []byte("x")})
	if err != nil || resp.Code != pb.ResultCode_SUCCESS {
		t.Fatalf("raw publish: %v %v", resp, err)
	}
}

func TestUpstreamTLS(t *testing.T) {
	certs := sharedCerts
	m := testbroker.StartWith(t, testbroker.Options{CertFile: certs.ServerCert, KeyFile: certs.ServerKey})
	e := start(t, func(c *config.Config) {
		c.Broker.MQTT.Servers = []string{"ssl://" + m.Addr}
		c.Broker.MQTT.SSLOptions = &config.ClientTLSOptions{Cacertfile: certs.CAFile, ServerNameIndication: "localhost"}
	})
	d := e.dial()
	d.connect("tls-dev", 0)
	d.send(Frame{Type: testhandler.RawPublish, Topic: "t", QoS: 1, Payload: "x"})
	d.expect(testhandler.Puback, 0)
}

// Shutdown with a broker that stopped reading is bounded by the shutdown
// context, however many devices there are: each device's upstream session
// says goodbye in the background, side by side. The broker stalls behind a
// proxy that stops reading, so the gateway's writes fill the socket
// buffers and block (a paused broker still lets small writes through).
// Closed one after another, each of these sessions took a second or more.
func TestShutdownWithHungUpstream(t *testing.T) {
	var proxy *stallProxy
	e := startWith(t, options{transport: "tcp+mosquitto"}, func(c *config.Config) {
		c.Gateway.ExProto.IdleTimeout = time.Minute
		c.Gateway.ExProto.Handler.RequestTimeout = time.Minute
		proxy = newStallProxy(t, strings.TrimPrefix(c.Broker.MQTT.Servers[0], "tcp://"))
		c.Broker.MQTT.Servers = []string{"tcp://" + proxy.addr()}
	})
	const n = 8
	var devs []*device
	for i := 0; i < n; i++ {
		d := e.dial()
		d.connect(fmt.Sprintf("hung-%d", i), 0)
		devs = append(devs, d)
	}
	proxy.stall()
	// Each device publishes more than the socket buffers between the
	// gateway and the stalled broker hold (loopback send buffers grow to a
	// few MB): its publishes block.
	big := strings.Repeat("x", 64<<10)
	for _, d := range devs {
		go func() {
			for j := 0; j < 96; j++ {
				b, _ := json.Marshal(Frame{Type: testhandler.Publish, Topic: "hung/t", Payload: big})
				if _, err := d.conn.Write(b); err != nil {
					return
				}
			}
		}()
	}
	time.Sleep(3 * time.Second) // the writes reach the full buffers
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := e.g.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown of %d devices with a stalled broker: %v", n, err)
	}
	t.Logf("shutdown of %d devices with a stalled broker took %v", n, time.Since(start))
	for _, d := range devs {
		if r, ok := e.h.Closed(d.id); !ok || r != "{shutdown,gateway_stopped}" {
			t.Fatalf("device %s: OnSocketClosed %v %q, want {shutdown,gateway_stopped}", d.id, ok, r)
		}
	}
}

// stallProxy forwards TCP to target until stall: from then on it reads
// nothing from the gateway and forwards nothing, with a small receive
// buffer so the gateway's writes soon block.
type stallProxy struct {
	ln      net.Listener
	target  string
	stalled chan struct{}
	done    chan struct{} // the test ended
	once    sync.Once
	wg      sync.WaitGroup
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, target: target, stalled: make(chan struct{}), done: make(chan struct{})}
	var conns []net.Conn
	var mu sync.Mutex
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			p.wg.Go(func() { p.pipe(up, c) })
			p.wg.Go(func() { p.pipe(c, up) })
		}
	})
	t.Cleanup(func() {
		close(p.done)
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *stallProxy) addr() string { return p.ln.Addr().String() }
func (p *stallProxy) stall()       { p.once.Do(func() { close(p.stalled) }) }

// pipe copies from src to dst until src ends or the proxy stalls; a
// stalled pipe keeps src open and unread until the test ends.
func (p *stallProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 4096)
	for {
		select {
		case <-p.stalled:
			<-p.done // read nothing more: the gateway's writes fill the buffers
			return
		default:
		}
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		select {
		case <-p.stalled:
			continue
		default:
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

// A device keeps its socket when its broker node goes (#19): its session
// is opened again on the next server with its subscription renewed, and
// deliveries resume.
func TestUpstreamNodeLossKeepsDevices(t *testing.T) {
	m1, m2 := testbroker.Start(t), testbroker.Start(t)
	e := startUpstream(t, m1, func(c *config.Config) {
		c.Broker.MQTT.Servers = []string{"tcp://" + m1.Addr, "tcp://" + m2.Addr}
		c.Broker.MQTT.ConnectTimeout = time.Second
	})
	d := e.dial()
	d.connect("kept", 0)
	d.subscribe("keep/me", 1)
	m1.Terminate()
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + m2.Addr).SetClientID("app2").SetAutoReconnect(false)
	app := mqtt.NewClient(opts)
	if tok := app.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("mqtt connect: %v", tok.Error())
	}
	defer app.Disconnect(50)
	// Retained: it reaches the device whether its session is back before
	// or after the publish.
	if tok := app.Publish("keep/me", 1, true, "after the loss"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	if f := d.expect(testhandler.Publish, 0); f.Payload != "after the loss" {
		t.Fatalf("device got %+v", f)
	}
	if _, closed := e.h.Closed(d.id); closed {
		t.Fatal("the device was closed")
	}
	d.send(Frame{Type: testhandler.Publish, Topic: "from/kept", QoS: 1, Payload: "still here"})
	d.expect(testhandler.Puback, 0)
	app.Publish("keep/me", 1, true, "").WaitTimeout(time.Second) // clear the retained message
}

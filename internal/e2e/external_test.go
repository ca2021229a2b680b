package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

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
	m := testbroker.Start(t)
	e := startUpstream(t, m, nil)
	d := e.dial()
	d.connect("before", 0)
	m.Stop()
	// Its session is gone with the broker: the device is closed.
	if r := e.h.WaitClosed(t, d.id, 10*time.Second); r != "{shutdown,{error,broker_session_lost}}" {
		t.Fatalf("reason %q", r)
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

// Shutdown with a broker that stopped answering is bounded by the shutdown
// context, however many devices there are: each device's upstream session
// says goodbye in the background, side by side, not one after another.
func TestShutdownWithHungUpstream(t *testing.T) {
	e := startWith(t, options{transport: "tcp+mosquitto"}, func(c *config.Config) {
		c.Gateway.ExProto.IdleTimeout = time.Minute
		defaultListener(c).MaxConnRate = new(int)
	})
	const n = 300
	conns := connectSubscribed(t, e.addr(), n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	e.upstream.Pause()
	defer e.upstream.Resume()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	start := time.Now()
	if err := e.g.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown of %d devices with a hung broker: %v", n, err)
	}
	t.Logf("shutdown of %d devices with a hung broker took %v", n, time.Since(start))
	for _, id := range e.h.Conns() {
		if r, ok := e.h.Closed(id); !ok || r != "{shutdown,gateway_stopped}" {
			t.Fatalf("device %s: OnSocketClosed %v %q, want {shutdown,gateway_stopped}", id, ok, r)
		}
	}
}

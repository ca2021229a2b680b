// Package handlertest runs a handler against the real exgate, in process,
// on loopback ports, so a handler author tests it in a plain Go test:
//
//	h := handlertest.New(t, myHandler)
//	dev := h.Dial()
//	dev.Write([]byte("LOGIN dev1\n"))
//	h.ExpectPublish("up/dev1", []byte("online"))
//
// The gateway is exgate's own code with its embedded MQTT broker, not a
// mock; an MQTT client subscribed to everything observes what devices
// publish, and Publish sends to devices.
package handlertest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/gateway"
	"github.com/exgate/exgate/sdk"
)

// TB is the part of testing.TB the harness uses.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// Harness is a running gateway with the handler under test.
type Harness[S any] struct {
	t       TB
	Gateway *gateway.Gateway
	Client  *sdk.Client
	srv     *sdk.Server[S]
	mqtt    mqtt.Client
	msgs    chan mqtt.Message
	// Timeout bounds every wait; default 5s.
	Timeout time.Duration
}

// Option adjusts the gateway's configuration before it starts.
type Option func(*config.Config)

// Native serves the handler over exgate's batched stream (exgate.v1,
// handler.service_name: native) instead of ConnectionUnaryHandler; a
// handler built with sdk needs no change for it. Run a test in both modes:
//
//	for _, mode := range []handlertest.Option{nil, handlertest.Native} { … }
func Native(c *config.Config) { c.Gateway.ExProto.Handler.ServiceName = config.Native }

// New starts a gateway and serves h; everything stops when the test ends.
func New[S any](t TB, h sdk.Handler[S], opts ...Option) *Harness[S] {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("handler listener: %v", err)
	}
	cfg := config.Default()
	cfg.API.Enable = new(bool) // off: no port to collide with
	cfg.Broker.Embedded.Listeners.TCP.Bind = "127.0.0.1:0"
	x := &cfg.Gateway.ExProto
	x.Server.Bind = "127.0.0.1:0"
	x.Handler.Address = config.Addresses{"http://" + ln.Addr().String()}
	x.Listeners.TCP["default"].Bind = "127.0.0.1:0"
	for _, o := range opts {
		if o != nil {
			o(cfg)
		}
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	g, err := gateway.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("gateway: %v", err)
	}
	g.Start()
	client, err := sdk.Dial(g.AdapterAddr().String())
	if err != nil {
		t.Fatalf("adapter client: %v", err)
	}
	hs := &Harness[S]{t: t, Gateway: g, Client: client, srv: sdk.NewServer(h, client), msgs: make(chan mqtt.Message, 1000), Timeout: 5 * time.Second}
	go func() { _ = hs.srv.Serve(ln) }()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + g.MQTTAddr().String()).SetClientID("handlertest-observer").
		SetAutoReconnect(false).SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { hs.msgs <- m })
	hs.mqtt = mqtt.NewClient(o)
	if tok := hs.mqtt.Connect(); !tok.WaitTimeout(hs.Timeout) || tok.Error() != nil {
		t.Fatalf("observer: %v", tok.Error())
	}
	if tok := hs.mqtt.Subscribe("#", 1, nil); !tok.WaitTimeout(hs.Timeout) || tok.Error() != nil {
		t.Fatalf("observer subscribe: %v", tok.Error())
	}
	t.Cleanup(func() {
		hs.mqtt.Disconnect(50)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = g.Shutdown(ctx)
		hs.srv.Shutdown(ctx)
		_ = client.Close()
	})
	return hs
}

// Device is a TCP device connected to the gateway.
type Device struct {
	net.Conn
	t       TB
	timeout time.Duration
}

// Dial connects a device.
func (h *Harness[S]) Dial() *Device {
	h.t.Helper()
	c, err := net.Dial("tcp", h.Gateway.ListenerAddr("default").String())
	if err != nil {
		h.t.Fatalf("dial: %v", err)
	}
	h.t.Cleanup(func() { _ = c.Close() })
	return &Device{Conn: c, t: h.t, timeout: h.Timeout}
}

// Write sends bytes, failing the test on error.
func (d *Device) Write(b []byte) (int, error) {
	d.t.Helper()
	n, err := d.Conn.Write(b)
	if err != nil {
		d.t.Fatalf("device write: %v", err)
	}
	return n, nil
}

// Expect reads until the device received want (exactly, in one or more
// reads), failing the test otherwise.
func (d *Device) Expect(want []byte) {
	d.t.Helper()
	_ = d.SetReadDeadline(time.Now().Add(d.timeout))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(d.Conn, got); err != nil {
		d.t.Fatalf("device expected %q: %v (got %q)", want, err, got)
	}
	if !bytes.Equal(got, want) {
		d.t.Fatalf("device got %q, want %q", got, want)
	}
}

// ExpectClosed waits until the gateway closed the device.
func (d *Device) ExpectClosed() {
	d.t.Helper()
	_ = d.SetReadDeadline(time.Now().Add(d.timeout))
	buf := make([]byte, 512)
	for {
		if _, err := d.Read(buf); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				d.t.Fatalf("device not closed within %v", d.timeout)
			}
			return
		}
	}
}

// ExpectPublish waits for a message on topic with payload, published by a
// device (through the handler) or anyone else.
func (h *Harness[S]) ExpectPublish(topic string, payload []byte) {
	h.t.Helper()
	deadline := time.After(h.Timeout)
	var seen []string
	for {
		select {
		case m := <-h.msgs:
			if m.Topic() == topic && bytes.Equal(m.Payload(), payload) {
				return
			}
			seen = append(seen, fmt.Sprintf("%s %q", m.Topic(), m.Payload()))
		case <-deadline:
			h.t.Fatalf("no publish of %q to %s; saw %v", payload, topic, seen)
		}
	}
}

// Publish sends a message to the devices subscribed to topic.
func (h *Harness[S]) Publish(topic string, payload []byte) {
	h.t.Helper()
	if tok := h.mqtt.Publish(topic, 1, false, payload); !tok.WaitTimeout(h.Timeout) || tok.Error() != nil {
		h.t.Fatalf("publish: %v", tok.Error())
	}
}

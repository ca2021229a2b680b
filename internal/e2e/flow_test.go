package e2e

import (
	"context"
	"errors"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/testhandler"
)

// A device that floods a slow handler is paused by TCP back pressure: the
// gateway holds at most event_queue reads for it, not everything sent.
func TestSlowHandlerPushesBackOnDevice(t *testing.T) {
	release := make(chan struct{})
	e := start(t, func(c *config.Config) { c.Gateway.ExProto.EventQueue = 4 })
	e.h.OnBytes = func() { <-release }
	d := e.dial()
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	chunk := make([]byte, 64<<10)
	sent := 0
	_ = d.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	for sent < 256<<20 {
		n, err := d.conn.Write(chunk)
		sent += n
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if sent >= 256<<20 {
		t.Fatal("the gateway took 256 MiB from a device whose handler is stuck: no back pressure")
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 32<<20 {
		t.Fatalf("heap grew by %d MiB while a device flooded", grew>>20)
	}
	t.Logf("device wrote %d KiB before TCP pushed back", sent>>10)
	close(release)
	// The gateway's shutdown kicks the device; what is queued is flushed.
}

// Deliveries to a device whose handler is slow are queued up to
// max_mqueue_len; the rest are dropped and counted, never buffered without bound.
func TestDeliveryOverflowDroppedAndCounted(t *testing.T) {
	release := make(chan struct{})
	e := start(t, func(c *config.Config) {
		c.Gateway.ExProto.MaxMqueueLen = 5
		c.Gateway.ExProto.MaxMessagesPerDelivery = 1
	})
	d := e.dial()
	d.connect("slow", 0)
	d.subscribe("flood", 0)
	e.h.OnMessages = func() { <-release }
	m := e.mqtt("app")
	m.pub("flood", 1, false, "x")
	// The first delivery is in flight (and its handler stuck) before the rest come.
	e.h.WaitFor(t, 5*time.Second, "the first delivery", func() bool {
		for _, ev := range e.h.Events(d.id) {
			if ev.Method == "OnReceivedMessages" {
				return true
			}
		}
		return false
	})
	for i := 1; i < 30; i++ {
		m.pub("flood", 1, false, "x")
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.g.Stats.DeliveryDropped.Load() < 30-5-1 {
		if time.Now().After(deadline) {
			t.Fatalf("dropped %d, want at least %d", e.g.Stats.DeliveryDropped.Load(), 30-5-1)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// An operator sees it: the device's queue in the REST client object,
	// the drops by reason in the metrics (a QoS 0 subscription: qos0_msg).
	base := startAPI(t, e, config.API{})
	code, c, _ := call(t, "GET", base+"/api/v5/gateways/exproto/clients/slow", "")
	if code != 200 || c["mqueue_len"] != 5.0 || c["mqueue_max"] != 5.0 || c["mqueue_dropped"] != 24.0 {
		t.Fatalf("client: %d mqueue_len %v mqueue_max %v mqueue_dropped %v; want 5, 5, 24", code, c["mqueue_len"], c["mqueue_max"], c["mqueue_dropped"])
	}
	_, _, metrics := call(t, "GET", base+"/metrics", "")
	if !strings.Contains(metrics, `exgate_delivery_dropped_total{reason="qos0_msg"} 24`) {
		t.Fatalf("metrics lack the drops by reason:\n%s", grepLines(metrics, "delivery_dropped"))
	}
	close(release)
	// What was queued still arrives: one in flight + max_mqueue_len.
	for i := 0; i < 6; i++ {
		d.expect(testhandler.Publish, 0)
	}
	if got := e.g.Stats.DeliveryDropped.Load(); got != 24 {
		t.Fatalf("dropped %d, want 24", got)
	}
}

// TestDeliveryBatching: messages that queued while a device's delivery
// was with the handler go in OnReceivedMessages of at most
// max_messages_per_delivery each, nothing lost or reordered. By default (0)
// that is one for the EMQX services (a handler that reads only
// messages[0] loses nothing) and up to 16 for the native service.
func TestDeliveryBatching(t *testing.T) {
	for _, c := range []struct {
		name      string
		tr        string
		setting   int
		batch     int // the most per call
		readFirst bool
	}{
		{"max1", "tcp", 1, 1, true},
		{"max16", "tcp", 16, 16, false},
		{"default", "tcp", 0, 1, true},
		{"native-default", "tcp+native", 0, 16, false},
		{"native-max1", "tcp+native", 1, 1, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := startOn(t, c.tr, func(cfg *config.Config) { cfg.Gateway.ExProto.MaxMessagesPerDelivery = c.setting })
			e.h.ReadOnlyFirst = c.readFirst // a handler that reads only messages[0]
			d := e.dial()
			d.connect("b", 0)
			d.subscribe("b/#", 0)
			release := e.h.HoldFirstDelivery()
			m := e.mqtt("app")
			for i := 0; i < 10; i++ {
				m.pub("b/t", 1, false, string(rune('a'+i)))
			}
			time.Sleep(300 * time.Millisecond) // all ten queued behind the first
			release()
			got := 0
			var sizes []int
			e.h.WaitFor(t, 5*time.Second, "deliveries", func() bool {
				got, sizes = 0, nil
				for _, ev := range e.h.Events(d.id) {
					if ev.Method == "OnReceivedMessages" {
						got += len(ev.Messages)
						sizes = append(sizes, len(ev.Messages))
					}
				}
				return got == 10
			})
			for _, n := range sizes {
				if n > c.batch {
					t.Fatalf("batch of %d; want at most %d", n, c.batch)
				}
			}
			if c.batch > 1 && len(sizes) > 3 {
				t.Fatalf("queued deliveries not coalesced: batches %v", sizes)
			}
			// Nothing is lost or reordered, for a messages[0]-only handler too.
			for i := 0; i < 10; i++ {
				if f := d.expect(testhandler.Publish, 0); f.Payload != string(rune('a'+i)) {
					t.Fatalf("message %d: %q (order or loss)", i, f.Payload)
				}
			}
		})
	}
}

func TestShutdownClosesDevicesGracefully(t *testing.T) {
	eachMode(t, func(t *testing.T, tr string) {
		e := startOn(t, tr, nil)
		d1, d2 := e.dial(), e.dial()
		d1.connect("s1", 0)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.g.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		for _, d := range []*device{d1, d2} {
			if r, ok := e.h.Closed(d.id); !ok || r != "{shutdown,gateway_stopped}" {
				t.Fatalf("device %s: OnSocketClosed %q %v", d.id, r, ok)
			}
			d.expectEOF(time.Second)
		}
	})
}

func TestMQTT5Client(t *testing.T) {
	eachMode(t, func(t *testing.T, tr string) {
		e := startOn(t, tr, nil)
		d := e.dial()
		d.connect("dev5", 0)
		d.subscribe("v5/in", 2)

		conn, err := net.Dial("tcp", e.mqttAddr())
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan *paho.Publish, 10)
		c := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { got <- pr.Packet; return true, nil },
		}})
		ctx := ctx5(t)
		if _, err := c.Connect(ctx, &paho.Connect{ClientID: "app5", CleanStart: true, KeepAlive: 30}); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Disconnect(&paho.Disconnect{}) }()
		if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "v5/out", QoS: 2}}}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Publish(ctx, &paho.Publish{Topic: "v5/in", QoS: 2, Payload: []byte("to device")}); err != nil {
			t.Fatal(err)
		}
		wantFrom := "app5"
		if e.external() {
			wantFrom = "" // MQTT has no publisher id
		}
		if f := d.expect(testhandler.Publish, 0); f.Payload != "to device" || f.QoS != 2 || f.Extra["from"] != wantFrom {
			t.Fatalf("device got %+v", f)
		}
		d.send(Frame{Type: testhandler.Publish, Topic: "v5/out", QoS: 2, Payload: "to app"})
		d.expect(testhandler.Puback, 0)
		select {
		case p := <-got:
			if string(p.Payload) != "to app" || p.QoS != 2 {
				t.Fatalf("app got %+v", p)
			}
			if e.external() {
				// Upstream, exgate's stamps are visible: MQTT has no other
				// way to carry the publisher.
				if p.Properties == nil || p.Properties.User.Get("exgate-from") != "dev5" {
					t.Fatalf("publisher stamp missing upstream: %+v", p.Properties)
				}
			} else if p.Properties != nil && len(p.Properties.User) != 0 {
				t.Fatalf("internal user properties leaked to an MQTT client: %v", p.Properties.User)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("MQTT 5 client got nothing")
		}
	})
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

package e2e

import (
	"net/netip"
	"regexp"
	"testing"
	"time"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/testhandler"
)

func TestDevicePubSubWithMQTTClient(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		e := startOn(t, tr, nil)
		d := e.dial()

		// OnSocketCreated is first and describes the socket.
		evs := e.h.Events(d.id)
		if len(evs) == 0 || evs[0].Method != "OnSocketCreated" {
			t.Fatalf("first event = %v, want OnSocketCreated", e.methods(d.id))
		}
		ci := evs[0].ConnInfo
		local := netip.MustParseAddrPort(d.conn.LocalAddr().String())
		lis := netip.MustParseAddrPort(e.addr())
		want := map[string]pb.SocketType{"tcp": pb.SocketType_TCP, "ssl": pb.SocketType_SSL, "udp": pb.SocketType_UDP, "dtls": pb.SocketType_DTLS}[e.tr]
		if ci.GetSocktype() != want ||
			ci.GetPeername().GetHost() != "127.0.0.1" || ci.GetPeername().GetPort() != uint32(local.Port()) ||
			ci.GetSockname().GetHost() != "127.0.0.1" || ci.GetSockname().GetPort() != uint32(lis.Port()) {
			t.Fatalf("conninfo %v does not match device %s → %s", ci, local, lis)
		}
		if ci.GetPeercert() != nil {
			t.Fatalf("peercert set on plain TCP: %v", ci.GetPeercert())
		}
		if !regexp.MustCompile(`^[A-Za-z0-9_-]{20,}$`).MatchString(d.id) {
			t.Fatalf("conn id %q is not an opaque URL-safe token", d.id)
		}

		d.connect("dev1", 0)
		d.subscribe("down/#", 1)

		m := e.mqtt("app1")
		m.sub("up/#", 2)

		for qos := uint32(0); qos <= 2; qos++ {
			// device → MQTT
			d.send(Frame{Type: testhandler.Publish, Topic: "up/dev1", QoS: qos, Payload: "hello"})
			d.expect(testhandler.Puback, 0)
			msg := m.expect("up/dev1", "hello")
			if msg.Retained() {
				t.Fatal("device publish arrived retained")
			}
			if msg.Qos() != byte(qos) {
				t.Fatalf("mqtt got qos %d, want %d", msg.Qos(), qos)
			}
			// MQTT → device
			before := time.Now().UnixMilli()
			m.pub("down/x", byte(qos), false, "cmd")
			f := d.expect(testhandler.Publish, 0)
			if f.Topic != "down/x" || f.Payload != "cmd" || f.QoS != min(qos, 1) {
				t.Fatalf("device got %+v", f)
			}
			wantFrom := "app1"
			if e.external() {
				wantFrom = "" // MQTT has no publisher id; only exgate's own publishes carry one
			}
			if f.Extra["from"] != wantFrom || f.Extra["node"] != "exgate@127.0.0.1" {
				t.Fatalf("message from/node = %v/%v", f.Extra["from"], f.Extra["node"])
			}
			if !regexp.MustCompile(`^[0-9A-F]{32}$`).MatchString(f.Extra["id"].(string)) {
				t.Fatalf("message id %q is not 32 upper-case hex", f.Extra["id"])
			}
			ts := int64(f.Extra["timestamp"].(float64))
			if ts < before-1000 || ts > time.Now().UnixMilli() {
				t.Fatalf("timestamp %d not the publish time in ms (now %d)", ts, time.Now().UnixMilli())
			}
		}

		// DISCONNECT → Close → OnSocketClosed {shutdown,normal} as the last event.
		d.send(Frame{Type: testhandler.Disconnect})
		if r := e.h.WaitClosed(t, d.id, 5*time.Second); r != "{shutdown,normal}" {
			t.Fatalf("close reason %q", r)
		}
		d.expectEOF(2 * time.Second)
		ms := e.methods(d.id)
		if ms[len(ms)-1] != "OnSocketClosed" {
			t.Fatalf("last event %v", ms)
		}
	})
}

package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/exgate/exgate/internal/broker"
	"github.com/exgate/exgate/internal/mqttwire"
)

// scripted is a server end of one MQTT 3.1.1 connection driven by a test.
type scripted struct {
	t  *testing.T
	c  net.Conn
	r  *bufio.Reader
	cl *conn
}

func (s *scripted) send(pk packets.Packet) {
	s.t.Helper()
	pk.ProtocolVersion = 4
	var b bytes.Buffer
	if err := mqttwire.Encode(&pk, &b); err != nil {
		s.t.Fatal(err)
	}
	if _, err := s.c.Write(b.Bytes()); err != nil {
		s.t.Fatal(err)
	}
}

func (s *scripted) expect(typ byte) *packets.Packet {
	s.t.Helper()
	_ = s.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		pk, err := mqttwire.Read(s.r, 4)
		if err != nil {
			s.t.Fatalf("server read: %v", err)
		}
		if pk.FixedHeader.Type == packets.Pingreq {
			continue
		}
		if pk.FixedHeader.Type != typ {
			s.t.Fatalf("server got packet type %d, want %d", pk.FixedHeader.Type, typ)
		}
		return pk
	}
}

// session connects a conn (MQTT 3.1.1, keepalive ka seconds) to a
// scripted server.
func session(t *testing.T, ka uint16, h broker.Handlers) *scripted {
	t.Helper()
	client, server := net.Pipe()
	s := &scripted{t: t, c: server, r: bufio.NewReader(server)}
	got := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		sess, err := dial(ctx, client, 4, broker.ClientInfo{ClientID: "d"}, "", ka, h)
		if err == nil {
			s.cl = sess.(*conn)
		}
		got <- err
	}()
	s.expect(packets.Connect)
	s.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}})
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); s.cl.Close() })
	return s
}

// A QoS 2 delivery sent again before its PUBREL reaches the device once;
// each is answered with PUBREC, the PUBREL with PUBCOMP. A QoS 2 publish
// waits for PUBREC, answers it with PUBREL, and returns on PUBCOMP.
func TestConnQoS2(t *testing.T) {
	var delivered atomic.Int32
	s := session(t, 0, broker.Handlers{Deliver: func(broker.Message) { delivered.Add(1) }, Closed: func(error) {}})
	pub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, TopicName: "t", PacketID: 7, Payload: []byte("x")}
	s.send(pub)
	s.expect(packets.Pubrec)
	pub.FixedHeader.Dup = true
	s.send(pub)
	if pk := s.expect(packets.Pubrec); pk.PacketID != 7 {
		t.Fatalf("PUBREC for %d", pk.PacketID)
	}
	s.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 7})
	s.expect(packets.Pubcomp)
	if n := delivered.Load(); n != 1 {
		t.Fatalf("delivered %d times, want once", n)
	}

	done := make(chan error, 1)
	go func() { done <- s.cl.Publish(context.Background(), "up", 2, []byte("y")) }()
	p := s.expect(packets.Publish)
	s.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: p.PacketID})
	s.expect(packets.Pubrel)
	select {
	case err := <-done:
		t.Fatalf("the publish returned before PUBCOMP: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	s.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: p.PacketID})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A broker that stops answering is noticed within 1.5 × keepalive: the
// device is told its session was lost, and a call waiting on it returns.
func TestConnKeepaliveLoss(t *testing.T) {
	closed := make(chan error, 1)
	s := session(t, 1, broker.Handlers{Deliver: func(broker.Message) {}, Closed: func(err error) { closed <- err }})
	go func() { _ = s.c.SetReadDeadline(time.Time{}); _, _ = s.r.ReadBytes(0xff) }() // read, never answer
	waiting := make(chan error, 1)
	go func() { waiting <- s.cl.Subscribe(context.Background(), "t", 1) }()
	select {
	case err := <-closed:
		if !strings.Contains(err.Error(), "keepalive") {
			t.Fatalf("closed: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a silent broker was not noticed")
	}
	select {
	case err := <-waiting:
		if err == nil {
			t.Fatal("the subscribe succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a call waiting on the lost connection did not return")
	}
}

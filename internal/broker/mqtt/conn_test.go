package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/exgate/exgate/internal/broker"
	"github.com/exgate/exgate/internal/mqttwire"
	"github.com/exgate/exgate/internal/netpoll"
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
// scripted server: over net.Pipe, read by the conn's goroutine, or, with a
// poller, over loopback TCP read by the poller.
func session(t *testing.T, ka uint16, h broker.Handlers, p *netpoll.Poller) *scripted {
	t.Helper()
	client, server := net.Pipe()
	if p != nil {
		client, server = tcpPair(t)
	}
	s := &scripted{t: t, c: server, r: bufio.NewReader(server)}
	got := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		sess, err := dial(ctx, client, 4, broker.ClientInfo{ClientID: "d"}, "", ka, h, p)
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
	if (p != nil) != (s.cl.watch != nil) {
		t.Fatalf("poller %v, watched %v", p != nil, s.cl.watch != nil)
	}
	t.Cleanup(func() { server.Close(); s.cl.Close() })
	return s
}

func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if client, err = net.Dial("tcp", ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if server, err = ln.Accept(); err != nil {
		t.Fatal(err)
	}
	return client, server
}

// bothReaders runs f with the conn read by its own goroutine and by a poller.
func bothReaders(t *testing.T, f func(t *testing.T, p *netpoll.Poller)) {
	t.Run("goroutine", func(t *testing.T) { f(t, nil) })
	t.Run("poller", func(t *testing.T) { f(t, newPoller(t)) })
}

// newPoller is a one-loop poller closed with the test (skipped without one).
func newPoller(t *testing.T) *netpoll.Poller {
	t.Helper()
	p, err := netpoll.New(1, nil)
	if errors.Is(err, errors.ErrUnsupported) {
		t.Skip("no poller here")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// A QoS 2 delivery sent again before its PUBREL reaches the device once;
// each is answered with PUBREC, the PUBREL with PUBCOMP. A QoS 2 publish
// waits for PUBREC, answers it with PUBREL, and returns on PUBCOMP.
func TestConnQoS2(t *testing.T) { bothReaders(t, testConnQoS2) }

func testConnQoS2(t *testing.T, poller *netpoll.Poller) {
	var delivered atomic.Int32
	s := session(t, 0, broker.Handlers{Deliver: func(broker.Message) { delivered.Add(1) }, Closed: func(error) {}}, poller)
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
func TestConnKeepaliveLoss(t *testing.T) { bothReaders(t, testConnKeepaliveLoss) }

func testConnKeepaliveLoss(t *testing.T, p *netpoll.Poller) {
	closed := make(chan error, 1)
	s := session(t, 1, broker.Handlers{Deliver: func(broker.Message) {}, Closed: func(err error) { closed <- err }}, p)
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

// A broker that sends QoS 1 deliveries without reading fills the socket
// with their PUBACKs: the poller does not wait for it (another session on
// the same poller still gets its deliveries), and once the broker reads,
// every PUBACK arrives, in order. Packets cut anywhere by the network are
// put together again.
func TestConnPolledAcksInOrder(t *testing.T) {
	p := newPoller(t)
	var delivered, other atomic.Int32
	s := session(t, 0, broker.Handlers{Deliver: func(broker.Message) { delivered.Add(1) }, Closed: func(error) {}}, p)
	o := session(t, 0, broker.Handlers{Deliver: func(broker.Message) { other.Add(1) }, Closed: func(error) {}}, p)
	_ = s.cl.nc.(*net.TCPConn).SetWriteBuffer(4096)
	_ = s.c.(*net.TCPConn).SetReadBuffer(32 << 10) // not less: a starved receiver drops segments, and their ACKs with them

	const n = 30000 // 120 KB of PUBACKs, far beyond both buffers
	var stream bytes.Buffer
	for id := 1; id <= n; id++ {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "t", PacketID: uint16(id), Payload: []byte("x"), ProtocolVersion: 4}
		if err := mqttwire.Encode(&pk, &stream); err != nil {
			t.Fatal(err)
		}
	}
	// The first packet's first bytes alone: the conn must keep them until
	// the rest comes (however the later writes happen to be read).
	if _, err := s.c.Write(stream.Bytes()[:3]); err != nil {
		t.Fatal(err)
	}
	kept := time.Now().Add(5 * time.Second)
	for {
		s.cl.rmu.Lock()
		k := len(s.cl.partial)
		s.cl.rmu.Unlock()
		if k == 3 {
			break
		}
		if time.Now().After(kept) {
			t.Fatalf("the conn kept %d bytes of a packet cut after 3", k)
		}
		time.Sleep(time.Millisecond)
	}
	sent := make(chan error, 1)
	go func() { // odd-sized writes: packets cut at every place
		b := stream.Bytes()[3:]
		for len(b) > 0 {
			k := min(len(b), 1+len(b)%13)
			if _, err := s.c.Write(b[:k]); err != nil {
				sent <- err
				return
			}
			b = b[k:]
		}
		sent <- nil
	}()
	deadline := time.Now().Add(10 * time.Second)
	for delivered.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d delivered while the broker did not read", delivered.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	s.cl.mu.Lock()
	flushing := s.cl.flushing
	s.cl.mu.Unlock()
	if !flushing {
		t.Fatal("the PUBACKs all fitted in the socket: the test did not fill it")
	}
	o.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "t", Payload: []byte("y")})
	for other.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the other session on the poller got nothing while the first one's socket was full")
		}
		time.Sleep(time.Millisecond)
	}
	for id := 1; id <= n; id++ {
		if pk := s.expect(packets.Puback); pk.PacketID != uint16(id) {
			t.Fatalf("PUBACK %d came as number %d", pk.PacketID, id)
		}
	}
}

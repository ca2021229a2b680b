package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/exgate/exgate/internal/broker"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/testbroker"
	"github.com/exgate/exgate/internal/testnet"
)

// A broker that speaks MQTT 3.1.1 only (RabbitMQ's and NATS's MQTT) hangs
// up on an MQTT 5 CONNECT without a CONNACK; with protocol_version 5 the
// error says what to set instead of a bare EOF.
func TestMQTT5RefusedByA311BrokerSaysWhy(t *testing.T) {
	ln := hangingUp(t, true)
	b, err := New(Options{Config: config.External{Servers: []string{"tcp://" + ln.Addr().String()}, ProtocolVersion: 5}, Node: "n"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = b.Connect(ctx, broker.ClientInfo{ClientID: "dev"}, "", broker.Handlers{Deliver: func(broker.Message) {}, Closed: func(error) {}})
	if err == nil || !strings.Contains(err.Error(), "protocol_version: auto or 4") {
		t.Fatalf("connect to a broker that hangs up: %v, want the protocol_version hint", err)
	}
}

// A server that takes the TCP connection but not the session is skipped
// for the next one, and later sessions start with the one that worked.
func TestFailoverWhenTheSessionIsRefused(t *testing.T) {
	hangUp := hangingUp(t, false)
	good := testbroker.Start(t)
	b, err := New(Options{Config: config.External{Servers: []string{"tcp://" + hangUp.Addr().String(), "tcp://" + good.Addr}}, Node: "n"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := broker.Handlers{Deliver: func(broker.Message) {}, Closed: func(error) {}}
	for i := 0; i < 2; i++ {
		s, err := b.Connect(ctx, broker.ClientInfo{ClientID: fmt.Sprintf("dev-%d", i)}, "", h)
		if err != nil {
			t.Fatalf("connect %d with a second, working server: %v", i, err)
		}
		s.Close()
	}
	if b.next.Load() != 1 {
		t.Fatalf("preferred server %d, want 1 (the one that worked)", b.next.Load())
	}
}

// hangingUp is a server that accepts TCP connections and closes them,
// after reading the first packet if readFirst: a broker that will not
// take the session.
func hangingUp(t *testing.T, readFirst bool) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if readFirst {
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, _ = c.Read(make([]byte, 256)) // the CONNECT
			}
			c.Close()
		}
	}()
	return ln
}

// With protocol_version auto (the default), a server that hangs up on
// MQTT 5 is spoken to in MQTT 3.1.1: the first session asks once, later
// ones go straight to 3.1.1, and messages flow.
func TestAutoFallsBackToMQTT311(t *testing.T) {
	up := testbroker.Start(t)
	proxy, v5 := onlyMQTT311(t, up.Addr)
	var logs strings.Builder
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), nil))
	ctx, b, sub, got := subscriber(t, Options{Config: config.External{Servers: []string{"tcp://" + proxy}}, Node: "n", Logger: log})
	if err := sub.Subscribe(ctx, "auto/t", 1); err != nil {
		t.Fatal(err)
	}
	pub, err := b.Connect(ctx, broker.ClientInfo{ClientID: "pub"}, "", broker.Handlers{Deliver: func(broker.Message) {}, Closed: func(error) {}})
	if err != nil {
		t.Fatalf("second session: %v", err)
	}
	defer pub.Close()
	if err := pub.Publish(ctx, "auto/t", 1, []byte("over 3.1.1")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if string(m.Payload) != "over 3.1.1" {
			t.Fatalf("got %q", m.Payload)
		}
	case <-ctx.Done():
		t.Fatal("no delivery")
	}
	if n := v5.Load(); n != 1 {
		t.Fatalf("%d MQTT 5 CONNECTs reached the 3.1.1-only server, want 1 (then it is known)", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "refused MQTT 5") {
		t.Fatalf("the fallback was not logged:\n%s", logs.String())
	}
}

// An upstream without QoS 2 or shared subscriptions (NATS 2.9, RabbitMQ
// 3.x) is described by max_qos and shared_subscriptions: a device's QoS 2
// publish goes at QoS 1, and a $share subscription is refused as a bad
// request instead of being taken for a topic that never delivers.
func TestUpstreamCapabilities(t *testing.T) {
	up := testbroker.Start(t)
	one, no := 1, false
	ctx, _, sub, got := subscriber(t, Options{Config: config.External{Servers: []string{"tcp://" + up.Addr}, MaxQoS: &one, SharedSubscriptions: &no}, Node: "n"})
	if err := sub.Subscribe(ctx, "$share/g/cap/t", 1); !errors.Is(err, broker.ErrBadRequest) {
		t.Fatalf("a shared subscription with shared_subscriptions false: %v, want ErrBadRequest", err)
	}
	if err := sub.Subscribe(ctx, "cap/t", 2); err != nil {
		t.Fatal(err)
	}
	if err := sub.Publish(ctx, "cap/t", 2, []byte("capped")); err != nil {
		t.Fatalf("a QoS 2 publish with max_qos 1: %v", err)
	}
	select {
	case m := <-got:
		if string(m.Payload) != "capped" || m.QoS != 1 {
			t.Fatalf("delivered %q at QoS %d, want capped at QoS 1 (published at 2, subscribed at 2)", m.Payload, m.QoS)
		}
	case <-ctx.Done():
		t.Fatal("no delivery")
	}
}

// subscriber starts a broker with o and opens its session "sub", whose
// deliveries go to got; all of it ends with the test (ctx after 10 s).
func subscriber(t *testing.T, o Options) (ctx context.Context, b *Broker, sub broker.Session, got chan broker.Message) {
	t.Helper()
	b, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	got = make(chan broker.Message, 1)
	sub, err = b.Connect(ctx, broker.ClientInfo{ClientID: "sub"}, "", broker.Handlers{Deliver: func(m broker.Message) { got <- m }, Closed: func(error) {}})
	if err != nil {
		t.Fatalf("session sub: %v", err)
	}
	t.Cleanup(sub.Close)
	return ctx, b, sub, got
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// onlyMQTT311 is a proxy to upstream that hangs up on MQTT 5 CONNECTs, as
// RabbitMQ's and NATS's MQTT do; v5 counts them.
func onlyMQTT311(t *testing.T, upstream string) (string, *atomic.Int64) {
	t.Helper()
	v5 := new(atomic.Int64)
	addr := testnet.Serve(t, func(c net.Conn) {
		// CONNECT: fixed header, remaining length (short here), then the
		// protocol name "MQTT" (2+4 bytes) and the level.
		head := make([]byte, 9)
		if _, err := io.ReadFull(c, head); err != nil {
			return
		}
		if head[8] == 5 {
			v5.Add(1)
			return
		}
		u, err := net.Dial("tcp", upstream)
		if err != nil {
			return
		}
		defer u.Close()
		if _, err := u.Write(head); err != nil {
			return
		}
		go func() { _, _ = io.Copy(u, c); u.Close() }()
		_, _ = io.Copy(c, u)
	})
	return addr, v5
}

// The close reason tells the truth (#19's repro): a device's server stops
// answering, a new device fails over to the next server, then the first
// server goes (its connections closed cleanly, as a broker shutting down
// does, so the session sees EOF, not a reset). The first device's session is lost, not taken over: the
// takeover check asks the server the session was on, not the one
// preferred now (reconnect off, so the loss is reported). A hung server
// also costs a new device connect_timeout, not its whole deadline.
func TestLostServerIsNotATakeover(t *testing.T) {
	m1, m2 := testbroker.Start(t), testbroker.Start(t)
	p1 := newProxy(t, m1.Addr) // the first server, as the gateway sees it
	b, err := New(Options{Config: config.External{Servers: []string{"tcp://" + p1.addr(), "tcp://" + m2.Addr}, ConnectTimeout: time.Second, Reconnect: new(bool)}, Node: "n"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	closed := make(chan error, 1)
	a, err := b.Connect(ctx, broker.ClientInfo{ClientID: "a"}, "", broker.Handlers{Deliver: func(broker.Message) {}, Closed: func(err error) { closed <- err }})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	p1.hang() // takes TCP connections, answers nothing
	begin := time.Now()
	second, err := b.Connect(ctx, broker.ClientInfo{ClientID: "b"}, "", broker.Handlers{Deliver: func(broker.Message) {}, Closed: func(error) {}})
	if err != nil {
		t.Fatalf("new device with its first server hung: %v", err)
	}
	defer second.Close()
	if took := time.Since(begin); took > 5*time.Second {
		t.Fatalf("failover from a hung server took %v (connect_timeout 1s)", took)
	}
	p1.kill() // a clean close (FIN) of every connection, and no more listening
	select {
	case err := <-closed:
		if errors.Is(err, broker.ErrTakenOver) || errors.Is(err, broker.ErrKicked) {
			t.Fatalf("a session whose server went away reported as taken over or kicked: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the session on the dead server was not reported closed")
	}
}

// proxy forwards TCP to a server until hang (new connections are taken and
// left unanswered) or kill (everything closed cleanly, nothing listens).
type proxy struct {
	ln       net.Listener
	upstream string
	wg       sync.WaitGroup

	mu    sync.Mutex
	hung  bool
	conns []net.Conn
}

func newProxy(t *testing.T, upstream string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, upstream: upstream}
	t.Cleanup(p.kill)
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns = append(p.conns, c)
			hung := p.hung
			p.mu.Unlock()
			if hung {
				continue
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, u)
			p.mu.Unlock()
			p.wg.Go(func() { _, _ = io.Copy(u, c); u.Close() })
			p.wg.Go(func() { _, _ = io.Copy(c, u); c.Close() })
		}
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) hang() {
	p.mu.Lock()
	p.hung = true
	p.mu.Unlock()
}

func (p *proxy) kill() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

// A server's DISCONNECT says what happened only with 0x8E (taken over) and
// 0x98 (administrative action: a kick); shutting down (0x8B) or any other
// code is a lost session (seen as such with reconnect off).
func TestServerDisconnectReasons(t *testing.T) {
	for _, c := range []struct {
		code             byte
		takeover, kicked bool
	}{{0x8E, true, false}, {0x98, false, true}, {0x8B, false, false}, {0x9C, false, false}} {
		t.Run(fmt.Sprintf("0x%02X", c.code), func(t *testing.T) {
			addr := disconnecting(t, c.code)
			b, err := New(Options{Config: config.External{Servers: []string{"tcp://" + addr}, ProtocolVersion: 5, Reconnect: new(bool)}, Node: "n"})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			closed := make(chan error, 1)
			s, err := b.Connect(ctx, broker.ClientInfo{ClientID: "d"}, "", broker.Handlers{Deliver: func(broker.Message) {}, Closed: func(err error) { closed <- err }})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			select {
			case err := <-closed:
				if errors.Is(err, broker.ErrTakenOver) != c.takeover || errors.Is(err, broker.ErrKicked) != c.kicked {
					t.Fatalf("DISCONNECT 0x%02X: %v", c.code, err)
				}
			case <-ctx.Done():
				t.Fatal("no close")
			}
		})
	}
}

// disconnecting is an MQTT 5 server that accepts each session and then
// sends DISCONNECT with code.
func disconnecting(t *testing.T, code byte) string {
	t.Helper()
	return testnet.Serve(t, func(c net.Conn) {
		fh := packets.FixedHeader{}
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil {
			return
		}
		if err := fh.Decode(b[0]); err != nil {
			return
		}
		r := bufio.NewReader(c)
		n, _, err := packets.DecodeLength(r)
		if err != nil {
			return
		}
		if _, err := io.ReadFull(r, make([]byte, n)); err != nil {
			return
		}
		var out bytes.Buffer
		ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ProtocolVersion: 5}
		_ = ack.ConnackEncode(&out)
		bye := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ProtocolVersion: 5, ReasonCode: code}
		_ = bye.DisconnectEncode(&out)
		_, _ = c.Write(out.Bytes())
		_, _ = io.Copy(io.Discard, c)
	})
}

// Broker-node loss keeps devices (#19): 200 sessions on the first server
// publish QoS 1 all along; the server goes away (a mosquitto shut down, a
// node of a NATS cluster killed); every session is opened again on the
// second server with its subscription renewed, and every publish call
// returns (success, or an error within its deadline): nothing
// unaccounted. With mosquitto every device is kept (no Closed callback).
// A NATS cluster recovering JetStream may refuse a session's subscription
// renewal past reconnect_timeout when starved of CPU (seen once in three
// runs under -race beside a CPU hog, for one of 200): such a device must be
// told why (the reconnect_timeout), and the others kept; the count is logged.
func TestSessionsSurviveServerLoss(t *testing.T) {
	t.Run("mosquitto", func(t *testing.T) {
		m1, m2 := testbroker.Start(t), testbroker.Start(t)
		surviveLoss(t, "tcp://"+m1.Addr, "tcp://"+m2.Addr, m1.Terminate, 5*time.Millisecond, true)
	})
	t.Run("nats-cluster", func(t *testing.T) {
		if testing.Short() {
			t.Skip("starts a NATS cluster: skipped with -short")
		}
		c := testbroker.StartNATS(t, 3)
		// NATS makes a JetStream consumer for every QoS 1 subscription it
		// renews: slower publishers leave it the CPU to do so.
		surviveLoss(t, "tcp://"+c.Nodes[0].Addr, "tcp://"+c.Nodes[1].Addr, c.Nodes[0].Kill, 200*time.Millisecond, false)
	})
}

func surviveLoss(t *testing.T, first, second string, lose func(), pause time.Duration, keepAll bool) {
	b, err := New(Options{Config: config.External{Servers: []string{first, second},
		ConnectTimeout: time.Second, ReconnectTimeout: 100 * time.Second}, Node: "n"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	const n = 200
	var closedCalls atomic.Int64
	gaveUp := make([]atomic.Bool, n) // closed after reconnect_timeout
	got := make([]chan struct{}, n)
	sessions := make([]broker.Session, n)
	errs := make([]error, n)
	var setup sync.WaitGroup
	slots := make(chan struct{}, 20) // NATS makes a JetStream consumer per QoS 1 subscription: slow one by one
	for i := range n {
		got[i] = make(chan struct{}, 100)
		setup.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			s, err := b.Connect(ctx, broker.ClientInfo{ClientID: fmt.Sprintf("keep-%d", i)}, "", broker.Handlers{
				Deliver: func(broker.Message) { got[i] <- struct{}{} },
				Closed: func(err error) {
					if strings.Contains(err.Error(), "reconnect_timeout") {
						gaveUp[i].Store(true)
					}
					closedCalls.Add(1)
					t.Logf("keep-%d closed: %v", i, err)
				},
			})
			if err == nil {
				sessions[i] = s
				err = s.Subscribe(ctx, fmt.Sprintf("keep/%d", i), 1)
				// A NATS cluster starved of CPU (-race beside a CPU hog: once
				// in three runs) refuses a QoS 1 subscription now and then
				// (SUBACK 0x80) while it makes the JetStream consumer: the
				// device is told so, and this setup asks again.
				for try := 1; !keepAll && errors.Is(err, broker.ErrNotAuthorized) && try <= 5; try++ {
					t.Logf("keep-%d: subscribe refused (%v): again", i, err)
					time.Sleep(time.Duration(try) * 200 * time.Millisecond)
					err = s.Subscribe(ctx, fmt.Sprintf("keep/%d", i), 1)
				}
			}
			errs[i] = err
		})
	}
	setup.Wait()
	for _, s := range sessions {
		if s != nil {
			defer s.Close()
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	var ok, failed atomic.Int64
	stop := make(chan struct{})
	var pubs sync.WaitGroup
	for _, s := range sessions {
		pubs.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
				if s.Publish(pctx, "up/x", 1, []byte("x")) == nil {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
				pcancel()
				time.Sleep(pause)
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	before := ok.Load()
	lose()

	// An MQTT client of the second server reaches every device.
	obs, err := New(Options{Config: config.External{Servers: []string{second}}, Node: "obs"})
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Close()
	lost := time.Now()
	// The observer is an MQTT client of the second server, opened again
	// whenever that server ends its session while the cluster recovers.
	var o broker.Session
	defer func() {
		if o != nil {
			o.Close()
		}
	}()
	publish := func(topic string) error {
		if o == nil {
			var err error
			if o, err = obs.Connect(ctx, broker.ClientInfo{ClientID: "observer"}, "", broker.Handlers{Deliver: func(broker.Message) {}, Closed: func(error) {}}); err != nil {
				return err
			}
		}
		err := o.Publish(ctx, topic, 1, []byte("hi"))
		if errors.Is(err, broker.ErrClosed) {
			o.Close()
			o = nil
		}
		return err
	}
	for i := range n {
		for reached := false; !reached && !gaveUp[i].Load(); {
			if err := publish(fmt.Sprintf("keep/%d", i)); err != nil {
				t.Logf("observer, to device %d: %v (the cluster is still recovering: again)", i, err)
			}
			select {
			case <-got[i]:
				reached = true
			case <-time.After(200 * time.Millisecond):
			case <-ctx.Done():
				t.Fatalf("device %d not reached on the second server", i)
			}
		}
	}
	t.Logf("every device kept reached %v after the loss", time.Since(lost).Round(time.Millisecond))
	after := ok.Load()
	close(stop)
	done := make(chan struct{})
	go func() { pubs.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a publish call did not return")
	}
	t.Logf("publishes acknowledged: %d before the loss, %d in all; %d answered with an error", before, ok.Load(), failed.Load())
	var told int64
	for i := range gaveUp {
		if gaveUp[i].Load() {
			told++
		}
	}
	t.Logf("devices kept: %d of %d; closed after reconnect_timeout: %d", int64(n)-told, n, told)
	switch closed := closedCalls.Load(); {
	case keepAll && closed != 0:
		t.Fatalf("%d devices were told their session closed", closed)
	case closed != told:
		t.Fatalf("%d devices were closed for another reason than the reconnect_timeout", closed-told)
	case told == int64(n):
		t.Fatal("no device was kept")
	}
	if ok.Load() <= after && after <= before {
		t.Fatal("no publish succeeded after the loss")
	}
}

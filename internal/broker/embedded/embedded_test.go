package embedded

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/goleak"

	"github.com/exgate/exgate/internal/broker"
)

// device is a test device session with what it received.
type device struct {
	broker.Session
	mu     sync.Mutex
	got    []broker.Message
	closed chan error
}

func (d *device) messages() []broker.Message {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]broker.Message(nil), d.got...)
}

// waitN waits until the device has n messages.
func (d *device) waitN(t *testing.T, n int) []broker.Message {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if m := d.messages(); len(m) >= n {
			return m
		}
	}
	t.Fatalf("device got %d messages, want %d", len(d.messages()), n)
	return nil
}

func (d *device) waitClosed(t *testing.T) error {
	t.Helper()
	select {
	case err := <-d.closed:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("device session was not ended")
		return nil
	}
}

func start(t *testing.T) *Broker {
	t.Helper()
	b, err := New(Options{Bind: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func connect(t *testing.T, b *Broker, clientID string) *device {
	t.Helper()
	d := &device{closed: make(chan error, 1)}
	s, err := b.Connect(context.Background(), broker.ClientInfo{ClientID: clientID}, "", broker.Handlers{
		Deliver: func(m broker.Message) {
			d.mu.Lock()
			d.got = append(d.got, m)
			d.mu.Unlock()
		},
		Closed: func(err error) { d.closed <- err },
	})
	if err != nil {
		t.Fatal(err)
	}
	d.Session = s
	return d
}

// mqttClient is a real MQTT client of the broker's TCP listener.
type mqttClient struct {
	paho.Client
	lost chan error
	msgs chan paho.Message
	got  []string // payloads taken from msgs by a count
}

func dialMQTT(t *testing.T, b *Broker, clientID string) *mqttClient {
	t.Helper()
	m := &mqttClient{lost: make(chan error, 1), msgs: make(chan paho.Message, 1000)}
	o := paho.NewClientOptions().AddBroker("tcp://" + b.Addr().String()).SetClientID(clientID).
		SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectionLostHandler(func(_ paho.Client, err error) { m.lost <- err })
	m.Client = paho.NewClient(o)
	if tok := m.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("MQTT connect %s: %v", clientID, tok.Error())
	}
	t.Cleanup(func() { m.Disconnect(0) })
	return m
}

func (m *mqttClient) sub(t *testing.T, filter string, qos byte) {
	t.Helper()
	tok := m.Subscribe(filter, qos, func(_ paho.Client, msg paho.Message) { m.msgs <- msg })
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
}

func (m *mqttClient) pub(t *testing.T, topic string, qos byte, retained bool, payload string) {
	t.Helper()
	if tok := m.Publish(topic, qos, retained, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

func (m *mqttClient) expect(t *testing.T) paho.Message {
	t.Helper()
	select {
	case msg := <-m.msgs:
		return msg
	case <-time.After(5 * time.Second):
		t.Fatal("MQTT client got nothing")
		return nil
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDeliveriesAtTheGrantedQoS(t *testing.T) {
	b := start(t)
	d := connect(t, b, "dev")
	ctx := context.Background()
	if err := d.Subscribe(ctx, "t/#", 1); err != nil {
		t.Fatal(err)
	}
	if err := d.Subscribe(ctx, "t/hi", 2); err != nil {
		t.Fatal(err)
	}
	m := dialMQTT(t, b, "app")
	m.pub(t, "t/a", 2, false, "x") // downgraded to the granted 1
	m.pub(t, "t/a", 0, false, "y")
	m.pub(t, "t/hi", 2, false, "z") // the best matching grant: 2
	m.pub(t, "t", 1, false, "w")    // "t/#" matches "t"
	got := d.waitN(t, 4)
	want := []struct {
		topic string
		qos   byte
	}{{"t/a", 1}, {"t/a", 0}, {"t/hi", 2}, {"t", 1}}
	for i, w := range want {
		if got[i].Topic != w.topic || got[i].QoS != w.qos || got[i].From != "app" || got[i].Time.IsZero() {
			t.Errorf("delivery %d: %+v, want %s at QoS %d from app", i, got[i], w.topic, w.qos)
		}
	}

	// Unsubscribed: nothing more; an unknown filter is not an error.
	if err := d.Unsubscribe(ctx, "t/#"); err != nil {
		t.Fatal(err)
	}
	if err := d.Unsubscribe(ctx, "never/subscribed"); err != nil {
		t.Fatal(err)
	}
	m.pub(t, "t/a", 1, false, "gone")
	m.pub(t, "t/hi", 1, false, "still")
	d.waitN(t, 5)
	time.Sleep(50 * time.Millisecond)
	if got = d.messages(); len(got) != 5 || string(got[4].Payload) != "still" {
		t.Fatalf("after unsubscribe: %d messages, last %+v", len(got), got[len(got)-1])
	}
}

func TestDevicePublishesAtEachQoS(t *testing.T) {
	b := start(t)
	m := dialMQTT(t, b, "app")
	m.sub(t, "up/#", 2)
	d := connect(t, b, "dev")
	other := connect(t, b, "dev2")
	if err := other.Subscribe(context.Background(), "up/#", 2); err != nil {
		t.Fatal(err)
	}
	for qos := byte(0); qos <= 2; qos++ {
		if err := d.Publish(context.Background(), "up/dev", qos, []byte{'0' + qos}); err != nil {
			t.Fatalf("publish QoS %d: %v", qos, err)
		}
		if msg := m.expect(t); msg.Topic() != "up/dev" || msg.Qos() != qos || string(msg.Payload()) != string('0'+rune(qos)) {
			t.Fatalf("MQTT client got %s qos %d %q", msg.Topic(), msg.Qos(), msg.Payload())
		}
	}
	for i, msg := range other.waitN(t, 3) {
		if msg.From != "dev" || msg.QoS != byte(i) {
			t.Fatalf("device→device %d: %+v, want from dev at QoS %d", i, msg, i)
		}
	}
}

func TestBadPublishesAreRefusedAtOnce(t *testing.T) {
	b := start(t)
	d := connect(t, b, "dev")
	ctx := context.Background()
	for topic, want := range map[string]error{
		"$SYS/x": broker.ErrNotAuthorized, "$sys/broker": broker.ErrNotAuthorized,
		"a/+": broker.ErrBadRequest, "a/#": broker.ErrBadRequest, "": broker.ErrBadRequest,
	} {
		if err := d.Publish(ctx, topic, 1, nil); !errors.Is(err, want) {
			t.Errorf("publish %q: %v, want %v", topic, err, want)
		}
	}
	if err := d.Publish(ctx, "a", 3, nil); !errors.Is(err, broker.ErrBadRequest) {
		t.Errorf("publish QoS 3: %v", err)
	}
	if err := d.Subscribe(ctx, "a/#/b", 0); !errors.Is(err, broker.ErrBadRequest) {
		t.Errorf("subscribe a/#/b: %v", err)
	}
	// A refused subscription leaves nothing behind.
	m := dialMQTT(t, b, "app")
	m.pub(t, "a/x/b", 0, false, "p")
	time.Sleep(50 * time.Millisecond)
	if n := len(d.messages()); n != 0 {
		t.Fatalf("got %d messages after a refused subscribe", n)
	}
}

func TestRetainedOnSubscribe(t *testing.T) {
	b := start(t)
	m := dialMQTT(t, b, "app")
	// mochi acknowledges a publish before it routes it: a watcher's copy
	// says the routing is over, so no live copy can reach the device too.
	w := dialMQTT(t, b, "watcher")
	w.sub(t, "state/+", 0)
	w.sub(t, "$app/#", 0)
	m.pub(t, "state/lamp", 1, true, "on")
	w.expect(t)
	d := connect(t, b, "dev")
	if err := d.Subscribe(context.Background(), "state/+", 1); err != nil {
		t.Fatal(err)
	}
	if got := d.waitN(t, 1); got[0].Topic != "state/lamp" || string(got[0].Payload) != "on" || got[0].From != "app" {
		t.Fatalf("retained: %+v", got[0])
	}

	// A retained message on a '$' topic goes to "$app/#", not to "#".
	m.pub(t, "$app/mode", 1, true, "auto")
	w.expect(t)
	if err := d.Subscribe(context.Background(), "#", 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Subscribe(context.Background(), "$app/#", 2); err != nil {
		t.Fatal(err)
	}
	d.waitN(t, 3) // state/lamp again through "#", then $app/mode
	time.Sleep(50 * time.Millisecond)
	if got := d.messages(); len(got) != 3 || got[1].Topic != "state/lamp" || got[2].Topic != "$app/mode" || got[2].QoS != 1 {
		t.Fatalf("retained after '#' and '$app/#': %+v", got)
	}
}

// A device's filters other than $share's are mochi inline subscriptions;
// the MQTT rules mochi's inline routing misses hold all the same.
func TestInlineSubscriptionsKeepMQTTRules(t *testing.T) {
	b := start(t)
	d := connect(t, b, "dev")
	ctx := context.Background()
	for _, f := range []string{"#", "+/x", "$app/#", "a", "a/#", "+/#"} {
		if err := d.Subscribe(ctx, f, 1); err != nil {
			t.Fatal(err)
		}
	}
	m := dialMQTT(t, b, "app")
	m.pub(t, "$app/x", 1, false, "1") // only through "$app/#": a wildcard first level does not match '$'
	m.pub(t, "a", 1, false, "2")      // "a", "a/#", "+/#" and "#" match: one delivery
	m.pub(t, "b", 1, false, "3")      // "+/#" matches "b" [MQTT-4.7.1-2], and "#"
	d.waitN(t, 3)                     // mochi acknowledges a publish before it routes it
	if err := d.Unsubscribe(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := d.Unsubscribe(ctx, "#"); err != nil {
		t.Fatal(err)
	}
	if err := d.Unsubscribe(ctx, "+/#"); err != nil {
		t.Fatal(err)
	}
	m.pub(t, "a", 1, false, "4") // still "a/#"
	d.waitN(t, 4)
	if err := d.Unsubscribe(ctx, "a/#"); err != nil {
		t.Fatal(err)
	}
	m.pub(t, "a", 1, false, "-")
	m.pub(t, "$app/x", 1, false, "5") // routed after "-", which would show before it
	got := d.waitN(t, 5)
	time.Sleep(50 * time.Millisecond)
	var payloads []string
	for _, msg := range d.messages() {
		payloads = append(payloads, string(msg.Payload))
	}
	if fmt.Sprint(payloads) != "[1 2 3 4 5]" || got[0].Topic != "$app/x" {
		t.Fatalf("deliveries %v, want [1 2 3 4 5]", payloads)
	}

	// Closing the session leaves nothing in mochi's index or its count.
	before := atomic.LoadInt64(&b.srv.Info.Subscriptions)
	if before != 2 { // "+/x" and "$app/#"
		t.Fatalf("mochi counts %d subscriptions, want 2", before)
	}
	d.Close()
	for _, topic := range []string{"$app/x", "q/x", "a"} {
		if n := len(b.srv.Topics.Subscribers(topic).InlineSubscriptions); n != 0 {
			t.Fatalf("%d inline subscriptions left for %q after close", n, topic)
		}
	}
	if n := atomic.LoadInt64(&b.srv.Info.Subscriptions); n != 0 {
		t.Fatalf("mochi counts %d subscriptions after close", n)
	}
	if err := d.Subscribe(ctx, "a", 0); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("subscribe after close: %v", err)
	}
}

// A subscribe racing the session's end leaves no inline subscription
// behind, whichever wins.
func TestSubscribeRacingClose(t *testing.T) {
	b := start(t)
	for i := range 200 {
		d := connect(t, b, fmt.Sprintf("dev%d", i))
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = d.Subscribe(context.Background(), "r/#", 0)
		}()
		d.Close()
		<-done
	}
	if n := len(b.srv.Topics.Subscribers("r/x").InlineSubscriptions); n != 0 {
		t.Fatalf("%d inline subscriptions left behind", n)
	}
}

func TestSharedGroupMixingDevicesAndClientsDeliversOnce(t *testing.T) {
	b := start(t)
	var devs []*device
	for i := range 2 {
		d := connect(t, b, fmt.Sprintf("dev%d", i))
		if err := d.Subscribe(context.Background(), "$share/g/s/+", 1); err != nil {
			t.Fatal(err)
		}
		devs = append(devs, d)
	}
	var clients []*mqttClient
	for i := range 2 {
		m := dialMQTT(t, b, fmt.Sprintf("sub%d", i))
		m.sub(t, "$share/g/s/+", 1)
		clients = append(clients, m)
	}
	pub := dialMQTT(t, b, "pub")
	const n = 200
	for i := range n {
		pub.pub(t, "s/x", 1, false, fmt.Sprint(i))
	}
	// Count until every message arrived somewhere, then a little longer
	// so that a duplicate would show.
	seen := map[string]int{}
	byDevices, byClients := 0, 0
	count := func() {
		clear(seen)
		byDevices = 0
		for _, d := range devs {
			for _, m := range d.messages() {
				seen[string(m.Payload)]++
				byDevices++
			}
		}
		for _, c := range clients {
			for drained := false; !drained; {
				select {
				case msg := <-c.msgs:
					c.got = append(c.got, string(msg.Payload()))
				default:
					drained = true
				}
			}
		}
		byClients = 0
		for _, c := range clients {
			for _, p := range c.got {
				seen[p]++
				byClients++
			}
		}
	}
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if count(); byDevices+byClients >= n {
			break
		}
	}
	time.Sleep(100 * time.Millisecond)
	count()
	for i := range n {
		if seen[fmt.Sprint(i)] != 1 {
			t.Fatalf("message %d delivered %d times (devices %d, clients %d)", i, seen[fmt.Sprint(i)], byDevices, byClients)
		}
	}
	if byDevices == 0 || byClients == 0 {
		t.Fatalf("the group did not mix: devices got %d, clients %d", byDevices, byClients)
	}
}

func TestTakeoverInEveryDirection(t *testing.T) {
	b := start(t)
	// device → device
	a := connect(t, b, "same")
	if err := a.Subscribe(context.Background(), "t", 0); err != nil {
		t.Fatal(err)
	}
	d := connect(t, b, "same")
	if err := a.waitClosed(t); !errors.Is(err, broker.ErrTakenOver) {
		t.Fatalf("device taken over by a device: %v", err)
	}
	if err := a.Publish(context.Background(), "t", 0, nil); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("taken-over session publishes: %v", err)
	}
	// MQTT client → device
	m := dialMQTT(t, b, "same")
	if err := d.waitClosed(t); !errors.Is(err, broker.ErrTakenOver) {
		t.Fatalf("device taken over by an MQTT client: %v", err)
	}
	// device → MQTT client
	c := connect(t, b, "same")
	select {
	case <-m.lost:
	case <-time.After(5 * time.Second):
		t.Fatal("the MQTT client was not disconnected")
	}
	// The winner works, and the old subscription of "a" is gone.
	if err := c.Subscribe(context.Background(), "t", 0); err != nil {
		t.Fatal(err)
	}
	dialMQTT(t, b, "other").pub(t, "t", 0, false, "p")
	c.waitN(t, 1)
	if n := len(a.messages()); n != 0 {
		t.Fatalf("the taken-over device still receives: %d", n)
	}
	// Devices without a clientid are nobody's: they do not take each other over.
	e1, e2 := connect(t, b, ""), connect(t, b, "")
	select {
	case err := <-e1.closed:
		t.Fatalf("a device without clientid was taken over: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	e1.Close()
	e2.Close()
}

// TestTakeoverRace: a device and an MQTT client claim the same clientid at
// once; exactly one of them holds it afterwards.
func TestTakeoverRace(t *testing.T) {
	b := start(t)
	const pairs = 40
	type pair struct {
		d *device
		m *mqttClient
	}
	ps := make([]pair, pairs)
	var wg sync.WaitGroup
	for i := range pairs {
		id := fmt.Sprintf("race-%d", i)
		wg.Go(func() { ps[i].d = connect(t, b, id) })
		wg.Go(func() {
			m := &mqttClient{lost: make(chan error, 1), msgs: make(chan paho.Message, 1)}
			o := paho.NewClientOptions().AddBroker("tcp://" + b.Addr().String()).SetClientID(id).
				SetAutoReconnect(false).SetConnectionLostHandler(func(_ paho.Client, err error) { m.lost <- err })
			m.Client = paho.NewClient(o)
			m.Connect().WaitTimeout(5 * time.Second)
			ps[i].m = m
		})
	}
	wg.Wait()
	end := time.Now().Add(5 * time.Second)
	for i, p := range ps {
		alive := func() (dev, cl bool) {
			dev = len(p.d.closed) == 0 && !p.d.Session.(*deviceSession).isClosed()
			return dev, p.m.IsConnectionOpen()
		}
		var dev, cl bool
		for {
			if dev, cl = alive(); dev != cl || time.Now().After(end) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if dev == cl {
			t.Errorf("pair %d: device alive %v, MQTT client alive %v: want exactly one holder", i, dev, cl)
		}
		p.m.Disconnect(0)
		p.d.Close()
	}
}

// TestDevicesCostNoGoroutine: a device session, subscribed, has no
// goroutine of its own, and closing every session leaves mochi empty.
func TestDevicesCostNoGoroutine(t *testing.T) {
	b := start(t)
	g0 := runtime.NumGoroutine()
	var devs []*device
	for i := range 500 {
		d := connect(t, b, fmt.Sprintf("d%d", i))
		if err := d.Subscribe(context.Background(), fmt.Sprintf("cmd/d%d", i), 1); err != nil {
			t.Fatal(err)
		}
		devs = append(devs, d)
	}
	if g := runtime.NumGoroutine(); g > g0+5 {
		t.Fatalf("500 device sessions added %d goroutines", g-g0)
	}
	for _, d := range devs {
		d.Close()
	}
	if n := b.srv.Clients.Len(); n != 1 { // mochi's own inline client
		t.Fatalf("mochi still has %d clients after every device closed", n)
	}
	b.mu.Lock()
	held := len(b.holders)
	b.mu.Unlock()
	if held != 0 {
		t.Fatalf("%d clientids still held", held)
	}
}

func TestCloseEndsDeviceSessions(t *testing.T) {
	b, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := connect(t, b, "dev")
	var n atomic.Int32
	go func() {
		if errors.Is(d.waitClosed(t), broker.ErrKicked) {
			n.Add(1)
		}
	}()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(5 * time.Second); n.Load() == 0 && time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
	}
	if n.Load() != 1 {
		t.Fatal("Close did not end the device session with ErrKicked")
	}
	if _, err := b.Connect(context.Background(), broker.ClientInfo{ClientID: "late"}, "", broker.Handlers{}); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("connect after close: %v", err)
	}
}

func TestFilterMatches(t *testing.T) {
	for _, c := range []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true}, {"a/b", "a/c", false}, {"a/+", "a/b", true}, {"a/+", "a/b/c", false},
		{"a/#", "a", true}, {"a/#", "a/b/c", true}, {"#", "a/b", true}, {"+/+", "a/b", true},
		{"+", "a/b", false}, {"a/+/c", "a/b/c", true}, {"a/b/c", "a/b", false}, {"a", "a/b", false},
		{"$share/g/a/+", "a/b", true}, {"$SHARE/g/a/#", "a/b/c", true}, {"$share/g/x", "a", false},
		{"a//b", "a//b", true}, {"a/+/b", "a//b", true},
		{"#", "$SYS/x", false}, {"+/x", "$app/x", false}, {"$app/#", "$app/x", true}, {"$share/g/#", "$app/x", false},
	} {
		if got := filterMatches(c.filter, c.topic); got != c.want {
			t.Errorf("filterMatches(%q, %q) = %v, want %v", c.filter, c.topic, got, c.want)
		}
	}
}

// mochi's housekeeping tickers are unexported fields of v2.7.9; an upgrade
// that moves them must fail here, not leave an idle gateway walking every
// client each second.
func TestHousekeepingSlowed(t *testing.T) {
	s := mqtt.New(&mqtt.Options{})
	if err := slowHousekeeping(s, time.Hour); err != nil {
		t.Fatal(err)
	}
}

// Close returns while MQTT clients are leaving: mochi's own closing of a
// listener's clients deadlocked when one left at the wrong moment
// (mochi-mqtt/server#488), which left exgate hung at shutdown. The
// moment is a race, so there are many rounds: with five, a full mutation
// run on a busy machine once saw mochi's own closing pass.
func TestCloseWhileClientsLeave(t *testing.T) {
	for round := range 20 {
		b, err := New(Options{Bind: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		var conns []net.Conn
		for i := range 300 {
			c, err := net.Dial("tcp", b.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
				Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: fmt.Sprintf("c%d-%d", round, i), Clean: true, Keepalive: 60}}
			var buf bytes.Buffer
			if err := pk.ConnectEncode(&buf); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write(buf.Bytes()); err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		for _, c := range conns { // CONNACKs: every client is in
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
				t.Fatal(err)
			}
		}
		// Clients leave, and more keep leaving (the clients' write lock
		// wanted again and again), while Close runs.
		stop, leaving := make(chan struct{}), make(chan struct{})
		var looped atomic.Int64
		go func() {
			defer close(leaving)
			for {
				select {
				case <-stop:
					return
				default:
					b.srv.Clients.Delete("nobody")
					looped.Add(1)
				}
			}
		}()
		for looped.Load() < 1000 {
			runtime.Gosched()
		}
		for _, c := range conns {
			_ = c.Close()
		}
		closed := make(chan error, 1)
		go func() { closed <- b.Close() }()
		select {
		case <-closed:
		case <-time.After(20 * time.Second):
			t.Fatalf("round %d: Close did not return while clients left", round)
		}
		close(stop)
		<-leaving
	}
}

package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/testhandler"
	"github.com/exgate/exgate/nativepb"
)

// A handler that serves only exgate.v1.Handler is a complete handler in
// native mode: no ConnectionAdapter call, no unary service.
func TestNativeOnlyHandler(t *testing.T) {
	h := testhandler.StartOnly(t, "127.0.0.1:0", testhandler.Native)
	var logs collector
	e := startWith(t, options{handler: h, transport: "tcp+native", logs: &logs}, func(c *config.Config) {
		c.Gateway.ExProto.Server.AuthToken = "nobody-calls-the-adapter"
	})
	d := e.dial()
	d.connect("native-1", 30)
	d.subscribe("down/#", 1)
	m := e.mqtt("app")
	m.sub("up/#", 1)
	d.send(Frame{Type: testhandler.Publish, Topic: "up/1", QoS: 1, Payload: "hello"})
	d.expect(testhandler.Puback, 0)
	m.expect("up/1", "hello")
	m.pub("down/1", 1, false, "to device")
	if f := d.expect(testhandler.Publish, 0); f.Payload != "to device" || f.QoS != 1 {
		t.Fatalf("device got %+v", f)
	}
	d.send(Frame{Type: testhandler.Disconnect})
	if r := e.h.WaitClosed(t, d.id, 5*time.Second); r != "{shutdown,normal}" {
		t.Fatalf("reason %q", r)
	}
	if !strings.Contains(logs.String(), "native handler stream open") {
		t.Fatalf("no native stream in the log:\n%s", logs.String())
	}
}

// One device whose socket does not drain holds up only its own actions:
// the handler's actions for other devices on the same stream go on.
func TestNativeSlowDeviceDoesNotStallOthers(t *testing.T) {
	e := startOn(t, "tcp+native", func(c *config.Config) {
		// Longer than any wait below: the stalled callback must not end
		// before the other device is served.
		c.Gateway.ExProto.Handler.RequestTimeout = 30 * time.Second
	})
	slow := e.dial() // never reads from here on
	slow.connect("slow", 0)
	slow.subscribe("big/#", 0)
	m := e.mqtt("app")
	big := strings.Repeat("x", 64<<10)
	for range 300 { // ~19 MiB: more than loopback's socket buffers hold
		m.pub("big/1", 0, false, big)
	}
	c, ok := e.g.Reg.ByClientID("slow")
	if !ok {
		t.Fatal("slow device not registered")
	}
	// Wait until the gateway's writes to it are stuck: bytes out stop
	// growing while deliveries still wait.
	deadline := time.Now().Add(10 * time.Second)
	last, still := int64(-1), 0
	for still < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("writes to the slow device never stalled (out %d bytes)", last)
		}
		time.Sleep(100 * time.Millisecond)
		in := c.Snapshot()
		if in.BytesOut == last && in.BytesOut > 1<<20 {
			still++
		} else {
			still = 0
		}
		last = in.BytesOut
	}
	// The stalled Send is outstanding (for up to request_timeout); another
	// device is served at once.
	begin := time.Now()
	fast := e.dial()
	fast.connect("fast", 0)
	fast.subscribe("small/#", 0)
	m.pub("small/1", 0, false, "hi")
	if f := fast.expect(testhandler.Publish, 0); f.Payload != "hi" {
		t.Fatalf("fast device got %+v", f)
	}
	if took := time.Since(begin); took > 2*time.Second {
		t.Fatalf("another device waited %v for the stalled one", took)
	}
}

// rawNative is a handler written against exgate.v1 by hand, so a test sees
// the wire: every Up it receives, and Down messages it sends when told.
type rawNative struct {
	nativepb.UnimplementedHandlerServer
	ups  chan *nativepb.Up
	down chan *nativepb.Down
	// drop drops what arrives from then on (the test reads no more).
	dropping atomic.Bool
	// received, not yet returned by next
	events  []*nativepb.Event
	results []*nativepb.Result
}

// startRawNative serves a rawNative handler (room for ups messages) and a
// gateway in native mode that calls it.
func startRawNative(t *testing.T, ups int) (*rawNative, *env) {
	t.Helper()
	return startRawNativeOn(t, ups, "tcp+native", nil)
}

// startRawNativeOn is startRawNative on transport tr (a native one), with
// mutate applied to the configuration too.
func startRawNativeOn(t *testing.T, ups int, tr string, mutate func(*config.Config)) (*rawNative, *env) {
	t.Helper()
	raw := &rawNative{ups: make(chan *nativepb.Up, ups), down: make(chan *nativepb.Down, 100)}
	addr := testhandler.Serve(t, func(s *grpc.Server) { nativepb.RegisterHandlerServer(s, raw) })
	e := startOn(t, tr, func(c *config.Config) {
		c.Gateway.ExProto.Handler.Address = config.Addresses{"http://" + addr}
		if mutate != nil {
			mutate(c)
		}
	})
	return raw, e
}

func (r *rawNative) Connect(s nativepb.Handler_ConnectServer) error {
	go func() {
		for {
			select {
			case d := <-r.down:
				if s.Send(d) != nil {
					return
				}
			case <-s.Context().Done():
				return
			}
		}
	}()
	for {
		up, err := s.Recv()
		if err != nil {
			return nil
		}
		if r.dropping.Load() {
			continue
		}
		select {
		case r.ups <- up:
		case <-s.Context().Done():
			return nil
		}
	}
}

// next returns the next event or result the gateway sent, skipping hellos
// (nil, nil when none came within).
func (r *rawNative) next(t *testing.T, within time.Duration) (*nativepb.Event, *nativepb.Result) {
	t.Helper()
	deadline := time.After(within)
	for len(r.events) == 0 && len(r.results) == 0 {
		select {
		case up := <-r.ups:
			r.events = append(r.events, up.Events...)
			r.results = append(r.results, up.Results...)
		case <-deadline:
			return nil, nil
		}
	}
	if len(r.results) > 0 {
		res := r.results[0]
		r.results = r.results[1:]
		return nil, res
	}
	ev := r.events[0]
	r.events = r.events[1:]
	return ev, nil
}

// drop makes the handler read again when it stopped because the test read
// no more, dropping what it receives from then on.
func (r *rawNative) drop() {
	r.dropping.Store(true)
	select {
	case <-r.ups: // room for the one it may be waiting to put
	default:
	}
}

func (r *rawNative) act(as ...*nativepb.Action) { r.down <- &nativepb.Down{Actions: as} }

// silentDevice dials a device that sends nothing (and reads nothing until
// the test does), closed when the test ends, and returns it with its
// socket_created event.
func (r *rawNative) silentDevice(t *testing.T, e *env) (net.Conn, *nativepb.Event) {
	t.Helper()
	dev, err := e.rawDial(false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	ev, _ := r.next(t, 5*time.Second)
	if ev.GetSocketCreated() == nil {
		t.Fatalf("first event %v, want socket_created", ev)
	}
	return dev, ev
}

// authenticated is silentDevice authenticated as clientid (ref 1, with
// its socket_created's Done); it returns the device and its conn id.
func (r *rawNative) authenticated(t *testing.T, e *env, clientid string) (net.Conn, string) {
	t.Helper()
	dev, ev := r.silentDevice(t, e)
	conn := ev.GetSocketCreated().GetConn()
	r.act(&nativepb.Action{Ref: 1, Action: &nativepb.Action_Authenticate{Authenticate: &pb.AuthenticateRequest{
		Conn: conn, Clientinfo: &pb.ClientInfo{ProtoName: "raw", ProtoVer: "1", Clientid: clientid}}}}, done(conn, ev.Seq))
	if _, res := r.next(t, 10*time.Second); res.GetRef() != 1 || res.GetCode() != pb.ResultCode_SUCCESS {
		t.Fatalf("authenticate %s: %v", clientid, res)
	}
	return dev, conn
}

func done(conn string, seq uint64) *nativepb.Action {
	return &nativepb.Action{Action: &nativepb.Action_Done{Done: &nativepb.Done{Conn: conn, Seq: seq}}}
}

// The wire rules of exgate.v1, seen by a hand-written handler: a hello
// first; one event per device outstanding until its Done; a Done for
// another seq changes nothing; actions apply while an event is
// outstanding; results answer refs, and ref 0 gets none; a Done with an
// error closes the device with the callback's reason.
func TestNativeStaleDone(t *testing.T) {
	raw, e := startRawNative(t, 100)
	dev, err := e.rawDial(false)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	select {
	case up := <-raw.ups:
		if up.Hello == nil || up.Hello.Node == "" || len(up.Events) > 0 {
			t.Fatalf("first Up is not a hello: %v", up)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no hello")
	}
	ev, _ := raw.next(t, 5*time.Second)
	created := ev.GetSocketCreated()
	if created == nil {
		t.Fatalf("first event %v, want socket_created", ev)
	}
	conn := created.Conn

	raw.act(done(conn, ev.Seq+100)) // not the outstanding event: ignored
	raw.act(&nativepb.Action{Ref: 7, Action: &nativepb.Action_Send{Send: &pb.SendBytesRequest{Conn: conn, Bytes: []byte("hi")}}},
		&nativepb.Action{Action: &nativepb.Action_Send{Send: &pb.SendBytesRequest{Conn: conn, Bytes: []byte("!")}}},
		&nativepb.Action{Ref: 8, Action: &nativepb.Action_Send{Send: &pb.SendBytesRequest{Conn: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", Bytes: []byte("x")}}},
		&nativepb.Action{Ref: 9, Action: &nativepb.Action_Publish{Publish: &pb.PublishRequest{Conn: conn, Topic: "t"}}})
	got := map[uint64]pb.ResultCode{}
	for len(got) < 3 {
		ev, res := raw.next(t, 5*time.Second)
		if ev != nil {
			t.Fatalf("event %v while socket_created is outstanding", ev)
		}
		if res == nil {
			t.Fatalf("results so far %v, want refs 7, 8, 9", got)
		}
		got[res.Ref] = res.Code
	}
	if got[7] != pb.ResultCode_SUCCESS || got[8] != pb.ResultCode_CONN_PROCESS_NOT_ALIVE || got[9] != pb.ResultCode_UNKNOWN {
		t.Fatalf("results %v: want 7 SUCCESS, 8 CONN_PROCESS_NOT_ALIVE, 9 UNKNOWN (publish before authenticate)", got)
	}
	buf := make([]byte, 3)
	_ = dev.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(dev, buf); err != nil || string(buf) != "hi!" {
		t.Fatalf("device read %q, %v", buf, err)
	}
	if _, err := dev.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	if ev, res := raw.next(t, 300*time.Millisecond); ev != nil || res != nil {
		t.Fatalf("got %v %v before socket_created was done", ev, res)
	}
	raw.act(done(conn, ev.Seq))
	ev, _ = raw.next(t, 5*time.Second)
	if string(ev.GetReceivedBytes().GetBytes()) != "abc" {
		t.Fatalf("after done: %v, want received_bytes abc", ev)
	}
	raw.act(&nativepb.Action{Action: &nativepb.Action_Done{Done: &nativepb.Done{Conn: conn, Seq: ev.Seq, Error: "bad frame", Code: uint32(codes.InvalidArgument)}}})
	ev, _ = raw.next(t, 5*time.Second)
	if r := ev.GetSocketClosed().GetReason(); r != "{shutdown,{error,{on_received_bytes,invalid_argument}}}" {
		t.Fatalf("after a failed callback: %v", ev)
	}
	raw.act(done(conn, ev.Seq))
}

// A handler that floods one device whose socket does not drain gets a
// clear refusal once 10,000 actions wait for it, counted; the device's
// Done still goes through, and nothing is buffered without bound.
func TestNativeActionFloodRefused(t *testing.T) {
	raw, e := startRawNative(t, 1000)
	dev, ev := raw.silentDevice(t, e)
	conn := ev.GetSocketCreated().GetConn()
	send := func(ref uint64, n int) *nativepb.Action {
		return &nativepb.Action{Ref: ref, Action: &nativepb.Action_Send{Send: &pb.SendBytesRequest{Conn: conn, Bytes: make([]byte, n)}}}
	}
	// Four 3 MiB Sends fill the socket and hold the device's worker (one
	// message each: exgate takes messages up to 5 MiB); 10,050 more wait.
	const big = 4
	for i := range big {
		raw.act(send(uint64(1+i), 3<<20))
	}
	var tiny []*nativepb.Action
	for i := range 10_050 {
		tiny = append(tiny, send(uint64(1+big+i), 1))
	}
	raw.act(tiny...)
	raw.act(done(conn, ev.Seq))
	// About 50 are refused: the worker may or may not have taken big Sends
	// off the queue before it blocked.
	refused := 0
	for {
		within := 5 * time.Second
		if refused >= 50 {
			within = 300 * time.Millisecond
		}
		ev, res := raw.next(t, within)
		if ev != nil {
			t.Fatalf("event %v while the device is stuck", ev)
		}
		if res == nil {
			break
		}
		if res.Ref <= big && res.Code == pb.ResultCode_SUCCESS {
			continue // the socket took it before it filled
		}
		if res.Code != pb.ResultCode_UNKNOWN || !strings.Contains(res.Message, "actions wait") {
			t.Fatalf("result %v while the device is stuck", res)
		}
		refused++
	}
	if refused < 46 || refused > 54 {
		t.Fatalf("%d refusals, want about 50", refused)
	}
	if n := e.g.Stats.NativeRefused.Load(); n != int64(refused) {
		t.Fatalf("counted %d refusals, saw %d", n, refused)
	}
	// The device goes: what waited for it is answered, and its last event
	// comes.
	dev.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ev, res := raw.next(t, time.Until(deadline))
		if ev == nil && res == nil {
			t.Fatal("no socket_closed after the device closed")
		}
		if ev != nil && ev.GetSocketClosed() != nil {
			raw.act(done(conn, ev.Seq))
			return
		}
	}
}

// Sends in a row to one device go to its socket together, and nothing of
// them is lost or reordered when the socket fills part way through: every
// byte arrives in order, every Send is answered SUCCESS and counted as one
// (EMQX's send_cnt), whether it went whole, in part, or after a wait.
func TestNativeSendsInARow(t *testing.T) {
	raw, e := startRawNative(t, 1000)
	dev, ev := raw.silentDevice(t, e) // reads only once every Send is queued
	conn := ev.GetSocketCreated().GetConn()
	// 4,096 Sends (~14 MiB, more than loopback's buffers hold), seven to
	// a row between Dones of nothing, a row a byte and then 4,001–4,006
	// bytes a Send (so a socket that fills cuts a row after its first
	// Send, seldom at its start), 256 to a message; Send i is byte i%251
	// throughout.
	const sends = 4096
	var want []byte
	var acts []*nativepb.Action
	for i := range sends {
		n := 1
		if i%7 != 0 {
			n = 4000 + i%7
		}
		b := bytes.Repeat([]byte{byte(i % 251)}, n)
		want = append(want, b...)
		acts = append(acts, &nativepb.Action{Ref: uint64(1 + i), Action: &nativepb.Action_Send{Send: &pb.SendBytesRequest{Conn: conn, Bytes: b}}})
		if i%7 == 6 {
			acts = append(acts, done(conn, ev.Seq+1000)) // stale: ignored, but ends the row
		}
		if len(acts) >= 256 {
			raw.act(acts...)
			acts = nil
		}
	}
	raw.act(acts...)
	c, ok := e.g.Reg.Get(conn)
	if !ok {
		t.Fatal("device not registered")
	}
	// The socket fills: bytes out stop growing short of the whole.
	deadline := time.Now().Add(10 * time.Second)
	for last, still := int64(-1), 0; still < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("writes to the device never stalled (out %d bytes)", last)
		}
		time.Sleep(100 * time.Millisecond)
		if out := c.Snapshot().BytesOut; out == last && out > 0 && out < int64(len(want)) {
			still++
		} else {
			last, still = out, 0
		}
	}
	got := make([]byte, len(want))
	read := make(chan error, 1)
	go func() {
		_ = dev.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err := io.ReadFull(dev, got)
		read <- err
	}()
	answered := map[uint64]bool{}
	for len(answered) < sends {
		_, res := raw.next(t, 10*time.Second)
		if res == nil {
			t.Fatalf("%d of %d Sends answered", len(answered), sends)
		}
		if res.Code != pb.ResultCode_SUCCESS || answered[res.Ref] {
			t.Fatalf("result %v (answered before: %v)", res, answered[res.Ref])
		}
		answered[res.Ref] = true
	}
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("byte %d is %d, want %d: Sends reordered or cut", i, got[i], want[i])
		}
	}
	if s := c.Snapshot(); s.Writes != sends || s.BytesOut != int64(len(want)) {
		t.Fatalf("counted %d sends of %d bytes, want %d of %d", s.Writes, s.BytesOut, sends, len(want))
	}
	raw.act(done(conn, ev.Seq))
}

// A message of hundreds of Sends and Dones for as many devices (a broker's
// fan-out, answered) is routed in shards side by side: each device still
// gets its bytes in order, within the message and after it (the next
// message's Sends come after this one's), every Send is answered once,
// and each Done lets its device's next event go. Nothing is left running
// (goleak at cleanup).
func TestNativeLargeMessages(t *testing.T) {
	raw, e := startRawNative(t, 1000)
	const devices = 200
	devs := make([]net.Conn, devices)
	conns := make([]string, devices)
	var acts []*nativepb.Action
	var dones []*nativepb.Action
	for i := range devices {
		dev, ev := raw.silentDevice(t, e)
		devs[i], conns[i] = dev, ev.GetSocketCreated().GetConn()
		dones = append(dones, done(conns[i], ev.Seq))
	}
	// Byte k to every device, k by k, so a device's Sends are spread over
	// the message; refs say which (device, k).
	send := func(k int) {
		for i := range devices {
			acts = append(acts, &nativepb.Action{Ref: uint64(1 + k*devices + i),
				Action: &nativepb.Action_Send{Send: &pb.SendBytesRequest{Conn: conns[i], Bytes: []byte{byte(k)}}}})
		}
	}
	for k := range 4 {
		send(k)
	}
	raw.act(append(acts, dones...)...) // 1,000 actions
	acts = nil
	for k := 4; k < 8; k++ {
		send(k)
	}
	raw.act(acts...)
	answered := map[uint64]bool{}
	for len(answered) < 8*devices {
		ev, res := raw.next(t, 10*time.Second)
		if ev != nil {
			t.Fatalf("event %v: no device has written", ev)
		}
		if res == nil {
			t.Fatalf("%d of %d Sends answered", len(answered), 8*devices)
		}
		if res.Code != pb.ResultCode_SUCCESS || answered[res.Ref] {
			t.Fatalf("result %v (answered before: %v)", res, answered[res.Ref])
		}
		answered[res.Ref] = true
	}
	want := []byte{0, 1, 2, 3, 4, 5, 6, 7}
	for i, dev := range devs {
		got := make([]byte, len(want))
		_ = dev.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(dev, got); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("device %d read %v, %v; want %v", i, got, err, want)
		}
		if _, err := dev.Write([]byte{'x'}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for len(seen) < devices {
		ev, _ := raw.next(t, 10*time.Second)
		conn := ev.GetReceivedBytes().GetConn()
		if conn == "" || seen[conn] {
			t.Fatalf("after %d devices' next events: %v (the Dones were not all applied)", len(seen), ev)
		}
		seen[conn] = true
		raw.act(done(conn, ev.Seq))
	}
	for _, dev := range devs { // and their goodbyes, answered
		dev.Close()
	}
	for closed := 0; closed < devices; closed++ {
		ev, _ := raw.next(t, 10*time.Second)
		if ev.GetSocketClosed() == nil {
			t.Fatalf("after %d closes: %v", closed, ev)
		}
		raw.act(done(ev.GetSocketClosed().GetConn(), ev.Seq))
	}
}

// TestNativeActionDeadline: an action that waits on the broker (a
// Subscribe whose SUBACK never comes: the upstream broker stalled) is
// answered with a failure once request_timeout has passed, not before it
// and not never. The handler sends it with no event outstanding, so only
// the action's own deadline is in play.
func TestNativeActionDeadline(t *testing.T) {
	const timeout = 600 * time.Millisecond
	var proxy *stallProxy
	raw, e := startRawNativeOn(t, 100, "tcp+mosquitto+native", func(c *config.Config) {
		c.Gateway.ExProto.Handler.RequestTimeout = timeout
		proxy = newStallProxy(t, strings.TrimPrefix(c.Broker.MQTT.Servers[0], "tcp://"))
		c.Broker.MQTT.Servers = []string{"tcp://" + proxy.addr()}
	})
	_, conn := raw.authenticated(t, e, "deadline")
	// A second device, whose Send must not wait behind the first's Subscribe.
	_, ev2 := raw.silentDevice(t, e)
	conn2 := ev2.GetSocketCreated().GetConn()
	raw.act(done(conn2, ev2.Seq))
	proxy.stall()
	// Later than an eighth of the timeout after the Authenticate: sharing
	// its deadline would leave the Subscribe less than request_timeout.
	time.Sleep(timeout / 3)
	start := time.Now()
	raw.act(&nativepb.Action{Ref: 2, Action: &nativepb.Action_Subscribe{Subscribe: &pb.SubscribeRequest{Conn: conn, Topic: "late/t", Qos: 1}}},
		&nativepb.Action{Ref: 3, Action: &nativepb.Action_Send{Send: &pb.SendBytesRequest{Conn: conn2, Bytes: []byte("x")}}})
	if _, res := raw.next(t, 20*timeout); res.GetRef() != 3 || res.GetCode() != pb.ResultCode_SUCCESS {
		t.Fatalf("got %v first, want SUCCESS for ref 3 (another device's Send) while the Subscribe waits upstream", res)
	}
	for {
		ev, res := raw.next(t, 20*timeout)
		if ev != nil {
			continue // the device is not closed before the result
		}
		took := time.Since(start)
		if res == nil {
			t.Fatalf("no result for the Subscribe within %v; request_timeout is %v", 20*timeout, timeout)
		}
		if res.GetRef() != 2 || res.GetCode() == pb.ResultCode_SUCCESS {
			t.Fatalf("got %v, want a failed result for ref 2", res)
		}
		if took < timeout {
			t.Fatalf("the Subscribe failed after %v, before request_timeout (%v): %s", took, timeout, res.GetMessage())
		}
		t.Logf("failed after %v: %s", took, res.GetMessage())
		return
	}
}

// TestNativePublishNeverWaitsOnAnotherHandler: a device's publish, which
// the stream's reader applies itself on the embedded broker, is delivered
// to devices of another native handler that has stopped reading; the first
// handler's actions still get their results and the device its bytes (the
// reader must not be the one waiting on the other stream's flow control).
func TestNativePublishNeverWaitsOnAnotherHandler(t *testing.T) {
	const subscribers, size = 24, 256 << 10 // 6 MiB of deliveries: beyond the stream's windows
	rawB := &rawNative{ups: make(chan *nativepb.Up, 1), down: make(chan *nativepb.Down, 100)}
	addrB := testhandler.Serve(t, func(s *grpc.Server) { nativepb.RegisterHandlerServer(s, rawB) })
	raw, e := startRawNativeOn(t, 100, "tcp+native", func(c *config.Config) {
		// B's devices are closed when their deliveries time out, after
		// the test saw A's results (or did not: it waits 10 s for them).
		c.Gateway.ExProto.Handler.RequestTimeout = 2 * time.Second
		c.Gateway.ExProto.Listeners.TCP["b"] = &config.Listener{Bind: "127.0.0.1:0",
			Handler: &config.Handler{Address: config.Addresses{"http://" + addrB}}}
	})
	for i := range subscribers {
		dev, err := net.Dial("tcp", e.g.ListenerAddr("tcp:b").String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { dev.Close() })
		ev, _ := rawB.next(t, 5*time.Second)
		conn := ev.GetSocketCreated().GetConn()
		if conn == "" {
			t.Fatalf("subscriber %d: first event %v, want socket_created", i, ev)
		}
		rawB.act(&nativepb.Action{Ref: 1, Action: &nativepb.Action_Authenticate{Authenticate: &pb.AuthenticateRequest{
			Conn: conn, Clientinfo: &pb.ClientInfo{ProtoName: "raw", ProtoVer: "1", Clientid: fmt.Sprintf("sub-%d", i)}}}},
			&nativepb.Action{Ref: 2, Action: &nativepb.Action_Subscribe{Subscribe: &pb.SubscribeRequest{Conn: conn, Topic: "big/t"}}},
			done(conn, ev.Seq))
		for ref := uint64(1); ref <= 2; ref++ {
			if _, res := rawB.next(t, 5*time.Second); res.GetRef() != ref || res.GetCode() != pb.ResultCode_SUCCESS {
				t.Fatalf("subscriber %d: got %v, want SUCCESS for ref %d", i, res, ref)
			}
		}
	}

	dev, conn := raw.authenticated(t, e, "publisher")
	// While B reads, a publish reaches every one of its devices.
	raw.act(&nativepb.Action{Ref: 5, Action: &nativepb.Action_Publish{Publish: &pb.PublishRequest{Conn: conn, Topic: "big/t", Payload: []byte("hello")}}})
	if _, res := raw.next(t, 5*time.Second); res.GetRef() != 5 || res.GetCode() != pb.ResultCode_SUCCESS {
		t.Fatalf("small publish: %v", res)
	}
	for i := range subscribers {
		ev, _ := rawB.next(t, 5*time.Second)
		msgs := ev.GetReceivedMessages().GetMessages()
		if len(msgs) != 1 || string(msgs[0].GetPayload()) != "hello" {
			t.Fatalf("delivery %d of %d to the other handler's devices: got %v", i+1, subscribers, ev)
		}
		rawB.act(done(ev.GetReceivedMessages().GetConn(), ev.Seq))
	}
	// From here on B reads nothing more, until the gateway is to stop.
	t.Cleanup(rawB.drop)

	raw.act(&nativepb.Action{Ref: 2, Action: &nativepb.Action_Publish{Publish: &pb.PublishRequest{
		Conn: conn, Topic: "big/t", Payload: bytes.Repeat([]byte("x"), size)}}})
	raw.act(&nativepb.Action{Ref: 3, Action: &nativepb.Action_Publish{Publish: &pb.PublishRequest{Conn: conn, Topic: "small/t", Payload: []byte("p")}}},
		&nativepb.Action{Ref: 4, Action: &nativepb.Action_Send{Send: &pb.SendBytesRequest{Conn: conn, Bytes: []byte("still here")}}})
	for ref := uint64(2); ref <= 4; ref++ {
		_, res := raw.next(t, 10*time.Second)
		if res == nil {
			t.Fatalf("no result for ref %d within 10 s: the handler's actions wait on another handler's stream", ref)
		}
		if res.GetRef() != ref || res.GetCode() != pb.ResultCode_SUCCESS {
			t.Fatalf("got %v, want SUCCESS for ref %d", res, ref)
		}
	}
	_ = dev.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len("still here"))
	if _, err := io.ReadFull(dev, got); err != nil || string(got) != "still here" {
		t.Fatalf("device read %q, %v", got, err)
	}
}

// TestNativeSlowAuthorizerWaitsAside: with an HTTP authorizer a publish
// may wait for its answer, so it is applied aside from the stream's
// reader: another device's actions are answered meanwhile.
func TestNativeSlowAuthorizerWaitsAside(t *testing.T) {
	release := make(chan struct{})
	svc := startAuthService(t, func(w http.ResponseWriter, b map[string]string) {
		if b["topic"] == "slow/t" {
			select {
			case <-release:
			case <-time.After(10 * time.Second):
			}
		}
		fmt.Fprint(w, `{"result":"allow"}`)
	})
	raw, e := startRawNativeOn(t, 100, "tcp+native", func(c *config.Config) {
		c.Gateway.ExProto.Handler.RequestTimeout = 2 * time.Second // the devices' close is not answered: shutdown waits for it
		c.Gateway.ExProto.Authorization = config.Authorization{NoMatch: "deny", HTTP: &config.HTTPAuthorizer{URL: svc.URL,
			Body: map[string]string{"topic": "${topic}"}}}
	})
	var conns [2]string
	for i := range conns {
		_, conns[i] = raw.authenticated(t, e, fmt.Sprintf("az-%d", i))
	}
	raw.act(&nativepb.Action{Ref: 2, Action: &nativepb.Action_Publish{Publish: &pb.PublishRequest{Conn: conns[0], Topic: "slow/t", Payload: []byte("s")}}},
		&nativepb.Action{Ref: 3, Action: &nativepb.Action_Publish{Publish: &pb.PublishRequest{Conn: conns[1], Topic: "fast/t", Payload: []byte("f")}}})
	if _, res := raw.next(t, 5*time.Second); res.GetRef() != 3 || res.GetCode() != pb.ResultCode_SUCCESS {
		close(release)
		t.Fatalf("got %v, want SUCCESS for ref 3 while ref 2 waits for the authorizer", res)
	}
	close(release)
	if _, res := raw.next(t, 5*time.Second); res.GetRef() != 2 || res.GetCode() != pb.ResultCode_SUCCESS {
		t.Fatalf("got %v, want SUCCESS for ref 2", res)
	}
}

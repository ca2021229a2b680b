package channel

import (
	"context"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/broker"
)

// scriptedHandler answers at once unless a hook says otherwise, and records
// the payloads it was given.
type scriptedHandler struct {
	onMessages func()
	onClosed   func()

	mu       sync.Mutex
	payloads []string
}

func (h *scriptedHandler) OnSocketCreated(context.Context, *pb.SocketCreatedRequest) error {
	return nil
}
func (h *scriptedHandler) OnReceivedBytes(context.Context, *pb.ReceivedBytesRequest) error {
	return nil
}
func (h *scriptedHandler) OnTimerTimeout(context.Context, *pb.TimerTimeoutRequest) error { return nil }
func (h *scriptedHandler) OnReceivedMessages(_ context.Context, r *pb.ReceivedMessagesRequest) error {
	if h.onMessages != nil {
		h.onMessages()
	}
	h.mu.Lock()
	for _, m := range r.Messages {
		h.payloads = append(h.payloads, string(m.Payload))
	}
	h.mu.Unlock()
	return nil
}
func (h *scriptedHandler) OnSocketClosed(ctx context.Context, _ *pb.SocketClosedRequest) error {
	if h.onClosed != nil {
		h.onClosed()
	}
	return ctx.Err()
}

func (h *scriptedHandler) got() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.payloads...)
}

// holdingFirstDelivery is a handler whose first OnReceivedMessages waits
// until release is closed; first reports that it started.
func holdingFirstDelivery() (h *scriptedHandler, first *atomic.Bool, release chan struct{}) {
	first, release = new(atomic.Bool), make(chan struct{})
	h = &scriptedHandler{onMessages: func() {
		if first.CompareAndSwap(false, true) {
			<-release
		}
	}}
	return h, first, release
}

func testConfig(h Handler, pool *Pool) *Config {
	return &Config{
		Node: "test", Handler: h, IdleTimeout: time.Hour, RequestTimeout: 10 * time.Second, CloseFlushTimeout: 10 * time.Second,
		MaxBatch: 1, EventQueue: 64, MaxMqueueLen: 1000, Registry: NewRegistry(), Stats: &Stats{},
		Logger: slog.New(slog.DiscardHandler), Pool: pool,
	}
}

// connected makes a channel that passed Authenticate, without a broker.
func connected(cfg *Config) *Channel {
	c := New(cfg, discardConn{}, &pb.ConnInfo{}, false)
	c.mu.Lock()
	c.state = Connected
	c.client.ClientID = "dev"
	c.mu.Unlock()
	return c
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// A full queue drops QoS 0 first: the oldest queued QoS 0 message; with
// none queued, a new QoS 0 message; else the oldest message (EMQX's mqueue).
// Every drop is counted by reason, per device and for the gateway.
func TestMqueueDropsQoS0First(t *testing.T) {
	for _, tc := range []struct {
		name       string
		deliveries []string // payload = name + QoS digit; the first three fill the queue
		want       []string // delivered after the one in flight
		qos0, full int64
	}{
		{"new QoS 0, older QoS 0 queued: the older goes", []string{"b1", "a0", "c1", "x0"}, []string{"b1", "c1", "x0"}, 1, 0},
		{"new QoS 1, a QoS 0 queued: the QoS 0 goes, not the oldest", []string{"b1", "a0", "c1", "d1"}, []string{"b1", "c1", "d1"}, 1, 0},
		{"new QoS 0, none queued: the new one goes", []string{"b1", "c1", "d1", "e0"}, []string{"b1", "c1", "d1"}, 1, 0},
		{"new QoS 1, none at QoS 0: the oldest goes", []string{"b1", "c1", "d1", "f1"}, []string{"c1", "d1", "f1"}, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, first, release := holdingFirstDelivery()
			pool := NewPool(time.Second)
			defer pool.Close()
			cfg := testConfig(h, pool)
			cfg.MaxMqueueLen = 3
			c := connected(cfg)
			msg := func(p string) {
				c.deliver(broker.Message{Topic: "t", QoS: p[len(p)-1] - '0', Payload: []byte(p), Time: time.Now()})
			}
			msg("in1")
			waitUntil(t, "the first delivery in flight", func() bool { return first.Load() })
			for _, p := range tc.deliveries {
				msg(p)
			}
			in := c.Snapshot()
			if in.MqueueLen != 3 || in.MqueueDropped != 1 || in.MaxMqueue != 3 {
				t.Fatalf("snapshot: mqueue_len %d, mqueue_dropped %d, max_mqueue %d; want 3, 1, 3", in.MqueueLen, in.MqueueDropped, in.MaxMqueue)
			}
			close(release)
			want := append([]string{"in1"}, tc.want...)
			waitUntil(t, "the queue to drain", func() bool { return len(h.got()) == len(want) })
			if got := h.got(); strings.Join(got, " ") != strings.Join(want, " ") {
				t.Fatalf("delivered %q, want %q", got, want)
			}
			st := cfg.Stats
			if st.DroppedQoS0.Load() != tc.qos0 || st.DroppedQueueFull.Load() != tc.full || st.DroppedClosed.Load() != 0 || st.DeliveryDropped.Load() != 1 {
				t.Fatalf("dropped: qos0 %d, queue_full %d, closed %d, total %d; want %d, %d, 0, 1",
					st.DroppedQoS0.Load(), st.DroppedQueueFull.Load(), st.DroppedClosed.Load(), st.DeliveryDropped.Load(), tc.qos0, tc.full)
			}
			c.Kick(ReasonNormal)
			<-c.Done()
		})
	}
}

// Deliveries to a closed device are dropped as "closed".
func TestDeliveryAfterCloseCounted(t *testing.T) {
	cfg := testConfig(&scriptedHandler{}, nil)
	c := connected(cfg)
	c.Kick(ReasonNormal)
	c.deliver(broker.Message{Topic: "t", QoS: 1, Time: time.Now()})
	<-c.Done()
	if cfg.Stats.DroppedClosed.Load() != 1 || cfg.Stats.DeliveryDropped.Load() != 1 {
		t.Fatalf("closed %d, total %d; want 1, 1", cfg.Stats.DroppedClosed.Load(), cfg.Stats.DeliveryDropped.Load())
	}
}

// A storm of closes reaches the handler through at most closeWorkers calls
// at a time, and none of them times out waiting for a worker: the deadline
// starts when the call is made. Afterwards no goroutine is left.
func TestCloseWorkersBounded(t *testing.T) {
	before := runtime.NumGoroutine()
	var inflight, peak atomic.Int64
	h := &scriptedHandler{onClosed: func() {
		n := inflight.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		inflight.Add(-1)
	}}
	pool := NewPool(time.Second)
	cfg := testConfig(h, pool)
	// 400 closes at 20 ms each through 32 workers take ~250 ms, longer
	// than the deadline of any one call.
	cfg.RequestTimeout = 150 * time.Millisecond
	const n = 400
	chans := make([]*Channel, n)
	for i := range chans {
		chans[i] = New(cfg, discardConn{}, &pb.ConnInfo{}, false)
	}
	for _, c := range chans {
		c.Kick(ReasonNormal)
	}
	for _, c := range chans {
		<-c.Done()
	}
	if p := peak.Load(); p > closeWorkers || p < 2 {
		t.Fatalf("peak OnSocketClosed calls in flight: %d, want 2..%d", p, closeWorkers)
	}
	if f := cfg.Stats.CloseFailed.Load(); f != 0 {
		t.Fatalf("%d OnSocketClosed calls failed; none should time out for lack of a worker", f)
	}
	if cl := cfg.Stats.Closing.Load(); cl != 0 || cfg.Registry.Len() != 0 {
		t.Fatalf("after the storm: closing %d, registered %d; want 0, 0", cl, cfg.Registry.Len())
	}
	pool.Close()
	waitUntil(t, "goroutines back to baseline", func() bool { return runtime.NumGoroutine() <= before })
}

// A handler that does not answer OnSocketClosed is counted, and the channel
// still goes.
func TestCloseFailedCounted(t *testing.T) {
	h := &scriptedHandler{onClosed: func() { time.Sleep(100 * time.Millisecond) }}
	pool := NewPool(time.Second)
	cfg := testConfig(h, pool)
	cfg.RequestTimeout = 20 * time.Millisecond
	c := New(cfg, discardConn{}, &pb.ConnInfo{}, false)
	c.Kick(ReasonNormal)
	<-c.Done()
	if cfg.Stats.CloseFailed.Load() != 1 || cfg.Registry.Len() != 0 || cfg.Stats.Closing.Load() != 0 {
		t.Fatalf("close_failed %d, registered %d, closing %d; want 1, 0, 0", cfg.Stats.CloseFailed.Load(), cfg.Registry.Len(), cfg.Stats.Closing.Load())
	}
	pool.Close()
}

// The keepalive window is 1.5 × the interval (EMQX's): silence just under
// it keeps the device, silence just over it closes it with
// keepalive_timeout after one OnTimerTimeout. Decided from the recorded
// last read, not from how fast timers fire, so it holds on a loaded machine.
func TestKeepaliveWindowIsOneAndAHalf(t *testing.T) {
	var timeouts atomic.Int64
	h := &scriptedHandler{}
	cfg := testConfig(timerCounter{h, &timeouts}, nil)
	c := connected(cfg)
	defer func() { c.Kick(ReasonNormal); <-c.Done() }()
	if err := c.StartTimer(pb.TimerType_KEEPALIVE, 100); err != nil { // 100 s: its own timer never fires here
		t.Fatal(err)
	}
	silentFor := func(d time.Duration) {
		c.lastRecv.Store(time.Now().Add(-d).UnixNano())
		c.keepaliveCheck()
	}
	silentFor(145 * time.Second) // 1.45 ×
	if c.State() == Closed {
		t.Fatal("closed after 1.45 × the keepalive; the window is 1.5 ×")
	}
	silentFor(155 * time.Second) // 1.55 ×
	if c.State() != Closed {
		t.Fatal("still open after 1.55 × the keepalive; the window is 1.5 ×")
	}
	<-c.Done()
	if c.reason != ReasonKeepaliveTimeout || timeouts.Load() != 1 {
		t.Fatalf("reason %q after %d OnTimerTimeout, want %q after 1", c.reason, timeouts.Load(), ReasonKeepaliveTimeout)
	}
}

// timerCounter counts OnTimerTimeout.
type timerCounter struct {
	*scriptedHandler
	n *atomic.Int64
}

func (h timerCounter) OnTimerTimeout(context.Context, *pb.TimerTimeoutRequest) error {
	h.n.Add(1)
	return nil
}

// Events queued when a device closes still reach the handler, in order and
// before OnSocketClosed, within close_flush_timeout; those still queued
// after it are dropped (and deliveries counted as closed), never delivered
// late.
func TestCloseFlushTimeout(t *testing.T) {
	for _, tc := range []struct {
		name      string
		flush     time.Duration
		delivered int
	}{{"flushed", 10 * time.Second, 4}, {"dropped", 50 * time.Millisecond, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			h, first, release := holdingFirstDelivery()
			pool := NewPool(time.Second)
			defer pool.Close()
			cfg := testConfig(h, pool)
			cfg.CloseFlushTimeout = tc.flush
			c := connected(cfg)
			for _, p := range []string{"m1", "m2", "m3", "m4"} {
				c.deliver(broker.Message{Topic: "t", QoS: 1, Payload: []byte(p), Time: time.Now()})
			}
			waitUntil(t, "the first delivery in flight", func() bool { return first.Load() })
			c.Kick(ReasonNormal) // three deliveries still queued
			if tc.name == "dropped" {
				time.Sleep(tc.flush + 100*time.Millisecond) // past the flush deadline
			}
			close(release)
			<-c.Done()
			got := h.got()
			if len(got) != tc.delivered {
				t.Fatalf("delivered %q, want %d messages", got, tc.delivered)
			}
			for i, p := range got {
				if p != []string{"m1", "m2", "m3", "m4"}[i] {
					t.Fatalf("delivered %q out of order", got)
				}
			}
			if dropped := cfg.Stats.DroppedClosed.Load(); dropped != int64(4-tc.delivered) {
				t.Fatalf("dropped as closed: %d, want %d", dropped, 4-tc.delivered)
			}
		})
	}
}

// asyncRecorder is an async handler that answers nothing itself: the test
// answers the calls it records.
type asyncRecorder struct {
	*scriptedHandler
	mu        sync.Mutex
	calls     []interface{ Done(error) }
	cancelled atomic.Int64
}

func (h *asyncRecorder) Start(_ proto.Message, call interface{ Done(error) }) interface{ Cancel() } {
	h.mu.Lock()
	h.calls = append(h.calls, call)
	h.mu.Unlock()
	return h
}

func (h *asyncRecorder) Cancel() { h.cancelled.Add(1) }

// call waits for the nth call Start was given (0-based).
func (h *asyncRecorder) call(t *testing.T, n int) interface{ Done(error) } {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		h.mu.Lock()
		if len(h.calls) > n {
			c := h.calls[n]
			h.mu.Unlock()
			return c
		}
		h.mu.Unlock()
	}
	t.Fatalf("no call %d started", n)
	return nil
}

// One timer per channel serves the deadline of every event started on an
// async handler. When it fires late, for an event answered meanwhile, the
// next event (its deadline still ahead) is left alone; at its own
// deadline it is expired and the device closed.
func TestAsyncDeadlineIsPerEvent(t *testing.T) {
	h := &asyncRecorder{scriptedHandler: &scriptedHandler{}}
	cfg := testConfig(h, nil)
	cfg.Async = h
	cfg.RequestTimeout = 300 * time.Millisecond
	c := New(cfg, discardConn{}, &pb.ConnInfo{}, false)
	defer func() {
		c.Kick(ReasonNormal)
		h.mu.Lock()
		calls := h.calls // a failed run may have left one unanswered
		h.mu.Unlock()
		for _, call := range calls {
			call.Done(nil)
		}
		<-c.Done()
	}()
	h.call(t, 0).Done(nil) // OnSocketCreated
	c.Received([]byte("x"))
	h.call(t, 1)       // OnReceivedBytes, not answered
	c.deadlinePassed() // a late firing of the first event's deadline
	if c.State() == Closed || h.cancelled.Load() != 0 {
		t.Fatalf("a late deadline expired the next event: state %v, %d cancelled", c.State(), h.cancelled.Load())
	}
	for deadline := time.Now().Add(5 * time.Second); c.State() != Closed; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the unanswered event was not expired at its deadline")
		}
	}
	if c.reason != handlerFailedReason("on_received_bytes", errDeadline) || h.cancelled.Load() != 1 {
		t.Fatalf("closed with %q, %d cancelled", c.reason, h.cancelled.Load())
	}
}

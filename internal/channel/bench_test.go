package channel

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/broker"
)

// countingHandler answers every callback at once and counts what it got.
type countingHandler struct {
	events atomic.Int64
	done   chan struct{}
	want   int64
}

func (h *countingHandler) bump(n int64) {
	if h.events.Add(n) == h.want && h.done != nil {
		close(h.done)
	}
}
func (h *countingHandler) OnSocketCreated(context.Context, *pb.SocketCreatedRequest) error {
	return nil
}
func (h *countingHandler) OnReceivedBytes(context.Context, *pb.ReceivedBytesRequest) error {
	h.bump(1)
	return nil
}
func (h *countingHandler) OnTimerTimeout(context.Context, *pb.TimerTimeoutRequest) error { return nil }
func (h *countingHandler) OnReceivedMessages(_ context.Context, r *pb.ReceivedMessagesRequest) error {
	h.bump(int64(len(r.Messages)))
	return nil
}
func (h *countingHandler) OnSocketClosed(context.Context, *pb.SocketClosedRequest) error { return nil }

type discardConn struct{}

func (discardConn) Write(b []byte) (int, error) { return len(b), nil }
func (discardConn) Close() error                { return nil }

func benchChannel(b *testing.B, h Handler, pool *Pool) *Channel {
	cfg := &Config{
		Node: "bench", Handler: h, IdleTimeout: time.Hour, RequestTimeout: time.Minute, CloseFlushTimeout: time.Second,
		MaxBatch: 16, EventQueue: 64, MaxMqueueLen: 1 << 30, Registry: NewRegistry(), Stats: &Stats{},
		Logger: slog.New(slog.DiscardHandler), Pool: pool,
	}
	c := New(cfg, discardConn{}, &pb.ConnInfo{}, false)
	b.Cleanup(func() { c.Kick(ReasonNormal); <-c.Done(); pool.Close() })
	return c
}

// BenchmarkDispatch is the gateway's cost per socket read: queue it, hand it
// to a dispatcher, build the request, call the (instant) handler.
func BenchmarkDispatch(b *testing.B) {
	h := &countingHandler{done: make(chan struct{}), want: int64(b.N)}
	c := benchChannel(b, h, NewPool(time.Second))
	payload := make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.Received(payload)
	}
	<-h.done
}

// BenchmarkDeliveryBatching is the cost per message delivered to a device:
// stamp it, queue it, coalesce it into OnReceivedMessages batches.
func BenchmarkDeliveryBatching(b *testing.B) {
	h := &countingHandler{done: make(chan struct{}), want: int64(b.N)}
	c := benchChannel(b, h, NewPool(time.Second))
	c.mu.Lock()
	c.state = Connected
	c.mountpoint = "dev/"
	c.mu.Unlock()
	m := broker.Message{Topic: "dev/cmd/x", Payload: make([]byte, 64), QoS: 1, From: "app", Time: time.Now()}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.deliver(m)
	}
	<-h.done
}

func BenchmarkMount(b *testing.B) {
	for i := 0; i < b.N; i++ {
		_ = Mount("fleet/dev-42/", "$share/g/cmd/+/set")
	}
}

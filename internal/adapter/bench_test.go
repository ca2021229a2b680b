package adapter

import (
	"context"
	"log/slog"
	"testing"
	"time"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/channel"
)

type nopHandler struct{}

func (nopHandler) OnSocketCreated(context.Context, *pb.SocketCreatedRequest) error       { return nil }
func (nopHandler) OnReceivedBytes(context.Context, *pb.ReceivedBytesRequest) error       { return nil }
func (nopHandler) OnTimerTimeout(context.Context, *pb.TimerTimeoutRequest) error         { return nil }
func (nopHandler) OnReceivedMessages(context.Context, *pb.ReceivedMessagesRequest) error { return nil }
func (nopHandler) OnSocketClosed(context.Context, *pb.SocketClosedRequest) error         { return nil }

type discardConn struct{}

func (discardConn) Write(b []byte) (int, error) { return len(b), nil }
func (discardConn) Close() error                { return nil }

// BenchmarkAdapterSend is the adapter's own cost of a Send call (without
// gRPC): validate the conn id, find the channel, write the bytes.
func BenchmarkAdapterSend(b *testing.B) {
	reg := channel.NewRegistry()
	cfg := &channel.Config{Node: "bench", Handler: nopHandler{}, IdleTimeout: time.Hour, RequestTimeout: time.Minute,
		CloseFlushTimeout: time.Second, MaxBatch: 16, EventQueue: 64, MaxMqueueLen: 64, Registry: reg,
		Stats: &channel.Stats{}, Logger: slog.New(slog.DiscardHandler)}
	c := channel.New(cfg, discardConn{}, &pb.ConnInfo{}, false)
	defer func() { c.Kick(channel.ReasonNormal); <-c.Done() }()
	s := New(reg, nil, nil, slog.New(slog.DiscardHandler))
	req := &pb.SendBytesRequest{Conn: c.ID(), Bytes: make([]byte, 64)}
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if r, _ := s.Send(ctx, req); r.Code != pb.ResultCode_SUCCESS {
			b.Fatal(r)
		}
	}
}

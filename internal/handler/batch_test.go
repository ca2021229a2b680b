package handler

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/testhandler"
	"github.com/exgate/exgate/nativepb"
)

// recorder is a native handler that only records what reaches it.
type recorder struct {
	nativepb.UnimplementedHandlerServer
	ups chan *nativepb.Up
}

func (r *recorder) Connect(s nativepb.Handler_ConnectServer) error {
	for {
		up, err := s.Recv()
		if err != nil {
			return nil
		}
		if len(up.Events) > 0 {
			r.ups <- up
		}
	}
}

func (r *recorder) next(t *testing.T) *nativepb.Up {
	t.Helper()
	select {
	case up := <-r.ups:
		return up
	case <-time.After(5 * time.Second):
		t.Fatal("no events reached the handler")
		return nil
	}
}

// Events started for many devices while a Batch runs reach a native
// handler in one message, sent when the Batch ends; an event started
// outside one goes at once.
func TestBatchSendsTogether(t *testing.T) {
	rec := &recorder{ups: make(chan *nativepb.Up, 100)}
	addr := testhandler.Serve(t, func(s *grpc.Server) { nativepb.RegisterHandlerServer(s, rec) })

	h := config.Default().Gateway.ExProto.Handler
	h.ServiceName, h.Address = config.Native, config.Addresses{"http://" + addr}
	b := NewBatch()
	c, err := New(Options{Config: h, Adapter: pb.UnimplementedConnectionAdapterServer{}, Batch: b, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var nop nopCall

	c.Start(&pb.SocketCreatedRequest{Conn: "c0"}, nop) // opens the stream
	if up := rec.next(t); len(up.Events) != 1 {
		t.Fatalf("first message has %d events, want 1", len(up.Events))
	}
	b.Run(func() {
		for i := 1; i <= 50; i++ {
			c.Start(&pb.SocketCreatedRequest{Conn: fmt.Sprint("c", i)}, nop)
		}
		select {
		case up := <-rec.ups:
			t.Errorf("%d events sent while the batch ran", len(up.Events))
		case <-time.After(200 * time.Millisecond):
		}
	})
	if up := rec.next(t); len(up.Events) != 50 {
		t.Fatalf("the batch went as a message of %d events, want 50", len(up.Events))
	}
	c.Start(&pb.SocketCreatedRequest{Conn: "c51"}, nop)
	if up := rec.next(t); len(up.Events) != 1 || up.Events[0].GetSocketCreated().GetConn() != "c51" {
		t.Fatalf("after the batch: %v", up)
	}
}

// nopCall is told an event's answer and ignores it.
type nopCall struct{}

func (nopCall) Done(error) {}

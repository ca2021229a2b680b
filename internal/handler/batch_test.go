package handler

import (
	"context"
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

// none fails the test if events reach the handler within 200 ms.
func (r *recorder) none(t *testing.T, what string) {
	t.Helper()
	select {
	case up := <-r.ups:
		t.Errorf("%s sent %d events", what, len(up.Events))
	case <-time.After(200 * time.Millisecond):
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

// batched serves a recorder, connects a native Client with a Batch to it
// and opens its stream with device c0's first event (never answered), for
// the test to take from the recorder.
func batched(t *testing.T) (*recorder, *Batch, *Client) {
	rec := &recorder{ups: make(chan *nativepb.Up, 100)}
	addr := testhandler.Serve(t, func(s *grpc.Server) { nativepb.RegisterHandlerServer(s, rec) })
	h := config.Default().Gateway.ExProto.Handler
	h.ServiceName, h.Address = config.Native, config.Addresses{"http://" + addr}
	b := NewBatch()
	c, err := New(Options{Config: h, Adapter: pb.UnimplementedConnectionAdapterServer{}, Batch: b, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.Start(&pb.SocketCreatedRequest{Conn: "c0"}, nopCall{})
	return rec, b, c
}

// Events started for many devices while a Batch runs reach a native
// handler in one message, sent when the Batch ends; an event started
// outside one goes at once.
func TestBatchSendsTogether(t *testing.T) {
	rec, b, c := batched(t)
	var nop nopCall
	if up := rec.next(t); len(up.Events) != 1 {
		t.Fatalf("first message has %d events, want 1", len(up.Events))
	}
	b.Run(func() {
		for i := 1; i <= 50; i++ {
			c.Start(&pb.SocketCreatedRequest{Conn: fmt.Sprint("c", i)}, nop)
		}
		rec.none(t, "the stream, while the batch ran,")
	})
	if up := rec.next(t); len(up.Events) != 50 {
		t.Fatalf("the batch went as a message of %d events, want 50", len(up.Events))
	}
	c.Start(&pb.SocketCreatedRequest{Conn: "c51"}, nop)
	if up := rec.next(t); len(up.Events) != 1 || up.Events[0].GetSocketCreated().GetConn() != "c51" {
		t.Fatalf("after the batch: %v", up)
	}
}

// A held stream sends nothing, also from a flush under way (a goroutine
// that was sending when the hold began): what queued goes when the hold
// ends, in one message.
func TestHeldStreamSendsNothing(t *testing.T) {
	rec, b, c := batched(t)
	var nop nopCall
	rec.next(t)
	st := c.eps[0].native.open()
	b.Run(func() {
		for i := 1; i <= 5; i++ {
			c.Start(&pb.SocketCreatedRequest{Conn: fmt.Sprint("c", i)}, nop)
		}
		st.flush() // as the sender already under way goes on
		rec.none(t, "a held stream")
	})
	if up := rec.next(t); len(up.Events) != 5 {
		t.Fatalf("the hold's end sent a message of %d events, want 5", len(up.Events))
	}
}

// nopCall is told an event's answer and ignores it.
type nopCall struct{}

func (nopCall) Done(error) {}

// actor is a native handler that answers the first event with a publish
// for its device, and records the results it gets.
type actor struct {
	nativepb.UnimplementedHandlerServer
	results chan *nativepb.Result
}

func (a *actor) Connect(s nativepb.Handler_ConnectServer) error {
	sent := false
	for {
		up, err := s.Recv()
		if err != nil {
			return nil
		}
		for _, r := range up.Results {
			a.results <- r
		}
		if len(up.Events) > 0 && !sent {
			ev := up.Events[0]
			sent = true
			pub := &nativepb.Action{Ref: 1, Action: &nativepb.Action_Publish{Publish: &pb.PublishRequest{Conn: "a1", Topic: "t"}}}
			done := &nativepb.Action{Action: &nativepb.Action_Done{Done: &nativepb.Done{Conn: "a1", Seq: ev.Seq}}}
			if s.Send(&nativepb.Down{Actions: []*nativepb.Action{pub, done}}) != nil {
				return nil
			}
		}
	}
}

// deliverer is an adapter whose publishes never wait and are delivered to
// a device of another handler client, as the embedded broker does.
type deliverer struct {
	pb.UnimplementedConnectionAdapterServer
	to *Client
}

func (d *deliverer) PubSubNeverWaits(string) bool { return true }

func (d *deliverer) Publish(_ context.Context, r *pb.PublishRequest) (*pb.CodeResponse, error) {
	d.to.Start(&pb.ReceivedMessagesRequest{Conn: "b1", Messages: []*pb.Message{{Topic: r.Topic}}}, nopCall{})
	return &pb.CodeResponse{}, nil
}

// A publish the stream's reader applies itself, delivered to another
// stream's device, goes out once the reader is through: the reader wakes
// that stream's sender (it held it meanwhile, and sends nothing itself).
func TestReaderWakesHeldStreams(t *testing.T) {
	rec := &recorder{ups: make(chan *nativepb.Up, 100)}
	recAddr := testhandler.Serve(t, func(s *grpc.Server) { nativepb.RegisterHandlerServer(s, rec) })
	act := &actor{results: make(chan *nativepb.Result, 10)}
	actAddr := testhandler.Serve(t, func(s *grpc.Server) { nativepb.RegisterHandlerServer(s, act) })

	b := NewBatch()
	h := config.Default().Gateway.ExProto.Handler
	h.ServiceName, h.Address = config.Native, config.Addresses{"http://" + recAddr}
	cb, err := New(Options{Config: h, Adapter: pb.UnimplementedConnectionAdapterServer{}, Batch: b, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	cb.Start(&pb.SocketCreatedRequest{Conn: "b0"}, nopCall{}) // opens the stream
	rec.next(t)

	h.Address = config.Addresses{"http://" + actAddr}
	ca, err := New(Options{Config: h, Adapter: &deliverer{to: cb}, Batch: b, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	ca.Start(&pb.SocketCreatedRequest{Conn: "a1"}, nopCall{})
	select {
	case r := <-act.results:
		if r.GetRef() != 1 || r.GetCode() != pb.ResultCode_SUCCESS {
			t.Fatalf("publish: %v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no result for the publish")
	}
	up := rec.next(t)
	if len(up.Events) != 1 || up.Events[0].GetReceivedMessages().GetConn() != "b1" {
		t.Fatalf("the other stream got %v, want the delivery to b1", up)
	}
}

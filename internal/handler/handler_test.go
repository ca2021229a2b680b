package handler

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/config"
)

// welcomer is a unary handler that accepts every device.
type welcomer struct {
	pb.UnimplementedConnectionUnaryHandlerServer
}

func (welcomer) OnSocketCreated(context.Context, *pb.SocketCreatedRequest) (*pb.EmptySuccess, error) {
	return &pb.EmptySuccess{}, nil
}

// loss is one report of Options.Lost.
type loss struct {
	ids    []string
	reason string
}

// starved serves a welcomer (unless serve is false: then nothing listens
// at the address) and connects a Client to it whose state watcher waits
// until release is closed. Stopping the returned server is the handler
// going away.
func starved(t *testing.T, serve bool) (c *Client, srv *grpc.Server, release chan struct{}, lost chan loss) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if serve {
		srv = grpc.NewServer()
		pb.RegisterConnectionUnaryHandlerServer(srv, welcomer{})
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(srv.Stop)
	} else {
		ln.Close()
	}

	h := config.Default().Gateway.ExProto.Handler
	h.ServiceName, h.Address = "ConnectionUnaryHandler", config.Addresses{"http://" + ln.Addr().String()}
	release, lost = make(chan struct{}), make(chan loss, 10)
	ended := make(chan struct{}) // a test that fails before release must not hang Close
	c, err = New(Options{Config: h, Logger: slog.New(slog.DiscardHandler),
		Lost: func(ids []string, reason string) { lost <- loss{ids, reason} },
		holdWatch: func() {
			select {
			case <-release:
			case <-ended:
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		close(ended)
		c.Close()
	})
	return c, srv, release, lost
}

// waitState waits up to 5 s for ep's published state to be want.
func waitState(t *testing.T, ep *endpoint, want connectivity.State) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ep.conn.GetState() != want; {
		if time.Now().After(deadline) {
			t.Fatalf("the handler connection is %v, not %v, after 5 s", ep.conn.GetState(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A handler connection that is Ready for too short a time for the state
// watcher to see it (a starved goroutine on a busy machine) still counts
// as lost when it goes: its devices are reported, once.
func TestLossOfUnseenReady(t *testing.T) {
	c, srv, release, lost := starved(t, true)
	// Ready, as gRPC publishes it: a call that succeeds before that is not
	// taken for a Ready period (TestSuccessBeforeReadyIsNotALoss).
	waitState(t, c.eps[0], connectivity.Ready)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.OnSocketCreated(ctx, &pb.SocketCreatedRequest{Conn: "d1"}); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	waitState(t, c.eps[0], connectivity.Idle)
	close(release) // the watcher's first look: the connection is Idle

	select {
	case l := <-lost:
		if !slices.Equal(l.ids, []string{"d1"}) || l.reason != "{shutdown,{error,handler_connection_lost}}" {
			t.Fatalf("lost %v with %q, want [d1] with handler_connection_lost", l.ids, l.reason)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the device was not reported lost")
	}
	// Reconnection attempts that fail change the state again and again;
	// the loss is counted once.
	select {
	case l := <-lost:
		t.Fatalf("lost again: %v", l)
	case <-time.After(500 * time.Millisecond):
	}
}

// A success recorded after the connection went Idle, and after the watcher
// looked at it, still counts the loss: nothing else would change an Idle
// connection's state until the next call.
func TestLateSuccessAfterTheWatcherLooked(t *testing.T) {
	c, srv, release, lost := starved(t, true)
	ep := c.pin("d1")
	waitState(t, ep, connectivity.Ready) // New connects at once
	gen := ep.generation()               // a call starts, and is answered
	srv.Stop()
	waitState(t, ep, connectivity.Idle)
	close(release)
	time.Sleep(200 * time.Millisecond) // the watcher looks: Idle, no Ready known
	ep.succeeded(gen)                  // the call's success is recorded late
	select {
	case l := <-lost:
		if !slices.Equal(l.ids, []string{"d1"}) {
			t.Fatalf("lost %v, want [d1]", l.ids)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the device was not reported lost")
	}
}

// gRPC publishes Ready a moment after the first call on a new connection
// can succeed: a success recorded while the state still says Connecting
// (or TransientFailure) is not taken for a Ready period, so the watcher's
// look at that state is not a loss of the devices that just connected.
func TestSuccessBeforeReadyIsNotALoss(t *testing.T) {
	c, _, release, lost := starved(t, false) // never Ready: the state stays as it would look then
	ep := c.pin("d1")
	waitState(t, ep, connectivity.TransientFailure) // pick_first keeps it until Ready
	ep.succeeded(ep.generation())
	close(release)
	select {
	case l := <-lost:
		t.Fatalf("devices reported lost after a success seen before Ready: %v", l)
	case <-time.After(500 * time.Millisecond):
	}
}

// endReady is the watcher's verdict on a state other than Ready read now.
func endReady(ep *endpoint) bool {
	ended, _ := ep.endReady(ep.ready.Load())
	return ended
}

// A call that records a Ready period after the watcher read the state
// (Connecting, on a new connection) but before the watcher judged it (a
// starved goroutine on a busy machine) makes that state stale, not the
// loss of the devices that just connected: the watcher reads the state
// again. TestTakeover/udp (the whole suite under -race beside CPU hogs)
// once had its first device closed with handler_connection_lost this way.
func TestReadyRecordedAfterTheStateWasRead(t *testing.T) {
	var ep endpoint
	known := ep.ready.Load()     // the watcher, then GetState: Connecting
	ep.sawReady(ep.generation()) // a call succeeds, seeing Ready
	if ended, stale := ep.endReady(known); ended || !stale {
		t.Fatalf("a state read before a Ready period was judged ended=%v stale=%v, want stale", ended, stale)
	}
	if ep.generation() != 0 || ep.ready.Load()&1 != 1 {
		t.Fatal("the stale state ended the Ready period")
	}
	// Read again, a state other than Ready is the end of that period.
	if ended, stale := ep.endReady(ep.ready.Load()); !ended || stale {
		t.Fatalf("a state read after a Ready period was judged ended=%v stale=%v, want ended", ended, stale)
	}
	// Nothing known, nothing recorded since: neither.
	if ended, stale := ep.endReady(ep.ready.Load()); ended || stale {
		t.Fatalf("a state read with no Ready period was judged ended=%v stale=%v", ended, stale)
	}
}

// A call that succeeded before a loss was counted, and ends after it, does
// not start a new Ready period: the next state change is not a second loss.
func TestStaleSuccessIsNotReady(t *testing.T) {
	var ep endpoint
	before := ep.generation()
	ep.sawReady(before)
	if !endReady(&ep) {
		t.Fatal("a Ready period seen by a call did not end as a loss")
	}
	if endReady(&ep) {
		t.Fatal("one loss counted twice")
	}
	ep.lost.Store(true)
	ep.sawReady(before) // the stale success
	if endReady(&ep) || !ep.lost.Load() {
		t.Fatal("a success from before the loss was taken for a new Ready period")
	}
	ep.sawReady(ep.generation())
	if ep.lost.Load() || !endReady(&ep) {
		t.Fatal("a success after the loss did not start a new Ready period")
	}
}

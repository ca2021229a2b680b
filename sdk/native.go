package sdk

import (
	"context"
	"errors"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/workers"
	"github.com/exgate/exgate/nativepb"
)

// Native serves exgate's batched stream (exgate.v1.Handler, for a gateway
// with handler.service_name: native) by calling h, an EMQX-style
// ConnectionUnaryHandler: each event becomes one call of h, and h's calls to
// the gateway go back over the stream when h takes its adapter from the
// call's context with AdapterFrom. Register it beside the EMQX services:
//
//	nativepb.RegisterHandlerServer(srv, sdk.Native(h))
//
// Events of one connection arrive one at a time (the gateway sends the
// next after the previous call returned); events of different connections
// run concurrently, with one economy: the events of one message from the
// gateway run one after another on the goroutine that read it (handing
// each to a goroutine of its own was a fifth of a handler's CPU under
// load). A callback that waits for the gateway's answer to an adapter
// call, or is still running after 5 ms (it blocks, or the message is
// long), sends the message's other events to goroutines of their own and
// the reading to another goroutine, so it holds up the others by 5 ms at
// most; after such a wait the stream's events each get a goroutine of
// their own for a second. Handlers built with NewServer serve it already.
func Native(h pb.ConnectionUnaryHandlerServer) nativepb.HandlerServer {
	return &native{h: h}
}

// maxCallbacks bounds the callbacks running at once on one stream; more
// wait their turn (each device has at most one event outstanding).
const maxCallbacks = 4096

// rescueAfter is how long a callback run by the stream's reader may hold
// up the events behind it before they, and the reading, move on to other
// goroutines; after such a rescue the stream's events go to goroutines of
// their own for spreadFor, for a handler whose callbacks block would
// otherwise pay rescueAfter on every message. (1 ms measured dearer in
// handler CPU under load.)
const (
	rescueAfter = 5 * time.Millisecond
	spreadFor   = time.Second
)

type native struct {
	nativepb.UnimplementedHandlerServer
	h pb.ConnectionUnaryHandlerServer
}

type adapterKey struct{}

// AdapterFrom returns the adapter a callback should call: over the native
// stream the event came on, or fallback when the event came another way.
func AdapterFrom(ctx context.Context, fallback pb.ConnectionAdapterClient) pb.ConnectionAdapterClient {
	if a, ok := ctx.Value(adapterKey{}).(pb.ConnectionAdapterClient); ok {
		return a
	}
	return fallback
}

// stream is one Connect stream on the handler side.
type stream struct {
	s      nativepb.Handler_ConnectServer
	sender workers.Combiner // s's SendMsg allows one goroutine at a time
	h      pb.ConnectionUnaryHandlerServer
	ctx    context.Context // the callbacks' parent: the stream's, with its adapter
	pool   *workers.Pool   // callbacks, and the reader
	ended  chan error      // the reader's error, once; room for one
	// rescue moves the row the reader runs (cur) on when it takes too long.
	rescue *time.Timer
	cur    atomic.Pointer[row]
	spread atomic.Int64 // until when (UnixNano) events go to goroutines of their own

	mu      sync.Mutex
	err     error // set when the stream ended
	ref     uint64
	waiting map[uint64]chan *nativepb.Result
	actions []*nativepb.Action
}

func (n *native) Connect(s nativepb.Handler_ConnectServer) error {
	st := &stream{s: s, h: n.h, waiting: map[uint64]chan *nativepb.Result{}, ended: make(chan error, 1)}
	if err := s.Send(&nativepb.Down{Hello: &nativepb.Hello{Features: []string{}}}); err != nil {
		return err
	}
	st.ctx = context.WithValue(s.Context(), adapterKey{}, pb.ConnectionAdapterClient(streamAdapter{st}))
	// Callbacks run on reused goroutines: a fresh one per event would grow
	// its stack on every event.
	st.pool = workers.New(10*time.Second, maxCallbacks)
	st.rescue = time.AfterFunc(time.Hour, st.rescueRow)
	st.rescue.Stop()
	st.pool.Start(st.read)
	err := <-st.ended
	st.fail(err)
	st.pool.Close() // callbacks in flight see their actions fail and return
	st.rescue.Stop()
	if errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled {
		return nil
	}
	return ignoreEOF(err)
}

// read is the stream's reader: it hands results to the actions waiting for
// them and runs each message's events, until the stream ends or its role
// moves to another goroutine (move).
func (st *stream) read() {
	for {
		up, err := st.s.Recv()
		if err != nil {
			select {
			case st.ended <- err:
			default:
			}
			return
		}
		for _, r := range up.Results {
			st.answer(r)
		}
		if !st.run(up.Events) {
			return
		}
	}
}

// row is the events of one message, run by the reader one after another
// until they are done or moved.
type row struct {
	mu     sync.Mutex
	events []*nativepb.Event
	next   int
	done   bool // the reader ran them all
	moved  bool // the rest went to workers, and the reading to another goroutine
}

// take returns the row's next event; nil when there is none left, or when
// the row moved (moved true).
func (r *row) take() (ev *nativepb.Event, moved bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.moved:
		return nil, true
	case r.next == len(r.events):
		r.done = true
		return nil, false
	}
	ev = r.events[r.next]
	r.events[r.next] = nil
	r.next++
	return ev, false
}

// run runs a message's events on the reader; false when the reader's role
// moved meanwhile (the caller is no longer the reader).
func (st *stream) run(events []*nativepb.Event) bool {
	if len(events) == 0 {
		return true
	}
	if len(events) == 1 || st.pool.Full() || time.Now().UnixNano() < st.spread.Load() {
		// A lone event (light load: a worker runs it while the reader
		// waits for the next message, which measured faster than running
		// it here); callbacks at their bound (the events wait their turn,
		// and the reader goes on reading the answers the running ones
		// wait for); or callbacks found to block.
		st.handOut(events)
		return true
	}
	r := &row{events: events}
	st.cur.Store(r)
	st.rescue.Reset(rescueAfter)
	for {
		ev, moved := r.take()
		if moved {
			st.flush() // what the callbacks run here queued
			return false
		}
		if ev == nil {
			break
		}
		st.handle(ev, r)
	}
	st.rescue.Stop()
	st.cur.Store(nil)
	st.flush()
	return true
}

// handOut runs each event on a worker of its own.
func (st *stream) handOut(events []*nativepb.Event) {
	for _, ev := range events {
		st.pool.Go(func() { st.handle(ev, nil) })
	}
}

// rescueRow moves the row the reader has been running for rescueAfter,
// and has the next rows' events spread for a while.
func (st *stream) rescueRow() {
	if r := st.cur.Load(); r != nil && st.move(r) {
		st.spread.Store(time.Now().Add(spreadFor).UnixNano())
	}
}

// move gives the rest of r to workers and the reading to a new goroutine,
// because the callback the reader runs waits or takes long; false when r
// was done or moved already.
func (st *stream) move(r *row) bool {
	r.mu.Lock()
	if r.moved || r.done {
		r.mu.Unlock()
		return false
	}
	r.moved = true
	rest := r.events[r.next:]
	r.next = len(r.events)
	r.mu.Unlock()
	st.rescue.Stop()
	st.cur.CompareAndSwap(r, nil)
	st.handOut(rest)
	st.pool.Start(st.read)
	st.flush() // what the row's callbacks before this one queued
	return true
}

func ignoreEOF(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// running is a callback's context, marked while the callback runs: an
// action posted without waiting (NoWait) from it goes with its Done; one
// posted after it returned (from a goroutine it started, with its context)
// or from any other context goes at once. over is guarded by stream.mu.
// It is a Context itself rather than a value in one (context.WithValue),
// and holds the callback's Done: one allocation per event instead of five.
type running struct {
	context.Context
	row  *row // the reader's row it runs in; nil on a worker of its own
	over bool
	done struct {
		d nativepb.Done
		w nativepb.Action_Done
		a nativepb.Action
	}
}

type runningKey struct{}

func (r *running) Value(key any) any {
	if key == (runningKey{}) {
		return r
	}
	return r.Context.Value(key)
}

// handle runs one event's callback and says Done: at once on a worker of
// its own, with the rest of its row when run by the reader.
func (st *stream) handle(ev *nativepb.Event, r *row) {
	h := st.h
	cb := &running{Context: st.ctx, row: r}
	ctx := context.Context(cb)
	var conn string
	var err error
	switch x := ev.Event.(type) {
	case *nativepb.Event_SocketCreated:
		conn = x.SocketCreated.GetConn()
		_, err = h.OnSocketCreated(ctx, x.SocketCreated)
	case *nativepb.Event_ReceivedBytes:
		conn = x.ReceivedBytes.GetConn()
		_, err = h.OnReceivedBytes(ctx, x.ReceivedBytes)
	case *nativepb.Event_TimerTimeout:
		conn = x.TimerTimeout.GetConn()
		_, err = h.OnTimerTimeout(ctx, x.TimerTimeout)
	case *nativepb.Event_ReceivedMessages:
		conn = x.ReceivedMessages.GetConn()
		_, err = h.OnReceivedMessages(ctx, x.ReceivedMessages)
	case *nativepb.Event_SocketClosed:
		conn = x.SocketClosed.GetConn()
		_, err = h.OnSocketClosed(ctx, x.SocketClosed)
	default:
		return // an event this SDK does not know: nothing to answer
	}
	d := &cb.done.d
	d.Conn, d.Seq = conn, ev.Seq
	if err != nil {
		st := status.Convert(err)
		d.Error, d.Code = st.Message(), uint32(st.Code())
		if d.Error == "" {
			d.Error = "callback failed"
		}
	}
	st.mu.Lock()
	cb.over = true // what it posted is queued before its Done
	cb.done.w.Done = d
	cb.done.a.Action = &cb.done.w
	st.actions = append(st.actions, &cb.done.a)
	st.mu.Unlock()
	if r == nil {
		st.flush()
	}
}

// flush sends what is queued, unless another goroutine is sending: that
// one sends what was added meanwhile before it stops. A callback's action
// goes out from the callback's goroutine at light load, without waking
// another; under load what piles up during one send goes in the next.
// The reader calls it after a row of callbacks, and may wait there on
// exgate's flow control: exgate's reader never waits on the handler's, so
// that wait ends.
func (st *stream) flush() error {
	err := st.sender.Run(func() error {
		for {
			down := st.take(nil)
			if down == nil {
				return nil
			}
			if len(down.Actions) < 32 {
				runtime.Gosched() // let runnable callbacks add theirs
				down = st.take(down)
			}
			if err := st.s.Send(down); err != nil {
				return err
			}
		}
	}, func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return len(st.actions) > 0 && st.err == nil // as take sees it
	})
	if err != nil {
		st.fail(err)
	}
	return err
}

func (st *stream) take(down *nativepb.Down) *nativepb.Down {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.actions) == 0 || st.err != nil {
		return down
	}
	if down == nil {
		down = &nativepb.Down{}
	}
	size := 0
	for _, a := range down.Actions {
		size += actionSize(a)
	}
	n := 0
	for n < len(st.actions) {
		as := actionSize(st.actions[n])
		if size+as > maxBatchBytes && len(down.Actions)+n > 0 {
			break // a big action goes in a message of its own
		}
		size += as
		n++
	}
	down.Actions = append(down.Actions, st.actions[:n]...)
	clear(st.actions[:n])
	st.actions = st.actions[n:]
	if len(st.actions) == 0 {
		st.actions = nil
	}
	return down
}

// maxBatchBytes bounds the payload bytes of one Down message (a single
// larger action goes alone): exgate takes messages up to its
// server.max_recv_message_size (default 4 MiB) plus 1 MiB.
const maxBatchBytes = 1 << 20

// actionSize approximates an action's share of a message.
func actionSize(a *nativepb.Action) int {
	switch x := a.Action.(type) {
	case *nativepb.Action_Send:
		return len(x.Send.GetBytes()) + 64
	case *nativepb.Action_Publish:
		return len(x.Publish.GetPayload()) + len(x.Publish.GetTopic()) + 64
	case *nativepb.Action_RawPublish:
		return len(x.RawPublish.GetPayload()) + len(x.RawPublish.GetTopic()) + 64
	}
	return 64
}

// answer delivers a result to the action waiting for it.
func (st *stream) answer(r *nativepb.Result) {
	st.mu.Lock()
	ch := st.waiting[r.Ref]
	delete(st.waiting, r.Ref)
	st.mu.Unlock()
	if ch != nil {
		ch <- r
	}
}

// fail ends every action waiting for a result.
func (st *stream) fail(err error) {
	if err == nil {
		err = io.EOF
	}
	st.mu.Lock()
	if st.err != nil {
		st.mu.Unlock()
		return
	}
	st.err = err
	waiting := st.waiting
	st.waiting = nil
	st.mu.Unlock()
	for _, ch := range waiting {
		close(ch)
	}
}

// do sends an action and waits for its result.
func (st *stream) do(ctx context.Context, a *nativepb.Action) (*pb.CodeResponse, error) {
	if cb, _ := ctx.Value(runningKey{}).(*running); cb != nil && cb.row != nil {
		st.move(cb.row) // the answer comes through the reader: it must not be us
	}
	ch := make(chan *nativepb.Result, 1)
	st.mu.Lock()
	if st.err != nil {
		st.mu.Unlock()
		return nil, status.Error(codes.Unavailable, "native stream ended: "+st.err.Error())
	}
	st.ref++
	a.Ref = st.ref
	st.waiting[a.Ref] = ch
	st.actions = append(st.actions, a)
	st.mu.Unlock()
	st.flush()
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, status.Error(codes.Unavailable, "native stream ended")
		}
		return &pb.CodeResponse{Code: r.Code, Message: r.Message}, nil
	case <-ctx.Done():
		st.mu.Lock()
		delete(st.waiting, a.Ref)
		st.mu.Unlock()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// NoWait makes an adapter call over exgate's native stream return at once
// instead of waiting for exgate's answer: the action is queued in order
// with the connection's other actions and goes out with the callback's
// next message to exgate (at the latest its Done, when the callback
// returns; made with any other context, or after the callback returned,
// it goes at once), and the call returns SUCCESS. exgate sends no result for it
// and counts a failure in exgate_native_unanswered_failures_total. A
// callback that echoes or acknowledges with Send saves a round trip of
// the stream: its Done follows its Send in one message, so the device's
// next event can go at once. Over any other adapter (an EMQX-style
// handler's ConnectionAdapter client) the call waits as usual.
//
//	a.Send(ctx, &pb.SendBytesRequest{Conn: r.Conn, Bytes: reply}, sdk.NoWait())
func NoWait() grpc.CallOption { return noWait{} }

type noWait struct{ grpc.EmptyCallOption }

func waits(opts []grpc.CallOption) bool {
	for _, o := range opts {
		if _, ok := o.(noWait); ok {
			return false
		}
	}
	return true
}

// post queues an action that wants no result. From a running callback it
// goes with the callback's next message (at the latest its Done);
// otherwise it is sent at once.
func (st *stream) post(ctx context.Context, a *nativepb.Action) (*pb.CodeResponse, error) {
	cb, _ := ctx.Value(runningKey{}).(*running)
	st.mu.Lock()
	if st.err != nil {
		st.mu.Unlock()
		return nil, status.Error(codes.Unavailable, "native stream ended: "+st.err.Error())
	}
	st.actions = append(st.actions, a)
	later := cb != nil && !cb.over
	st.mu.Unlock()
	if !later {
		st.flush()
	}
	return &pb.CodeResponse{Code: pb.ResultCode_SUCCESS}, nil
}

// streamAdapter is ConnectionAdapter over a native stream.
type streamAdapter struct{ st *stream }

func (a streamAdapter) call(ctx context.Context, act *nativepb.Action, opts []grpc.CallOption) (*pb.CodeResponse, error) {
	if !waits(opts) {
		return a.st.post(ctx, act)
	}
	return a.st.do(ctx, act)
}

// sendAction is a Send action and its wrapper in one allocation (the
// commonest action: every echo and every delivery a handler forwards).
type sendAction struct {
	a nativepb.Action
	w nativepb.Action_Send
}

func (a streamAdapter) Send(ctx context.Context, r *pb.SendBytesRequest, opts ...grpc.CallOption) (*pb.CodeResponse, error) {
	sa := &sendAction{}
	sa.w.Send = r
	sa.a.Action = &sa.w
	return a.call(ctx, &sa.a, opts)
}

func (a streamAdapter) Close(ctx context.Context, r *pb.CloseSocketRequest, opts ...grpc.CallOption) (*pb.CodeResponse, error) {
	return a.call(ctx, &nativepb.Action{Action: &nativepb.Action_Close{Close: r}}, opts)
}

func (a streamAdapter) Authenticate(ctx context.Context, r *pb.AuthenticateRequest, opts ...grpc.CallOption) (*pb.CodeResponse, error) {
	return a.call(ctx, &nativepb.Action{Action: &nativepb.Action_Authenticate{Authenticate: r}}, opts)
}

func (a streamAdapter) StartTimer(ctx context.Context, r *pb.TimerRequest, opts ...grpc.CallOption) (*pb.CodeResponse, error) {
	return a.call(ctx, &nativepb.Action{Action: &nativepb.Action_StartTimer{StartTimer: r}}, opts)
}

func (a streamAdapter) Publish(ctx context.Context, r *pb.PublishRequest, opts ...grpc.CallOption) (*pb.CodeResponse, error) {
	return a.call(ctx, &nativepb.Action{Action: &nativepb.Action_Publish{Publish: r}}, opts)
}

func (a streamAdapter) RawPublish(ctx context.Context, r *pb.RawPublishRequest, opts ...grpc.CallOption) (*pb.CodeResponse, error) {
	return a.call(ctx, &nativepb.Action{Action: &nativepb.Action_RawPublish{RawPublish: r}}, opts)
}

func (a streamAdapter) Subscribe(ctx context.Context, r *pb.SubscribeRequest, opts ...grpc.CallOption) (*pb.CodeResponse, error) {
	return a.call(ctx, &nativepb.Action{Action: &nativepb.Action_Subscribe{Subscribe: r}}, opts)
}

func (a streamAdapter) Unsubscribe(ctx context.Context, r *pb.UnsubscribeRequest, opts ...grpc.CallOption) (*pb.CodeResponse, error) {
	return a.call(ctx, &nativepb.Action{Action: &nativepb.Action_Unsubscribe{Unsubscribe: r}}, opts)
}

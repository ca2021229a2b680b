package handler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/workers"
	"github.com/exgate/exgate/nativepb"
)

// Native mode (service_name: native) serves exgate.v1.Handler: one
// bidirectional stream per endpoint carries the events of all its devices
// in batches, and brings back the handler's actions, which are applied
// through the same ConnectionAdapter code that serves EMQX handlers (so
// results, codes and messages are identical).
//
// The channel's rule is unchanged: a device has one event outstanding, and
// its next one goes out after the handler's Done, as after a unary call's
// answer (Start hands Done to the channel; call, used for OnSocketClosed,
// waits for it). Actions of one device are applied in the order sent, by a
// worker of that device's own while it has any, so a device whose socket
// is slow holds up only itself; Done waits behind the device's earlier
// actions, as a unary callback returns only after its adapter calls did.

// nativeEndpoint opens an endpoint's stream and reopens it after it ended.
type nativeEndpoint struct {
	c  *Client
	ep *endpoint
	// turn is held while a stream is opened; waiting for it honours the
	// caller's deadline.
	turn                      chan struct{}
	refusedLog, unansweredLog rate.Sometimes

	mu  sync.Mutex
	cur *nativeStream // nil, or the latest stream (perhaps ended)
}

// nativeStream is one Connect stream.
type nativeStream struct {
	ne     *nativeEndpoint
	s      nativepb.Handler_ConnectClient
	ctx    context.Context // ends with the stream
	cancel context.CancelFunc
	done   chan struct{}    // closed when the stream ended
	wake   chan struct{}    // the sender has something to send; room for one
	sender workers.Combiner // s's SendMsg allows one goroutine at a time
	// receiving is set while recvLoop applies a message's actions: an
	// event started meanwhile (a Done lets the device's next one go) is
	// left for the sender goroutine, which recvLoop wakes when it is
	// through, because recvLoop must never wait on the handler's flow
	// control (the handler may be waiting for it to read).
	receiving atomic.Bool
	// holds counts the Batch.Runs in progress: while it is above zero,
	// what is queued is sent when they end.
	holds atomic.Int32

	mu      sync.Mutex
	err     error // why the stream ended; set before done closes
	seq     uint64
	waiting map[string]*waiter // conn → its outstanding event
	events  []*nativepb.Event  // to send
	results []*nativepb.Result // to send
	acts    map[string]*actionQueue

	sendBufs [][]byte // trySend's scratch; recvLoop's alone
	// helpers route shards of a large message's actions beside recvLoop
	// (routeShards); started when first needed, recvLoop's alone.
	helpers []*helper
	shards  [][]*nativepb.Action // routeShards' scratch; recvLoop's alone
	// The streams recvLoop holds while it applies a message's actions
	// itself (holdAll; this one among them); recvLoop's alone.
	held []*nativeStream

	// The deadline context actions share (actionCtx).
	dmu     sync.Mutex
	dctx    context.Context
	dcancel context.CancelFunc // held, never needed: dctx ends at its deadline or with ctx
}

// waiter is a device's outstanding event: a caller waiting on ch (call),
// or an event started without waiting (Start).
type waiter struct {
	seq     uint64
	ch      chan error // room for one
	started *started
}

// answer hands the event's outcome to whoever waits for it.
func (w *waiter) answer(err error) {
	if w.started != nil {
		w.started.answer(err)
		return
	}
	w.ch <- err
}

// started is an event started without waiting (Client.Start): one object
// holds all it needs, so starting an event allocates no closures.
type started struct {
	c            *Client
	ep           *endpoint
	method, conn string
	begin        time.Time
	call         interface{ Done(error) }
	w            waiter

	event eventWrap // the event as sent

	mu        sync.Mutex
	sent      *nativeStream // the stream it went on, once it went
	cancelled bool
}

// answer finishes the event: observed, explained, its device unpinned
// after OnSocketClosed, then told to the caller.
func (s *started) answer(err error) {
	c := s.c
	if c.observe != nil {
		c.observe(s.method, time.Since(s.begin), err)
	}
	if err != nil {
		err = c.explain(s.ep, s.method, err)
	}
	if s.method == "OnSocketClosed" {
		c.mu.Lock()
		delete(c.pins, s.conn)
		c.mu.Unlock()
	}
	s.call.Done(err)
}

// Cancel forgets the event (its deadline passed): a Done for it is then
// ignored, and an event not yet sent is not sent.
func (s *started) Cancel() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cancelled = true
	if s.sent != nil {
		s.sent.forget(s.conn, &s.w)
	}
}

// actionQueue holds a device's actions while its worker applies them.
type actionQueue struct{ items []*nativepb.Action }

// maxDeviceActions bounds the actions waiting for one device (behind a
// Send to a socket that does not drain); beyond it actions are refused.
const maxDeviceActions = 10_000

// maxBatch bounds the events (and results) in one Up message; a short
// batch waits one scheduler yield for more before it goes.
const maxBatch = 256

// maxActionWorkers bounds the devices whose actions are applied at once; a
// device whose socket does not drain holds one for up to its send_timeout,
// so the bound is far above what a handler keeps busy.
const maxActionWorkers = 4096

func (c *Client) newNative(ep *endpoint) *nativeEndpoint {
	return &nativeEndpoint{c: c, ep: ep, turn: make(chan struct{}, 1), refusedLog: rate.Sometimes{Interval: 5 * time.Second},
		unansweredLog: rate.Sometimes{Interval: 5 * time.Second}}
}

// open returns the endpoint's stream if one is open, else nil.
func (ne *nativeEndpoint) open() *nativeStream {
	ne.mu.Lock()
	cur := ne.cur
	ne.mu.Unlock()
	if cur != nil && !closed(cur.done) {
		return cur
	}
	return nil
}

// stream returns the open stream, opening one if there is none. wait makes
// the open wait (within ctx) for a handler that is reconnecting.
func (ne *nativeEndpoint) stream(ctx context.Context, wait bool) (*nativeStream, error) {
	if st := ne.open(); st != nil {
		return st, nil
	}
	select {
	case ne.turn <- struct{}{}:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	defer func() { <-ne.turn }()
	if st := ne.open(); st != nil {
		return st, nil // opened while we waited
	}
	sctx, cancel := context.WithCancel(ne.c.ctx)
	stop := context.AfterFunc(ctx, cancel) // the open itself is bounded by the caller
	var opts []grpc.CallOption
	if wait {
		opts = append(opts, waitForReady...)
	}
	opts = append(opts, grpc.MaxCallRecvMsgSize(ne.c.maxRecv))
	s, err := nativepb.NewHandlerClient(ne.ep.conn).Connect(sctx, opts...)
	if err == nil {
		err = s.Send(&nativepb.Up{Hello: &nativepb.Hello{Node: ne.c.node, Version: ne.c.versionString(), Features: []string{}}})
	}
	if !stop() || err != nil {
		cancel()
		return nil, cmp.Or(context.Cause(ctx), err)
	}
	st := &nativeStream{ne: ne, s: s, ctx: sctx, cancel: cancel, done: make(chan struct{}), wake: make(chan struct{}, 1),
		waiting: map[string]*waiter{}, acts: map[string]*actionQueue{}}
	ne.mu.Lock()
	ne.cur = st
	ne.mu.Unlock()
	ne.ep.lost.Store(false)
	ne.c.batch.add(st)
	ne.c.wg.Go(st.sendLoop)
	ne.c.wg.Go(st.recvLoop)
	ne.c.log.Info("native handler stream open", "address", ne.ep.addr)
	return st, nil
}

// call sends one event and waits for the handler's Done.
func (ne *nativeEndpoint) call(ctx context.Context, method, conn string, req proto.Message) error {
	st, err := ne.stream(ctx, method == "OnSocketCreated")
	if err != nil {
		return err
	}
	w := &waiter{ch: make(chan error, 1)}
	if err := st.send(conn, eventOf(req), w); err != nil {
		return err
	}
	select {
	case err := <-w.ch:
		return err
	case <-ctx.Done():
		st.forget(conn, w)
		return context.Cause(ctx)
	}
}

// start sends s's event and returns; s is told the handler's Done. When
// no stream is open, one is opened in the background (a new device waits
// up to holdWhileReconnecting for a handler that is reconnecting).
func (ne *nativeEndpoint) start(s *started, req proto.Message) {
	s.w.started = s
	if st := ne.open(); st != nil {
		if err := st.send(s.conn, s.event.wrap(req), &s.w); err != nil {
			go s.answer(err) // never from inside Start
			return
		}
		s.mu.Lock()
		s.sent = st
		s.mu.Unlock()
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(ne.c.ctx, holdWhileReconnecting)
		defer cancel()
		st, err := ne.stream(ctx, s.method == "OnSocketCreated")
		s.mu.Lock()
		defer s.mu.Unlock()
		switch {
		case s.cancelled:
		case err != nil:
			go s.answer(err)
		default:
			if err := st.send(s.conn, s.event.wrap(req), &s.w); err != nil {
				go s.answer(err)
			} else {
				s.sent = st
			}
		}
	}()
}

// send queues ev (nil: a request that is no event) as the device's
// outstanding event, answered to w.
func (st *nativeStream) send(conn string, ev *nativepb.Event, w *waiter) error {
	if ev == nil {
		return errors.New("native: not a ConnectionHandler request")
	}
	st.mu.Lock()
	if st.err != nil {
		st.mu.Unlock()
		return st.err
	}
	st.seq++
	w.seq, ev.Seq = st.seq, st.seq
	st.waiting[conn] = w
	st.events = append(st.events, ev)
	st.mu.Unlock()
	if st.receiving.Load() || st.holds.Load() > 0 {
		return nil // recvLoop wakes the sender when it is through; a Batch sends at its end
	}
	st.flush()
	return nil
}

// methodOf names the callback of a ConnectionHandler request ("" for
// anything else), without wrapping it as eventOf does.
func methodOf(req proto.Message) string {
	switch req.(type) {
	case *pb.SocketCreatedRequest:
		return "OnSocketCreated"
	case *pb.ReceivedBytesRequest:
		return "OnReceivedBytes"
	case *pb.TimerTimeoutRequest:
		return "OnTimerTimeout"
	case *pb.ReceivedMessagesRequest:
		return "OnReceivedMessages"
	case *pb.SocketClosedRequest:
		return "OnSocketClosed"
	}
	return ""
}

// eventOf wraps a ConnectionHandler request as a native event; nil for
// anything else.
func eventOf(req proto.Message) *nativepb.Event { return new(eventWrap).wrap(req) }

// eventWrap is a native event with room for its oneof wrapper, so that
// wrapping a request takes one allocation, or none where eventWrap is part
// of an object made anyway (started): a delivery to 10,000 devices
// allocates enough for the collector to be a fifth of the gateway's CPU.
type eventWrap struct {
	ev      nativepb.Event
	created nativepb.Event_SocketCreated
	bytes   nativepb.Event_ReceivedBytes
	timer   nativepb.Event_TimerTimeout
	msgs    nativepb.Event_ReceivedMessages
	closed  nativepb.Event_SocketClosed
}

func (w *eventWrap) wrap(req proto.Message) *nativepb.Event {
	switch r := req.(type) {
	case *pb.SocketCreatedRequest:
		w.created.SocketCreated, w.ev.Event = r, &w.created
	case *pb.ReceivedBytesRequest:
		w.bytes.ReceivedBytes, w.ev.Event = r, &w.bytes
	case *pb.TimerTimeoutRequest:
		w.timer.TimerTimeout, w.ev.Event = r, &w.timer
	case *pb.ReceivedMessagesRequest:
		w.msgs.ReceivedMessages, w.ev.Event = r, &w.msgs
	case *pb.SocketClosedRequest:
		w.closed.SocketClosed, w.ev.Event = r, &w.closed
	default:
		return nil
	}
	return &w.ev
}

// forget drops w if it is still the device's outstanding event.
func (st *nativeStream) forget(conn string, w *waiter) {
	st.mu.Lock()
	if st.waiting[conn] == w {
		delete(st.waiting, conn)
	}
	st.mu.Unlock()
}

// wakeIfQueued wakes the sender if something waits to be sent: waking it
// for nothing readies a goroutine (at light load, most Downs leave nothing).
func (st *nativeStream) wakeIfQueued() {
	if st.queued() {
		st.signal()
	}
}

func (st *nativeStream) signal() {
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

// sendLoop sends what recvLoop queued (it only wakes the sender); the
// goroutines that start events or apply actions send theirs themselves
// (flush).
func (st *nativeStream) sendLoop() {
	for {
		select {
		case <-st.wake:
		case <-st.done:
			return
		}
		st.flush()
	}
}

// flush sends what is queued, unless another goroutine is sending: that
// one sends what was added meanwhile before it stops. So at light load an
// event goes out from the goroutine that started it, without waking
// another, and under load what piles up during one send goes in the next.
//
// While the stream is held (a Batch runs, or a recvLoop applies actions)
// it sends nothing more, also when it was sending as the hold began: the
// hold's end sends what queued.
func (st *nativeStream) flush() {
	// An error ends the stream: recvLoop learns why and ends it.
	_ = st.sender.Run(func() error {
		for st.holds.Load() == 0 {
			up := st.take(nil)
			if up == nil {
				return nil
			}
			if len(up.Events)+len(up.Results) < maxBatch/8 {
				// Let the dispatchers and workers that are runnable add theirs:
				// one yield turned batches of ~1.5 into ~20 in measurements.
				runtime.Gosched()
				if st.holds.Load() == 0 {
					up = st.take(up)
				}
			}
			if err := st.s.Send(up); err != nil {
				return err
			}
		}
		return nil
	}, st.sendable)
}

// sendable reports whether something queued may be sent now.
func (st *nativeStream) sendable() bool { return st.holds.Load() == 0 && st.queued() }

// queued reports whether anything waits to be sent.
func (st *nativeStream) queued() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.events) > 0 || len(st.results) > 0
}

// take moves up to maxBatch events and results into up (a new Up if nil);
// nil when there is nothing.
func (st *nativeStream) take(up *nativepb.Up) *nativepb.Up {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.events) == 0 && len(st.results) == 0 {
		return up
	}
	if up == nil {
		up = &nativepb.Up{}
	}
	size := 0
	for _, ev := range up.Events {
		size += eventSize(ev)
	}
	n := 0
	for n < len(st.events) && len(up.Events)+n < maxBatch {
		es := eventSize(st.events[n])
		if size+es > maxBatchBytes && len(up.Events)+n > 0 {
			break // a big event goes in a message of its own
		}
		size += es
		n++
	}
	up.Events = append(up.Events, st.events[:n]...)
	st.events = shift(st.events, n)
	n = min(len(st.results), maxBatch-len(up.Results))
	up.Results = append(up.Results, st.results[:n]...)
	st.results = shift(st.results, n)
	return up
}

// maxBatchBytes bounds the payload bytes of one Up message (a single
// larger event goes alone), well under gRPC's default 4 MiB a handler
// accepts.
const maxBatchBytes = 1 << 20

// eventSize approximates an event's share of a message.
func eventSize(ev *nativepb.Event) int {
	switch x := ev.Event.(type) {
	case *nativepb.Event_ReceivedBytes:
		return len(x.ReceivedBytes.GetBytes()) + 64
	case *nativepb.Event_ReceivedMessages:
		n := 64
		for _, m := range x.ReceivedMessages.GetMessages() {
			n += len(m.Payload) + len(m.Topic) + len(m.From) + 64
		}
		return n
	}
	return 256
}

// shift drops the first n items, letting a burst's backing array go once
// it is empty.
func shift[T any](s []*T, n int) []*T {
	clear(s[:n])
	s = s[n:]
	if len(s) == 0 {
		return nil
	}
	return s
}

// recvLoop applies the handler's actions until the stream ends.
func (st *nativeStream) recvLoop() {
	for {
		down, err := st.s.Recv()
		if err != nil {
			st.end(err)
			return
		}
		st.receiving.Store(true)
		if !st.routeShards(down.Actions) {
			st.routeAll(down.Actions, &st.sendBufs)
		}
		st.unholdAll()
		st.receiving.Store(false)
		// What was queued meanwhile (results, events started by its Dones or
		// by others while it applied) goes from the sender. An event queued
		// after this look saw receiving false and went itself.
		st.wakeIfQueued()
	}
}

// routeAll routes acts in order, with bufs as trySend's scratch.
func (st *nativeStream) routeAll(acts []*nativepb.Action, bufs *[][]byte) {
	for len(acts) > 0 {
		n := sendRun(acts)
		st.route(acts[:n], bufs)
		acts = acts[n:]
	}
}

// A helper routes one shard of a message's actions beside recvLoop. A
// broker's fan-out answered by the handler is a message of hundreds of
// Sends and Dones for as many devices, and recvLoop alone writing them
// all was the fan-out's bottleneck: busy 95 % of the time while the cores
// had room (10,000 devices, 2026-12-01).
type helper struct {
	work chan []*nativepb.Action
	done chan struct{} // room for one: a helper never waits on it
	bufs [][]byte      // trySend's scratch
}

// shardMin is the fewest actions a message needs for routeShards to split
// it: below it, the hand-over costs more than it saves (an echo's messages
// carry a few dozen).
const shardMin = 128

// maxHelpers bounds a stream's helpers, whatever GOMAXPROCS is.
const maxHelpers = 3

// routeShards routes a large message of Sends and Dones on recvLoop and
// its helpers at once, each device's actions in one shard, in order; it
// returns once all are routed, so a device's actions of the next message
// still come after these. It reports false, and routes nothing, when the
// message is small, holds other actions (a publish applied at once holds
// every stream, which is recvLoop's to do), or there is one CPU.
func (st *nativeStream) routeShards(acts []*nativepb.Action) bool {
	if len(acts) < shardMin {
		return false
	}
	n := min(runtime.GOMAXPROCS(0), maxHelpers+1) // after the length: it takes the scheduler's lock
	if n < 2 {
		return false
	}
	for _, a := range acts {
		switch a.Action.(type) {
		case *nativepb.Action_Send, *nativepb.Action_Done:
		default:
			return false
		}
	}
	for len(st.helpers) < n-1 {
		h := &helper{work: make(chan []*nativepb.Action), done: make(chan struct{}, 1)}
		st.helpers = append(st.helpers, h)
		st.ne.c.wg.Go(func() { st.help(h) })
	}
	for len(st.shards) < n {
		st.shards = append(st.shards, nil)
	}
	shards := st.shards[:n]
	for _, a := range acts {
		i := pick(actionConn(a), n)
		shards[i] = append(shards[i], a)
	}
	for i, h := range st.helpers[:n-1] {
		h.work <- shards[i+1]
	}
	st.routeAll(shards[0], &st.sendBufs)
	for _, h := range st.helpers[:n-1] {
		<-h.done
	}
	for i := range shards {
		clear(shards[i]) // let the handler's actions go
		shards[i] = shards[i][:0]
	}
	return true
}

// help routes the shards recvLoop hands h until the stream ends.
func (st *nativeStream) help(h *helper) {
	for {
		select {
		case acts := <-h.work:
			st.routeAll(acts, &h.bufs)
			h.done <- struct{}{}
		case <-st.done:
			return
		}
	}
}

// actionConn is the device an action is for; "" for RawPublish (one queue
// of their own, in order) and for an empty action.
func actionConn(a *nativepb.Action) string {
	switch x := a.Action.(type) {
	case *nativepb.Action_Send:
		return x.Send.GetConn()
	case *nativepb.Action_Close:
		return x.Close.GetConn()
	case *nativepb.Action_Authenticate:
		return x.Authenticate.GetConn()
	case *nativepb.Action_StartTimer:
		return x.StartTimer.GetConn()
	case *nativepb.Action_Publish:
		return x.Publish.GetConn()
	case *nativepb.Action_Subscribe:
		return x.Subscribe.GetConn()
	case *nativepb.Action_Unsubscribe:
		return x.Unsubscribe.GetConn()
	case *nativepb.Action_Done:
		return x.Done.GetConn()
	}
	return ""
}

// sendRun is how many actions from acts[0] on are non-empty Sends to one
// device (1 when acts[0] is not one): their bytes go in one write.
func sendRun(acts []*nativepb.Action) int {
	first := acts[0].GetSend()
	if len(first.GetBytes()) == 0 {
		return 1
	}
	n, size := 1, len(first.GetBytes())
	for ; n < len(acts); n++ {
		b := acts[n].GetSend().GetBytes()
		if len(b) == 0 || acts[n].GetSend().GetConn() != first.GetConn() || size+len(b) > maxSendRun {
			break
		}
		size += len(b)
	}
	return n
}

// maxSendRun bounds the bytes of the Sends written with one write.
const maxSendRun = 32 << 10

// route queues run (one action, or Sends to one device: sendRun) for its
// device's worker, starting one if the device has none. A Done with
// nothing queued before it is applied at once; so are Sends the socket
// takes without waiting, and publishes and subscriptions that never wait
// (neverWaits).
func (st *nativeStream) route(run []*nativepb.Action, bufs *[][]byte) {
	conn := actionConn(run[0])
	st.mu.Lock()
	if q := st.acts[conn]; q != nil {
		refused := 0
		for _, a := range run {
			_, done := a.Action.(*nativepb.Action_Done)
			if len(q.items) >= maxDeviceActions && !done {
				// A handler flooding one device whose socket is stuck: refuse
				// rather than queue without bound. Done is never refused, or
				// the device would wait for it until its deadline.
				if a.Ref != 0 {
					st.results = append(st.results, &nativepb.Result{Ref: a.Ref, Code: pb.ResultCode_UNKNOWN,
						Message: fmt.Sprintf("more than %d actions wait for this connection", maxDeviceActions)})
				}
				refused++
				continue
			}
			q.items = append(q.items, a)
		}
		st.mu.Unlock()
		if refused > 0 {
			total := st.ne.c.refused.Add(int64(refused))
			st.ne.refusedLog.Do(func() {
				st.ne.c.log.Warn("native handler sends actions faster than a device takes them: refused", "conn", conn,
					"max_queued", maxDeviceActions, "refused_total", total)
			})
		}
		return
	}
	st.mu.Unlock()
	// One goroutine at a time routes a device (recvLoop, or the helper of
	// its shard), and only it adds queues: the device has none until it does.
	if d, ok := run[0].Action.(*nativepb.Action_Done); ok {
		st.finish(d.Done)
		return
	}
	if run[0].GetSend() != nil {
		if run = st.trySend(conn, run, bufs); len(run) == 0 {
			return
		}
	}
	if st.neverWaits(conn, run[0]) && st.holdAll() {
		st.apply(run[0])
		return
	}
	q := &actionQueue{items: append([]*nativepb.Action(nil), run...)}
	st.mu.Lock()
	st.acts[conn] = q
	st.mu.Unlock()
	st.ne.c.actions.Go(func() { st.work(conn, q) })
}

// trySend writes the bytes of run (Sends to conn) at once when the
// device's socket takes them without waiting (the common case), saving a
// hand-over to a worker, and answers them. It returns what is left for the
// device's worker, in order: the rest of a Send cut short, and the Sends
// after it.
func (st *nativeStream) trySend(conn string, run []*nativepb.Action, bufs *[][]byte) []*nativepb.Action {
	ts := st.ne.c.trySender
	if ts == nil {
		return run
	}
	// Each goroutine that routes has a scratch slice of its own (a local
	// one would escape through the interface: an allocation per Send).
	bs := (*bufs)[:0]
	for _, a := range run {
		bs = append(bs, a.GetSend().GetBytes())
	}
	*bufs = bs
	defer clear(bs) // let the handler's bytes go
	code, msg, n, done := ts.TrySend(conn, bs)
	if done {
		for _, a := range run {
			st.answerCode(a.Ref, code, msg)
		}
		return nil
	}
	for i, a := range run {
		b := bs[i]
		if n >= len(b) { // written whole
			n -= len(b)
			st.answerCode(a.Ref, pb.ResultCode_SUCCESS, "")
			continue
		}
		if n > 0 {
			rest := &nativepb.Action{Ref: a.Ref, Action: &nativepb.Action_Send{Send: &pb.SendBytesRequest{Conn: conn, Bytes: b[n:]}}}
			return append([]*nativepb.Action{rest}, run[i+1:]...)
		}
		return run[i:]
	}
	return nil
}

// neverWaits reports that a is a publish, subscribe or unsubscribe that
// returns without waiting (adapter.Server.PubSubNeverWaits): applied at
// once, it saves a hand-over to a worker, a tenth of the gateway's CPU per
// device publish.
func (st *nativeStream) neverWaits(conn string, a *nativepb.Action) bool {
	switch a.Action.(type) {
	case *nativepb.Action_Publish, *nativepb.Action_Subscribe, *nativepb.Action_Unsubscribe:
	default:
		return false
	}
	nw := st.ne.c.pubSub
	return nw != nil && nw.PubSubNeverWaits(conn)
}

// trySender is an adapter that writes Sends without waiting when it can
// (adapter.Server.TrySend).
type trySender interface {
	TrySend(conn string, bs [][]byte) (pb.ResultCode, string, int, bool)
}

// pubSubNeverWaiter is an adapter that tells which devices' publishes and
// subscriptions never wait (adapter.Server.PubSubNeverWaits).
type pubSubNeverWaiter interface {
	PubSubNeverWaits(conn string) bool
}

// holdAll makes every native stream hold its sends until recvLoop is
// through with the message (unholdAll), and reports whether it could: a
// publish it applies itself may start events on any stream (deliveries to
// their devices), and it must never wait on a handler's flow control.
func (st *nativeStream) holdAll() bool {
	b := st.ne.c.batch
	if b == nil {
		return false
	}
	if len(st.held) == 0 {
		st.held = b.hold(st.held)
	}
	return true
}

// unholdAll ends holdAll's holds and wakes the sender of each other stream
// with something queued (recvLoop wakes its own).
func (st *nativeStream) unholdAll() {
	for _, o := range st.held {
		o.holds.Add(-1)
		if o != st {
			o.wakeIfQueued()
		}
	}
	clear(st.held)
	st.held = st.held[:0]
}

// work applies a device's queued actions in order until none is left.
func (st *nativeStream) work(conn string, q *actionQueue) {
	for {
		st.mu.Lock()
		if len(q.items) == 0 {
			delete(st.acts, conn)
			st.mu.Unlock()
			return
		}
		a := q.items[0]
		q.items[0] = nil
		q.items = q.items[1:]
		st.mu.Unlock()
		st.apply(a)
	}
}

// finish ends the outstanding event d names; a Done for an event that is
// no longer outstanding (its deadline passed) is ignored.
func (st *nativeStream) finish(d *nativepb.Done) {
	st.mu.Lock()
	w := st.waiting[d.GetConn()]
	if w == nil || w.seq != d.GetSeq() {
		st.mu.Unlock()
		return
	}
	delete(st.waiting, d.GetConn())
	st.mu.Unlock()
	var err error
	if d.GetError() != "" {
		code := codes.Code(d.GetCode())
		if code == codes.OK {
			code = codes.Unknown
		}
		err = status.Error(code, d.GetError())
	}
	w.answer(err)
}

// apply runs one action through the adapter and queues its result.
func (st *nativeStream) apply(a *nativepb.Action) {
	c := st.ne.c
	if d, ok := a.Action.(*nativepb.Action_Done); ok {
		st.finish(d.Done)
		return
	}
	// Send, Close and StartTimer never wait on ctx (a write has the
	// device's send_timeout): only the others need a deadline.
	ctx := st.ctx
	switch a.Action.(type) {
	case *nativepb.Action_Send, *nativepb.Action_Close, *nativepb.Action_StartTimer:
	default:
		ctx = st.actionCtx()
	}
	var r *pb.CodeResponse
	var err error
	ad := c.adapter
	switch x := a.Action.(type) {
	case *nativepb.Action_Send:
		r, err = ad.Send(ctx, x.Send)
	case *nativepb.Action_Close:
		r, err = ad.Close(ctx, x.Close)
	case *nativepb.Action_Authenticate:
		r, err = ad.Authenticate(ctx, x.Authenticate)
	case *nativepb.Action_StartTimer:
		r, err = ad.StartTimer(ctx, x.StartTimer)
	case *nativepb.Action_Publish:
		r, err = ad.Publish(ctx, x.Publish)
	case *nativepb.Action_Subscribe:
		r, err = ad.Subscribe(ctx, x.Subscribe)
	case *nativepb.Action_Unsubscribe:
		r, err = ad.Unsubscribe(ctx, x.Unsubscribe)
	case *nativepb.Action_RawPublish:
		r, err = ad.RawPublish(ctx, x.RawPublish)
	default:
		r = &pb.CodeResponse{Code: pb.ResultCode_UNKNOWN, Message: "unknown action"}
	}
	st.answer(a.Ref, r, err)
}

// actionCtx returns the context of an action that may wait on it: it ends
// with the stream, and not before the request timeout from now nor more
// than an eighth of it later. Actions started within that eighth share
// one, so an action costs no context and timer of its own (about 5 % of
// the gateway's CPU per device publish).
func (st *nativeStream) actionCtx() context.Context {
	timeout := st.ne.c.timeout
	now := time.Now()
	st.dmu.Lock()
	defer st.dmu.Unlock()
	var end time.Time
	if st.dctx != nil {
		end, _ = st.dctx.Deadline()
	}
	if end.Sub(now) < timeout { // none yet, or too little left for this action
		// The context replaced ends at its own deadline: actions still use it.
		st.dctx, st.dcancel = context.WithDeadline(st.ctx, now.Add(timeout+timeout/8))
	}
	return st.dctx
}

// answer queues the result of the action ref; an error is UNKNOWN.
func (st *nativeStream) answer(ref uint64, r *pb.CodeResponse, err error) {
	if err != nil {
		st.answerCode(ref, pb.ResultCode_UNKNOWN, err.Error())
		return
	}
	st.answerCode(ref, r.GetCode(), r.GetMessage())
}

// answerCode queues the result of the action ref. An action with ref 0
// wants none: its failure is counted and logged instead, never dropped
// unseen.
func (st *nativeStream) answerCode(ref uint64, code pb.ResultCode, msg string) {
	if ref == 0 {
		if code != pb.ResultCode_SUCCESS {
			c := st.ne.c
			n := c.unanswered.Add(1)
			st.ne.unansweredLog.Do(func() {
				c.log.Warn("native handler action without a result failed", "code", code.String(), "message", msg, "unanswered_failures_total", n)
			})
		}
		return
	}
	res := &nativepb.Result{Ref: ref, Code: code, Message: msg}
	st.mu.Lock()
	st.results = append(st.results, res)
	st.mu.Unlock()
	if !st.receiving.Load() {
		st.flush() // an action worker's: recvLoop's go when it is through
	}
}

// end ends the stream once: outstanding events fail, and, unless exgate
// itself is closing, the endpoint's devices are closed: their state in the
// handler went with the stream.
func (st *nativeStream) end(err error) {
	st.mu.Lock()
	if st.err != nil {
		st.mu.Unlock()
		return
	}
	st.err = fmt.Errorf("native handler stream ended: %w", err)
	waiting := st.waiting
	st.waiting = nil
	st.mu.Unlock()
	close(st.done)
	st.cancel()
	c := st.ne.c
	c.batch.remove(st)
	if c.ctx.Err() == nil {
		reason := "{shutdown,{error,handler_stream_ended}}"
		if s := status.Code(err); s == codes.Unavailable || errors.Is(err, context.Canceled) {
			reason = "{shutdown,{error,handler_connection_lost}}"
			st.ne.ep.lost.Store(true) // new devices go elsewhere until it is back
		}
		ids := c.pinnedTo(st.ne.ep)
		_ = c.explain(st.ne.ep, "Connect", err)
		c.log.Warn("native handler stream ended; closing its devices", "address", st.ne.ep.addr, "devices", len(ids), "error", err)
		if c.lost != nil && len(ids) > 0 {
			c.lost(ids, reason) // before the events fail: this reason is the one given
		}
	}
	for _, w := range waiting {
		w.answer(st.err)
	}
}

func (c *Client) versionString() string {
	if c.version == nil {
		return ""
	}
	return c.version()
}

package channel

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/exgate/exgate/exprotopb"
)

type eventKind uint8

const (
	evCreated eventKind = iota
	evBytes
	evTimeout
	evMessage
	evClosed
)

// callback names as they appear in close reasons.
var callbackNames = [...]string{
	evCreated: "on_socket_created",
	evBytes:   "on_received_bytes",
	evTimeout: "on_timer_timeout",
	evMessage: "on_received_messages",
	evClosed:  "on_socket_closed",
}

// event is one queued handler callback.
type event struct {
	kind   eventKind
	bytes  []byte      // evBytes
	msg    *pb.Message // evMessage
	reason string      // evClosed
}

var errDeadline = errors.New("handler did not answer within request_timeout")

// push appends ev and makes sure a dispatcher runs. Called with mu held.
func (c *Channel) push(ev event) {
	if c.enqueue(ev) {
		c.startDispatch(false)
	}
}

// enqueue appends ev and reports whether the caller must start a
// dispatcher (startDispatch), none running. Called with mu held.
func (c *Channel) enqueue(ev event) (start bool) {
	c.queue = append(c.queue, ev)
	switch ev.kind {
	case evMessage:
		c.queuedMsgs++
		if ev.msg.Qos == 0 {
			c.queuedQoS0++
		}
	case evBytes:
		c.queuedReads++
	}
	if c.dispatching {
		return false
	}
	c.dispatching = true
	return true
}

// startDispatch runs the dispatcher for an event just queued. With an
// async handler and inline (a caller without mu that may do a little
// work: the socket reader), the event is started right here, saving a
// hand-over; otherwise a worker runs it. Never blocks.
func (c *Channel) startDispatch(inline bool) {
	switch {
	case inline && c.cfg.Async != nil:
		c.run(true)
	case c.cfg.Pool != nil:
		c.cfg.Pool.Go(c.dispatch)
	default:
		go c.dispatch()
	}
}

// dropQueued forgets every queued event but OnSocketClosed. Called with mu held.
func (c *Channel) dropQueued() {
	c.droppedClosed(c.queuedMsgs)
	kept := c.queue[:0]
	for _, ev := range c.queue {
		if ev.kind == evClosed {
			kept = append(kept, ev)
		}
	}
	clear(c.queue[len(kept):])
	c.queue = kept
	c.queuedMsgs, c.queuedQoS0, c.queuedReads = 0, 0, 0
}

// droppedClosed counts n deliveries dropped because the device closed.
// Called with mu held.
func (c *Channel) droppedClosed(n int) { c.countDropped(&c.cfg.Stats.DroppedClosed, n) }

// countDropped counts n dropped deliveries under their reason, in the
// gateway's total and the device's own. Called with mu held.
func (c *Channel) countDropped(reason *atomic.Int64, n int) {
	if n > 0 {
		c.mqDropped += int64(n)
		reason.Add(int64(n))
		c.cfg.Stats.DeliveryDropped.Add(int64(n))
	}
}

func qos0Count(msgs []*pb.Message) (n int) {
	for _, m := range msgs {
		if m.Qos == 0 {
			n++
		}
	}
	return n
}

// makeRoom drops one delivery from a full queue to make room for m, in
// EMQX's order with QoS 0 first: the oldest queued QoS 0 message; with
// none, m itself if it is QoS 0; else the oldest queued message (as EMQX's
// mqueue does). It returns the dropped message and whether it was m.
// Called with mu held.
func (c *Channel) makeRoom(m *pb.Message) (victim *pb.Message, isNew bool) {
	if c.queuedQoS0 == 0 && m.Qos == 0 {
		victim, isNew = m, true
	} else {
		for i, ev := range c.queue {
			if ev.kind == evMessage && (c.queuedQoS0 == 0 || ev.msg.Qos == 0) {
				victim = ev.msg
				copy(c.queue[i:], c.queue[i+1:])
				c.queue[len(c.queue)-1] = event{}
				c.queue = c.queue[:len(c.queue)-1]
				c.queuedMsgs--
				if victim.Qos == 0 {
					c.queuedQoS0--
				}
				break
			}
		}
	}
	if victim.Qos == 0 {
		c.countDropped(&c.cfg.Stats.DroppedQoS0, 1)
	} else {
		c.countDropped(&c.cfg.Stats.DroppedQueueFull, 1)
	}
	return victim, isNew
}

// next takes the head of the queue; consecutive deliveries are coalesced into
// one OnReceivedMessages of up to MaxBatch messages. Called with mu held.
func (c *Channel) next() (ev event, msgs []*pb.Message) {
	ev = c.queue[0]
	n := 1
	if ev.kind == evMessage {
		msgs = append(msgs, ev.msg)
		size := msgSize(ev.msg)
		for n < len(c.queue) && len(msgs) < c.cfg.MaxBatch && c.queue[n].kind == evMessage {
			m := c.queue[n].msg
			if max := c.cfg.MaxRequestBytes; max > 0 && size+msgSize(m) > max {
				break // split, never truncate
			}
			size += msgSize(m)
			msgs = append(msgs, m)
			n++
		}
		c.queuedMsgs -= n
		c.queuedQoS0 -= qos0Count(msgs)
	} else if ev.kind == evBytes {
		c.queuedReads--
	}
	clear(c.queue[:n])
	c.queue = c.queue[n:]
	if len(c.queue) == 0 {
		c.queue = c.queue[:0:0] // let a burst's backing array go
	}
	return ev, msgs
}

// dispatch sends queued events one at a time, each only after the previous
// one was answered, and exits when the queue is empty.
func (c *Channel) dispatch() { c.run(false) }

// run sends queued events until the queue is empty or an event was started
// on the async handler (its answer continues from there). inline says the
// caller must not block (an async answer, the socket reader): only async
// starts and hand-overs happen then.
func (c *Channel) run(inline bool) {
	for {
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.dispatching = false
			c.mu.Unlock()
			return
		}
		ev, msgs := c.next()
		stale := c.state == Closed && ev.kind != evClosed && time.Since(c.closedAt) > c.cfg.CloseFlushTimeout
		if ev.kind == evBytes && c.state != Closed { // closed, space is too
			select {
			case c.space <- struct{}{}:
			default:
			}
		}
		c.mu.Unlock()
		if stale {
			if ev.kind == evMessage {
				c.mu.Lock()
				c.droppedClosed(len(msgs))
				c.mu.Unlock()
			}
			continue
		}
		if ev.kind == evClosed {
			// The queue stays empty from here on (nothing is queued after
			// OnSocketClosed) and dispatching stays true: no other
			// dispatcher starts for this channel.
			switch p := c.cfg.Pool; {
			case p != nil:
				p.closeLater(c)
			case inline:
				go c.sayClosed()
			default:
				c.sayClosed()
			}
			return
		}
		if a := c.cfg.Async; a != nil {
			c.start(a, ev, msgs)
			return
		}
		c.answered(ev, msgs, c.call(ev, msgs))
	}
}

// answered finishes an event the handler answered with err: a failure
// closes the device.
func (c *Channel) answered(ev event, msgs []*pb.Message, err error) {
	if err == nil {
		if ev.kind == evMessage {
			c.cfg.Stats.MessagesDelivered.Add(int64(len(msgs)))
			c.delivered.Add(int64(len(msgs)))
		}
		return
	}
	c.logger().Warn("handler call failed; closing the device", "clientid", c.ClientID(), "callback", callbackNames[ev.kind], "error", err)
	c.closeWith(handlerFailedReason(callbackNames[ev.kind], err), true)
}

// asyncCall is one event started on an async handler: its answer or its
// deadline, whichever comes first, finishes it and sends the next event.
type asyncCall struct {
	c        *Channel
	ev       event
	msgs     []*pb.Message
	deadline time.Time
	finished atomic.Bool

	mu      sync.Mutex // orders start's arm before finish's disarm
	pending interface{ Cancel() }
}

// start starts ev on a and returns at once.
func (c *Channel) start(a AsyncHandler, ev event, msgs []*pb.Message) {
	call := &asyncCall{c: c, ev: ev, msgs: msgs, deadline: time.Now().Add(c.cfg.RequestTimeout)}
	pending := a.Start(c.request(ev, msgs), call)
	call.mu.Lock()
	call.pending = pending
	if !call.finished.Load() { // an early answer needs no deadline
		c.arm(call)
	}
	call.mu.Unlock()
}

// arm sets the channel's deadline timer for call, the one event in flight.
// One timer per channel, re-armed for each event, instead of a timer and
// a closure allocated per event. A channel's async events follow one
// another (each starts after the previous one finished), so only the
// timer's own firing runs beside arm and disarm: inFlight is atomic, and
// the channel's lock stays off this per-event path.
func (c *Channel) arm(call *asyncCall) {
	c.inFlight.Store(call)
	if c.deadline == nil {
		c.deadline = time.AfterFunc(c.cfg.RequestTimeout, c.deadlinePassed)
		return
	}
	c.deadline.Reset(c.cfg.RequestTimeout)
}

// disarm stops the deadline timer if it is still set for call (it is not
// when call finished before it was armed, or expired).
func (c *Channel) disarm(call *asyncCall) {
	if c.inFlight.CompareAndSwap(call, nil) {
		c.deadline.Stop()
	}
}

// deadlinePassed expires the event in flight. The timer may fire late,
// for an event already answered while the next one went out with a
// deadline still ahead: that one is left to its own firing.
func (c *Channel) deadlinePassed() {
	call := c.inFlight.Load()
	if call == nil || time.Now().Before(call.deadline) || !c.inFlight.CompareAndSwap(call, nil) {
		return
	}
	call.finish(errDeadline, true)
}

// Done is the handler's answer (AsyncHandler).
func (call *asyncCall) Done(err error) { call.finish(err, false) }

// finish ends the call once, by its answer or by its deadline (late):
// the one stops the timer, the other cancels the request.
func (call *asyncCall) finish(err error, late bool) {
	if !call.finished.CompareAndSwap(false, true) {
		return
	}
	call.mu.Lock()
	pending := call.pending
	call.mu.Unlock()
	switch {
	case late && pending != nil:
		pending.Cancel()
	case !late:
		call.c.disarm(call)
	}
	call.c.answered(call.ev, call.msgs, err)
	call.c.run(true)
}

// sayClosed makes the channel's last call, OnSocketClosed, and lets the
// channel go. A failure is expected when the handler itself failed or went
// away (the device closed because of it); any other is counted and logged
// at most once a second, so a burst of them is one line, not thousands.
func (c *Channel) sayClosed() {
	c.mu.Lock()
	reason := c.reason
	c.mu.Unlock()
	if err := c.call(event{kind: evClosed, reason: reason}, nil); err != nil {
		c.cfg.Stats.CloseFailed.Add(1)
		if !handlerCaused(reason) {
			if ok, suppressed := c.cfg.Stats.closeFailed.allow(time.Now(), 1); ok {
				c.logger().Warn("OnSocketClosed failed", "clientid", c.ClientID(), "reason", reason, "error", err, "failed_since_last_line", suppressed)
			}
		}
	}
	c.finish()
}

// request is the handler request of ev.
func (c *Channel) request(ev event, msgs []*pb.Message) proto.Message {
	switch ev.kind {
	case evCreated:
		return &pb.SocketCreatedRequest{Conn: c.id, Conninfo: c.info}
	case evBytes:
		return &pb.ReceivedBytesRequest{Conn: c.id, Bytes: ev.bytes}
	case evTimeout:
		return &pb.TimerTimeoutRequest{Conn: c.id, Type: pb.TimerType_KEEPALIVE}
	case evMessage:
		return &pb.ReceivedMessagesRequest{Conn: c.id, Messages: msgs}
	}
	return &pb.SocketClosedRequest{Conn: c.id, Reason: ev.reason}
}

// call makes one handler call with the configured deadline.
func (c *Channel) call(ev event, msgs []*pb.Message) error {
	ctx, cancel := context.WithTimeoutCause(context.Background(), c.cfg.RequestTimeout, errDeadline)
	defer cancel()
	h := c.cfg.Handler
	var err error
	switch r := c.request(ev, msgs).(type) {
	case *pb.SocketCreatedRequest:
		err = h.OnSocketCreated(ctx, r)
	case *pb.ReceivedBytesRequest:
		err = h.OnReceivedBytes(ctx, r)
	case *pb.TimerTimeoutRequest:
		err = h.OnTimerTimeout(ctx, r)
	case *pb.ReceivedMessagesRequest:
		err = h.OnReceivedMessages(ctx, r)
	case *pb.SocketClosedRequest:
		err = h.OnSocketClosed(ctx, r)
	}
	if err != nil && errors.Is(context.Cause(ctx), errDeadline) {
		err = errors.Join(errDeadline, err)
	}
	return err
}

// msgSize approximates a message's share of a request.
func msgSize(m *pb.Message) int { return len(m.Payload) + len(m.Topic) + len(m.From) + 64 }

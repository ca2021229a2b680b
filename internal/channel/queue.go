package channel

import (
	"context"
	"errors"
	"log/slog"
	"time"

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
	c.queue = append(c.queue, ev)
	switch ev.kind {
	case evMessage:
		c.queuedMsgs++
	case evBytes:
		c.queuedReads++
	}
	if !c.dispatching {
		c.dispatching = true
		if c.cfg.Pool != nil {
			c.cfg.Pool.Go(c.dispatch)
		} else {
			go c.dispatch()
		}
	}
}

// dropQueued forgets every queued event but OnSocketClosed. Called with mu held.
func (c *Channel) dropQueued() {
	if c.queuedMsgs > 0 {
		c.cfg.Stats.DeliveryDropped.Add(int64(c.queuedMsgs))
	}
	kept := c.queue[:0]
	for _, ev := range c.queue {
		if ev.kind == evClosed {
			kept = append(kept, ev)
		}
	}
	clear(c.queue[len(kept):])
	c.queue = kept
	c.queuedMsgs, c.queuedReads = 0, 0
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
func (c *Channel) dispatch() {
	for {
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.dispatching = false
			c.mu.Unlock()
			return
		}
		ev, msgs := c.next()
		stale := c.state == Closed && ev.kind != evClosed && time.Now().After(c.flushUntil)
		c.mu.Unlock()
		if ev.kind == evBytes {
			select {
			case c.space <- struct{}{}:
			default:
			}
		}
		if stale {
			if ev.kind == evMessage {
				c.cfg.Stats.DeliveryDropped.Add(int64(len(msgs)))
			}
			continue
		}
		err := c.call(ev, msgs)
		if ev.kind == evClosed {
			if err != nil {
				// A device closed because its handler failed or went away
				// cannot tell that handler it closed: expected, not news.
				lvl := slog.LevelWarn
				if handlerCaused(ev.reason) {
					lvl = slog.LevelDebug
				}
				c.log.Log(context.Background(), lvl, "OnSocketClosed failed", "clientid", c.ClientID(), "reason", ev.reason, "error", err)
			}
			c.mu.Lock()
			c.dispatching = false
			c.mu.Unlock()
			c.finish()
			return
		}
		if err != nil {
			c.log.Warn("handler call failed; closing the device", "clientid", c.ClientID(), "callback", callbackNames[ev.kind], "error", err)
			c.closeWith(handlerFailedReason(callbackNames[ev.kind], err), true)
		}
	}
}

// call makes one handler call with the configured deadline.
func (c *Channel) call(ev event, msgs []*pb.Message) error {
	ctx, cancel := context.WithTimeoutCause(context.Background(), c.cfg.RequestTimeout, errDeadline)
	defer cancel()
	h := c.cfg.Handler
	var err error
	switch ev.kind {
	case evCreated:
		err = h.OnSocketCreated(ctx, &pb.SocketCreatedRequest{Conn: c.id, Conninfo: c.info})
	case evBytes:
		err = h.OnReceivedBytes(ctx, &pb.ReceivedBytesRequest{Conn: c.id, Bytes: ev.bytes})
	case evTimeout:
		err = h.OnTimerTimeout(ctx, &pb.TimerTimeoutRequest{Conn: c.id, Type: pb.TimerType_KEEPALIVE})
	case evMessage:
		err = h.OnReceivedMessages(ctx, &pb.ReceivedMessagesRequest{Conn: c.id, Messages: msgs})
		if err == nil {
			c.cfg.Stats.MessagesDelivered.Add(int64(len(msgs)))
		}
	case evClosed:
		err = h.OnSocketClosed(ctx, &pb.SocketClosedRequest{Conn: c.id, Reason: ev.reason})
	}
	if err != nil && errors.Is(context.Cause(ctx), errDeadline) {
		err = errors.Join(errDeadline, err)
	}
	return err
}

// msgSize approximates a message's share of a request.
func msgSize(m *pb.Message) int { return len(m.Payload) + len(m.Topic) + len(m.From) + 64 }

package mqtt

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/exgate/exgate/internal/broker"
)

// kept is a device's session that outlives its upstream connection: when
// the connection is lost (not a takeover, not a kick), it is opened again
// on the configured servers (failing over as a new session would), with
// jittered backoff and the gateway-wide cap on reconnects per second, and
// the device's subscriptions are renewed. The device's socket stays open;
// its calls during the gap wait for the new session within their deadline,
// and its deliveries resume.
type kept struct {
	b        *Broker
	ci       broker.ClientInfo
	password string
	h        broker.Handlers // the device's
	// stopped ends with the device (Close, or giving up): a reconnect
	// under way stops with it.
	stopped context.Context
	stop    context.CancelFunc

	mu     sync.Mutex
	cur    broker.Session  // nil during a gap
	curTok *byte           // identifies cur's upstream connection
	early  *byte           // a connection lost before it became cur
	ready  chan struct{}   // closed when the gap ends (cur set, or the device closed)
	subs   map[string]byte // filter → qos, renewed after a gap
	closed bool
}

var _ broker.Session = (*kept)(nil)

// connectKept opens a device's session that reconnects when lost.
func (b *Broker) connectKept(ctx context.Context, ci broker.ClientInfo, password string, h broker.Handlers) (broker.Session, error) {
	k := &kept{b: b, ci: ci, password: password, h: h, ready: make(chan struct{}), subs: map[string]byte{}}
	k.stopped, k.stop = context.WithCancel(context.Background())
	tok := new(byte)
	s, err := b.connectAny(ctx, ci, password, k.inner(tok))
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	k.install(s, tok)
	k.mu.Unlock()
	return k, nil
}

// inner are the handlers of one upstream session of k, told apart by tok.
func (k *kept) inner(tok *byte) broker.Handlers {
	return broker.Handlers{Deliver: k.h.Deliver, Closed: func(err error) { k.lost(tok, err) }}
}

// install makes s (connection tok) the current session; one lost before
// it got here is handled as lost now. Called with mu held.
func (k *kept) install(s broker.Session, tok *byte) {
	k.cur, k.curTok = s, tok
	close(k.ready)
	if k.early == tok {
		k.early = nil
		k.gap(errors.New("broker connection lost as it opened"))
	}
}

// lost handles the end of an upstream session.
func (k *kept) lost(tok *byte, err error) {
	if errors.Is(err, broker.ErrTakenOver) || errors.Is(err, broker.ErrKicked) || errors.Is(err, broker.ErrNotAuthorized) {
		k.giveUp(err)
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case k.closed:
	case k.curTok != tok:
		k.early = tok // not installed yet (or an old one): install sees it
	default:
		k.gap(err)
	}
}

// gap starts reopening the session. Called with mu held, cur set.
func (k *kept) gap(err error) {
	k.cur, k.curTok = nil, nil
	k.ready = make(chan struct{})
	k.b.log.Debug("upstream session lost; reconnecting", "clientid", k.ci.ClientID, "error", err)
	k.b.closing.Go(func() { k.reconnect(err) })
}

// end marks k closed, stops a reconnect, releases callers waiting for a
// session, and returns the current upstream session; ok is false if k was
// closed already.
func (k *kept) end() (cur broker.Session, ok bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil, false
	}
	k.closed = true
	k.stop()
	if k.cur == nil {
		close(k.ready)
	}
	cur = k.cur
	k.cur, k.curTok = nil, nil
	return cur, true
}

// giveUp ends the device's session for good and tells the device why.
func (k *kept) giveUp(err error) {
	if _, ok := k.end(); ok && k.h.Closed != nil {
		k.h.Closed(err)
	}
}

// reconnect opens the session again until it works, the device closes,
// or reconnect_timeout passes.
func (k *kept) reconnect(cause error) {
	b := k.b
	deadline := time.Now().Add(b.cfg.ReconnectTimeout)
	ctx, cancel := context.WithDeadline(k.stopped, deadline)
	defer cancel()
	backoff := 100 * time.Millisecond
	last := cause
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			// ±25 % jitter, so the devices of one lost node spread out.
			d := time.Duration(float64(backoff) * (0.75 + 0.5*rand.Float64()))
			backoff = min(backoff*2, 5*time.Second)
			select {
			case <-time.After(d):
			case <-ctx.Done():
			}
		}
		if ctx.Err() == nil {
			if err := b.reconnects.Wait(ctx); err == nil {
				tok := new(byte)
				var s broker.Session
				if s, last = k.open(ctx, tok); last == nil {
					k.mu.Lock()
					if k.closed {
						k.mu.Unlock()
						s.Close()
						return
					}
					k.install(s, tok)
					k.mu.Unlock()
					b.log.Debug("upstream session back", "clientid", k.ci.ClientID, "attempts", attempt+1)
					return
				}
				if errors.Is(last, broker.ErrNotAuthorized) {
					k.giveUp(last)
					return
				}
			}
		}
		if k.stopped.Err() != nil {
			return // the device closed
		}
		if ctx.Err() != nil {
			k.giveUp(fmt.Errorf("broker connection lost: no session within reconnect_timeout %v: %w", b.cfg.ReconnectTimeout, last))
			return
		}
	}
}

// open connects once and renews the subscriptions.
func (k *kept) open(ctx context.Context, tok *byte) (broker.Session, error) {
	s, err := k.b.connectAny(ctx, k.ci, k.password, k.inner(tok))
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	subs := make(map[string]byte, len(k.subs))
	for f, q := range k.subs {
		subs[f] = q
	}
	k.mu.Unlock()
	for f, q := range subs {
		if err := s.Subscribe(ctx, f, q); err != nil {
			s.Close()
			// Not wrapped: the server granted this subscription before, so
			// a refusal now is taken for a server that is not ready yet
			// (a NATS cluster answers 0x80 while JetStream recovers from a
			// lost node), tried again within reconnect_timeout, not a
			// reason to give the device up at once.
			return nil, fmt.Errorf("renew subscription %q: %v", f, err)
		}
	}
	return s, nil
}

// session returns the current upstream session, waiting for the end of a
// gap within ctx.
func (k *kept) session(ctx context.Context) (broker.Session, error) {
	for {
		k.mu.Lock()
		s, ready, closed := k.cur, k.ready, k.closed
		k.mu.Unlock()
		switch {
		case closed:
			return nil, broker.ErrClosed
		case s != nil:
			return s, nil
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: the upstream session is being reopened: %w", broker.ErrUnavailable, context.Cause(ctx))
		}
	}
}

// retry runs op on the current session and, if that session was lost
// under it, once more on the next one, within ctx.
func (k *kept) retry(ctx context.Context, op func(broker.Session) error) error {
	s, err := k.session(ctx)
	if err != nil {
		return err
	}
	err = op(s)
	if err == nil || errors.Is(err, broker.ErrNotAuthorized) || errors.Is(err, broker.ErrBadRequest) {
		return err
	}
	// The loss may be reported a moment after the call failed.
	for range 20 {
		k.mu.Lock()
		gone := k.cur != s
		k.mu.Unlock()
		if gone {
			s2, err2 := k.session(ctx)
			if err2 != nil {
				return errors.Join(err, err2)
			}
			return op(s2)
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return err
		}
	}
	return err
}

func (k *kept) Publish(ctx context.Context, topic string, qos byte, payload []byte) error {
	return k.retry(ctx, func(s broker.Session) error { return s.Publish(ctx, topic, qos, payload) })
}

func (k *kept) Subscribe(ctx context.Context, filter string, qos byte) error {
	err := k.retry(ctx, func(s broker.Session) error { return s.Subscribe(ctx, filter, qos) })
	if err == nil {
		k.mu.Lock()
		k.subs[filter] = qos
		k.mu.Unlock()
	}
	return err
}

func (k *kept) Unsubscribe(ctx context.Context, filter string) error {
	k.mu.Lock()
	delete(k.subs, filter)
	k.mu.Unlock()
	return k.retry(ctx, func(s broker.Session) error { return s.Unsubscribe(ctx, filter) })
}

func (k *kept) Close() {
	if s, _ := k.end(); s != nil {
		s.Close()
	}
}

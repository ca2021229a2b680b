// Package netpoll tells which of many sockets are readable without a
// goroutine per socket. An idle device connection then costs its socket
// and its state, not a parked goroutine and its stack (2–8 KiB each, most
// of what an idle device costs otherwise).
//
// A Poller runs a few goroutines (one per CPU), each with an epoll set of
// its own that is itself watched by the Go runtime's poller, so a poller
// goroutine parks like any reader and no thread is blocked in a system
// call. Sockets stay in the runtime's poller too (their net.Conn works as
// before for writes, deadlines and Close); netpoll only says when to read.
// Callbacks run on the poller goroutine and must not block: a consumer
// that has to wait (its queue is full) pauses its Watch and waits on a
// goroutine of its own, which exists only while it waits.
//
// Only Linux has one; elsewhere New fails with errors.ErrUnsupported and
// callers read with a goroutine per socket, as before.
package netpoll

import (
	"errors"
	"sync"
	"syscall"
)

// ErrStopped is returned by Resume after Stop, and by Watch on a closed Poller.
var ErrStopped = errors.New("netpoll: watch stopped")

// Poller watches sockets for readability.
type Poller struct {
	loops []*loop
	mu    sync.Mutex
	next  int // round robin over loops
}

// Watch is one socket being watched. Its callback runs on a poller
// goroutine each time the socket is readable (level-triggered: until it
// was read dry, or closed), never twice at once.
type Watch struct {
	l     *loop
	rc    syscall.RawConn
	token uint64
	ready func(*Watch)

	mu      sync.Mutex
	paused  bool
	stopped bool
}

// New starts a poller with n loops (at least one). batch, when not nil,
// wraps the callbacks of each readiness report: it calls run once, on its
// own goroutine. A consumer whose callbacks start work for many sockets in
// a row (sends to the same peer) holds that work back in batch and sends it
// together once run returned.
func New(n int, batch func(run func())) (*Poller, error) {
	p := &Poller{}
	for range max(n, 1) {
		l, err := newLoop(batch)
		if err != nil {
			p.Close()
			return nil, err
		}
		p.loops = append(p.loops, l)
	}
	return p, nil
}

// Watch calls ready each time rc's socket is readable, until Stop. ready
// runs on a poller goroutine and must not block; it may run before Watch
// returned (the socket had data already), so it gets the Watch.
func (p *Poller) Watch(rc syscall.RawConn, ready func(*Watch)) (*Watch, error) {
	p.mu.Lock()
	l := p.loops[p.next%len(p.loops)]
	p.next++
	p.mu.Unlock()
	w := &Watch{l: l, rc: rc, ready: ready}
	if err := l.add(w); err != nil {
		return nil, err
	}
	return w, nil
}

// Close stops the poller's goroutines and waits for them. Watches still
// registered are stopped without their sockets being touched.
func (p *Poller) Close() {
	for _, l := range p.loops {
		l.close()
	}
}

// Len is the number of sockets being watched (paused ones included).
func (p *Poller) Len() int {
	n := 0
	for _, l := range p.loops {
		l.mu.Lock()
		n += len(l.watches)
		l.mu.Unlock()
	}
	return n
}

// Pause stops the callbacks until Resume; the socket keeps its data.
func (w *Watch) Pause() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped || w.paused {
		return nil
	}
	w.paused = true
	return w.l.ctl(w, false)
}

// Resume starts the callbacks again after Pause: at once if the socket has
// data already.
func (w *Watch) Resume() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return ErrStopped
	}
	if !w.paused {
		return nil
	}
	w.paused = false
	return w.l.ctl(w, true)
}

// Stop ends the watch for good. A callback already running finishes. Stop
// does not close the socket; closing the socket without Stop leaks the
// watch's record until the Poller closes.
func (w *Watch) Stop() {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	w.stopped = true
	if !w.paused {
		_ = w.l.ctl(w, false) // fails harmlessly when the socket was closed: the kernel dropped it
	}
	w.mu.Unlock()
	w.l.forget(w)
}

// Stopped reports whether Stop was called.
func (w *Watch) Stopped() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stopped
}

// ReadNow reads once from a watched socket into b, without waiting: 0 and
// no error when there was nothing after all, io.EOF when the peer closed.
func ReadNow(rc syscall.RawConn, b []byte) (n int, err error) { return readNow(rc, b) }

// TryWrite writes what the socket takes of b at once, without waiting:
// a full socket is not an error, just n < len(b).
func TryWrite(rc syscall.RawConn, b []byte) (n int, err error) { return tryWrite(rc, b) }

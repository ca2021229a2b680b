package channel

import (
	"github.com/exgate/exgate/internal/netpoll"
)

// Watch has p say when the device's socket is readable, so the channel
// needs no goroutine parked in a read: an idle device then costs its
// state and its socket only. It reports false when the socket cannot be
// watched (TLS, the PROXY protocol or a rate limit sit between the socket
// and the device; datagrams; not Linux): read it with ReadLoop then.
//
// What ReadLoop does, Watch does the same way: one socket read is one
// OnReceivedBytes, and a full event queue stops reading the socket, so TCP
// pushes back on the device. Only then does a goroutine exist for it,
// waiting for room.
func (c *Channel) Watch(p *netpoll.Poller) bool {
	if p == nil || c.raw == nil || c.cfg.Datagram {
		return false
	}
	w, err := p.Watch(c.raw, c.readable)
	if err != nil {
		return false
	}
	c.mu.Lock()
	c.watch = w
	closed := c.state == Closed
	c.mu.Unlock()
	if closed { // closed before the watch was known: closeAfter could not stop it
		w.Stop()
	}
	return true
}

// readable reads what the socket has, on the poller's goroutine.
func (c *Channel) readable(w *netpoll.Watch) {
	b, err := c.readNow()
	if len(b) > 0 {
		c.countRead(b)
		switch c.queueRead(b, false) {
		case readClosed:
			w.Stop()
			return
		case readFull:
			_ = w.Pause() // fails only for a closed socket: the waiter finds the channel closed
			go c.waitRoom(w, b)
			return
		}
	}
	if err != nil {
		w.Stop()
		c.closeWith(peerClosedReason(err, c.tls), false)
	}
}

// waitRoom queues b once the event queue has room and then resumes the
// watch; if the poller cannot take the socket back, this goroutine reads
// it until it ends.
func (c *Channel) waitRoom(w *netpoll.Watch, b []byte) {
	if c.queueRead(b, true) != readQueued {
		w.Stop()
		return
	}
	if err := w.Resume(); err != nil {
		w.Stop()
		if c.State() != Closed {
			c.logger().Warn("socket no longer watched; reading it with a goroutine", "error", err)
			c.readWith((&readWaiter{rc: c.raw, pool: readBuffers(c.readSize())}).read)
		}
	}
}

// readNow is one read into a pooled buffer, copied out; nil, nil when the
// socket had nothing after all.
func (c *Channel) readNow() ([]byte, error) {
	pool := readBuffers(c.readSize())
	bp := pool.Get().(*[]byte)
	defer pool.Put(bp)
	n, err := netpoll.ReadNow(c.raw, *bp)
	if n == 0 {
		return nil, err
	}
	return append([]byte(nil), (*bp)[:n]...), err
}

func (c *Channel) readSize() int {
	if s := c.cfg.ReadBufferSize; s > 0 {
		return s
	}
	return 4096
}

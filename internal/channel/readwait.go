package channel

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
)

// readWaiter reads a plain TCP socket without holding a buffer between
// reads: it waits until the socket has something to read (data, EOF or an
// error) without reading it, then reads into a pooled buffer.
type readWaiter struct {
	r    io.Reader
	rc   syscall.RawConn
	pool *sync.Pool
}

// readWaiterOf returns a waiter for a plain TCP connection, or nil.
func readWaiterOf(r io.Reader, size int) *readWaiter {
	tc, ok := r.(*net.TCPConn)
	if !ok || !canPeek {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return &readWaiter{r: r, rc: rc, pool: readBuffers(size)}
}

// read waits, then returns a copy of what one read got.
func (w *readWaiter) read() ([]byte, error) {
	if err := w.waitReadable(); err != nil {
		return nil, err
	}
	bp := w.pool.Get().(*[]byte)
	n, err := w.r.Read(*bp)
	b := append([]byte(nil), (*bp)[:n]...)
	w.pool.Put(bp)
	return b, err
}

// waitReadable parks in the runtime's poller until the socket is readable.
// An error means the connection is closed; the following Read reports it.
func (w *readWaiter) waitReadable() error {
	return w.rc.Read(func(fd uintptr) bool { return !wouldBlock(peek(fd)) })
}

func wouldBlock(err error) bool {
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) || errors.Is(err, syscall.EINTR)
}

// readBuffers returns the pool of read buffers of one size; buffers are
// held only for the duration of one read.
func readBuffers(size int) *sync.Pool {
	if p, ok := bufPools.Load(size); ok {
		return p.(*sync.Pool)
	}
	p, _ := bufPools.LoadOrStore(size, &sync.Pool{New: func() any {
		b := make([]byte, size)
		return &b
	}})
	return p.(*sync.Pool)
}

// bufPools is a process-wide cache of read buffers by size (a cache, not
// state: any buffer of the right size will do).
var bufPools sync.Map // int → *sync.Pool

package channel

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
)

// readWaiter reads a plain TCP socket without holding a buffer between
// reads: it reads into a pooled buffer only when the runtime's poller says
// the socket is readable, and gives the buffer back at once when a read
// would block, so a parked reader holds none. One read(2) per read, and
// one more that finds nothing before the reader parks.
type readWaiter struct {
	rc   syscall.RawConn
	pool *sync.Pool
}

// readWaiterOf returns a waiter for a plain TCP connection, or nil.
func readWaiterOf(r io.Reader, size int) *readWaiter {
	rc := rawConnOf(r)
	if rc == nil {
		return nil
	}
	return &readWaiter{rc: rc, pool: readBuffers(size)}
}

// read returns a copy of what one read got; io.EOF when the peer closed.
func (w *readWaiter) read() ([]byte, error) {
	var b []byte
	var rerr error
	err := w.rc.Read(func(fd uintptr) bool {
		bp := w.pool.Get().(*[]byte)
		defer w.pool.Put(bp)
		for {
			n, err := rawRead(fd, *bp)
			switch {
			case errors.Is(err, syscall.EINTR):
				continue
			case wouldBlock(err):
				return false // park in the poller, holding no buffer
			case err != nil:
				rerr = err
			case n == 0:
				rerr = io.EOF
			default:
				b = append([]byte(nil), (*bp)[:n]...)
			}
			return true
		}
	})
	if err != nil {
		return nil, err
	}
	return b, rerr
}

func wouldBlock(err error) bool {
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK)
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

// rawConnOf returns the raw socket of a plain TCP connection, or nil.
// Other connections say so by failing SyscallConn (the listener's do).
func rawConnOf(conn any) syscall.RawConn {
	sc, ok := conn.(syscall.Conn)
	if !ok || !canRawRead {
		return nil
	}
	if _, udp := conn.(*net.UDPConn); udp {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

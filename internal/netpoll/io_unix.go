//go:build linux || darwin || freebsd

package netpoll

import (
	"cmp"
	"io"
	"sync"
	"syscall"
)

// op is one non-blocking read or write through a RawConn. Its callbacks
// are bound once and the ops reused: a closure per call would cost two or
// three allocations on every device read and write.
type op struct {
	b           []byte
	n           int
	err         error
	read, write func(fd uintptr) bool
}

// ops is a cache of ops (a cache, not state: any op will do).
var ops = sync.Pool{New: func() any {
	o := &op{}
	o.read = func(fd uintptr) bool { return o.do(fd, syscall.Read, true) }
	o.write = func(fd uintptr) bool { return o.do(fd, syscall.Write, false) }
	return o
}}

// do makes one read or write that never parks: for reads the poller says
// when to look again, and a full socket is a writer's slow path. A read
// of nothing is the end of the stream.
func (o *op) do(fd uintptr, rw func(int, []byte) (int, error), read bool) bool {
	for {
		m, err := rw(int(fd), o.b)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
		case err != nil:
			o.err = err
		case m == 0 && read:
			o.err = io.EOF
		default:
			o.n = m
		}
		return true
	}
}

func readNow(rc syscall.RawConn, b []byte) (int, error) { return rw(rc, b, true) }

func tryWrite(rc syscall.RawConn, b []byte) (int, error) { return rw(rc, b, false) }

// rw reads into b or writes b once, with a reused op.
func rw(rc syscall.RawConn, b []byte, read bool) (int, error) {
	o := ops.Get().(*op)
	o.b = b
	var err error
	if read {
		err = rc.Read(o.read)
	} else {
		err = rc.Write(o.write)
	}
	n, oerr := o.n, o.err
	*o = op{read: o.read, write: o.write}
	ops.Put(o)
	return n, cmp.Or(err, oerr)
}

//go:build linux || darwin || freebsd

package netpoll

import (
	"cmp"
	"io"
	"syscall"
)

func readNow(rc syscall.RawConn, b []byte) (int, error) {
	var n int
	var rerr error
	err := rc.Read(func(fd uintptr) bool {
		for {
			m, err := syscall.Read(int(fd), b)
			switch {
			case err == syscall.EINTR:
				continue
			case err == syscall.EAGAIN:
			case err != nil:
				rerr = err
			case m == 0:
				rerr = io.EOF
			default:
				n = m
			}
			return true // never park: the poller says when to look again
		}
	})
	return n, cmp.Or(err, rerr)
}

func tryWrite(rc syscall.RawConn, b []byte) (int, error) {
	var n int
	var werr error
	err := rc.Write(func(fd uintptr) bool {
		for {
			m, err := syscall.Write(int(fd), b)
			switch {
			case err == syscall.EINTR:
				continue
			case err == syscall.EAGAIN:
			case err != nil:
				werr = err
			default:
				n = m
			}
			return true // never park: a full socket is the caller's slow path
		}
	})
	return n, cmp.Or(err, werr)
}

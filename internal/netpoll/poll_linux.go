package netpoll

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

// loop is one epoll set and the goroutine that waits on it.
type loop struct {
	epfd int
	file *os.File // epfd, registered with the runtime's poller
	done chan struct{}

	batch     func(run func())
	ready     []*Watch // of the report being handled; the loop's goroutine only
	callReady func()   // l.runReady, made once

	mu      sync.Mutex
	closed  bool
	seq     uint64
	watches map[uint64]*Watch
}

func newLoop(batch func(run func())) (*loop, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("netpoll: epoll_create1: %w", err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		_ = syscall.Close(fd)
		return nil, fmt.Errorf("netpoll: %w", err)
	}
	f := os.NewFile(uintptr(fd), "epoll")
	// A file the runtime's poller took accepts deadlines; one it refused
	// would block a thread in every wait.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("netpoll: the runtime cannot poll an epoll set here: %w", errors.ErrUnsupported)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("netpoll: %w", err)
	}
	l := &loop{epfd: fd, file: f, done: make(chan struct{}), watches: make(map[uint64]*Watch), batch: batch}
	l.callReady = l.runReady
	go l.run(rc)
	return l, nil
}

// run calls the callbacks of ready sockets until the loop closes. The
// set is level-triggered and drained before the goroutine parks, so no
// readiness is lost between a wait and the next.
func (l *loop) run(rc syscall.RawConn) {
	defer close(l.done)
	events := make([]syscall.EpollEvent, 128)
	_ = rc.Read(func(uintptr) bool {
		for {
			n, err := syscall.EpollWait(l.epfd, events, 0)
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			if err != nil || n == 0 {
				l.mu.Lock()
				closed := l.closed
				l.mu.Unlock()
				return err != nil || closed // else park until the set has events
			}
			l.mu.Lock()
			if l.closed {
				l.mu.Unlock()
				return true
			}
			for _, ev := range events[:n] {
				if w := l.watches[tokenOf(ev)]; w != nil {
					l.ready = append(l.ready, w)
				}
			}
			l.mu.Unlock()
			if l.batch != nil {
				l.batch(l.callReady)
			} else {
				l.runReady()
			}
			clear(l.ready)
			l.ready = l.ready[:0]
		}
	})
}

// runReady calls the callbacks of the sockets of one report.
func (l *loop) runReady() {
	for _, w := range l.ready {
		w.ready(w)
	}
}

func tokenOf(ev syscall.EpollEvent) uint64 { return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32 }

func (l *loop) add(w *Watch) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrStopped
	}
	l.seq++
	w.token = l.seq
	l.watches[w.token] = w
	l.mu.Unlock()
	if err := l.ctl(w, true); err != nil {
		l.forget(w)
		return err
	}
	return nil
}

// ctl adds w's socket to the set (on) or takes it out. It works on the
// socket through its RawConn, so a socket closed meanwhile is an error,
// never another socket that reused its number.
func (l *loop) ctl(w *Watch, on bool) error {
	var cerr error
	err := w.rc.Control(func(fd uintptr) {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.closed { // the set's number may belong to another file by now
			cerr = ErrStopped
			return
		}
		if !on {
			cerr = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
			return
		}
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(uint32(w.token)), Pad: int32(uint32(w.token >> 32))}
		cerr = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err != nil {
		return err
	}
	if cerr != nil && cerr != ErrStopped {
		cerr = fmt.Errorf("netpoll: epoll_ctl: %w", cerr)
	}
	return cerr
}

func (l *loop) forget(w *Watch) {
	l.mu.Lock()
	delete(l.watches, w.token)
	l.mu.Unlock()
}

func (l *loop) close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	clear(l.watches)
	l.mu.Unlock()
	_ = l.file.Close() // wakes run, and waits for it to leave the set
	<-l.done
}

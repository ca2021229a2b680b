//go:build unix

package netpoll_test

import (
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/exgate/exgate/internal/netpoll"
)

func newPoller(t *testing.T, n int) *netpoll.Poller {
	t.Helper()
	p, err := netpoll.New(n, nil)
	if errors.Is(err, errors.ErrUnsupported) {
		t.Skip("no netpoll on", runtime.GOOS)
	}
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// pair returns both ends of a loopback TCP connection.
func pair(t *testing.T) (local *net.TCPConn, peer net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); peer.Close() })
	return c.(*net.TCPConn), peer
}

// reader is a watched socket that reads what it is told is there.
type reader struct {
	rc    syscall.RawConn
	calls atomic.Int64
	mu    sync.Mutex
	got   []byte
	eof   bool
}

func (r *reader) ready(w *netpoll.Watch) {
	r.calls.Add(1)
	buf := make([]byte, 1024)
	_ = r.rc.Read(func(fd uintptr) bool {
		n, err := syscall.Read(int(fd), buf)
		r.mu.Lock()
		defer r.mu.Unlock()
		switch {
		case n > 0:
			r.got = append(r.got, buf[:n]...)
		case err == nil:
			r.eof = true
			w.Stop()
		}
		return true
	})
}

func (r *reader) bytes() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return string(r.got)
}

func watch(t *testing.T, p *netpoll.Poller, c *net.TCPConn) (*reader, *netpoll.Watch) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	r := &reader{rc: rc}
	w, err := p.Watch(rc, r.ready)
	if err != nil {
		t.Fatal(err)
	}
	return r, w
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestReadableSocketsAreReported(t *testing.T) {
	p := newPoller(t, 2)
	defer p.Close()
	const n = 200
	readers := make([]*reader, n)
	peers := make([]net.Conn, n)
	for i := range n {
		c, peer := pair(t)
		readers[i], _ = watch(t, p, c)
		peers[i] = peer
	}
	if got := p.Len(); got != n {
		t.Fatalf("Len %d, want %d", got, n)
	}
	for round := range 3 {
		for i, peer := range peers {
			if _, err := peer.Write([]byte{byte('a' + round), byte(i)}); err != nil {
				t.Fatal(err)
			}
		}
		for i, r := range readers {
			eventually(t, "the bytes of every socket", func() bool { return len(r.bytes()) == 2*(round+1) })
			if b := r.bytes(); b[2*round] != byte('a'+round) || b[2*round+1] != byte(i) {
				t.Fatalf("socket %d read %q", i, b)
			}
		}
	}
	// Read dry, a socket is not reported again (level-triggered, not spinning).
	calls := readers[0].calls.Load()
	time.Sleep(50 * time.Millisecond)
	if extra := readers[0].calls.Load() - calls; extra != 0 {
		t.Fatalf("an idle socket was reported %d more times", extra)
	}
}

func TestPauseKeepsDataUntilResume(t *testing.T) {
	p := newPoller(t, 1)
	defer p.Close()
	c, peer := pair(t)
	r, w := watch(t, p, c)
	if err := w.Pause(); err != nil {
		t.Fatal(err)
	}
	_, _ = peer.Write([]byte("held"))
	time.Sleep(50 * time.Millisecond)
	if r.calls.Load() != 0 {
		t.Fatal("a paused watch was reported")
	}
	if err := w.Resume(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the held bytes after Resume", func() bool { return r.bytes() == "held" })
}

func TestStopAndPeerClose(t *testing.T) {
	p := newPoller(t, 1)
	defer p.Close()
	c, peer := pair(t)
	r, _ := watch(t, p, c)
	_ = peer.Close()
	eventually(t, "EOF", func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.eof })
	eventually(t, "the stopped watch forgotten", func() bool { return p.Len() == 0 })

	c2, peer2 := pair(t)
	r2, w2 := watch(t, p, c2)
	w2.Stop()
	if !w2.Stopped() || p.Len() != 0 {
		t.Fatal("Stop did not forget the watch")
	}
	if err := w2.Resume(); !errors.Is(err, netpoll.ErrStopped) {
		t.Fatalf("Resume after Stop: %v, want ErrStopped", err)
	}
	_, _ = peer2.Write([]byte("x"))
	time.Sleep(50 * time.Millisecond)
	if r2.calls.Load() != 0 {
		t.Fatal("a stopped watch was reported")
	}
}

// A socket closed while watched leaves the set with it (the kernel drops
// it), and its number, reused by the next socket, is that socket's alone.
func TestClosedSocketNumberReused(t *testing.T) {
	p := newPoller(t, 1)
	defer p.Close()
	c, _ := pair(t)
	r, w := watch(t, p, c)
	_ = c.Close()
	w.Stop() // harmless after the close
	c2, peer2 := pair(t)
	r2, _ := watch(t, p, c2)
	_, _ = peer2.Write([]byte("new"))
	eventually(t, "the new socket's bytes", func() bool { return r2.bytes() == "new" })
	if r.calls.Load() != 0 {
		t.Fatal("the closed socket's callback ran")
	}
}

func TestCloseEndsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	p := newPoller(t, 4)
	c, peer := pair(t)
	r, _ := watch(t, p, c)
	_, _ = peer.Write([]byte("x"))
	eventually(t, "a read", func() bool { return r.bytes() == "x" })
	p.Close()
	eventually(t, "the poller's goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
	if _, err := p.Watch(nil, nil); !errors.Is(err, netpoll.ErrStopped) {
		t.Fatalf("Watch on a closed poller: %v, want ErrStopped", err)
	}
}

// The batch hook wraps the callbacks of each report: every callback runs
// inside it, and the sockets that became ready while a report was handled
// come in the next one, together.
func TestBatchWrapsCallbacks(t *testing.T) {
	var inside atomic.Bool
	var batches, outside atomic.Int64
	p, err := netpoll.New(1, func(run func()) {
		batches.Add(1)
		inside.Store(true)
		run()
		inside.Store(false)
	})
	if errors.Is(err, errors.ErrUnsupported) {
		t.Skip("no netpoll on", runtime.GOOS)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const n = 20
	var peers []net.Conn
	var got atomic.Int64
	first, release := make(chan struct{}), make(chan struct{})
	for i := range n {
		local, peer := pair(t)
		peers = append(peers, peer)
		rc, err := local.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		r := &reader{rc: rc}
		if _, err := p.Watch(rc, func(w *netpoll.Watch) {
			if !inside.Load() {
				outside.Add(1)
			}
			r.ready(w)
			got.Add(1)
			if i == 0 { // holds the loop while the others get their data
				close(first)
				<-release
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	write := func(c net.Conn) {
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	write(peers[0])
	<-first
	for _, peer := range peers[1:] {
		write(peer)
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for got.Load() < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got.Load() != n {
		t.Fatalf("%d of %d sockets read", got.Load(), n)
	}
	if outside.Load() != 0 {
		t.Fatalf("%d callbacks ran outside the batch hook", outside.Load())
	}
	if b := batches.Load(); b != 2 {
		t.Fatalf("%d reports, want 2: the first socket's, then the other %d together", b, n-1)
	}
}

// A device read or write through ReadNow and TryWrite allocates nothing:
// they run on every event of every device.
func TestReadWriteAllocateNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes sync.Pool")
	}
	local, peer := pair(t)
	rc, err := local.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	msg, buf := []byte("ping"), make([]byte, 64)
	sink := make([]byte, 64)
	allocs := testing.AllocsPerRun(200, func() {
		if n, err := netpoll.TryWrite(rc, msg); n != len(msg) || err != nil {
			t.Fatalf("TryWrite: %d, %v", n, err)
		}
		if _, err := io.ReadFull(peer, sink[:len(msg)]); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Write(msg); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < len(msg); {
			n, err := netpoll.ReadNow(rc, buf)
			if err != nil {
				t.Fatalf("ReadNow: %v", err)
			}
			got += n
		}
	})
	if allocs > 0 {
		t.Fatalf("%.1f allocations per write and read, want 0", allocs)
	}
}

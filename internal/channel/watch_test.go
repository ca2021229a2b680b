package channel

import (
	"bytes"
	"context"
	"errors"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/netpoll"
)

// bytesHandler records what each device sent, and holds OnReceivedBytes
// of the devices in hold until release is closed.
type bytesHandler struct {
	scriptedHandler
	hold    map[string]bool
	release chan struct{}

	mu  sync.Mutex
	got map[string][]byte
}

func (h *bytesHandler) OnReceivedBytes(_ context.Context, r *pb.ReceivedBytesRequest) error {
	if h.hold[r.Conn] {
		<-h.release
	}
	h.mu.Lock()
	h.got[r.Conn] = append(h.got[r.Conn], r.Bytes...)
	h.mu.Unlock()
	return nil
}

func (h *bytesHandler) bytesOf(conn string) []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.got[conn]
}

// newPoller is a one-loop poller closed with the test (skipped without one).
func newPoller(t *testing.T) *netpoll.Poller {
	t.Helper()
	p, err := netpoll.New(1, nil)
	if errors.Is(err, errors.ErrUnsupported) {
		t.Skip("no netpoll here")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// watched returns a channel whose socket p reads, and the device's end;
// with p nil, a goroutine of its own reads it (ReadLoop: where there is no
// event loop, as on other systems than Linux).
func watched(t *testing.T, cfg *Config, p *netpoll.Poller) (*Channel, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dev, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := New(cfg, conn.(*net.TCPConn), &pb.ConnInfo{}, false)
	if p == nil {
		go c.ReadLoop(conn)
		return c, dev
	}
	if !c.Watch(p) {
		t.Fatal("a plain TCP socket could not be watched")
	}
	return c, dev
}

// readers runs f with a poller reading the devices and with a goroutine
// each (nil).
func readers(t *testing.T, f func(t *testing.T, p *netpoll.Poller)) {
	t.Run("poller", func(t *testing.T) { f(t, newPoller(t)) })
	t.Run("goroutine", func(t *testing.T) { f(t, nil) })
}

// A device whose handler is stuck fills its event queue; the poller then
// stops reading it (TCP pushes back on the device) without stalling the
// other devices it reads, and when the handler moves again every byte
// arrives, in order, and the waiting goroutine is gone. The same with a
// reading goroutine per device.
func TestWatchedDeviceBackPressure(t *testing.T) { readers(t, testBackPressure) }

func testBackPressure(t *testing.T, p *netpoll.Poller) { // one loop: a stall would stall the other device too
	h := &bytesHandler{hold: map[string]bool{}, release: make(chan struct{}), got: map[string][]byte{}}
	release := sync.OnceFunc(func() { close(h.release) })
	defer release() // before the poller closes: a failed test must not leave its loop stuck
	cfg := testConfig(h, nil)
	cfg.EventQueue = 2
	cfg.ReadBufferSize = 1024
	before := runtime.NumGoroutine()

	slow, slowDev := watched(t, cfg, p)
	h.hold[slow.ID()] = true
	fast, fastDev := watched(t, cfg, p)

	// Small socket buffers, so what the kernel holds is far below the flood.
	_ = slowDev.(*net.TCPConn).SetWriteBuffer(32 << 10)
	_ = slow.conn.(*net.TCPConn).SetReadBuffer(32 << 10)
	flood := make([]byte, 8<<20)
	for i := range flood {
		flood[i] = byte(i * 7)
	}
	wrote := make(chan int, 1)
	go func() {
		_ = slowDev.SetWriteDeadline(time.Now().Add(time.Second))
		n, _ := slowDev.Write(flood)
		wrote <- n
	}()
	n := <-wrote
	if n == len(flood) {
		t.Fatal("the device wrote 8 MiB to a channel whose handler is stuck: no back pressure")
	}
	for i := range 20 {
		if _, err := fastDev.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "the other device's bytes", func() bool { return len(h.bytesOf(fast.ID())) == i+1 })
	}

	release()
	_ = slowDev.SetWriteDeadline(time.Time{})
	if _, err := slowDev.Write(flood[n:]); err != nil { // the rest goes through once the handler moves
		t.Fatal(err)
	}
	waitUntil(t, "every flooded byte", func() bool { return len(h.bytesOf(slow.ID())) == len(flood) })
	if !bytes.Equal(h.bytesOf(slow.ID()), flood) {
		t.Fatal("the flooded bytes arrived out of order or changed")
	}
	slow.Kick(ReasonNormal)
	fast.Kick(ReasonNormal)
	<-slow.Done()
	<-fast.Done()
	if p != nil && p.Len() != 0 {
		t.Fatalf("%d sockets still watched after their channels closed", p.Len())
	}
	waitUntil(t, "goroutines back to where they were", func() bool { return runtime.NumGoroutine() <= before })
}

// A device that goes away is closed with the peer's reason, and the
// poller forgets it.
func TestWatchedDevicePeerClose(t *testing.T) { readers(t, testPeerClose) }

func testPeerClose(t *testing.T, p *netpoll.Poller) {
	h := &bytesHandler{release: make(chan struct{}), got: map[string][]byte{}}
	c, dev := watched(t, testConfig(h, nil), p)
	_, _ = dev.Write([]byte("bye"))
	_ = dev.Close()
	<-c.Done()
	if got := string(h.bytesOf(c.ID())); got != "bye" {
		t.Fatalf("read %q before the close, want bye", got)
	}
	c.mu.Lock()
	reason := c.reason
	c.mu.Unlock()
	if reason != "{shutdown,tcp_closed}" {
		t.Fatalf("reason %q, want {shutdown,tcp_closed}", reason)
	}
	if p != nil && p.Len() != 0 {
		t.Fatal("the closed device is still watched")
	}
}

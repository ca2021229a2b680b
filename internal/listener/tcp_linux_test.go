package listener

import (
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/exgate/exgate/internal/config"
)

// accepted serves l until one connection arrives and returns its socket
// options read with getsockopt.
func acceptedKeepalive(t *testing.T, o config.TCPOptions) (on, idle, intvl, count int) {
	t.Helper()
	l, err := Listen(Options{Kind: TCP, Bind: "127.0.0.1:0", TCP: o})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Conn, 1)
	go func() {
		_ = l.Serve(func(c *Conn) func() { got <- c; return nil })
	}()
	defer l.Wait()
	defer l.Close()
	d, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var c *Conn
	select {
	case c = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("no connection served")
	}
	defer c.Close()
	rc, err := c.Conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	_ = rc.Control(func(fd uintptr) {
		on, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
		idle, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE)
		intvl, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL)
		count, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT)
	})
	return
}

// TCP keepalive is off unless tcp_options.keepalive sets it, as EMQX's
// "none" default; set, the accepted sockets carry exactly its numbers.
func TestTCPKeepalive(t *testing.T) {
	if on, _, _, _ := acceptedKeepalive(t, config.TCPOptions{}); on != 0 {
		t.Fatalf("SO_KEEPALIVE %d by default, want 0", on)
	}
	if on, _, _, _ := acceptedKeepalive(t, config.TCPOptions{Keepalive: "none"}); on != 0 {
		t.Fatalf("SO_KEEPALIVE %d with none, want 0", on)
	}
	on, idle, intvl, count := acceptedKeepalive(t, config.TCPOptions{Keepalive: "240,30,5"})
	if on != 1 || idle != 240 || intvl != 30 || count != 5 {
		t.Fatalf("keepalive 240,30,5 gave on=%d idle=%d interval=%d count=%d", on, idle, intvl, count)
	}
}

// tcp_options.backlog bounds the accept queue: with nobody accepting, a
// listener of backlog 2 completes at most 3 handshakes (Linux admits one
// past the backlog), while the default takes all ten.
func TestTCPBacklog(t *testing.T) {
	established := func(backlog int) int {
		l, err := Listen(Options{Kind: TCP, Bind: "127.0.0.1:0", TCP: config.TCPOptions{Backlog: backlog}})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close() // never served: nothing is accepted
		n := 0
		for range 10 {
			c, err := net.DialTimeout("tcp", l.Addr().String(), 300*time.Millisecond)
			if err == nil {
				n++
				defer c.Close()
			}
		}
		return n
	}
	if n := established(2); n < 1 || n > 3 {
		t.Fatalf("backlog 2: %d of 10 connects completed, want 1-3", n)
	}
	if n := established(0); n != 10 {
		t.Fatalf("default backlog: %d of 10 connects completed, want 10", n)
	}
}

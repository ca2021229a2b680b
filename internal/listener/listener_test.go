package listener

import (
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// TestZeroOptionsServe: a listener made from nothing but a kind and a bind
// address serves (the zero value of every other option is its default).
func TestZeroOptionsServe(t *testing.T) {
	l, err := Listen(Options{Kind: TCP, Bind: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Conn, 1)
	served := make(chan error, 1)
	go func() {
		served <- l.Serve(func(c *Conn) func() {
			got <- c
			return func() { _ = c.Close() }
		})
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case conn := <-got:
		if conn.Peer.String() != c.LocalAddr().String() {
			t.Fatalf("peer %v, want %v", conn.Peer, c.LocalAddr())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no connection served")
	}
	_ = l.Close()
	if err := <-served; err != ErrClosed {
		t.Fatalf("Serve after Close: %v", err)
	}
	l.Wait()
}

// While Overloaded says so, new connections are refused at accept, counted,
// and never reach start; when it stops, they are served again.
func TestOverloadedRefusedAtAccept(t *testing.T) {
	var over atomic.Bool
	over.Store(true)
	l, err := Listen(Options{Name: "t", Kind: TCP, Bind: "127.0.0.1:0", Overloaded: over.Load})
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{}, 2)
	go func() {
		_ = l.Serve(func(c *Conn) func() {
			started <- struct{}{}
			return func() { c.Close() }
		})
	}()
	defer func() { l.Close(); l.Wait() }()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read a byte from a refused connection")
	}
	if n := l.Stats.RefusedOverload.Load(); n != 1 {
		t.Fatalf("refused for overload: %d, want 1", n)
	}
	over.Store(false)
	c2, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("a connection after the overload was not served")
	}
	if len(started) != 0 {
		t.Fatal("the refused connection was served too")
	}
}

// A connection's max_connections slot is freed when the connection is
// closed, while the function serving it may still be running; freeing it
// again when that function returns does not count twice. Its raw socket is
// offered only for plain TCP.
func TestSlotFreedAtClose(t *testing.T) {
	l, err := Listen(Options{Name: "t", Kind: TCP, Bind: "127.0.0.1:0", MaxConnections: 1})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Conn, 2)
	finish := make(chan struct{})
	go func() {
		_ = l.Serve(func(c *Conn) func() {
			got <- c
			return func() { <-finish }
		})
	}()
	defer func() { close(finish); l.Close(); l.Wait() }()
	next := func() *Conn {
		t.Helper()
		d, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		select {
		case c := <-got:
			return c
		case <-time.After(5 * time.Second):
			t.Fatalf("not served (refused over the limit: %d)", l.Stats.RefusedLimit.Load())
			return nil
		}
	}
	a := next()
	if _, err := a.SyscallConn(); err != nil {
		t.Fatalf("plain TCP: SyscallConn: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	_ = a.Close()
	if n := l.Stats.Current.Load(); n != 0 {
		t.Fatalf("current after Close: %d, want 0", n)
	}
	next() // the slot is free although a's serve function has not returned
	if n := l.Stats.Current.Load(); n != 1 {
		t.Fatalf("current: %d, want 1", n)
	}
	if _, err := (&Conn{Conn: &net.UnixConn{}}).SyscallConn(); err == nil {
		t.Fatal("SyscallConn of a connection that is not plain TCP succeeded")
	}
}

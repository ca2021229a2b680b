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

package listener

import (
	"net"
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

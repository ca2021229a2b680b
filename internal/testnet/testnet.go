// Package testnet serves TCP on a loopback port for tests: each connection
// on a goroutine of its own, all of them over when the test is.
package testnet

import (
	"net"
	"sync"
	"testing"
)

// Serve listens on 127.0.0.1 and runs handle for each connection on a
// goroutine of its own, closing the connection when handle returns. When
// the test ends it stops listening and waits for the handlers, which end
// when their peers hang up. It returns the address.
func Serve(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	return ln.Addr().String()
}

//go:build !linux

package listener

import "net"

// listenTCP ignores backlog where setting it is not implemented.
func listenTCP(addr string, _ int) (net.Listener, error) { return net.Listen("tcp", addr) }

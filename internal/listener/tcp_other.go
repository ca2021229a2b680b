//go:build !linux

package listener

import "net"

// setBacklog is not implemented here: the system's default stays.
func setBacklog(*net.TCPListener, int) error { return nil }

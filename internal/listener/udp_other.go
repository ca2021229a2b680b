//go:build !linux

package listener

import "net"

func setRecvBuffer(pc *net.UDPConn, n int) (int, error) {
	return n, pc.SetReadBuffer(n)
}

// kernelDrops is known on Linux only.
func kernelDrops(*net.UDPConn) (int64, bool) { return 0, false }

//go:build linux || darwin || freebsd

package channel

import "syscall"

const canPeek = true

// peek asks whether one byte could be read from fd, without blocking and
// without consuming it.
func peek(fd uintptr) error {
	var b [1]byte
	_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return err
}

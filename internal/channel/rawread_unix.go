//go:build linux || darwin || freebsd

package channel

import "syscall"

const canRawRead = true

// rawRead is one read(2) on a non-blocking socket.
func rawRead(fd uintptr, b []byte) (int, error) { return syscall.Read(int(fd), b) }

package listener

import (
	"fmt"
	"net"
	"syscall"
)

// setBacklog sets a listening socket's accept queue length: the standard
// library listens with the system's maximum, and listen(2) on a socket
// that listens already changes only its backlog.
func setBacklog(ln *net.TCPListener, backlog int) error {
	rc, err := ln.SyscallConn()
	if err != nil {
		return err
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) { lerr = syscall.Listen(int(fd), backlog) }); err != nil {
		return err
	}
	if lerr != nil {
		return fmt.Errorf("listen backlog %d: %w", backlog, lerr)
	}
	return nil
}

//go:build !(linux || darwin || freebsd)

package netpoll

import (
	"errors"
	"syscall"
)

func readNow(syscall.RawConn, []byte) (int, error)  { return 0, errors.ErrUnsupported }
func tryWrite(syscall.RawConn, []byte) (int, error) { return 0, errors.ErrUnsupported }

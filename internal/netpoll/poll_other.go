//go:build !linux

package netpoll

import (
	"errors"
	"sync"
	"syscall"
)

type loop struct {
	mu      sync.Mutex
	watches map[uint64]*Watch
}

func newLoop() (*loop, error) { return nil, errors.ErrUnsupported }

func (l *loop) add(*Watch) error       { return errors.ErrUnsupported }
func (l *loop) ctl(*Watch, bool) error { return errors.ErrUnsupported }
func (l *loop) forget(*Watch)          {}
func (l *loop) close()                 {}

func readNow(syscall.RawConn, []byte) (int, error)  { return 0, errors.ErrUnsupported }
func tryWrite(syscall.RawConn, []byte) (int, error) { return 0, errors.ErrUnsupported }

//go:build !linux

package netpoll

import (
	"errors"
	"sync"
)

type loop struct {
	mu      sync.Mutex
	watches map[uint64]*Watch
}

func newLoop(func(func())) (*loop, error) { return nil, errors.ErrUnsupported }

func (l *loop) add(*Watch) error       { return errors.ErrUnsupported }
func (l *loop) ctl(*Watch, bool) error { return errors.ErrUnsupported }
func (l *loop) forget(*Watch)          {}
func (l *loop) close()                 {}

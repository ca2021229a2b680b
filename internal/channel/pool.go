package channel

import (
	"sync"
	"time"
)

// Pool runs channel dispatchers on reused goroutines. A dispatcher makes
// gRPC calls deep in its stack; a fresh goroutine per burst of events paid
// for growing that stack every time (a tenth of the CPU of an echo). Workers
// wait idleFor for the next job before they exit, so an idle gateway keeps
// none, and there is no cap: every channel with events gets a worker at once.
// The zero value is not usable; call NewPool. Safe for concurrent use.
type Pool struct {
	jobs    chan func() // unbuffered: a send succeeds only if a worker waits
	idleFor time.Duration
	wg      sync.WaitGroup
	done    chan struct{}
	once    sync.Once
}

// NewPool returns a pool whose idle workers exit after idleFor.
func NewPool(idleFor time.Duration) *Pool {
	return &Pool{jobs: make(chan func()), idleFor: idleFor, done: make(chan struct{})}
}

// Go runs f on an idle worker, or on a new one.
func (p *Pool) Go(f func()) {
	select {
	case p.jobs <- f:
	default:
		p.wg.Go(func() { p.work(f) })
	}
}

func (p *Pool) work(f func()) {
	t := time.NewTimer(p.idleFor)
	defer t.Stop()
	for {
		f()
		t.Reset(p.idleFor)
		select {
		case f = <-p.jobs:
		case <-t.C:
			return
		case <-p.done:
			return
		}
	}
}

// Close lets idle workers exit and waits for all workers to finish.
func (p *Pool) Close() {
	p.once.Do(func() { close(p.done) })
	p.wg.Wait()
}

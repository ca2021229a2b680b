// Package workers runs short jobs on reused goroutines: at most a fixed
// number at a time, the rest waiting in a FIFO (a job started with Start
// never waits, and counts beyond the bound), and none left once idle.
//
// The jobs it is made for (a device's handler calls, a native handler's
// actions) run deep stacks: a fresh goroutine per job paid for growing its
// stack every time, a tenth of the CPU of an echo. Workers wait idleFor for
// their next job before they exit, so an idle gateway keeps none.
package workers

import (
	"slices"
	"sync"
	"time"
)

// Pool runs jobs. The zero value is not usable; call New. Safe for
// concurrent use.
type Pool struct {
	idleFor time.Duration
	max     int
	wg      sync.WaitGroup
	done    chan struct{}
	once    sync.Once

	mu      sync.Mutex
	workers int
	idle    []chan func() // parked workers, most recent last; each channel has room for one job
	backlog []func()      // jobs waiting for a worker, oldest first
}

// New returns a pool of at most max workers whose idle workers exit after
// idleFor.
func New(idleFor time.Duration, max int) *Pool {
	return &Pool{idleFor: idleFor, max: max, done: make(chan struct{})}
}

// Go runs f on a parked worker, or on a new one, or, with max workers busy,
// on the first worker to finish. It never blocks, so it may be called with
// a lock held.
func (p *Pool) Go(f func()) { p.run(f, false) }

// Start runs f at once on a parked worker or a new one, beyond max workers
// if it must: for a job the others may be waiting on (a stream's reader,
// which brings the answers they wait for), so it never waits behind them.
func (p *Pool) Start(f func()) { p.run(f, true) }

// Full reports whether a job given to Go now would wait for a worker.
func (p *Pool) Full() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle) == 0 && p.workers >= p.max
}

func (p *Pool) run(f func(), now bool) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		w := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		w <- f // room for one: never blocks
		return
	}
	if p.workers >= p.max && !now {
		p.backlog = append(p.backlog, f)
		p.mu.Unlock()
		return
	}
	p.workers++
	p.mu.Unlock()
	p.wg.Go(func() { p.work(f) })
}

func (p *Pool) work(f func()) {
	mine := make(chan func(), 1)
	t := time.NewTimer(p.idleFor)
	defer t.Stop()
	for {
		f()
		p.mu.Lock()
		if len(p.backlog) > 0 {
			f = p.backlog[0]
			p.backlog[0] = nil
			p.backlog = p.backlog[1:]
			if len(p.backlog) == 0 {
				p.backlog = nil // let a storm's backing array go
			}
			p.mu.Unlock()
			continue
		}
		p.idle = append(p.idle, mine)
		p.mu.Unlock()
		t.Reset(p.idleFor)
		select {
		case f = <-mine:
			continue
		case <-t.C:
		case <-p.done:
		}
		p.mu.Lock()
		if i := slices.Index(p.idle, mine); i >= 0 { // nobody handed us a job: leave
			p.idle = slices.Delete(p.idle, i, i+1)
			p.workers--
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		f = <-mine // Go took us off the list and is handing us a job
	}
}

// Close lets idle workers exit and waits for all workers to finish.
func (p *Pool) Close() {
	p.once.Do(func() { close(p.done) })
	p.wg.Wait()
}

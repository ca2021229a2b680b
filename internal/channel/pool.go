package channel

import (
	"slices"
	"sync"
	"time"
)

// Pool runs channel dispatchers on reused goroutines, at most maxWorkers at
// a time, and the OnSocketClosed calls of closed channels on a smaller
// bounded set of workers.
//
// A dispatcher makes gRPC calls deep in its stack; a fresh goroutine per
// burst of events paid for growing that stack every time (a tenth of the CPU
// of an echo). Workers wait idleFor for the next job before they exit, so an
// idle gateway keeps none. Beyond maxWorkers, jobs wait in a FIFO for the
// next free worker: the handler sees a bounded number of calls at a time
// however many devices have something to say, and a storm costs queued
// closures, not goroutines. Go never blocks (it is called with a channel's
// lock held).
//
// Closed channels are not bounded by the listeners the way open ones are: a
// device that connects and closes at once frees its socket and its listener
// slot immediately, so a churning client can close devices far faster than
// the handler answers. Their OnSocketClosed calls wait in a queue of their
// own for one of closeWorkers workers, so they neither bury the calls of
// live devices nor time out for lack of a worker (a call's deadline starts
// when it is made); Stats.Closing, which the listeners read to shed new
// connections at accept, keeps that queue bounded.
//
// The zero value is not usable; call NewPool. Safe for concurrent use.
type Pool struct {
	idleFor    time.Duration
	maxWorkers int
	wg         sync.WaitGroup
	done       chan struct{}
	once       sync.Once

	mu      sync.Mutex
	workers int
	idle    []chan func() // parked workers, most recent last; each channel has room for one job
	backlog []func()      // jobs waiting for a worker, oldest first

	cmu      sync.Mutex
	closing  []*Channel // channels whose OnSocketClosed is due, oldest first
	closers  int        // workers draining closing
	maxClose int
}

// maxWorkers bounds the dispatchers, so the handler calls in flight.
// Well above what one handler process answers at once; a backlog beyond it
// waits its turn instead of becoming goroutines.
const maxWorkers = 1024

// closeWorkers is how many OnSocketClosed calls are in flight at most.
// Enough to keep a remote handler busy across a round trip, few enough that
// a burst of closes does not bury the calls of live devices.
const closeWorkers = 32

// NewPool returns a pool whose idle workers exit after idleFor.
func NewPool(idleFor time.Duration) *Pool {
	return &Pool{idleFor: idleFor, maxWorkers: maxWorkers, done: make(chan struct{}), maxClose: closeWorkers}
}

// Go runs f on a parked worker, or on a new one, or, with maxWorkers busy,
// on the first worker to finish. It never blocks.
func (p *Pool) Go(f func()) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		w := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		w <- f // room for one: never blocks
		return
	}
	if p.workers >= p.maxWorkers {
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

// closeLater queues c's OnSocketClosed for a close worker.
func (p *Pool) closeLater(c *Channel) {
	p.cmu.Lock()
	p.closing = append(p.closing, c)
	spawn := p.closers < p.maxClose
	if spawn {
		p.closers++
	}
	p.cmu.Unlock()
	if spawn {
		p.wg.Go(p.drainCloses)
	}
}

// drainCloses makes queued OnSocketClosed calls until none is left.
func (p *Pool) drainCloses() {
	for {
		p.cmu.Lock()
		if len(p.closing) == 0 {
			p.closing = nil // let a storm's backing array go
			p.closers--
			p.cmu.Unlock()
			return
		}
		c := p.closing[0]
		p.closing[0] = nil
		p.closing = p.closing[1:]
		p.cmu.Unlock()
		c.sayClosed()
	}
}

// Closing is how many closed channels wait for a close worker.
func (p *Pool) Closing() int {
	p.cmu.Lock()
	defer p.cmu.Unlock()
	return len(p.closing)
}

// Close lets idle workers exit and waits for all workers to finish.
func (p *Pool) Close() {
	p.once.Do(func() { close(p.done) })
	p.wg.Wait()
}

package channel

import (
	"sync"
	"time"
)

// Pool runs channel dispatchers on reused goroutines, and the
// OnSocketClosed calls of closed channels on a bounded set of workers.
//
// A dispatcher makes gRPC calls deep in its stack; a fresh goroutine per
// burst of events paid for growing that stack every time (a tenth of the CPU
// of an echo). Workers wait idleFor for the next job before they exit, so an
// idle gateway keeps none, and there is no cap: every open channel with
// events gets a worker at once (open channels are bounded by the listeners).
//
// Closed channels are not bounded that way: a device that connects and
// closes at once frees its socket and its listener slot immediately, so a
// churning client can close devices far faster than the handler answers.
// Their OnSocketClosed calls wait in a shared queue for one of closeWorkers
// workers, so the handler sees a bounded number of them at a time and none
// times out for lack of a worker (its deadline starts when the call is
// made); Closing, which the listeners read to shed new connections at
// accept, keeps the queue itself bounded.
//
// The zero value is not usable; call NewPool. Safe for concurrent use.
type Pool struct {
	jobs    chan func() // unbuffered: a send succeeds only if a worker waits
	idleFor time.Duration
	wg      sync.WaitGroup
	done    chan struct{}
	once    sync.Once

	cmu      sync.Mutex
	closing  []*Channel // channels whose OnSocketClosed is due, oldest first
	closers  int        // workers draining closing
	maxClose int
}

// closeWorkers is how many OnSocketClosed calls are in flight at most.
// Enough to keep a remote handler busy across a round trip, few enough that
// a burst of closes does not bury the calls of live devices.
const closeWorkers = 32

// NewPool returns a pool whose idle workers exit after idleFor.
func NewPool(idleFor time.Duration) *Pool {
	return &Pool{jobs: make(chan func()), idleFor: idleFor, done: make(chan struct{}), maxClose: closeWorkers}
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

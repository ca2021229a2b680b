package channel

import (
	"sync"
	"time"

	"github.com/exgate/exgate/internal/workers"
)

// Pool runs channel dispatchers on reused goroutines (workers.Pool), at most
// maxWorkers at a time, and the OnSocketClosed calls of closed channels on a
// smaller bounded set of workers.
//
// Beyond maxWorkers, dispatchers wait in a FIFO for the next free worker:
// the handler sees a bounded number of calls at a time however many devices
// have something to say, and a storm costs queued closures, not goroutines.
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
	*workers.Pool // dispatchers
	wg            sync.WaitGroup

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
	return &Pool{Pool: workers.New(idleFor, maxWorkers), maxClose: closeWorkers}
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
	p.Pool.Close()
	p.wg.Wait()
}

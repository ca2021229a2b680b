package workers

import "sync/atomic"

// Combiner lets many goroutines share one job that only one may run at a
// time (a stream's Send, which gRPC allows to one goroutine): a goroutine
// that finds it running leaves its work queued and goes on, and the one
// running it runs it again for what was queued meanwhile. The zero value
// is ready to use.
type Combiner struct{ busy atomic.Bool }

// Run runs job unless another goroutine is running it, and then again as
// long as queued reports work that came while job ran (work queued by a
// goroutine that found it busy is never left behind). It returns job's
// first error, after which it stops.
func (c *Combiner) Run(job func() error, queued func() bool) error {
	for c.busy.CompareAndSwap(false, true) {
		err := job()
		c.busy.Store(false)
		if err != nil || !queued() {
			return err
		}
	}
	return nil
}

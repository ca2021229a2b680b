package handler

import "sync"

// Batch lets one goroutine that starts events for many devices in a row
// (the event loop handling a report of readable sockets) send them to
// native handlers in one message per stream instead of one message each:
// while Run runs f, the open native streams of every Client made with this
// Batch hold what is queued, and send it when f returned. An event started
// meanwhile by another goroutine waits for the same send, so for at most
// one f. EMQX-service handlers are unaffected.
type Batch struct {
	mu      sync.Mutex
	streams map[*nativeStream]struct{}
}

// NewBatch returns a Batch for Options.Batch.
func NewBatch() *Batch { return &Batch{streams: map[*nativeStream]struct{}{}} }

// Run runs f with the native streams holding their sends, then sends.
func (b *Batch) Run(f func()) {
	var buf [4]*nativeStream // streams open now: one per native endpoint
	held := b.hold(buf[:0])
	f()
	for _, st := range held {
		st.holds.Add(-1)
		st.flush()
	}
}

// hold makes the open native streams hold their sends and appends them to
// held; the caller ends each hold (holds.Add(-1)) and sees that what was
// queued meanwhile goes.
func (b *Batch) hold(held []*nativeStream) []*nativeStream {
	b.mu.Lock()
	for st := range b.streams {
		st.holds.Add(1)
		held = append(held, st)
	}
	b.mu.Unlock()
	return held
}

func (b *Batch) add(st *nativeStream) {
	if b != nil {
		b.mu.Lock()
		b.streams[st] = struct{}{}
		b.mu.Unlock()
	}
}

func (b *Batch) remove(st *nativeStream) {
	if b != nil {
		b.mu.Lock()
		delete(b.streams, st)
		b.mu.Unlock()
	}
}

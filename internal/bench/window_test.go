package bench

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestWindow: the fan-in's bound on messages in flight lets n go, holds the
// next until a receipt, never grows past n, and lets go of a waiting
// publisher when the run ends.
func TestWindow(t *testing.T) {
	w := newWindow(2)
	stop := make(chan struct{})
	for i := range 2 {
		if !w.take(stop) {
			t.Fatalf("take %d of the first two waited", i+1)
		}
	}
	took := make(chan bool, 1)
	go func() { took <- w.take(stop) }()
	select {
	case <-took:
		t.Fatal("a third went with two in flight")
	case <-time.After(50 * time.Millisecond):
	}
	w.give()
	select {
	case ok := <-took:
		if !ok {
			t.Fatal("take failed after a receipt")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a receipt made no room")
	}
	gave := make(chan struct{})
	go func() {
		for range 5 { // duplicates (QoS 1 redeliveries) add no room, and never block
			w.give()
		}
		close(gave)
	}()
	select {
	case <-gave:
	case <-time.After(10 * time.Second):
		t.Fatal("a receipt beyond the bound blocked the subscriber")
	}
	if len(w) != 2 {
		t.Fatalf("room for %d, want 2", len(w))
	}
	w.take(stop)
	w.take(stop)
	go func() { took <- w.take(stop) }()
	close(stop)
	select {
	case ok := <-took:
		if ok {
			t.Fatal("took room that was not there")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a waiting publisher outlived the run")
	}
}

// TestArrivalSeconds: a fan-in's clock stops at the last arrival, not when
// the wait for stragglers gave up.
func TestArrivalSeconds(t *testing.T) {
	begin := time.Unix(100, 0)
	now := begin.Add(10 * time.Second)
	if got := arrivalSeconds(begin, begin.Add(8*time.Second).UnixNano(), now); got != 8 {
		t.Errorf("last arrival after 8 s: %v s", got)
	}
	if got := arrivalSeconds(begin, 0, now); got != 10 {
		t.Errorf("nothing arrived: %v s, want the whole 10", got)
	}
}

// waitCount returns soon after the count is reached, not at the next whole
// second of its stall check, and gives up on a count that stopped moving.
func TestWaitCount(t *testing.T) {
	var n atomic.Int64
	begin := time.Now()
	go func() {
		time.Sleep(100 * time.Millisecond)
		n.Store(10)
	}()
	waitCount(&n, 10, begin, 0, time.Minute)
	if d := time.Since(begin); d > 900*time.Millisecond {
		t.Fatalf("returned %v after the start, the count was reached at 100ms", d)
	}

	n.Store(3) // stuck below want: given up on after a second without moving
	begin = time.Now()
	waitCount(&n, 10, begin, 0, time.Minute)
	if d := time.Since(begin); d < time.Second || d > 30*time.Second {
		t.Fatalf("a stuck count was given up on after %v, want about a second", d)
	}
	begin = time.Now() // within grace a stuck count is waited for, up to limit
	waitCount(&n, 10, begin, time.Minute, 1500*time.Millisecond)
	if d := time.Since(begin); d < 1500*time.Millisecond {
		t.Fatalf("a stuck count within grace was given up on after %v", d)
	}
}

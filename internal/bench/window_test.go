package bench

import (
	"testing"
	"time"
)

// TestWindow: the fan-in's bound on messages in flight lets n go, holds the
// next until a receipt, never grows past n, and lets go of a waiting
// publisher when the run ends.
func TestWindow(t *testing.T) {
	w := newWindow(2)
	stop := make(chan struct{})
	if !w.take(stop) || !w.take(stop) {
		t.Fatal("the first two waited")
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

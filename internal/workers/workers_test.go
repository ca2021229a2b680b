package workers

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Beyond max workers, jobs wait for a free worker instead of becoming
// goroutines; every job runs, Go never blocks, and the workers go away
// when idle.
func TestPoolBounded(t *testing.T) {
	before := runtime.NumGoroutine()
	p := New(50*time.Millisecond, 4)
	var running, peak atomic.Int64
	var ran sync.WaitGroup
	const jobs = 200
	ran.Add(jobs)
	start := time.Now()
	for i := 0; i < jobs; i++ {
		p.Go(func() {
			n := running.Add(1)
			for {
				m := peak.Load()
				if n <= m || peak.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			running.Add(-1)
			ran.Done()
		})
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("queueing 200 jobs took %v: Go blocked", d)
	}
	if g := runtime.NumGoroutine() - before; g > 4 {
		t.Fatalf("%d goroutines for 200 jobs, want at most 4 workers", g)
	}
	ran.Wait()
	if pk := peak.Load(); pk > 4 || pk < 1 {
		t.Fatalf("peak concurrency %d, want 1..4", pk)
	}
	// Parked workers take new jobs at once, and leave after idleFor.
	var again sync.WaitGroup
	again.Add(1)
	p.Go(again.Done)
	again.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("idle workers did not exit: %d goroutines, %d before", runtime.NumGoroutine(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.Close()
}

// Jobs queued beyond the cap are not stranded when workers park: a job
// that arrives while every worker is busy runs as soon as one frees up.
func TestPoolBacklogNotStranded(t *testing.T) {
	p := New(time.Hour, 1) // parked workers never time out here
	defer p.Close()
	for round := 0; round < 1000; round++ {
		release := make(chan struct{})
		p.Go(func() { <-release })
		done := make(chan struct{})
		p.Go(func() { close(done) }) // queued behind the busy worker
		close(release)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: a queued job did not run", round)
		}
	}
}

// Combiner: one job at a time, and nothing queued is left behind however
// the goroutines interleave.
func TestCombinerLeavesNothingBehind(t *testing.T) {
	var c Combiner
	var mu sync.Mutex
	queue, done := 0, 0
	var running, overlaps atomic.Int32
	job := func() error {
		if running.Add(1) > 1 {
			overlaps.Add(1)
		}
		defer running.Add(-1)
		for {
			mu.Lock()
			n := queue
			queue = 0
			done += n
			mu.Unlock()
			runtime.Gosched() // others queue meanwhile, also after the last look
			if n == 0 {
				return nil
			}
		}
	}
	queued := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return queue > 0
	}
	// Rounds of goroutines that each queue one item and run the job at
	// once: when all have returned, nothing may be queued.
	const goroutines, rounds = 4, 3000
	for r := range rounds {
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range goroutines {
			wg.Go(func() {
				<-start
				mu.Lock()
				queue++
				mu.Unlock()
				_ = c.Run(job, queued)
			})
		}
		close(start)
		wg.Wait()
		if queue != 0 {
			t.Fatalf("round %d: %d items left queued after every goroutine returned", r, queue)
		}
	}
	if overlaps.Load() != 0 {
		t.Fatalf("the job ran %d times beside itself", overlaps.Load())
	}
	if done != goroutines*rounds {
		t.Fatalf("%d of %d items handled", done, goroutines*rounds)
	}
}

// Full says when a job given to Go would wait; Start runs one at once
// even then (a reader others wait on), and the backlog still drains.
func TestPoolStartBeyondMax(t *testing.T) {
	p := New(time.Hour, 2)
	defer p.Close()
	if p.Full() {
		t.Fatal("an empty pool is full")
	}
	release := make(chan struct{})
	var busy sync.WaitGroup
	busy.Add(2)
	for range 2 {
		p.Go(func() { busy.Done(); <-release })
	}
	busy.Wait()
	if !p.Full() {
		t.Fatal("a pool with max workers busy is not full")
	}
	queued := make(chan struct{})
	p.Go(func() { close(queued) }) // waits for a worker
	started := make(chan struct{})
	p.Start(func() { close(started) })
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("Start waited behind the busy workers")
	}
	select {
	case <-queued: // the worker Start made took the backlog when done
	case <-time.After(5 * time.Second):
		t.Fatal("the queued job did not run")
	}
	close(release)
}

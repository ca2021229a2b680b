package main

import (
	"cmp"
	"context"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"time"

	"github.com/exgate/exgate/internal/config"
)

// applyMemory sets the Go runtime's collection target and soft memory
// limit from node.gc_percent and node.memory_limit, and starts the heap
// floor (node.gc_min_heap; stop ends it). GOGC and GOMEMLIMIT in the
// environment win, as they do for any Go program.
func applyMemory(n config.Node, log *slog.Logger) (stop func()) {
	var attrs []any
	if n.GCPercent > 0 {
		if env := os.Getenv("GOGC"); env != "" {
			log.Warn("GOGC is set in the environment: node.gc_percent is ignored", "GOGC", env, "gc_percent", n.GCPercent)
		} else {
			debug.SetGCPercent(n.GCPercent)
			attrs = append(attrs, "gc_percent", n.GCPercent)
		}
	}
	stop = func() {}
	if n.GCMinHeap > 0 {
		if env := os.Getenv("GOGC"); env != "" {
			log.Warn("GOGC is set in the environment: node.gc_min_heap is ignored", "GOGC", env)
		} else {
			stop = startHeapFloor(uint64(n.GCMinHeap), cmp.Or(n.GCPercent, 100))
			attrs = append(attrs, "gc_min_heap_bytes", int64(n.GCMinHeap))
		}
	}
	if n.MemoryLimit > 0 {
		if env := os.Getenv("GOMEMLIMIT"); env != "" {
			log.Warn("GOMEMLIMIT is set in the environment: node.memory_limit is ignored", "GOMEMLIMIT", env, "memory_limit", int64(n.MemoryLimit))
		} else {
			debug.SetMemoryLimit(int64(n.MemoryLimit))
			attrs = append(attrs, "memory_limit_bytes", int64(n.MemoryLimit))
		}
	}
	if len(attrs) > 0 {
		log.Info("Go runtime memory settings", attrs...)
	}
	return stop
}

// startHeapFloor lets the heap grow to at least floor before a collection
// while the process allocates fast: after each collection it raises GOGC
// for the next one so that its goal is floor, or leaves the configured
// GOGC when that goal is higher already or when, at the rate allocated
// since the previous collection, the configured GOGC would collect less
// than once a second. A gateway with few devices but much traffic has a
// small live heap and collects it very often (at 100 devices echoing, GC
// is ~10% of the gateway's CPU); a floor of a few tens of MiB removes most
// of that, while a quiet gateway keeps its heap (and RSS) small and a
// large fleet, whose heap is above the floor anyway, collects exactly as
// before. base is the configured GOGC; stop restores it.
func startHeapFloor(floor uint64, base int) (stop func()) {
	var stopped atomic.Bool
	heap := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/heap/goal:bytes"}, {Name: "/gc/heap/allocs:bytes"}}
	cur := base
	var lastAllocs uint64
	last := time.Now()
	var arm func()
	arm = func() {
		// The sentinel's finalizer runs after the first collection that
		// finds it unreachable: once per cycle, on the runtime's
		// finalizer goroutine, and never again once stopped.
		runtime.SetFinalizer(&struct{ _ [16]byte }{}, func(any) {
			if stopped.Load() {
				return
			}
			metrics.Read(heap)
			now, allocs := time.Now(), heap[2].Value.Uint64()
			perSecond := uint64(float64(allocs-lastAllocs) / max(now.Sub(last).Seconds(), 1e-3))
			last, lastAllocs = now, allocs
			cur = floorPercent(heap[0].Value.Uint64(), heap[1].Value.Uint64(), perSecond, cur, floor, base)
			debug.SetGCPercent(cur)
			arm()
		})
	}
	arm()
	return func() {
		stopped.Store(true)
		debug.SetGCPercent(base)
	}
}

// floorPercent is the GOGC whose heap goal is floor, never below base, for
// a process allocating perSecond bytes a second; base when base would
// collect less than once a second at that rate. Go's goal is
// live + (live + roots) × GOGC/100, where roots are the goroutine stacks
// and globals as the pacer counts them; they are read back from the goal
// the current GOGC (cur) gave.
func floorPercent(live, goal, perSecond uint64, cur int, floor uint64, base int) int {
	const most = 10_000 // a nearly empty heap would otherwise ask for millions
	if live >= floor || goal <= live || cur <= 0 {
		return base
	}
	scaled := (goal - live) * 100 / uint64(cur) // live + roots
	if scaled == 0 || perSecond < scaled*uint64(base)/100 {
		return base
	}
	return max(base, min(int((floor-live)*100/scaled), most))
}

// releaseWhenIdle hands the Go heap's free pages back to the operating
// system once nothing has happened for idle (activity unchanged: no device
// traffic, connect or close), at most once per minute and only when there
// is enough to give back. After a connect storm the heap keeps up to twice
// its live size (GOGC: the collector's headroom) and the runtime returns
// it only slowly; an idle gateway's devices do not need it, and RSS is what
// operators size machines and containers by. The next storm takes it back.
// check is how often activity is read.
func releaseWhenIdle(ctx context.Context, idle, check time.Duration, activity func() int64, released func(bytes uint64)) {
	const (
		worth = 16 << 20 // less is not worth a full collection
		every = time.Minute
	)
	t := time.NewTicker(check)
	defer t.Stop()
	last, quiet := activity(), time.Now()
	var done time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if a := activity(); a != last {
				last, quiet = a, now
				continue
			}
			if now.Sub(quiet) < idle || (!done.IsZero() && now.Sub(done) < every) {
				continue
			}
			if spare := spareHeap(); spare >= worth {
				debug.FreeOSMemory()
				done = now
				released(spare)
			}
		}
	}
}

// spareHeap is the heap memory held from the OS beyond what was live at
// the last collection: garbage not collected yet, and free pages.
func spareHeap() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/free:bytes"}, {Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	var held uint64
	for _, x := range s[:3] {
		if x.Value.Kind() == metrics.KindUint64 {
			held += x.Value.Uint64()
		}
	}
	var live uint64
	if s[3].Value.Kind() == metrics.KindUint64 {
		live = s[3].Value.Uint64()
	}
	if held < live {
		return 0
	}
	return held - live
}

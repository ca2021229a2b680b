package main

import (
	"context"
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/exgate/exgate/internal/config"
)

// applyMemory sets the Go runtime's collection target and soft memory
// limit from node.gc_percent and node.memory_limit. GOGC and GOMEMLIMIT in
// the environment win, as they do for any Go program.
func applyMemory(n config.Node, log *slog.Logger) {
	var attrs []any
	if n.GCPercent > 0 {
		if env := os.Getenv("GOGC"); env != "" {
			log.Warn("GOGC is set in the environment: node.gc_percent is ignored", "GOGC", env, "gc_percent", n.GCPercent)
		} else {
			debug.SetGCPercent(n.GCPercent)
			attrs = append(attrs, "gc_percent", n.GCPercent)
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

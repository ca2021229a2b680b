package bench

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// ChurnOptions: devices connect, authenticate, subscribe, stay a moment and
// leave, at a steady rate, for a long time; the gateway's memory and
// goroutines are sampled during the run and after it, to show whether they
// return to where they started.
type ChurnOptions struct {
	Gateway  string // exgate JSON listener
	Rate     float64
	Duration time.Duration
	// Hold is how long each device stays connected. Default 1s.
	Hold time.Duration
	// Settle is how long to keep sampling after the last device left.
	// Default 30s.
	Settle     time.Duration
	SourceIPs  int
	GatewayPID int    // read RSS from /proc
	MetricsURL string // read goroutines from /metrics
	Progress   io.Writer
}

// Sample is the gateway's state at one moment of a churn run.
type Sample struct {
	At         float64 `json:"at_s"`
	RSSBytes   int64   `json:"rss_bytes"`
	Goroutines int     `json:"goroutines"`
	Connected  int64   `json:"connected"` // devices the tool holds open
}

// ChurnResult is a churn run: connects, failures and the samples.
type ChurnResult struct {
	Result
	Samples []Sample `json:"samples"`
}

// Churn runs devices in and out at o.Rate for o.Duration.
func Churn(ctx context.Context, o ChurnOptions) (ChurnResult, error) {
	if o.Hold <= 0 {
		o.Hold = time.Second
	}
	if o.Settle <= 0 {
		o.Settle = 30 * time.Second
	}
	res := ChurnResult{Result: Result{Scenario: "churn", Target: "exgate"}}
	var errs errorCounts
	var lat latencies
	var done, open atomic.Int64
	begin := time.Now()
	sample := func() {
		s := Sample{At: time.Since(begin).Seconds(), Connected: open.Load()}
		if o.GatewayPID > 0 {
			_, s.RSSBytes, _ = procStat(o.GatewayPID)
		}
		if o.MetricsURL != "" {
			s.Goroutines = Goroutines(o.MetricsURL)
		}
		res.Samples = append(res.Samples, s)
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "churn %6.0fs  %8d connects  %5d open  RSS %6.1f MiB  %6d goroutines\n",
				s.At, done.Load(), s.Connected, float64(s.RSSBytes)/(1<<20), s.Goroutines)
		}
	}
	sample()
	stopSampling := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				sample()
			case <-stopSampling:
				return
			}
		}
	})

	lim := rate.NewLimiter(rate.Limit(o.Rate), 1)
	end := time.Now().Add(o.Duration)
	var wg sync.WaitGroup
	var samplesMu sync.Mutex
	var all []time.Duration
	for i := 0; time.Now().Before(end) && ctx.Err() == nil; i++ {
		if err := lim.Wait(ctx); err != nil {
			break
		}
		wg.Go(func() {
			t0 := time.Now()
			d, err := connectJSON(ctx, o.Gateway, fmt.Sprintf("churn-%d", i), fmt.Sprintf("cmd/churn-%d", i), source(o.SourceIPs, i))
			if err != nil {
				errs.add(cause(err))
				return
			}
			samplesMu.Lock()
			all = append(all, time.Since(t0))
			samplesMu.Unlock()
			done.Add(1)
			open.Add(1)
			select {
			case <-time.After(o.Hold):
			case <-ctx.Done():
			}
			d.c.Close()
			open.Add(-1)
		})
	}
	wg.Wait()
	res.Seconds = time.Since(begin).Seconds()
	res.Ops = done.Load()
	res.Rate = float64(res.Ops) / res.Seconds
	res.Errors = errs.snapshot()
	lat.merge(all)
	lat.fill(&res.Result)
	select {
	case <-time.After(o.Settle):
	case <-ctx.Done():
	}
	close(stopSampling)
	sampler.Wait()
	sample()
	return res, nil
}

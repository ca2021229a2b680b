package bench

import (
	"context"
	"fmt"
	"io"
	"strings"
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
	// Every is the sampling interval. Default 10s.
	Every time.Duration
	// Echo, if set, is steady traffic of devices that stay: it starts 10 s
	// before the first sample and ends after the last (Echo.Duration is set).
	Echo     *EchoOptions
	Progress io.Writer
}

// Sample is the gateway's state at one moment of a churn run.
type Sample struct {
	At         float64 `json:"at_s"`
	RSSBytes   int64   `json:"rss_bytes"`
	Goroutines int     `json:"goroutines"`
	Connected  int64   `json:"connected"` // devices the tool holds open
	// Closing is the gateway's closed devices whose OnSocketClosed is not
	// answered yet; CloseFailed the OnSocketClosed calls that failed so far.
	Closing     int `json:"closing"`
	CloseFailed int `json:"close_failed"`
}

// ChurnResult is a churn run: connects, failures and the samples.
type ChurnResult struct {
	Result
	Samples []Sample `json:"samples"`
	Echo    *Result  `json:"echo,omitempty"` // the steady traffic beside it
}

// echoWarmup is how long the steady echo traffic runs before the first sample.
const echoWarmup = 10 * time.Second

// Churn runs devices in and out at o.Rate for o.Duration.
func Churn(ctx context.Context, o ChurnOptions) (ChurnResult, error) {
	if o.Hold <= 0 {
		o.Hold = time.Second
	}
	if o.Settle <= 0 {
		o.Settle = 30 * time.Second
	}
	if o.Every <= 0 {
		o.Every = 10 * time.Second
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
			s.Closing = int(Metrics(o.MetricsURL, "exgate_connections_closing")[""])
			s.CloseFailed = int(Metrics(o.MetricsURL, "exgate_handler_close_failed_total")[""])
		}
		res.Samples = append(res.Samples, s)
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "churn %6.0fs  %8d connects  %5d open  %5d closing  RSS %6.1f MiB  %6d goroutines\n",
				s.At, done.Load(), s.Connected, s.Closing, float64(s.RSSBytes)/(1<<20), s.Goroutines)
		}
	}
	// The steady traffic runs before, during and after the churn, so the
	// first and last samples compare like with like: the gateway doing its
	// steady work, before and after the storm.
	var echo sync.WaitGroup
	if o.Echo != nil {
		eo := *o.Echo
		eo.Duration = echoWarmup + o.Duration + o.Settle + 2*o.Every // past the last sample
		echo.Go(func() {
			r, err := Echo(ctx, eo)
			if err != nil {
				r.Note = err.Error()
			}
			res.Echo = &r
		})
		select {
		case <-time.After(echoWarmup):
		case <-ctx.Done():
		}
	}
	sample()
	stopSampling := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		t := time.NewTicker(o.Every)
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
	echo.Wait()
	return res, nil
}

// Plot draws a series of samples as text, height rows by up to width
// columns (one column a sample, or a bucket of them), for BENCHMARKS.md.
func Plot(title string, samples []Sample, value func(Sample) float64, unit string, width, height int) string {
	if len(samples) == 0 {
		return ""
	}
	per := (len(samples) + width - 1) / width
	var cols []float64
	for i := 0; i < len(samples); i += per {
		m := 0.0
		for _, s := range samples[i:min(i+per, len(samples))] {
			m = max(m, value(s))
		}
		cols = append(cols, m)
	}
	top := 0.0
	for _, v := range cols {
		top = max(top, v)
	}
	if top == 0 {
		top = 1
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s (max %.1f %s; one column = %.0fs)\n", title, top, unit, samples[min(per, len(samples)-1)].At-samples[0].At)
	for row := height; row >= 1; row-- {
		fmt.Fprintf(&b, "%8.1f |", top*float64(row)/float64(height))
		for _, v := range cols {
			if v >= top*(float64(row)-0.5)/float64(height) {
				b.WriteByte('#')
			} else {
				b.WriteByte(' ')
			}
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "%8s +%s\n", "", strings.Repeat("-", len(cols)))
	fmt.Fprintf(&b, "%8s  0s%*s\n", "", len(cols)-2, fmt.Sprintf("%.0fs", samples[len(samples)-1].At))
	return b.String()
}

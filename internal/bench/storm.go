package bench

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// StormOptions: many devices connect, authenticate and subscribe at once.
type StormOptions struct {
	Gateway string // exgate JSON listener
	// Broker, instead of Gateway, makes the baseline: MQTT clients that
	// connect and subscribe to this broker directly.
	Broker      string
	Devices     int
	Concurrency int // connects in flight at once
	// SourceIPs spreads devices over that many loopback source addresses.
	SourceIPs int
	Progress  io.Writer
	// Hold runs with every device still connected, before they close
	// (memory is read then).
	Hold func()
}

// Storm measures connects per second, including OnSocketCreated,
// Authenticate and Subscribe, and their latency.
func Storm(ctx context.Context, o StormOptions) (Result, error) {
	res := Result{Scenario: "connect storm", Devices: o.Devices}
	if o.Concurrency <= 0 {
		o.Concurrency = 100
	}
	var lat latencies
	var errs errorCounts
	var done atomic.Int64
	devs := make([]io.Closer, o.Devices)
	next := atomic.Int64{}
	stop := make(chan struct{})
	go progress(o.Progress, "storm", func() (int64, string) { return done.Load(), "connected" }, stop)
	begin := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < o.Concurrency; w++ {
		wg.Go(func() {
			var samples []time.Duration
			for {
				i := int(next.Add(1)) - 1
				if i >= o.Devices || ctx.Err() != nil {
					break
				}
				t0 := time.Now()
				d, err := o.connect(ctx, i)
				if err != nil {
					errs.add(cause(err))
					continue
				}
				samples = append(samples, time.Since(t0))
				devs[i] = d
				done.Add(1)
			}
			lat.merge(samples)
		})
	}
	wg.Wait()
	res.Seconds = time.Since(begin).Seconds()
	close(stop)
	res.Ops = done.Load()
	res.Rate = float64(res.Ops) / res.Seconds
	res.Errors = errs.snapshot()
	lat.fill(&res)
	if o.Hold != nil {
		o.Hold()
	}
	for _, d := range devs {
		if d != nil {
			d.Close()
		}
	}
	return res, nil
}

// connect makes device i: a JSON-protocol device that authenticates and
// subscribes through exgate, or an MQTT client that does both directly.
func (o StormOptions) connect(ctx context.Context, i int) (io.Closer, error) {
	id, topic := fmt.Sprintf("storm-%d", i), fmt.Sprintf("cmd/storm-%d", i)
	if o.Broker != "" {
		m, err := dialMQTT(o.Broker, id)
		if err != nil {
			return nil, err
		}
		if err := m.subscribe(topic, 1); err != nil {
			m.Close()
			return nil, err
		}
		return m, nil
	}
	d, err := connectJSON(ctx, o.Gateway, id, topic, source(o.SourceIPs, i))
	if err != nil {
		return nil, err
	}
	return d.c, nil
}

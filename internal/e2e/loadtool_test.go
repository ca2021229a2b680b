package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/exgate/exgate/internal/bench"
	"github.com/exgate/exgate/internal/config"
)

// TestLoadToolOnePublish: `exgate bench fanout --messages 1` reports what it
// claims for one publish through a real gateway, on either broker and in
// both handler services: every device got it, when (p50 ≤ p99 ≤ the time to
// the last), and when the handler had answered every delivery (read from
// the gateway's /metrics).
func TestLoadToolOnePublish(t *testing.T) {
	eachModeAndNative(t, func(t *testing.T, tr string) {
		e := startOn(t, tr, nil)
		base := startAPI(t, e, config.API{MetricsPublic: true})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		const devices = 20
		r, err := bench.FanOut(ctx, bench.FanOutOptions{Devices: devices, Messages: 1, Payload: 8,
			Gateway: e.addr(), Broker: e.mqttAddr(), Metrics: base + "/metrics"})
		if err != nil {
			t.Fatal(err)
		}
		if r.Ops != devices || r.Note != "" {
			t.Fatalf("%d of %d deliveries (%s)", r.Ops, devices, r.Note)
		}
		last := r.Seconds * 1e6
		if r.P50 <= 0 || r.P50 > r.P99 || r.P99 > last {
			t.Errorf("arrivals p50 %.0fµs, p99 %.0fµs, last after %.0fµs", r.P50, r.P99, last)
		}
		if r.HandlerMS <= 0 || r.HandlerMS > 60_000 {
			t.Errorf("the handler answered every delivery after %.1f ms", r.HandlerMS)
		}
	})
}

// TestLoadToolFanInWindow: `exgate bench fanin --window` through a real
// gateway: messages arrive, none is lost, nothing fails, and the run ends
// on time with publishers waiting on the window.
func TestLoadToolFanInWindow(t *testing.T) {
	e := startOn(t, "tcp", nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	r, err := bench.FanIn(ctx, bench.FanInOptions{Devices: 4, QoS: 1, Payload: 8, Duration: time.Second, Window: 3,
		Gateway: e.addr(), Broker: e.mqttAddr()})
	if err != nil {
		t.Fatal(err)
	}
	if r.Ops == 0 || len(r.Errors) != 0 || r.Note != "" {
		t.Fatalf("%d received, errors %v, note %q", r.Ops, r.Errors, r.Note)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("a 1 s run took %v", took)
	}
}

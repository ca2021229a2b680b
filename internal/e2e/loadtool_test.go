package e2e

import (
	"context"
	"strings"
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

// TestLoadToolPairedFanOut: `exgate bench fanout --pairs` runs the fan-out
// through a real gateway and to the broker's own MQTT subscribers in
// pairs: every delivery of the last gateway run arrived, and the report
// carries a ratio against the broker with each pair's ratio in its note.
func TestLoadToolPairedFanOut(t *testing.T) {
	e := startOn(t, "tcp", nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const devices, messages = 20, 5
	r, err := bench.PairedFanOut(ctx, bench.FanOutOptions{Devices: devices, Messages: messages, Payload: 8,
		Gateway: e.addr(), Broker: e.mqttAddr()}, 3)
	if err != nil {
		t.Fatal(err)
	}
	if r.Ops != devices*messages || r.Rate <= 0 || r.Ratio <= 0 {
		t.Fatalf("%d of %d deliveries, %.0f/s, ratio %.2f (%s)", r.Ops, devices*messages, r.Rate, r.Ratio, r.Note)
	}
	if r.Scenario != "fan-out, 3 pairs" || r.Baseline != e.mqttAddr() {
		t.Errorf("scenario %q, baseline %q", r.Scenario, r.Baseline)
	}
	_, list, _ := strings.Cut(r.Note, "ratios: ")
	if n := len(strings.Split(list, ", ")); n != 3 {
		t.Errorf("note %q: want the 3 pairs' ratios", r.Note)
	}
	for _, o := range []bench.FanOutOptions{{Devices: 1, Messages: 1, Broker: e.mqttAddr()}, {Devices: 1, Messages: 1, Broker: e.mqttAddr(), Gateway: e.addr()}} {
		pairs := 2
		if o.Gateway != "" {
			pairs = 0
		}
		if _, err := bench.PairedFanOut(ctx, o, pairs); err == nil || !strings.Contains(err.Error(), "paired fan-out:") {
			t.Errorf("gateway %q, %d pairs: err %v", o.Gateway, pairs, err)
		}
	}
}

package bench

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// BurstOptions: devices subscribe to one topic at QoS 1, then one MQTT
// client publishes a burst of QoS 1 messages to it as fast as the broker
// acknowledges them. It shows what a burst costs a publisher (PUBACK
// latency), what reached the devices, and what the gateway dropped and why.
type BurstOptions struct {
	Gateway  string // exgate JSON listener
	Broker   string // MQTT listener the publisher uses
	Devices  int    // default 20
	Messages int    // default 5000
	Payload  int
	// Inflight is how many PUBLISHes may await their PUBACK. Default 100.
	Inflight int
	// MetricsURL, if set, is the gateway's /metrics: the drops by reason
	// are read from it before and after.
	MetricsURL string
	Progress   io.Writer
}

// BurstResult is what a burst did.
type BurstResult struct {
	Result
	Published int64 `json:"published"`
	Acked     int64 `json:"acked"`
	// Expected is Acked × devices; Delivered the messages devices read.
	Expected  int64 `json:"expected"`
	Delivered int64 `json:"delivered"`
	// Dropped is the gateway's exgate_delivery_dropped_total by reason,
	// grown during the run.
	Dropped map[string]int64 `json:"dropped,omitempty"`
	// PUBACK latency of the publisher, in microseconds.
	AckP50US float64 `json:"ack_p50_us"`
	AckP99US float64 `json:"ack_p99_us"`
	AckMaxUS float64 `json:"ack_max_us"`
}

// Burst runs one burst.
func Burst(ctx context.Context, o BurstOptions) (BurstResult, error) {
	if o.Devices <= 0 {
		o.Devices = 20
	}
	if o.Messages <= 0 {
		o.Messages = 5000
	}
	if o.Inflight <= 0 {
		o.Inflight = 100
	}
	res := BurstResult{Result: Result{Scenario: "qos1-burst", Target: "exgate", Devices: o.Devices}}
	var got atomic.Int64
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	topic := fmt.Sprintf("bench/burst/%d", time.Now().UnixNano())
	for i := 0; i < o.Devices; i++ {
		c, err := countingDevice(ctx, o.Gateway, fmt.Sprintf("bench-burst-%d", i), topic, &got, nil)
		if err != nil {
			return res, fmt.Errorf("device %d: %w", i, err)
		}
		closers = append(closers, c)
	}
	before := droppedByReason(o.MetricsURL)
	pub, err := dialMQTT(o.Broker, fmt.Sprintf("bench-burst-pub-%d", time.Now().UnixNano()))
	if err != nil {
		return res, err
	}
	closers = append(closers, pub)

	window := make(chan struct{}, o.Inflight)
	var mu sync.Mutex
	sent := map[uint16]time.Time{}
	var acks []time.Duration
	var acked atomic.Int64
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for acked.Load() < int64(o.Messages) {
			pk, err := pub.read()
			if err != nil {
				return
			}
			if pk.FixedHeader.Type != packets.Puback {
				continue
			}
			mu.Lock()
			if t, ok := sent[pk.PacketID]; ok {
				acks = append(acks, time.Since(t))
				delete(sent, pk.PacketID)
			}
			mu.Unlock()
			acked.Add(1)
			<-window
		}
	}()
	stop := make(chan struct{})
	go progress(o.Progress, "burst", func() (int64, string) {
		return got.Load(), fmt.Sprintf("delivered, %d acked of %d", acked.Load(), o.Messages)
	}, stop)
	payload := []byte(strings.Repeat("b", o.Payload))
	begin := time.Now()
	var errs errorCounts
	for i := 0; i < o.Messages && ctx.Err() == nil; i++ {
		select {
		case window <- struct{}{}:
		case <-readerDone:
		case <-time.After(time.Minute):
			errs.add("no PUBACK for a minute")
		}
		mu.Lock()
		err := pub.publish(topic, 1, payload)
		sent[pub.id] = time.Now()
		mu.Unlock()
		if err != nil {
			errs.add(cause(err))
			break
		}
		res.Published++
	}
	select {
	case <-readerDone:
	case <-time.After(2 * time.Minute):
		errs.add("PUBACKs missing after 2 minutes")
	}
	res.Acked = acked.Load()
	res.Expected = res.Acked * int64(o.Devices)
	// Deliveries go on after the last PUBACK: wait until they stop.
	waitCount(&got, res.Expected, begin, 0, 5*time.Minute)
	close(stop)
	res.Seconds = time.Since(begin).Seconds()
	res.Delivered = got.Load()
	res.Ops = res.Delivered
	res.Rate = float64(res.Ops) / res.Seconds
	res.Errors = errs.snapshot()
	if after := droppedByReason(o.MetricsURL); after != nil {
		res.Dropped = map[string]int64{}
		for reason, n := range after {
			if d := n - before[reason]; d > 0 {
				res.Dropped[reason] = d
			}
		}
	}
	var l latencies
	mu.Lock()
	l.merge(acks)
	for _, a := range acks {
		res.AckMaxUS = max(res.AckMaxUS, float64(a.Microseconds()))
	}
	mu.Unlock()
	var lr Result
	l.fill(&lr)
	res.AckP50US, res.AckP99US = lr.P50, lr.P99
	if res.Delivered < res.Expected {
		res.Note = fmt.Sprintf("%d of %d deliveries reached the devices", res.Delivered, res.Expected)
	}
	return res, nil
}

// droppedByReason reads exgate_delivery_dropped_total by reason.
func droppedByReason(metricsURL string) map[string]int64 {
	m := Metrics(metricsURL, "exgate_delivery_dropped_total")
	if m == nil {
		return nil
	}
	out := map[string]int64{}
	for labels, v := range m {
		reason := strings.TrimSuffix(strings.TrimPrefix(labels, `reason="`), `"`)
		out[reason] = int64(v)
	}
	return out
}

package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// jsonDevice speaks the JSON demo protocol (examples/jsondemo) to exgate.
type jsonDevice struct {
	c  net.Conn
	fr *frameReader
}

// frame is what a device sends; what it reads, frameReader parses.
type frame struct {
	Type       int            `json:"type"`
	ClientInfo map[string]any `json:"clientinfo,omitempty"`
	Topic      string         `json:"topic,omitempty"`
	QoS        int            `json:"qos,omitempty"`
	Payload    string         `json:"payload,omitempty"`
}

// connectJSON dials, authenticates as clientID and optionally subscribes.
func connectJSON(ctx context.Context, addr, clientID, subscribe string, src net.IP) (*jsonDevice, error) {
	c, err := dialDevice(ctx, "tcp", addr, nil, src)
	if err != nil {
		return nil, err
	}
	d := &jsonDevice{c: c, fr: newFrameReader(c)}
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if err := d.request(frame{Type: 1, ClientInfo: map[string]any{"clientid": clientID}}, 2); err != nil {
		c.Close()
		return nil, fmt.Errorf("connect: %w", err)
	}
	if subscribe != "" {
		if err := d.request(frame{Type: 5, Topic: subscribe, QoS: 1}, 6); err != nil {
			c.Close()
			return nil, fmt.Errorf("subscribe: %w", err)
		}
	}
	_ = c.SetDeadline(time.Time{})
	return d, nil
}

func (d *jsonDevice) send(f frame) error {
	b, _ := json.Marshal(f)
	_, err := d.c.Write(b)
	return err
}

// request sends f and waits for an ack of type want with code 0.
func (d *jsonDevice) request(f frame, want int) error {
	if err := d.send(f); err != nil {
		return err
	}
	for {
		typ, code, err := d.fr.next()
		if err != nil {
			return err
		}
		if typ == want {
			if code > 0 {
				return fmt.Errorf("refused (code %d)", code)
			}
			return nil
		}
	}
}

// FanInOptions: many publishers, one MQTT subscriber.
type FanInOptions struct {
	Devices  int
	QoS      int
	Payload  int
	Duration time.Duration
	Progress io.Writer
	// Gateway is exgate's JSON-protocol listener; empty: the publishers
	// are MQTT clients of Broker (the baseline).
	Gateway string
	// Broker is where the subscriber (and baseline publishers) connect.
	Broker string
	// Window, if above 0, bounds the messages sent and not yet received:
	// publishers wait for the subscriber instead of filling the broker's
	// queue to it. Without it a broker whose publishers outrun its
	// subscriber spends CPU on messages it then drops (mosquitto beyond
	// max_queued_messages), and the rate measures how that CPU was split,
	// not what the path carries.
	Window int
}

// window is a bound on messages in flight: take before sending, give on
// receipt.
type window chan struct{}

func newWindow(n int) window {
	w := make(window, n)
	for range n {
		w <- struct{}{}
	}
	return w
}

// take waits for room; false if stop closed first.
func (w window) take(stop <-chan struct{}) bool {
	select {
	case <-w:
		return true
	case <-stop:
		return false
	}
}

// give makes room for one more (never beyond the bound: a duplicate
// delivery adds none).
func (w window) give() {
	select {
	case w <- struct{}{}:
	default:
	}
}

// arrivalSeconds is a fan-in's duration: from begin to the last arrival
// (UnixNano; 0 if none), or to now when nothing arrived.
func arrivalSeconds(begin time.Time, last int64, now time.Time) float64 {
	if last > begin.UnixNano() {
		return time.Duration(last - begin.UnixNano()).Seconds()
	}
	return now.Sub(begin).Seconds()
}

// FanIn measures messages per second arriving at one subscriber. QoS 0
// publishers send as fast as the path takes them; QoS 1 publishers wait for
// each acknowledgement; with a Window, all of them wait for the subscriber
// too.
func FanIn(ctx context.Context, o FanInOptions) (Result, error) {
	res := Result{Scenario: fmt.Sprintf("fan-in qos%d", o.QoS), Devices: o.Devices}
	sub, err := dialMQTT(o.Broker, fmt.Sprintf("bench-sub-%d", time.Now().UnixNano()))
	if err != nil {
		return res, fmt.Errorf("subscriber: %w", err)
	}
	defer sub.Close()
	if err := sub.subscribe("bench/in/#", byte(o.QoS)); err != nil {
		return res, err
	}
	var got, lastAt atomic.Int64 // lastAt: when the latest arrived (UnixNano)
	var win window
	if o.Window > 0 {
		win = newWindow(o.Window)
	}
	go func() {
		for {
			pk, err := sub.read()
			if err != nil {
				return
			}
			if pk.FixedHeader.Type == packets.Publish {
				got.Add(1)
				lastAt.Store(time.Now().UnixNano())
				if win != nil {
					win.give()
				}
				if pk.FixedHeader.Qos == 1 {
					_ = sub.puback(pk.PacketID)
				}
			}
		}
	}()
	payload := strings.Repeat("x", o.Payload)
	var errs errorCounts
	type publisher func(topic string) error
	pubs := make([]publisher, 0, o.Devices)
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			// Reset, not FIN: what is still unread in the gateway's socket
			// buffers is dropped instead of spilling into the next run.
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			c.Close()
		}
	}()
	for i := 0; i < o.Devices; i++ {
		topic := fmt.Sprintf("bench/in/%d", i)
		if o.Gateway != "" {
			d, err := connectJSON(ctx, o.Gateway, fmt.Sprintf("bench-pub-%d", i), "", nil)
			if err != nil {
				return res, fmt.Errorf("device %d: %w", i, err)
			}
			closers = append(closers, d.c)
			if o.QoS == 0 {
				go func() { _, _ = io.Copy(io.Discard, d.c) }() // PUBACK frames
				pubs = append(pubs, func(t string) error { return d.send(frame{Type: 3, Topic: t, Payload: payload}) })
			} else {
				pubs = append(pubs, func(t string) error { return d.request(frame{Type: 3, Topic: t, QoS: 1, Payload: payload}, 4) })
			}
		} else {
			m, err := dialMQTT(o.Broker, fmt.Sprintf("bench-pub-%d", i))
			if err != nil {
				return res, fmt.Errorf("publisher %d: %w", i, err)
			}
			closers = append(closers, m)
			pubs = append(pubs, func(t string) error {
				if err := m.publish(t, byte(o.QoS), []byte(payload)); err != nil || o.QoS == 0 {
					return err
				}
				for {
					pk, err := m.read()
					if err != nil {
						return err
					}
					if pk.FixedHeader.Type == packets.Puback {
						return nil
					}
				}
			})
		}
		_ = topic
	}
	stop := make(chan struct{})
	go progress(o.Progress, res.Scenario, func() (int64, string) { return got.Load(), "received" }, stop)
	begin := time.Now()
	deadline := begin.Add(o.Duration)
	var sent atomic.Int64
	waitCtx, cancelWait := context.WithDeadline(ctx, deadline)
	defer cancelWait()
	var wg sync.WaitGroup
	for _, c := range closers {
		// A publisher blocked by back pressure stops at the deadline
		// instead of draining socket buffers for minutes.
		if d, ok := c.(interface{ SetWriteDeadline(time.Time) error }); ok {
			_ = d.SetWriteDeadline(deadline)
		}
	}
	for i, pub := range pubs {
		wg.Go(func() {
			topic := fmt.Sprintf("bench/in/%d", i)
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if win != nil && !win.take(waitCtx.Done()) {
					return
				}
				if err := pub(topic); err != nil {
					if !time.Now().Before(deadline) {
						return // the deadline cut a blocked write
					}
					errs.add(cause(err))
					return
				}
				sent.Add(1)
			}
		})
	}
	wg.Wait()
	// What is still in flight gets a moment to arrive.
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end) && got.Load() < sent.Load(); {
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	// The clock stops at the last arrival, not at the end of the wait for
	// stragglers: messages a broker never delivers (mosquitto 2.0.11 can
	// leave a subscriber's queued QoS 1 messages behind once publishing
	// stops) are counted as lost, not as time.
	res.Seconds = arrivalSeconds(begin, lastAt.Load(), time.Now())
	res.Ops = got.Load()
	res.Rate = float64(res.Ops) / res.Seconds
	res.Errors = errs.snapshot()
	if lost := sent.Load() - got.Load(); lost > 0 {
		res.Note = fmt.Sprintf("%d of %d sent not received", lost, sent.Load())
	}
	return res, nil
}

// FanOutOptions: one MQTT publisher, many subscribed devices.
type FanOutOptions struct {
	Devices  int
	Messages int // published, each delivered to every device
	Payload  int
	Progress io.Writer
	Gateway  string // exgate JSON listener; empty: MQTT subscribers of Broker
	Broker   string
	// Metrics, with Gateway, is the gateway's /metrics URL: polled every
	// 10 ms during the run for exgate_messages_delivered_total, to time when
	// the handler had answered every delivery (Result.HandlerMS).
	Metrics string
	// Watch, if set, reads its processes' CPU from the first publish to the
	// last delivery into Result.Procs, leaving out the devices' connecting
	// and closing.
	Watch *Watch
}

// arrivals times each subscriber's first message from the first publish:
// how long one publish takes to reach every device.
type arrivals struct {
	begin atomic.Int64 // UnixNano of the first publish
	lat   latencies
}

func (a *arrivals) arrived() {
	a.lat.merge([]time.Duration{time.Duration(time.Now().UnixNano() - a.begin.Load())})
}

// answered polls the gateway's count of deliveries its handler answered
// until it grew by want, and returns when that was (0 if it did not within
// limit or stop closed first). It starts polling once arrivedAll reports
// that every device had its messages: a handler answers a delivery after
// the Send that carries it to the device, so the count cannot be complete
// earlier, and a scrape of /metrics every 10 ms while the deliveries run
// cost the gateway 2-6 us of CPU per delivery (one publish to 10,000
// devices, three pairs: 236-252 ms without, 259-281 ms with).
func answered(url string, base float64, want int64, begin time.Time, limit time.Duration, stop <-chan struct{}, arrivedAll func() bool) time.Duration {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	polling := false
	for time.Since(begin) < limit {
		if !polling && arrivedAll() {
			polling = true
			t.Reset(10 * time.Millisecond)
		}
		if polling && Metrics(url, "exgate_messages_delivered_total")[""]-base >= float64(want) {
			return time.Since(begin)
		}
		select {
		case <-t.C:
		case <-stop:
			return 0
		}
	}
	return 0
}

// PairedFanOut runs the fan-out of o through o.Gateway and to MQTT
// subscribers of o.Broker (the baseline) in n interleaved pairs on fresh
// connections, and returns the gateway's median rate with the median of
// the pairs' ratios, as PairedEcho does: the embedded broker's own fan-out
// to 10,000 subscribers swung by 40 % between two runs of the suite, so a
// single ratio could not say whether a fan-out target was met. o.Watch and
// o.Metrics are not used; ops and latencies are the last gateway run's.
func PairedFanOut(ctx context.Context, o FanOutOptions, n int) (Result, error) {
	if n < 1 {
		return Result{}, fmt.Errorf("paired fan-out: %d pairs (want at least 1)", n)
	}
	if o.Gateway == "" {
		return Result{}, errors.New("paired fan-out: no gateway to compare with the broker's own subscribers")
	}
	base, subject := o, o
	base.Gateway = ""
	base.Progress, subject.Progress, base.Watch, subject.Watch, base.Metrics, subject.Metrics = nil, nil, nil, nil, "", ""
	res, ratios, err := interleave(n,
		func() (Result, error) { return FanOut(ctx, base) },
		func() (Result, error) { return FanOut(ctx, subject) },
		func(i int, b, s float64) {
			if o.Progress != nil {
				fmt.Fprintf(o.Progress, "pair %d: %.0f/s through %s, %.0f/s to MQTT subscribers of %s\n", i, s, o.Gateway, b, o.Broker)
			}
		})
	if err != nil {
		return Result{}, fmt.Errorf("paired fan-out: %w", err)
	}
	res.Scenario, res.Baseline = fmt.Sprintf("fan-out, %d pairs", n), o.Broker
	res.Note = fmt.Sprintf("median of %d interleaved pairs of %d messages to %d devices against the broker's own subscribers; the pairs' ratios: %s",
		n, o.Messages, o.Devices, ratios)
	return res, nil
}

// FanOut measures deliveries per second from one publisher to every device.
func FanOut(ctx context.Context, o FanOutOptions) (Result, error) {
	res := Result{Scenario: "fan-out", Devices: o.Devices}
	var got atomic.Int64
	var arr arrivals
	var errs errorCounts
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	closers, err := connectAll(o.Devices, func(i int) (io.Closer, error) {
		if o.Gateway != "" {
			c, err := countingDevice(ctx, o.Gateway, fmt.Sprintf("bench-fan-%d", i), "bench/out", &got, &arr)
			if err != nil {
				return nil, fmt.Errorf("device %d: %w", i, err)
			}
			return c, nil
		}
		m, err := dialMQTT(o.Broker, fmt.Sprintf("bench-fan-%d", i))
		if err != nil {
			return nil, fmt.Errorf("subscriber %d: %w", i, err)
		}
		if err := m.subscribe("bench/out", 0); err != nil {
			m.Close()
			return nil, err
		}
		go func() {
			first := true
			for {
				pk, err := m.read()
				if err != nil {
					return
				}
				if pk.FixedHeader.Type == packets.Publish {
					if first {
						first = false
						arr.arrived()
					}
					got.Add(1)
				}
			}
		}()
		return m, nil
	})
	if err != nil {
		return res, err
	}
	pub, err := dialMQTT(o.Broker, fmt.Sprintf("bench-fanpub-%d", time.Now().UnixNano()))
	if err != nil {
		return res, err
	}
	closers = append(closers, pub)
	want := int64(o.Devices * o.Messages)
	stop := make(chan struct{})
	endProgress := sync.OnceFunc(func() { close(stop) })
	go progress(o.Progress, "fan-out", func() (int64, string) { return got.Load(), fmt.Sprintf("of %d", want) }, stop)
	payload := []byte(strings.Repeat("y", o.Payload))
	var handler chan time.Duration // when the handler had answered every delivery
	base := 0.0
	if o.Metrics != "" && o.Gateway != "" {
		handler = make(chan time.Duration, 1)
		base = Metrics(o.Metrics, "exgate_messages_delivered_total")[""]
	}
	o.Watch.Restart()
	begin := time.Now()
	arr.begin.Store(begin.UnixNano())
	if handler != nil {
		go func() {
			handler <- answered(o.Metrics, base, want, begin, 2*time.Minute, stop, func() bool { return got.Load() >= want })
		}()
	}
	for i := 0; i < o.Messages; i++ {
		if err := pub.publish("bench/out", 0, payload); err != nil {
			errs.add(cause(err))
			break
		}
		// Pace the publisher at the rate deliveries drain, so that neither
		// path is measured by what it drops.
		for got.Load() < int64(i-50)*int64(o.Devices) && time.Since(begin) < time.Minute {
			time.Sleep(200 * time.Microsecond)
		}
	}
	waitCount(&got, want, begin, 10*time.Second, 2*time.Minute)
	res.Seconds = time.Since(begin).Seconds()
	res.Ops = got.Load()
	o.Watch.Done(&res, 0)
	if handler != nil {
		var d time.Duration
		select { // the handler's answers trail the last arrival by about a poll
		case d = <-handler:
		case <-time.After(2 * time.Second):
			endProgress()
			d = <-handler // answered returns once stop is closed
		}
		res.HandlerMS = float64(d.Microseconds()) / 1e3
	}
	endProgress()
	res.Rate = float64(res.Ops) / res.Seconds
	res.Errors = errs.snapshot()
	if o.Messages == 1 {
		arr.lat.fill(&res) // when each device had the one message
	}
	if res.Ops < want {
		res.Note = fmt.Sprintf("%d of %d deliveries arrived", res.Ops, want)
	}
	return res, nil
}

// countingDevice connects a JSON-protocol device subscribed to topic at
// QoS 1 that counts the messages it receives in got; arr, if not nil,
// records when the first one arrived.
func countingDevice(ctx context.Context, gateway, clientID, topic string, got *atomic.Int64, arr *arrivals) (io.Closer, error) {
	d, err := connectJSON(ctx, gateway, clientID, topic, nil)
	if err != nil {
		return nil, err
	}
	go func() {
		first := arr != nil
		for {
			typ, _, err := d.fr.next()
			if err != nil {
				return
			}
			if typ == 3 {
				if first {
					first = false
					arr.arrived()
				}
				got.Add(1)
			}
		}
	}()
	return d.c, nil
}

// connectAll makes devices 0..n-1 with connect, a few at a time (setting
// up 10,000 one by one takes longer than the measurement); on an error
// it closes what it made.
func connectAll(n int, connect func(i int) (io.Closer, error)) ([]io.Closer, error) {
	out := make([]io.Closer, n)
	var next atomic.Int64
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for range min(n, 32) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				mu.Lock()
				failed := first != nil
				mu.Unlock()
				if i >= n || failed {
					return
				}
				c, err := connect(i)
				if err != nil {
					mu.Lock()
					first = cmp.Or(first, err)
					mu.Unlock()
					return
				}
				out[i] = c
			}
		})
	}
	wg.Wait()
	if first != nil {
		for _, c := range out {
			if c != nil {
				c.Close()
			}
		}
		return nil, first
	}
	return out, nil
}

// waitCount waits until n reaches want, until limit has passed since
// begin, or until n has not moved for a second once grace has passed. It
// looks every 5 ms, so a clock read when it returns stops within 5 ms of
// the last count (one that slept a second per look stopped the clocks of
// runs longer than grace at a whole second).
func waitCount(n *atomic.Int64, want int64, begin time.Time, grace, limit time.Duration) {
	last, moved := n.Load(), time.Now()
	for time.Since(begin) < limit {
		c := n.Load()
		if c >= want {
			return
		}
		if c != last {
			last, moved = c, time.Now()
		} else if time.Since(begin) > grace && time.Since(moved) > time.Second {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/exgate/exgate/internal/testnet"
)

// TestPairedEcho: a paired echo reports the subject's median rate and the
// median of the pairs' ratios subject/baseline, with every pair's ratio in
// the note. The subject here is an echo server that waits a
// millisecond before each answer, so its ratio is far below 1 (an inverted
// or mixed-up ratio would be far above it).
func TestPairedEcho(t *testing.T) {
	raw, err := StartEchoServer("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	slow := slowEchoServer(t, time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := PairedEcho(ctx, EchoOptions{Addr: slow, Devices: 2, Duration: 300 * time.Millisecond}, raw.Addr(), 3)
	if err != nil {
		t.Fatal(err)
	}
	// Two devices, one round trip each per millisecond at best.
	if r.Rate <= 0 || r.Rate > 2000 {
		t.Errorf("rate %.0f/s; want the slow server's, at most 2,000/s", r.Rate)
	}
	if r.Ratio <= 0 || r.Ratio >= 0.5 {
		t.Errorf("ratio %.2f; want the slow server's rate over the raw one's, well under 0.5", r.Ratio)
	}
	if r.Baseline != raw.Addr() || r.Scenario != "echo, 3 pairs" {
		t.Errorf("scenario %q, baseline %q", r.Scenario, r.Baseline)
	}
	_, list, _ := strings.Cut(r.Note, "ratios: ")
	list, _, _ = strings.Cut(list, ";")
	if n := len(strings.Split(list, ", ")); n != 3 {
		t.Errorf("note %q: want the 3 pairs' ratios", r.Note)
	}
}

// TestPairedEchoRefuses: no pairs, or a paced rate (both sides would run
// at it), is an error, before any run.
func TestPairedEchoRefuses(t *testing.T) {
	for _, c := range []struct {
		o     EchoOptions
		pairs int
	}{{EchoOptions{Addr: "127.0.0.1:1"}, 0}, {EchoOptions{Addr: "127.0.0.1:1", Rate: 100}, 3}} {
		if _, err := PairedEcho(context.Background(), c.o, "127.0.0.1:1", c.pairs); err == nil || !strings.Contains(err.Error(), "paired echo:") {
			t.Errorf("pairs %d, rate %v: err %v", c.pairs, c.o.Rate, err)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

// slowEchoServer echoes each read after wait; it stops with the test.
func slowEchoServer(t *testing.T, wait time.Duration) string {
	return testnet.Serve(t, func(c net.Conn) {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			time.Sleep(wait)
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
	})
}

// TestInterleave: pairs alternate which side runs first (B S, S B, B S),
// the ratio is the subject's rate over the baseline's, and the medians
// are of the pairs; an error names its pair and side.
func TestInterleave(t *testing.T) {
	var order []string
	sub := []float64{10, 50, 30}
	i := 0
	base := func() (Result, error) { order = append(order, "B"); return Result{Rate: 100}, nil }
	subject := func() (Result, error) {
		order = append(order, "S")
		i++
		return Result{Rate: sub[i-1], Ops: int64(i)}, nil
	}
	var heard []string
	r, ratios, err := interleave(3, base, subject, func(p int, b, s float64) { heard = append(heard, fmt.Sprintf("%d:%.0f/%.0f", p, s, b)) })
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(order, " "); got != "B S S B B S" {
		t.Errorf("order %q", got)
	}
	if r.Rate != 30 || r.Ratio != 0.3 || r.Ops != 3 || r.Pairs != 3 || ratios != "0.10, 0.50, 0.30" {
		t.Errorf("rate %v, ratio %v, ops %d (want the last run's), pairs %d, ratios %q", r.Rate, r.Ratio, r.Ops, r.Pairs, ratios)
	}
	if got := strings.Join(heard, " "); got != "1:10/100 2:50/100 3:30/100" {
		t.Errorf("progress %q", got)
	}
	i = 0
	fail := func() (Result, error) {
		i++
		if i == 2 {
			return Result{}, errors.New("boom")
		}
		return Result{Rate: 1}, nil
	}
	if _, _, err := interleave(3, base, fail, nil); err == nil || err.Error() != "pair 2, subject: boom" {
		t.Errorf("err %v", err)
	}
}

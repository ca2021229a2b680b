package bench

import (
	"context"
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

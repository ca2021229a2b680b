package bench

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// EchoOptions shape an echo run: every device sends a frame and waits for
// it to come back, one at a time.
type EchoOptions struct {
	Addr      string
	Transport string // tcp (default), tls, udp
	TLS       *tls.Config
	Devices   int
	Payload   int // bytes per frame, at least 8
	Duration  time.Duration
	// Rate caps the round trips per second over all devices; 0 is as fast
	// as they go.
	Rate float64
	// ConnectRate paces the connects per second; 0 connects at once.
	ConnectRate float64
	// SourceIPs spreads devices over 127.0.0.2… (that many addresses), for
	// more devices than one source address has ephemeral ports.
	SourceIPs int
	Progress  io.Writer
	// Hold runs after the load with every device still connected, before
	// they close (memory is read then).
	Hold func()
}

// Echo runs an echo load and measures round trips.
func Echo(ctx context.Context, o EchoOptions) (Result, error) {
	if o.Payload < 8 {
		o.Payload = 8
	}
	res := Result{Scenario: "echo", Devices: o.Devices}
	conns := make([]net.Conn, 0, o.Devices)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	connBegin := time.Now()
	for i := 0; i < o.Devices; i++ {
		if o.ConnectRate > 0 {
			time.Sleep(time.Until(connBegin.Add(time.Duration(float64(i) / o.ConnectRate * float64(time.Second)))))
		}
		c, err := dialDevice(ctx, o.Transport, o.Addr, o.TLS, source(o.SourceIPs, i))
		if err != nil {
			return res, fmt.Errorf("device %d: %w", i, err)
		}
		conns = append(conns, c)
	}
	var lat latencies
	var errs errorCounts
	var ops atomic.Int64
	deadline := time.Now().Add(o.Duration)
	stop := make(chan struct{})
	go progress(o.Progress, "echo", func() (int64, string) { return ops.Load(), fmt.Sprintf("%d devices", len(conns)) }, stop)
	begin := time.Now()
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			var interval time.Duration
			if o.Rate > 0 {
				interval = time.Duration(float64(time.Second) * float64(len(conns)) / o.Rate)
			}
			next := time.Now().Add(time.Duration(i) * interval / time.Duration(len(conns)))
			out := make([]byte, o.Payload)
			in := make([]byte, o.Payload+64)
			samples := make([]time.Duration, 0, 4096)
			for seq := uint64(1); time.Now().Before(deadline) && ctx.Err() == nil; seq++ {
				if interval > 0 {
					time.Sleep(time.Until(next))
					next = next.Add(interval)
				}
				binary.BigEndian.PutUint64(out, seq)
				t0 := time.Now()
				_ = c.SetDeadline(t0.Add(5 * time.Second))
				if _, err := c.Write(out); err != nil {
					errs.add("write: " + cause(err))
					return
				}
				var err error
				if o.Transport == "udp" {
					var n int
					n, err = c.Read(in)
					if err == nil && n != o.Payload {
						err = errors.New("short datagram")
					}
				} else {
					_, err = io.ReadFull(c, in[:o.Payload])
				}
				if err != nil {
					errs.add("read: " + cause(err))
					if o.Transport == "udp" {
						continue // a lost datagram
					}
					return
				}
				if binary.BigEndian.Uint64(in) != seq {
					errs.add("out of order")
				}
				samples = append(samples, time.Since(t0))
				ops.Add(1)
			}
			lat.merge(samples)
		})
	}
	wg.Wait()
	close(stop)
	res.Seconds = time.Since(begin).Seconds()
	if o.Hold != nil {
		o.Hold()
	}
	res.Ops = ops.Load()
	res.Rate = float64(res.Ops) / res.Seconds
	res.Errors = errs.snapshot()
	lat.fill(&res)
	return res, nil
}

// source returns the local address of device i when spread over n
// loopback addresses, or nil.
func source(n, i int) net.IP {
	if n <= 0 {
		return nil
	}
	return net.IPv4(127, 0, byte(1+(i%n)/250), byte(2+(i%n)%250))
}

func dialDevice(ctx context.Context, transport, addr string, tc *tls.Config, src net.IP) (net.Conn, error) {
	// No TCP keepalive: the standard dialer's costs four setsockopt calls
	// per connect, a share of the two cores the load tool shares with exgate.
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: -1}
	if src != nil {
		if transport == "udp" {
			d.LocalAddr = &net.UDPAddr{IP: src}
		} else {
			d.LocalAddr = &net.TCPAddr{IP: src}
		}
	}
	switch transport {
	case "udp":
		return d.DialContext(ctx, "udp", addr)
	case "tls":
		td := tls.Dialer{NetDialer: &d, Config: tc}
		return td.DialContext(ctx, "tcp", addr)
	}
	return d.DialContext(ctx, "tcp", addr)
}

// EchoServer is the raw TCP echo baseline: what echo costs without a gateway.
type EchoServer struct {
	ln net.Listener
	wg sync.WaitGroup
}

// StartEchoServer listens on addr ("127.0.0.1:0").
func StartEchoServer(addr string) (*EchoServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &EchoServer{ln: ln}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Go(func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			})
		}
	})
	return s, nil
}

// Addr is the listening address.
func (s *EchoServer) Addr() string { return s.ln.Addr().String() }

// Close stops the server; connections end when their clients close.
func (s *EchoServer) Close() { s.ln.Close() }

// PairedEcho runs o against o.Addr and against baseline (another echo
// server at the same protocol: a raw one, or another exgate) in n pairs
// run back to back, the baseline first in even pairs and o.Addr first in
// odd ones, and returns o.Addr's median rate with the median of the pairs'
// ratios (Ratio; Baseline is the baseline's address). On a shared machine
// whose speed drifts between minutes, a single run of each can be a
// quarter off; each pair sees the same machine, and its median ratio is the
// figure to quote. Ops, seconds and latencies are those of the last run
// through o.Addr.
func PairedEcho(ctx context.Context, o EchoOptions, baseline string, n int) (Result, error) {
	if n < 1 {
		return Result{}, fmt.Errorf("paired echo: %d pairs (want at least 1)", n)
	}
	if o.Rate > 0 {
		return Result{}, errors.New("paired echo: a paced rate makes both sides run at it, so every ratio would be 1")
	}
	base, subject := o, o
	base.Addr, base.Progress, subject.Progress = baseline, nil, nil
	res, ratios, err := interleave(n,
		func() (Result, error) { return Echo(ctx, base) },
		func() (Result, error) { return Echo(ctx, subject) },
		func(i int, b, s float64) {
			if o.Progress != nil {
				fmt.Fprintf(o.Progress, "pair %d: %.0f/s through %s, %.0f/s through %s\n", i, s, o.Addr, b, baseline)
			}
		})
	if err != nil {
		return Result{}, fmt.Errorf("paired echo against %s: %w", baseline, err)
	}
	res.Scenario, res.Baseline = fmt.Sprintf("echo, %d pairs", n), baseline
	res.Note = fmt.Sprintf("median of %d interleaved pairs of %v runs against the baseline; the pairs' ratios: %s; ops and latencies of the last run",
		n, o.Duration, ratios)
	return res, nil
}

// interleave runs base and subject n times each in pairs, the baseline
// first in even pairs and the subject first in odd ones (so neither side
// always meets the machine as the other left it), and returns the
// subject's last result with its median rate and the median of the pairs'
// ratios subject/baseline (Rate, Ratio), and the pairs' ratios as text.
// done, if set, hears each pair's rates (pair number from 1).
func interleave(n int, base, subject func() (Result, error), done func(i int, base, subject float64)) (Result, string, error) {
	var rates, ratios []float64
	var parts []string
	var last Result
	for i := range n {
		var pair [2]float64 // baseline, subject
		for k := range 2 {
			side := (i + k) % 2
			run, name := base, "baseline"
			if side == 1 {
				run, name = subject, "subject"
			}
			r, err := run()
			if err != nil {
				return Result{}, "", fmt.Errorf("pair %d, %s: %w", i+1, name, err)
			}
			pair[side] = r.Rate
			if side == 1 {
				last = r
			}
		}
		if done != nil {
			done(i+1, pair[0], pair[1])
		}
		rates = append(rates, pair[1])
		if pair[0] > 0 {
			ratios = append(ratios, pair[1]/pair[0])
			parts = append(parts, fmt.Sprintf("%.2f", pair[1]/pair[0]))
		}
	}
	last.Rate, last.Ratio, last.Pairs = median(rates), median(ratios), n
	return last, strings.Join(parts, ", "), nil
}

// median of xs (0 for none); xs is sorted in place.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
}

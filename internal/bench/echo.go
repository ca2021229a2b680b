package bench

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
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

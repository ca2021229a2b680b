package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pires/go-proxyproto"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/gateway"
	"github.com/exgate/exgate/internal/testhandler"
)

// noNewConn checks that the handler saw no connection beyond the first n.
func (e *env) noNewConn(n int, within time.Duration) {
	e.t.Helper()
	time.Sleep(within)
	if got := len(e.h.Conns()); got != n {
		e.t.Fatalf("handler saw %d connections, want %d (a refused device reached it)", got, n)
	}
}

// expectClosedRaw reads until the connection is closed by the gateway.
func expectClosedRaw(t *testing.T, c net.Conn, within time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(within))
	buf := make([]byte, 512)
	for {
		_, err := c.Read(buf) // whatever the server said before closing
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("connection not closed within %v", within)
		}
		return
	}
}

func TestPeerCertificate(t *testing.T) {
	for _, tr := range []string{"ssl", "dtls"} {
		t.Run(tr, func(t *testing.T) {
			e := startOn(t, tr, nil)
			c, err := e.rawDial(true)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			id := e.h.NthConn(t, 0, 5*time.Second)
			pc := e.h.Events(id)[0].ConnInfo.GetPeercert()
			if pc.GetCn() != "device-1" || pc.GetDn() != "CN=device-1,O=Acme,C=SE" {
				t.Fatalf("peercert %v, want cn device-1 and dn CN=device-1,O=Acme,C=SE", pc)
			}
			// verify_peer without fail_if_no_peer_cert: no certificate is fine.
			d := e.dial()
			if pc := e.h.Events(d.id)[0].ConnInfo.GetPeercert(); pc != nil {
				t.Fatalf("peercert %v for a device without certificate", pc)
			}
		})
	}
}

func TestFailIfNoPeerCert(t *testing.T) {
	for _, tr := range []string{"ssl", "dtls"} {
		t.Run(tr, func(t *testing.T) {
			e := startOn(t, tr, func(c *config.Config) {
				l := defaultListener(c)
				for _, o := range []*config.TLSOptions{l.SSLOptions, l.DTLSOptions} {
					if o != nil {
						o.FailIfNoPeerCert = true
					}
				}
			})
			if c, err := e.rawDial(false); err == nil {
				// TLS 1.3 reports the refusal on the first read.
				expectClosedRaw(t, c, 5*time.Second)
				c.Close()
			}
			e.noNewConn(0, 300*time.Millisecond)
			if n := e.g.Listener(e.tr + ":default").Stats.HandshakeFailed.Load(); n != 1 {
				t.Fatalf("handshake failures counted %d", n)
			}
			c, err := e.rawDial(true)
			if err != nil {
				t.Fatalf("device with a certificate: %v", err)
			}
			defer c.Close()
			e.h.NthConn(t, 0, 5*time.Second)
		})
	}
}

func TestDTLSWithPSK(t *testing.T) {
	dir := t.TempDir()
	psk := filepath.Join(dir, "psk.txt")
	if err := os.WriteFile(psk, []byte("# identities\ndevice-7:s3cret-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startOn(t, "dtls", func(c *config.Config) {
		defaultListener(c).DTLSOptions = &config.TLSOptions{PSKFile: psk}
	})
	dial := func(id, key string) (*dtls.Conn, error) {
		ua, _ := net.ResolveUDPAddr("udp", e.addr())
		c, err := dtls.DialWithOptions("udp", ua,
			dtls.WithPSK(func([]byte) ([]byte, error) { return []byte(key), nil }),
			dtls.WithPSKIdentityHint([]byte(id)),
			dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_GCM_SHA256))
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := c.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	if c, err := dial("device-7", "wrong"); err == nil {
		c.Close()
		t.Fatal("handshake with a wrong PSK succeeded")
	}
	if c, err := dial("intruder", "s3cret-key"); err == nil { // a known secret under an unknown identity
		c.Close()
		t.Fatal("handshake with an identity not in psk_file succeeded")
	}
	e.noNewConn(0, 200*time.Millisecond)
	c, err := dial("device-7", "s3cret-key")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d := &device{t: t, conn: c, dec: jsonDecoder(c)}
	d.id = e.h.NthConn(t, 0, 5*time.Second)
	if st := e.h.Events(d.id)[0].ConnInfo.GetSocktype(); st != pb.SocketType_DTLS {
		t.Fatalf("socktype %v", st)
	}
	d.connect("psk-dev", 0)
}

func TestUDPPeersAreIndependent(t *testing.T) {
	e := startOn(t, "udp", nil)
	a, b := e.dial(), e.dial()
	a.connect("udp-a", 1)
	b.connect("udp-b", 3)
	// a falls silent and times out alone; b keeps talking.
	for i := 0; i < 8; i++ {
		time.Sleep(300 * time.Millisecond)
		b.send(Frame{Type: testhandler.Publish, Topic: "t", Payload: "beat"})
		b.expect(testhandler.Puback, 0)
	}
	if r := e.h.WaitClosed(t, a.id, 5*time.Second); r != "{shutdown,keepalive_timeout}" {
		t.Fatalf("silent UDP peer: %q", r)
	}
	if _, ok := e.h.Closed(b.id); ok {
		t.Fatal("talking UDP peer closed along with the silent one")
	}
	// Close forgets the peer: its next datagram starts a new connection.
	b.send(Frame{Type: testhandler.Disconnect})
	e.h.WaitClosed(t, b.id, 5*time.Second)
	n := len(e.h.Conns())
	b.send(Frame{Type: 42})
	if id := e.h.NthConn(t, n, 5*time.Second); id == b.id {
		t.Fatal("the same conn id was reused")
	}
}

func TestUDPIdleRule(t *testing.T) {
	e := startOn(t, "udp", func(c *config.Config) { c.Gateway.ExProto.IdleTimeout = 700 * time.Millisecond })
	talker := e.dial()
	keeper := e.dial()
	keeper.connect("keeper", 5) // StartTimer: the idle rule no longer applies
	begin := time.Now()
	for time.Since(begin) < 1500*time.Millisecond {
		talker.send(Frame{Type: 42})
		time.Sleep(100 * time.Millisecond)
	}
	if r := e.h.WaitClosed(t, talker.id, 5*time.Second); r != "{shutdown,idle_timeout}" {
		t.Fatalf("UDP peer without StartTimer: %q, want idle_timeout even while sending", r)
	}
	if _, ok := e.h.Closed(keeper.id); ok {
		t.Fatal("UDP peer with a keepalive was closed by idle_timeout")
	}
}

func TestMaxConnections(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		e := startOn(t, tr, func(c *config.Config) { defaultListener(c).MaxConnections = 2 })
		e.dial()
		e.dial()
		e.handshake = time.Second
		c, err := e.rawDial(false)
		if err == nil {
			defer c.Close()
			if e.tr == "udp" {
				_, _ = c.Write([]byte(`{"type":42}`))
			} else {
				expectClosedRaw(t, c, 5*time.Second)
			}
		}
		e.noNewConn(2, 300*time.Millisecond)
		st := &e.g.Listener(e.tr + ":default").Stats
		if st.RefusedLimit.Load() < 1 || st.Current.Load() != 2 {
			t.Fatalf("refused %d, current %d", st.RefusedLimit.Load(), st.Current.Load())
		}
	})
}

// max_connections counts open sockets: a device whose socket closed frees
// its slot at once, while the handler has not answered its OnSocketClosed.
func TestMaxConnectionsCountsOpenSockets(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		e := startOn(t, tr, func(c *config.Config) { defaultListener(c).MaxConnections = 1 })
		release := make(chan struct{})
		e.h.OnClosed = func(string) { <-release }
		defer close(release)
		a := e.dial()
		a.send(Frame{Type: testhandler.Disconnect})
		e.h.WaitFor(t, 5*time.Second, "the first device's OnSocketClosed", func() bool {
			_, ok := e.h.Closed(a.id)
			return ok
		})
		if n := e.g.Stats.Closing.Load(); n != 1 {
			t.Fatalf("closing devices: %d, want 1 (its OnSocketClosed is held)", n)
		}
		b := e.dial() // the slot is free: it reaches the handler
		b.connect("second", 0)
		st := &e.g.Listener(e.tr + ":default").Stats
		if st.RefusedLimit.Load() != 0 || st.Current.Load() != 1 {
			t.Fatalf("refused %d, current %d; want 0, 1", st.RefusedLimit.Load(), st.Current.Load())
		}
	})
}

func TestMaxConnRate(t *testing.T) {
	e := start(t, func(c *config.Config) { r := 2; defaultListener(c).MaxConnRate = &r })
	for i := 0; i < 6; i++ {
		c, err := net.Dial("tcp", e.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	time.Sleep(300 * time.Millisecond)
	st := &e.g.Listener("tcp:default").Stats
	if r := st.RefusedRate.Load(); r < 3 {
		t.Fatalf("refused by rate %d of 6 connections within a second, want ≥ 3 (max_conn_rate 2)", r)
	}
	if got := len(e.h.Conns()); got > 3 {
		t.Fatalf("%d connections reached the handler", got)
	}
	time.Sleep(time.Second) // the bucket refills
	e.dial()
}

func TestAccessRules(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		e := startOn(t, tr, func(c *config.Config) {
			defaultListener(c).AccessRules = []string{"deny 127.0.0.0/8", "allow all"}
		})
		e.handshake = time.Second
		c, err := e.rawDial(false)
		if err == nil {
			defer c.Close()
			if e.tr == "udp" {
				_, _ = c.Write([]byte(`{"type":42}`))
			} else if e.tr == "tcp" {
				expectClosedRaw(t, c, 5*time.Second)
			}
		}
		e.noNewConn(0, 300*time.Millisecond)
		if n := e.g.Listener(e.tr + ":default").Stats.RefusedACL.Load(); n < 1 {
			t.Fatalf("access-rule refusals counted %d", n)
		}
	})
	// First match wins: an allow before the deny lets the device in.
	e := start(t, func(c *config.Config) {
		defaultListener(c).AccessRules = []string{"allow 127.0.0.1", "deny all"}
	})
	e.dial()
}

func TestProxyProtocol(t *testing.T) {
	for _, version := range []byte{1, 2} {
		t.Run(map[byte]string{1: "v1", 2: "v2"}[version], func(t *testing.T) {
			e := start(t, func(c *config.Config) {
				l := defaultListener(c)
				l.ProxyProtocol = true
				l.ProxyProtocolTimeout = 500 * time.Millisecond
			})
			c, err := net.Dial("tcp", e.addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			src := &net.TCPAddr{IP: net.ParseIP("198.51.100.7"), Port: 40001}
			dst := &net.TCPAddr{IP: net.ParseIP("203.0.113.1"), Port: 7993}
			if _, err := proxyproto.HeaderProxyFromAddrs(version, src, dst).WriteTo(c); err != nil {
				t.Fatal(err)
			}
			id := e.h.NthConn(t, 0, 5*time.Second)
			ci := e.h.Events(id)[0].ConnInfo
			if ci.GetPeername().GetHost() != "198.51.100.7" || ci.GetPeername().GetPort() != 40001 || ci.GetSocktype() != pb.SocketType_TCP {
				t.Fatalf("conninfo %v, want peer 198.51.100.7:40001 from the header, socktype TCP", ci)
			}
			d := &device{t: t, conn: c, dec: jsonDecoder(c), id: id}
			d.connect("proxied", 0)

			// No header within proxy_protocol_timeout: closed, no handler event.
			silent, err := net.Dial("tcp", e.addr())
			if err != nil {
				t.Fatal(err)
			}
			defer silent.Close()
			expectClosedRaw(t, silent, 3*time.Second)
			e.noNewConn(1, 100*time.Millisecond)
		})
	}
}

func TestIPv6Loopback(t *testing.T) {
	probe, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback on this machine:", err)
	}
	probe.Close()
	for _, tr := range []string{"tcp", "udp"} {
		t.Run(tr, func(t *testing.T) {
			e := startOn(t, tr, func(c *config.Config) { defaultListener(c).Bind = "[::1]:0" })
			d := e.dial()
			if h := e.h.Events(d.id)[0].ConnInfo.GetPeername().GetHost(); h != "::1" {
				t.Fatalf("peer host %q, want ::1", h)
			}
			d.connect("v6", 0)
		})
	}
}

func TestBytesRateSlowsTheReader(t *testing.T) {
	e := start(t, func(c *config.Config) { defaultListener(c).BytesRate = "8KB/s" })
	d := e.dial()
	payload := strings.Repeat("x", 24<<10)
	begin := time.Now()
	if _, err := d.conn.Write([]byte(payload)); err != nil {
		t.Fatal(err)
	}
	total := 0
	e.h.WaitFor(t, 10*time.Second, "all bytes", func() bool {
		total = 0
		for _, ev := range e.h.Events(d.id) {
			total += len(ev.Bytes)
		}
		return total >= len(payload)
	})
	// 24 KiB at 8 KiB/s with an 8 KiB burst: at least ~2 s.
	if took := time.Since(begin); took < 1500*time.Millisecond {
		t.Fatalf("24 KiB arrived in %v through an 8KB/s limit", took)
	}
	if e.g.Listener("tcp:default").Stats.Throttled.Load() == 0 {
		t.Fatal("throttling not counted")
	}
}

func TestListenerBytesRateIsShared(t *testing.T) {
	e := start(t, func(c *config.Config) { defaultListener(c).ListenerBytesRate = "8KB/s" })
	a, b := e.dial(), e.dial()
	chunk := []byte(strings.Repeat("y", 12<<10))
	begin := time.Now()
	for _, d := range []*device{a, b} {
		if _, err := d.conn.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	e.h.WaitFor(t, 10*time.Second, "all bytes", func() bool {
		total := 0
		for _, d := range []*device{a, b} {
			for _, ev := range e.h.Events(d.id) {
				total += len(ev.Bytes)
			}
		}
		return total >= 2*len(chunk)
	})
	if took := time.Since(begin); took < 1500*time.Millisecond {
		t.Fatalf("24 KiB from two devices arrived in %v through a shared 8KB/s limit", took)
	}
}

func TestUDPMessagesRateDrops(t *testing.T) {
	e := startOn(t, "udp", func(c *config.Config) { defaultListener(c).MessagesRate = "5/s" })
	d := e.dial() // one datagram used
	for i := 0; i < 20; i++ {
		d.send(Frame{Type: 42})
	}
	time.Sleep(300 * time.Millisecond)
	got := 0
	for _, ev := range e.h.Events(d.id) {
		if ev.Method == "OnReceivedBytes" {
			got++
		}
	}
	dropped := e.g.Listener("udp:default").Stats.DatagramsDropped.Load()
	if got > 6 || dropped < 15 {
		t.Fatalf("%d datagrams reached the handler, %d dropped, with messages_rate 5/s", got, dropped)
	}
}

func TestSendTimeoutClosesStuckDevice(t *testing.T) {
	e := start(t, func(c *config.Config) {
		defaultListener(c).TCPOptions = &config.TCPOptions{SendTimeout: 300 * time.Millisecond, Sndbuf: 4096}
	})
	d := e.dial() // never reads
	ctx := ctx5(t)
	big := make([]byte, 1<<20)
	for i := 0; i < 64; i++ {
		resp, err := e.h.Adapter.Send(ctx, &pb.SendBytesRequest{Conn: d.id, Bytes: big})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Code != pb.ResultCode_SUCCESS {
			break
		}
	}
	if r := e.h.WaitClosed(t, d.id, 5*time.Second); r != "{shutdown,send_timeout}" {
		t.Fatalf("reason %q", r)
	}
}

func TestListenerOverrides(t *testing.T) {
	e := start(t, func(c *config.Config) {
		c.Gateway.ExProto.Mountpoint = "gw/"
		mp := "own/"
		l := defaultListener(c)
		l.Mountpoint = &mp
		l.TCPOptions = &config.TCPOptions{Backlog: 16, Recbuf: 32 << 10}
		l.IdleTimeout = 400 * time.Millisecond
	})
	d := e.dial()
	d.connect("ov", 0)
	m := e.mqtt("app")
	m.sub("#", 0)
	d.send(Frame{Type: testhandler.Publish, Topic: "t", Payload: "p"})
	d.expect(testhandler.Puback, 0)
	m.expect("own/t", "p")
	silent := e.dial()
	if r := e.h.WaitClosed(t, silent.id, 3*time.Second); r != "{shutdown,idle_timeout}" {
		t.Fatalf("listener idle_timeout: %q", r)
	}
}

func TestBadCertificatePathFailsAtStart(t *testing.T) {
	cfg := config.Default()
	cfg.Broker.Embedded.Listeners.TCP.Bind = "127.0.0.1:0"
	cfg.Gateway.ExProto.Server.Bind = "127.0.0.1:0"
	cfg.Gateway.ExProto.Listeners.TCP = nil
	cfg.Gateway.ExProto.Listeners.SSL = map[string]*config.Listener{"secure": {Bind: "127.0.0.1:0",
		SSLOptions: &config.TLSOptions{Certfile: "/nonexistent/cert.pem", Keyfile: "/nonexistent/key.pem"}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	_, err := gateway.New(cfg, discardLog())
	if err == nil || !strings.Contains(err.Error(), "gateway.exproto.listeners.ssl.secure.ssl_options.certfile") || !strings.Contains(err.Error(), "/nonexistent/cert.pem") {
		t.Fatalf("error %v should name the listener option and the file", err)
	}
}

func TestTLSVersionsAndCiphers(t *testing.T) {
	e := startOn(t, "ssl", func(c *config.Config) {
		defaultListener(c).SSLOptions.Versions = []string{"tlsv1.3"}
	})
	c, err := tls.Dial("tcp", e.addr(), &tls.Config{RootCAs: e.certs.CAPool, MaxVersion: tls.VersionTLS12})
	if err == nil {
		c.Close()
		t.Fatal("TLS 1.2 client accepted by a tlsv1.3-only listener")
	}
	d := e.dial()
	if v := d.conn.(*tls.Conn).ConnectionState().Version; v != tls.VersionTLS13 {
		t.Fatalf("negotiated %x", v)
	}

	cfg := config.Default()
	cfg.Gateway.ExProto.Listeners.TCP = nil
	cfg.Gateway.ExProto.Listeners.SSL = map[string]*config.Listener{"s": {Bind: "127.0.0.1:0",
		SSLOptions: &config.TLSOptions{Certfile: e.certs.ServerCert, Keyfile: e.certs.ServerKey, Ciphers: []string{"TLS_RSA_WITH_RC4_128_SHA"}}}}
	cfg.Broker.Embedded.Listeners.TCP.Bind = "127.0.0.1:0"
	cfg.Gateway.ExProto.Server.Bind = "127.0.0.1:0"
	if _, err := gateway.New(cfg, discardLog()); err == nil || !strings.Contains(err.Error(), "ssl_options.ciphers") {
		t.Fatalf("an insecure cipher was accepted: %v", err)
	}
}

func TestMessagesRateSlowsTCPReads(t *testing.T) {
	e := start(t, func(c *config.Config) { defaultListener(c).MessagesRate = "4/s" })
	d := e.dial()
	for i := 0; i < 10; i++ {
		d.send(Frame{Type: 42})
		time.Sleep(20 * time.Millisecond) // each would be a read of its own
	}
	var reads int
	e.h.WaitFor(t, 10*time.Second, "all frames", func() bool {
		n := 0
		reads = 0
		for _, ev := range e.h.Events(d.id) {
			if ev.Method == "OnReceivedBytes" {
				reads++
				n += strings.Count(string(ev.Bytes), `"type":42`)
			}
		}
		return n == 10
	})
	// A burst of 4 reads, then one per 250 ms: the rest wait in the socket
	// and arrive together, nothing lost.
	if reads > 7 {
		t.Fatalf("%d reads for 10 writes within 200 ms at messages_rate 4/s", reads)
	}
	if e.g.Listener("tcp:default").Stats.Throttled.Load() == 0 {
		t.Fatal("throttling not counted")
	}
}

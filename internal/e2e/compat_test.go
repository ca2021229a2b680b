package e2e

import (
	"crypto/tls"
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/testhandler"
	"github.com/exgate/exgate/sdk"
)

// exercise runs the demo protocol's main paths for one device.
func exercise(t *testing.T, e *env, clientID string) {
	t.Helper()
	d := e.dial()
	d.connect(clientID, 0)
	d.subscribe("c/"+clientID, 1)
	m := e.mqtt("app-" + clientID)
	m.sub("up/"+clientID, 1)
	d.send(Frame{Type: testhandler.Publish, Topic: "up/" + clientID, QoS: 1, Payload: "u"})
	d.expect(testhandler.Puback, 0)
	m.expect("up/"+clientID, "u")
	m.pub("c/"+clientID, 1, false, "down")
	if f := d.expect(testhandler.Publish, 0); f.Payload != "down" {
		t.Fatalf("device got %+v", f)
	}
	d.send(Frame{Type: testhandler.Disconnect})
	if r := e.h.WaitClosed(t, d.id, 5*time.Second); r != "{shutdown,normal}" {
		t.Fatalf("reason %q", r)
	}
}

func TestHandlerServiceShapes(t *testing.T) {
	for _, c := range []struct {
		name, service, streaming string
		served                   testhandler.Options
		overlapOK                bool
	}{
		{"unary", "ConnectionUnaryHandler", "per_event", testhandler.Options{}, false},
		{"streaming per_event", "ConnectionHandler", "per_event", testhandler.Options{}, false},
		{"unary-era handler per_event", "ConnectionHandler", "per_event", testhandler.Options{Services: []string{testhandler.UnaryEraConnectionHandler}}, false},
		{"streaming long_lived", "ConnectionHandler", "long_lived", testhandler.Options{}, true},
		{"long_lived, handler ends streams", "ConnectionHandler", "long_lived", testhandler.Options{EndStreams: true}, true},
		{"per_event, handler ends streams", "ConnectionHandler", "per_event", testhandler.Options{EndStreams: true}, false},
		{"odd responses", "ConnectionUnaryHandler", "per_event", testhandler.Options{Services: []string{testhandler.OddResponses}}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := testhandler.StartWith(t, c.served)
			var logs collector
			e := startWith(t, options{handler: h, overlapOK: c.overlapOK, logs: &logs}, func(cfg *config.Config) {
				cfg.Gateway.ExProto.Handler.ServiceName = c.service
				cfg.Gateway.ExProto.Handler.Streaming = c.streaming
			})
			if c.streaming == "long_lived" && c.served.EndStreams {
				// The probe at connect tells exgate that this handler ends
				// its streams before any device's event is at stake.
				waitLog(t, &logs, "streaming long_lived is served one stream per event")
			}
			exercise(t, e, "a")
			exercise(t, e, "b")
		})
	}
}

// TestHandlersFromTheWild runs ConnectionHandler shapes found in public
// handlers written for EMQX, which never read a stream's answer: ending a
// call without a response (no SendAndClose), ending each stream after one
// message, or both. In every mode every event reaches the handler: a burst
// of frames from one device is answered frame by frame.
func TestHandlersFromTheWild(t *testing.T) {
	for _, c := range []struct {
		name      string
		streaming string
		served    testhandler.Options
	}{
		{"no response, per_event", "per_event", testhandler.Options{NoResponse: true}},
		{"no response after one message, per_event", "per_event", testhandler.Options{NoResponse: true, EndStreams: true}},
		{"no response, long_lived", "long_lived", testhandler.Options{NoResponse: true}},
		{"no response after one message, long_lived", "long_lived", testhandler.Options{NoResponse: true, EndStreams: true}},
		{"SendAndClose after one message, long_lived", "long_lived", testhandler.Options{EndStreams: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := testhandler.StartWith(t, c.served)
			e := startWith(t, options{handler: h, overlapOK: c.streaming == "long_lived"}, func(cfg *config.Config) {
				cfg.Gateway.ExProto.Handler.ServiceName = "ConnectionHandler"
				cfg.Gateway.ExProto.Handler.Streaming = c.streaming
			})
			exercise(t, e, "a")
			d := e.dial()
			d.connect("burst", 0)
			const n = 30
			var burst []byte
			for i := range n {
				f, _ := json.Marshal(Frame{Type: testhandler.Publish, Topic: "b/" + strconv.Itoa(i), Payload: "x"})
				burst = append(burst, f...)
			}
			if _, err := d.conn.Write(burst); err != nil {
				t.Fatal(err)
			}
			for range n {
				d.expect(testhandler.Puback, 0)
			}
		})
	}
}

// TestWrongServiceIsExplainedInEveryMode: a handler that lacks the
// configured service gets the same hint in every mode, and devices are
// closed rather than left waiting.
func TestWrongServiceIsExplainedInEveryMode(t *testing.T) {
	for _, mode := range []string{"per_event", "long_lived"} {
		t.Run(mode, func(t *testing.T) {
			var logs collector
			h := testhandler.StartOnly(t, "127.0.0.1:0", "ConnectionUnaryHandler")
			e := startWith(t, options{handler: h, logs: &logs}, func(c *config.Config) {
				c.Gateway.ExProto.Handler.ServiceName = "ConnectionHandler"
				c.Gateway.ExProto.Handler.Streaming = mode
			})
			c, err := net.Dial("tcp", e.addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			expectClosedRaw(t, c, 5*time.Second)
			waitLog(t, &logs, "it may implement ConnectionUnaryHandler")
			if !strings.Contains(logs.String(), h.Addr) {
				t.Fatalf("log does not name the handler address:\n%s", logs.String())
			}
		})
	}
}

func TestSeveralHandlersPinDevices(t *testing.T) {
	eachHandlerMode(t, testSeveralHandlersPinDevices)
}

func testSeveralHandlersPinDevices(t *testing.T, tr string) {
	h1, h2 := testhandler.Start(t), testhandler.Start(t)
	e := startWith(t, options{handler: h1, transport: tr}, func(c *config.Config) {
		c.Gateway.ExProto.Handler.Address = config.Addresses{"http://" + h1.Addr, "http://" + h2.Addr}
	})
	t.Cleanup(h2.Stop) // before the leak check
	h2.Attach(t, e.g.AdapterAddr().String())
	var conns []net.Conn
	for i := 0; i < 16; i++ {
		c, err := net.Dial("tcp", e.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	waitCount := func(want int) {
		deadline := time.Now().Add(5 * time.Second)
		for len(h1.Conns())+len(h2.Conns()) < want {
			if time.Now().After(deadline) {
				t.Fatalf("handlers saw %d+%d devices, want %d", len(h1.Conns()), len(h2.Conns()), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitCount(16)
	if len(h1.Conns()) == 0 || len(h2.Conns()) == 0 {
		t.Fatalf("devices not spread: %d and %d", len(h1.Conns()), len(h2.Conns()))
	}
	// Every event of a device goes to the handler that saw it created.
	for _, c := range conns {
		_, _ = c.Write([]byte(`{"type":42}`))
	}
	time.Sleep(300 * time.Millisecond)
	for _, h := range []*testhandler.Handler{h1, h2} {
		for _, id := range h.Conns() {
			if evs := h.Events(id); evs[0].Method != "OnSocketCreated" || len(evs) != 2 {
				t.Fatalf("device %s: events %d at one handler, first %s", id, len(evs), evs[0].Method)
			}
		}
	}
	// One handler goes: its devices close, new devices all go to the other.
	n1 := len(h1.Conns())
	h1.Stop()
	time.Sleep(500 * time.Millisecond)
	before := len(h2.Conns())
	for i := 0; i < 6; i++ {
		c, err := net.Dial("tcp", e.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(h2.Conns()) < before+6 {
		if time.Now().After(deadline) {
			t.Fatalf("after handler 1 (%d devices) stopped, handler 2 got %d of 6 new devices", n1, len(h2.Conns())-before)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestListenerOwnHandler(t *testing.T) {
	other := testhandler.Start(t)
	e := start(t, func(c *config.Config) {
		c.Gateway.ExProto.Listeners.UDP = map[string]*config.Listener{"own": {Bind: "127.0.0.1:0",
			Handler: &config.Handler{Address: config.Addresses{"http://" + other.Addr}}}}
	})
	t.Cleanup(other.Stop) // before the leak check
	other.Attach(t, e.g.AdapterAddr().String())
	e.dial() // tcp:default → the gateway's handler
	c, err := net.Dial("udp", e.g.ListenerAddr("udp:own").String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte(`{"type":42}`))
	other.NthConn(t, 0, 5*time.Second)
	if len(e.h.Conns()) != 1 {
		t.Fatalf("the gateway's handler saw %d devices, want only the tcp one", len(e.h.Conns()))
	}
}

func TestHandlerOverTLS(t *testing.T) {
	// The handler serves TLS and requires exgate's client certificate.
	var e *env
	h := testhandler.StartWith(t, testhandler.Options{TLS: handlerTLS(t)})
	e = startWith(t, options{handler: h}, func(c *config.Config) {
		c.Gateway.ExProto.Handler.Address = config.Addresses{"https://" + h.Addr}
		c.Gateway.ExProto.Handler.SSLOptions = &config.ClientTLSOptions{
			Cacertfile: sharedCerts.CAFile, Certfile: sharedCerts.ClientCert, Keyfile: sharedCerts.ClientKey,
			ServerNameIndication: "localhost",
		}
	})
	exercise(t, e, "tls")
}

func TestAdapterOverTLSWithClientCerts(t *testing.T) {
	e := start(t, func(c *config.Config) {
		c.Gateway.ExProto.Server.SSLOptions = &config.TLSOptions{
			Certfile: sharedCerts.ServerCert, Keyfile: sharedCerts.ServerKey, Cacertfile: sharedCerts.CAFile,
			Verify: "verify_peer", FailIfNoPeerCert: true,
		}
	})
	dialAdapter := func(withCert bool) pb.ConnectionAdapterClient {
		tc := &tls.Config{RootCAs: sharedCerts.CAPool, ServerName: "localhost"}
		if withCert {
			tc.Certificates = []tls.Certificate{sharedCerts.Client}
		}
		cc, err := grpc.NewClient(e.g.AdapterAddr().String(), grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return pb.NewConnectionAdapterClient(cc)
	}
	ctx := ctx5(t)
	raw := &pb.RawPublishRequest{Topic: "t", Payload: []byte("x")}
	if _, err := dialAdapter(false).RawPublish(ctx, raw); status.Code(err) != codes.Unavailable {
		t.Fatalf("a handler without a client certificate reached the adapter: %v", err)
	}
	resp, err := dialAdapter(true).RawPublish(ctx, raw)
	if err != nil || resp.Code != pb.ResultCode_SUCCESS {
		t.Fatalf("trusted handler: %v %v", resp, err)
	}
	// A Go handler's client: sdk.WithTLS with the certificate gets in,
	// without it not, and with TLS but no certificate not either.
	withCert := sdk.WithTLS(credentials.NewTLS(&tls.Config{RootCAs: sharedCerts.CAPool, ServerName: "localhost", Certificates: []tls.Certificate{sharedCerts.Client}}))
	if code := e.sdkRawPublish(t, withCert); code != codes.OK {
		t.Fatalf("sdk client with WithTLS and a client certificate: %v", code)
	}
	if code := e.sdkRawPublish(t); code != codes.Unavailable {
		t.Fatalf("sdk client without TLS: %v, want UNAVAILABLE", code)
	}
	if code := e.sdkRawPublish(t, sdk.WithTLS(credentials.NewTLS(&tls.Config{RootCAs: sharedCerts.CAPool, ServerName: "localhost"}))); code != codes.Unavailable {
		t.Fatalf("sdk client with TLS and no client certificate: %v, want UNAVAILABLE", code)
	}
	// The test handler itself can be given the certificate too.
	e.h.AttachTLS(t, e.g.AdapterAddr().String(), &tls.Config{RootCAs: sharedCerts.CAPool, ServerName: "localhost", Certificates: []tls.Certificate{sharedCerts.Client}})
	exercise(t, e, "mtls")
}

func TestRequestSizeLimits(t *testing.T) {
	e := start(t, func(c *config.Config) {
		c.Gateway.ExProto.Handler.MaxRequestBytes = 2048
		c.Gateway.ExProto.Server.MaxRecvMessageSize = 64 << 10
	})
	d := e.dial()
	d.connect("big", 0)
	d.subscribe("big", 0)
	release := e.h.HoldFirstDelivery()
	m := e.mqtt("app")
	for i := 0; i < 6; i++ {
		m.pub("big", 1, false, strings.Repeat("z", 900))
	}
	time.Sleep(300 * time.Millisecond)
	release()
	total := 0
	e.h.WaitFor(t, 5*time.Second, "six messages", func() bool {
		total = 0
		for _, ev := range e.h.Events(d.id) {
			if ev.Method == "OnReceivedMessages" {
				size := 0
				for _, msg := range ev.Messages {
					size += len(msg.Payload)
					total++
				}
				if size > 2048 {
					t.Fatalf("a request carried %d payload bytes, over max_request_bytes 2048", size)
				}
			}
		}
		return total == 6
	})
	// The adapter refuses requests over max_recv_message_size with a gRPC error.
	_, err := e.h.Adapter.Send(ctx5(t), &pb.SendBytesRequest{Conn: d.id, Bytes: make([]byte, 100<<10)})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized Send: %v", err)
	}
}

func TestAdapterHealthAndReflection(t *testing.T) {
	e := start(t, nil)
	cc, err := grpc.NewClient(e.g.AdapterAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := ctx5(t)
	hr, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "emqx.exproto.v1.ConnectionAdapter"})
	if err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", hr, err)
	}
	st, err := rpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range resp.GetListServicesResponse().GetService() {
		found = found || s.Name == "emqx.exproto.v1.ConnectionAdapter"
	}
	if !found {
		t.Fatalf("reflection does not list the adapter: %v", resp)
	}
	_ = st.CloseSend()
}

func TestDeviceOnAdapterPortGetsAHint(t *testing.T) {
	var logs collector
	e := startWith(t, options{logs: &logs}, nil)
	c, err := net.Dial("tcp", e.g.AdapterAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte(`{"type":1,"clientinfo":{"clientid":"lost"}}`))
	expectClosedRaw(t, c, 5*time.Second)
	waitLog(t, &logs, "devices connect to tcp:default "+e.addr())
}

// A ConnectionHandler that never ends its per-event stream is cut off at
// request_timeout; only its device is closed.
func TestStreamNeverEnded(t *testing.T) {
	e := start(t, func(c *config.Config) {
		c.Gateway.ExProto.Handler.ServiceName = "ConnectionHandler"
		c.Gateway.ExProto.Handler.RequestTimeout = 500 * time.Millisecond
	})
	// A flag, not the field, turns the hang off: the handler reads the field
	// in every callback, OnSocketClosed of the hung device too.
	var hang atomic.Bool
	hang.Store(true)
	e.h.Hang = func(m string) bool { return m == "OnReceivedBytes" && hang.Load() }
	stuck, fine := e.dial(), e.dial()
	stuck.send(Frame{Type: 42})
	if r := e.h.WaitClosed(t, stuck.id, 5*time.Second); r != "{shutdown,{error,{on_received_bytes,deadline_exceeded}}}" {
		t.Fatalf("reason %q", r)
	}
	hang.Store(false)
	fine.connect("fine", 0)
}

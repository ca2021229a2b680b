package e2e

import (
	"context"
	"testing"
	"time"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/testhandler"
)

func TestKeepalive(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		e := startOn(t, tr, nil)
		// Silent device: OnTimerTimeout after ~1.5 × 1 s, then closed by the gateway.
		d := e.dial()
		d.connect("ka", 1)
		begin := time.Now()
		reason := e.h.WaitClosed(t, d.id, 5*time.Second)
		took := time.Since(begin)
		if reason != "{shutdown,keepalive_timeout}" {
			t.Fatalf("reason %q", reason)
		}
		if took < 1300*time.Millisecond || took > 5*time.Second { // upper bound generous: CI is loaded
			t.Fatalf("keepalive fired after %v, want about 1.5 s", took)
		}
		ms := e.methods(d.id)
		if len(ms) < 2 || ms[len(ms)-2] != "OnTimerTimeout" || ms[len(ms)-1] != "OnSocketClosed" {
			t.Fatalf("events %v, want … OnTimerTimeout, OnSocketClosed", ms)
		}
		d.expectEOF(time.Second)

		// Socket data keeps it alive; Send from the gateway does not count.
		// A beat every 250 ms for 3 s (twice the 1.5 s window): the gap
		// between two beats is 250 ms plus the previous beat's round trip,
		// which under -race beside the whole suite once took over a second.
		d2 := e.dial()
		d2.connect("ka2", 1)
		for i := 0; i < 12; i++ {
			time.Sleep(250 * time.Millisecond)
			sent := time.Now()
			d2.send(Frame{Type: testhandler.Publish, Topic: "x", Payload: "beat"})
			if f := d2.recv(); f.Type != testhandler.Puback || f.RC != nil && *f.RC != 0 {
				reason, closed := e.h.Closed(d2.id)
				t.Fatalf("beat %d: %+v after %v (closed %v: %q)", i, f, time.Since(sent), closed, reason)
			}
		}
		if _, closed := e.h.Closed(d2.id); closed {
			t.Fatal("active device was closed by keepalive")
		}
		ctx := ctx5(t)
		begin = time.Now()
		for time.Since(begin) < 2500*time.Millisecond {
			if _, closed := e.h.Closed(d2.id); closed {
				break
			}
			_, _ = e.h.Adapter.Send(ctx, &pb.SendBytesRequest{Conn: d2.id, Bytes: []byte("{}")})
			time.Sleep(100 * time.Millisecond)
		}
		if r := e.h.WaitClosed(t, d2.id, 3*time.Second); r != "{shutdown,keepalive_timeout}" {
			t.Fatalf("reason %q", r)
		}
	})
}

func TestIdleTimeout(t *testing.T) {
	e := start(t, func(c *config.Config) { c.Gateway.ExProto.IdleTimeout = 500 * time.Millisecond })
	silent := e.dial()
	talker := e.dial()
	talker.send(Frame{Type: 42}) // any byte ends the idle rule
	begin := time.Now()
	if r := e.h.WaitClosed(t, silent.id, 3*time.Second); r != "{shutdown,idle_timeout}" {
		t.Fatalf("reason %q", r)
	}
	if took := time.Since(begin); took > 3*time.Second {
		t.Fatalf("idle close took %v", took)
	}
	silent.expectEOF(time.Second)
	time.Sleep(700 * time.Millisecond)
	if _, closed := e.h.Closed(talker.id); closed {
		t.Fatal("device that sent a byte was closed by idle_timeout")
	}
}

func TestReentrantCallsInsideOnSocketCreated(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		e := startOn(t, tr, nil)
		results := make(chan []pb.ResultCode, 1)
		e.h.OnCreated = func(ctx context.Context, conn string) {
			a := e.h.Adapter
			var codes []pb.ResultCode
			r1, _ := a.Authenticate(ctx, &pb.AuthenticateRequest{Conn: conn, Clientinfo: &pb.ClientInfo{Clientid: "inside"}})
			r2, _ := a.Subscribe(ctx, &pb.SubscribeRequest{Conn: conn, Topic: "in/#", Qos: 1})
			r3, _ := a.StartTimer(ctx, &pb.TimerRequest{Conn: conn, Interval: 30})
			r4, _ := a.Send(ctx, &pb.SendBytesRequest{Conn: conn, Bytes: []byte(`{"type":2,"code":0}`)})
			r5, _ := a.Publish(ctx, &pb.PublishRequest{Conn: conn, Topic: "in/self", Qos: 1, Payload: []byte("me")})
			codes = append(codes, r1.GetCode(), r2.GetCode(), r3.GetCode(), r4.GetCode(), r5.GetCode())
			results <- codes
		}
		d := e.dial()
		select {
		case codes := <-results:
			for i, c := range codes {
				if c != pb.ResultCode_SUCCESS {
					t.Fatalf("call %d inside OnSocketCreated: %v", i, c)
				}
			}
		case <-time.After(5 * time.Second):
			t.Fatal("adapter calls inside OnSocketCreated deadlocked")
		}
		d.expect(testhandler.Connack, 0)
		f := d.expect(testhandler.Publish, 0)
		if f.Topic != "in/self" {
			t.Fatalf("got %+v", f)
		}
	})
}

func TestBytesOneEventPerReadAndSendVerbatim(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		e := startOn(t, tr, nil)
		d := e.dial()
		chunks := []string{`{"type":`, `42}`, `{"ty`, `pe":42}{"type":42}`}
		for _, c := range chunks {
			if _, err := d.conn.Write([]byte(c)); err != nil {
				t.Fatal(err)
			}
			want := c
			e.h.WaitFor(t, 5*time.Second, "bytes "+c, func() bool {
				evs := e.h.Events(d.id)
				return string(evs[len(evs)-1].Bytes) == want
			})
		}
		var got []string
		for _, ev := range e.h.Events(d.id) {
			if ev.Method == "OnReceivedBytes" {
				got = append(got, string(ev.Bytes))
			}
		}
		if e.tr == "udp" {
			got = got[1:] // the datagram that created the UDP connection
		}
		if len(got) != len(chunks) {
			t.Fatalf("OnReceivedBytes %q, want one per write %q", got, chunks)
		}
		payload := []byte{0, 1, 2, 0xff, '\n', 'x'}
		resp, err := e.h.Adapter.Send(ctx5(t), &pb.SendBytesRequest{Conn: d.id, Bytes: payload})
		if err != nil || resp.Code != pb.ResultCode_SUCCESS {
			t.Fatal(resp, err)
		}
		buf := make([]byte, len(payload))
		_ = d.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := d.conn.Read(buf); err != nil || string(buf) != string(payload) {
			t.Fatalf("device got %v %v", buf, err)
		}
	})
}

func TestDeviceCloseReason(t *testing.T) {
	e := start(t, nil)
	d := e.dial()
	d.connect("bye", 0)
	_ = d.conn.Close()
	if r := e.h.WaitClosed(t, d.id, 5*time.Second); r != "{shutdown,tcp_closed}" {
		t.Fatalf("reason %q", r)
	}
}

// TestAuthTimeout: with the opt-in auth_timeout, a device that talks but
// never authenticates is closed with {shutdown,auth_timeout}; one that
// authenticated in time stays.
func TestAuthTimeout(t *testing.T) {
	e := start(t, func(c *config.Config) { c.Gateway.ExProto.AuthTimeout = 400 * time.Millisecond })
	idle := e.dial()
	idle.send(Frame{Type: 42}) // bytes, but no Authenticate: the idle rule alone would keep it
	good := e.dial()
	good.connect("in-time", 0)
	if r := e.h.WaitClosed(t, idle.id, 5*time.Second); r != "{shutdown,auth_timeout}" {
		t.Fatalf("unauthenticated device closed with %q", r)
	}
	time.Sleep(200 * time.Millisecond)
	if r, closed := e.h.Closed(good.id); closed {
		t.Fatalf("an authenticated device was closed: %q", r)
	}
	good.subscribe("still/here", 0)
}

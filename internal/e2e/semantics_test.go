package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/testhandler"
)

func ctx5(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestMountpoint(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		e := startOn(t, tr, func(c *config.Config) { c.Gateway.ExProto.Mountpoint = "ct/${clientid}/" })
		d := e.dial()
		d.connect("dev1", 0)
		d.subscribe("down/+", 0)
		m := e.mqtt("app")
		m.sub("#", 0)

		// Publish is mounted; RawPublish is not.
		d.send(Frame{Type: testhandler.Publish, Topic: "up", Payload: "a"})
		d.expect(testhandler.Puback, 0)
		m.expect("ct/dev1/up", "a")
		d.send(Frame{Type: testhandler.RawPublish, Topic: "raw/t", Payload: "r"})
		d.expect(testhandler.Puback, 0)
		m.expect("raw/t", "r")

		// Deliveries are unmounted; other clients' topics outside the mountpoint do not match.
		m.pub("down/x", 0, false, "no")
		m.pub("ct/dev1/down/x", 0, false, "yes")
		f := d.expect(testhandler.Publish, 0)
		if f.Topic != "down/x" || f.Payload != "yes" {
			t.Fatalf("device got %+v, want unmounted down/x yes", f)
		}
		m.expect("down/x", "no")
		m.expect("ct/dev1/down/x", "yes")

		// Shared subscriptions work with a mountpoint (EMQX 5.4+ crashed).
		d.subscribe("$share/g/shared/t", 1)
		m.pub("ct/dev1/shared/t", 1, false, "s")
		m.expect("ct/dev1/shared/t", "s")
		f = d.expect(testhandler.Publish, 0)
		if f.Topic != "shared/t" || f.Payload != "s" {
			t.Fatalf("shared delivery %+v", f)
		}
	})
}

func TestRawPublishFromExprotoAndRetained(t *testing.T) {
	eachMode(t, func(t *testing.T, tr string) {
		e := startOn(t, tr, nil)
		m := e.mqtt("app")
		// A broker may acknowledge a publish before it routes it (mochi
		// does): a device subscribing meanwhile gets the live copy beside
		// the retained one. The watcher's copy says the routing is over.
		w := e.mqtt("watcher")
		w.sub("state/#", 0)
		m.pub("state/lamp", 1, true, "on")
		w.expect("state/lamp", "on")

		d := e.dial()
		d.connect("dev1", 0)
		d.subscribe("state/#", 1)
		f := d.expect(testhandler.Publish, 0)
		wantFrom := "app"
		if e.external() {
			wantFrom = "" // MQTT has no publisher id
		}
		if f.Topic != "state/lamp" || f.Payload != "on" || f.Extra["from"] != wantFrom {
			t.Fatalf("retained delivery %+v", f)
		}

		d.send(Frame{Type: testhandler.RawPublish, Topic: "state/raw", QoS: 1, Payload: "x"})
		d.expect(testhandler.Puback, 0)
		f = d.expect(testhandler.Publish, 0)
		if f.Topic != "state/raw" || f.Extra["from"] != "exproto" {
			t.Fatalf("raw delivery %+v, want from exproto", f)
		}
	})
}

func TestTakeover(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		e := startOn(t, tr, nil)
		a := e.dial()
		a.connect("same", 0)
		b := e.dial()
		b.connect("same", 0)
		if r := e.h.WaitClosed(t, a.id, 5*time.Second); r != "{shutdown,discarded}" {
			t.Fatalf("taken-over device closed with %q", r)
		}
		a.expectEOF(2 * time.Second)

		// An MQTT client with the same clientid takes the device over (one namespace) …
		m := e.mqtt("same")
		if r := e.h.WaitClosed(t, b.id, 5*time.Second); r != "{shutdown,discarded}" {
			t.Fatalf("device taken over by MQTT client closed with %q", r)
		}
		// … and a device takes an MQTT client over.
		c := e.dial()
		c.connect("same", 0)
		select {
		case <-m.lost:
		case <-time.After(5 * time.Second):
			t.Fatal("MQTT client with the same clientid was not disconnected")
		}
		// The winner works.
		c.subscribe("t", 0)
		m2 := e.mqtt("other")
		m2.pub("t", 0, false, "p")
		c.expect(testhandler.Publish, 0)
	})
}

func TestAuthenticate(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		e := startOn(t, tr, func(c *config.Config) {
			c.Gateway.ExProto.Authentication = aliceOnly()
		})
		// Wrong password: CONNACK 1 (PERMISSION_DENY), then the demo handler closes.
		d := e.dial()
		d.send(Frame{Type: testhandler.Connect, ClientInfo: &testhandler.ClientInfo{ClientID: "c1", Username: "alice"}, Password: "wrong"})
		d.expect(testhandler.Connack, int(pb.ResultCode_PERMISSION_DENY))
		if r := e.h.WaitClosed(t, d.id, 5*time.Second); r != "{shutdown,normal}" {
			t.Fatalf("reason %q", r)
		}

		// A failed Authenticate leaves the socket open: the handler may try again.
		d2 := e.dial()
		ctx := ctx5(t)
		ci := &pb.ClientInfo{Clientid: "c2", Username: "alice"}
		resp, err := e.h.Adapter.Authenticate(ctx, &pb.AuthenticateRequest{Conn: d2.id, Clientinfo: ci, Password: "nope"})
		if err != nil || resp.Code != pb.ResultCode_PERMISSION_DENY {
			t.Fatalf("bad password: %v %v", resp, err)
		}
		resp, err = e.h.Adapter.Send(ctx, &pb.SendBytesRequest{Conn: d2.id, Bytes: []byte("still here")})
		if err != nil || resp.Code != pb.ResultCode_SUCCESS {
			t.Fatalf("send after failed auth: %v %v", resp, err)
		}
		buf := make([]byte, 10)
		_ = d2.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := d2.conn.Read(buf); err != nil || string(buf) != "still here" {
			t.Fatalf("device read %q %v", buf, err)
		}
		resp, err = e.h.Adapter.Authenticate(ctx, &pb.AuthenticateRequest{Conn: d2.id, Clientinfo: ci, Password: "secret"})
		if err != nil || resp.Code != pb.ResultCode_SUCCESS {
			t.Fatalf("good password: %v %v", resp, err)
		}
		// Duplicated authenticate.
		resp, err = e.h.Adapter.Authenticate(ctx, &pb.AuthenticateRequest{Conn: d2.id, Clientinfo: ci, Password: "secret"})
		if err != nil || resp.Code != pb.ResultCode_PERMISSION_DENY || !strings.Contains(resp.Message, "Duplicated") {
			t.Fatalf("duplicated authenticate: %v %v", resp, err)
		}
		// The embedded broker's MQTT clients use the same authenticator.
		if e.g.Stats.AuthFailed.Load() < 2 {
			t.Fatalf("auth failures counted %d", e.g.Stats.AuthFailed.Load())
		}
	})
}

// TestFailedLoginIsLogged: a refused Authenticate is a warning with the
// clientid, username and peer (EMQX's client_login_failed), never the
// password, and it is counted.
func TestFailedLoginIsLogged(t *testing.T) {
	var logs collector
	e := startWith(t, options{logs: &logs}, func(c *config.Config) {
		c.Gateway.ExProto.Authentication = aliceOnly()
	})
	d := e.dial()
	d.send(Frame{Type: testhandler.Connect, ClientInfo: &testhandler.ClientInfo{ClientID: "c1", Username: "alice"}, Password: "s3cret-wrong"})
	d.expect(testhandler.Connack, int(pb.ResultCode_PERMISSION_DENY))
	waitLog(t, &logs, "client_login_failed")
	var line string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "client_login_failed") {
			line = l
		}
	}
	for _, want := range []string{"level=WARN", "clientid=c1", "username=alice", "peer=127.0.0.1:"} {
		if !strings.Contains(line, want) {
			t.Errorf("login failure line lacks %q: %s", want, line)
		}
	}
	if strings.Contains(logs.String(), "s3cret-wrong") {
		t.Fatal("the password is in the log")
	}
	if n := e.g.Stats.AuthFailed.Load(); n != 1 {
		t.Fatalf("auth failures counted: %d", n)
	}
}

func TestListenerEnableAuthnFalse(t *testing.T) {
	e := start(t, func(c *config.Config) {
		c.Gateway.ExProto.Authentication = []config.Authenticator{{Mechanism: "password_based", Backend: "built_in_database"}}
		off := false
		c.Gateway.ExProto.Listeners.TCP["default"].EnableAuthn = &off
	})
	d := e.dial()
	d.connect("anyone", 0)
}

func TestAuthorizationDenyThenAllow(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		e := startOn(t, tr, func(c *config.Config) {
			c.Gateway.ExProto.Authorization = config.Authorization{NoMatch: "allow", Rules: []config.Rule{
				{Permission: "deny", Action: "all", Topics: []string{"secret/#"}},
				{Permission: "deny", Action: "publish", Topics: []string{"eq ro/+"}},
			}}
		})
		d := e.dial()
		d.connect("dev", 0)
		d.send(Frame{Type: testhandler.Subscribe, Topic: "secret/x", QoS: 1})
		d.expect(testhandler.Suback, int(pb.ResultCode_PERMISSION_DENY))
		d.send(Frame{Type: testhandler.Publish, Topic: "secret/x", QoS: 1, Payload: "p"})
		d.expect(testhandler.Puback, int(pb.ResultCode_PERMISSION_DENY))
		d.send(Frame{Type: testhandler.Publish, Topic: "ro/+x", QoS: 0, Payload: "p"}) // invalid topic: UNKNOWN
		d.expect(testhandler.Puback, int(pb.ResultCode_UNKNOWN))
		d.subscribe("ro/+", 0) // subscribe allowed, publish literally to "ro/+" would be denied
		// Allowed again afterwards.
		d.subscribe("open/x", 1)
		d.send(Frame{Type: testhandler.Publish, Topic: "open/x", QoS: 1, Payload: "p"})
		d.expect(testhandler.Puback, 0)
		d.expect(testhandler.Publish, 0)
		if e.g.Stats.AuthzDenied.Load() != 2 {
			t.Fatalf("authz denials counted %d, want 2", e.g.Stats.AuthzDenied.Load())
		}
	})
}

// TestResultCodes walks every row of the spec's result-code table.
func TestResultCodes(t *testing.T) {
	eachModeAndNative(t, func(t *testing.T, tr string) {
		e := startOn(t, tr, func(c *config.Config) {
			c.Gateway.ExProto.Authorization = config.Authorization{NoMatch: "allow", Rules: []config.Rule{
				{Permission: "deny", Action: "all", Topics: []string{"deny/#"}},
			}}
		})
		ctx := ctx5(t)
		d := e.dial()
		a := e.adapter()
		closed := e.dial()
		closed.send(Frame{Type: testhandler.Disconnect})
		e.h.WaitClosed(t, closed.id, 5*time.Second)
		const wellFormedUnknown = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

		type call func(conn string) (*pb.CodeResponse, error)
		pub := func(topic string, qos uint32) call {
			return func(c string) (*pb.CodeResponse, error) {
				return a.Publish(ctx, &pb.PublishRequest{Conn: c, Topic: topic, Qos: qos, Payload: []byte("x")})
			}
		}
		sub := func(topic string, qos uint32) call {
			return func(c string) (*pb.CodeResponse, error) {
				return a.Subscribe(ctx, &pb.SubscribeRequest{Conn: c, Topic: topic, Qos: qos})
			}
		}
		unsub := func(topic string) call {
			return func(c string) (*pb.CodeResponse, error) {
				return a.Unsubscribe(ctx, &pb.UnsubscribeRequest{Conn: c, Topic: topic})
			}
		}
		send := func(c string) (*pb.CodeResponse, error) {
			return a.Send(ctx, &pb.SendBytesRequest{Conn: c, Bytes: []byte("b")})
		}
		timer := func(typ pb.TimerType, iv uint32) call {
			return func(c string) (*pb.CodeResponse, error) {
				return a.StartTimer(ctx, &pb.TimerRequest{Conn: c, Type: typ, Interval: iv})
			}
		}
		authn := func(c string) (*pb.CodeResponse, error) {
			return a.Authenticate(ctx, &pb.AuthenticateRequest{Conn: c, Clientinfo: &pb.ClientInfo{Clientid: "rc"}})
		}
		closeCall := func(c string) (*pb.CodeResponse, error) {
			return a.Close(ctx, &pb.CloseSocketRequest{Conn: c})
		}
		check := func(name, conn string, f call, want pb.ResultCode) {
			t.Helper()
			resp, err := f(conn)
			if err != nil {
				t.Fatalf("%s: gRPC error %v", name, err)
			}
			if resp.Code != want {
				t.Errorf("%s: code %v (%q), want %v", name, resp.Code, resp.Message, want)
			}
		}

		// Before Authenticate: pub/sub are UNKNOWN; Send and StartTimer work.
		check("publish before auth", d.id, pub("t", 0), pb.ResultCode_UNKNOWN)
		check("subscribe before auth", d.id, sub("t", 0), pb.ResultCode_UNKNOWN)
		check("unsubscribe before auth", d.id, unsub("t"), pb.ResultCode_UNKNOWN)
		check("send before auth", d.id, send, pb.ResultCode_SUCCESS)
		check("timer before auth", d.id, timer(pb.TimerType_KEEPALIVE, 60), pb.ResultCode_SUCCESS)

		check("authenticate", d.id, authn, pb.ResultCode_SUCCESS)
		check("duplicated authenticate", d.id, authn, pb.ResultCode_PERMISSION_DENY)
		check("publish", d.id, pub("t", 2), pb.ResultCode_SUCCESS)
		check("publish no subscribers", d.id, pub("nobody/listens", 1), pb.ResultCode_SUCCESS)
		check("publish bad qos", d.id, pub("t", 3), pb.ResultCode_UNKNOWN)
		check("publish wildcard topic", d.id, pub("t/#", 0), pb.ResultCode_UNKNOWN)
		check("publish denied", d.id, pub("deny/x", 0), pb.ResultCode_PERMISSION_DENY)
		check("subscribe", d.id, sub("t/#", 1), pb.ResultCode_SUCCESS)
		check("subscribe again updates qos", d.id, sub("t/#", 2), pb.ResultCode_SUCCESS)
		check("subscribe bad qos", d.id, sub("t", 3), pb.ResultCode_UNKNOWN)
		check("subscribe bad filter", d.id, sub("a/#/b", 0), pb.ResultCode_UNKNOWN)
		check("subscribe denied", d.id, sub("deny/#", 0), pb.ResultCode_PERMISSION_DENY)
		check("unsubscribe", d.id, unsub("t/#"), pb.ResultCode_SUCCESS)
		check("unsubscribe unknown filter", d.id, unsub("never/subscribed"), pb.ResultCode_SUCCESS)
		check("timer bad type", d.id, timer(pb.TimerType(7), 60), pb.ResultCode_UNKNOWN)
		check("timer interval 0", d.id, timer(pb.TimerType_KEEPALIVE, 0), pb.ResultCode_UNKNOWN)
		check("timer interval beyond 65535 s", d.id, timer(pb.TimerType_KEEPALIVE, 3_074_457_346), pb.ResultCode_PARAMS_TYPE_ERROR)
		check("timer interval 65535 s", d.id, timer(pb.TimerType_KEEPALIVE, 65535), pb.ResultCode_SUCCESS)
		check("publish to $SYS", d.id, pub("$SYS/x", 0), pb.ResultCode_PERMISSION_DENY)
		check("publish to $sys", d.id, pub("$sys/broker/clients", 1), pb.ResultCode_PERMISSION_DENY)
		check("empty send", d.id, func(c string) (*pb.CodeResponse, error) {
			return a.Send(ctx, &pb.SendBytesRequest{Conn: c})
		}, pb.ResultCode_SUCCESS)

		for _, bad := range []struct{ name, conn string }{
			{"empty conn", ""}, {"malformed conn", "not-a-conn-id"}, {"too long conn", wellFormedUnknown + "A"},
		} {
			for name, f := range map[string]call{"send": send, "close": closeCall, "authenticate": authn, "publish": pub("t", 0), "subscribe": sub("t", 0), "unsubscribe": unsub("t"), "timer": timer(0, 5)} {
				check(bad.name+" "+name, bad.conn, f, pb.ResultCode_UNKNOWN)
			}
		}
		for _, gone := range []struct{ name, conn string }{{"unknown conn", wellFormedUnknown}, {"closed conn", closed.id}} {
			for name, f := range map[string]call{"send": send, "close": closeCall, "publish": pub("t", 0), "subscribe": sub("t", 0), "unsubscribe": unsub("t"), "timer": timer(0, 5)} {
				check(gone.name+" "+name, gone.conn, f, pb.ResultCode_CONN_PROCESS_NOT_ALIVE)
			}
		}
		check("authenticate unknown conn", wellFormedUnknown, authn, pb.ResultCode_CONN_PROCESS_NOT_ALIVE)

		// RawPublish needs no conn.
		raw := func(topic string, qos uint32) (*pb.CodeResponse, error) {
			return a.RawPublish(ctx, &pb.RawPublishRequest{Topic: topic, Qos: qos, Payload: []byte("r")})
		}
		for _, c := range []struct {
			topic string
			qos   uint32
			want  pb.ResultCode
		}{{"raw/t", 0, pb.ResultCode_SUCCESS}, {"deny/raw", 2, pb.ResultCode_SUCCESS}, {"raw/t", 3, pb.ResultCode_UNKNOWN}, {"raw/#", 0, pb.ResultCode_UNKNOWN}, {"", 0, pb.ResultCode_UNKNOWN}, {"$SYS/x", 0, pb.ResultCode_PERMISSION_DENY}} {
			resp, err := raw(c.topic, c.qos)
			if err != nil || resp.Code != c.want {
				t.Errorf("raw publish %q qos %d: %v %v, want %v", c.topic, c.qos, resp, err, c.want)
			}
		}

		// Close works before … and the socket is gone after.
		check("close", d.id, closeCall, pb.ResultCode_SUCCESS)
		d.expectEOF(2 * time.Second)
	})
}

// Devices coming and going are visible at info level, as EMQX's
// client.connected and client.disconnected: clientid, peer and listener
// when one connects, the reason when it leaves.
func TestLifecycleLoggedAtInfo(t *testing.T) {
	var logs collector
	e := startWith(t, options{logs: &logs}, nil)
	d := e.dial()
	d.connect("life-1", 0)
	d.send(Frame{Type: testhandler.Disconnect})
	e.h.WaitClosed(t, d.id, 5*time.Second)
	waitLog(t, &logs, "client disconnected")
	var connected, disconnected string
	for _, l := range strings.Split(logs.String(), "\n") {
		switch {
		case strings.Contains(l, "client connected"):
			connected = l
		case strings.Contains(l, "client disconnected"):
			disconnected = l
		}
	}
	for _, want := range []string{"level=INFO", "clientid=life-1", "peer=127.0.0.1:", "listener=tcp:default", "conn=" + d.id} {
		if !strings.Contains(connected, want) {
			t.Errorf("connected line lacks %q: %s", want, connected)
		}
	}
	for _, want := range []string{"level=INFO", "clientid=life-1", "reason={shutdown,normal}"} {
		if !strings.Contains(disconnected, want) {
			t.Errorf("disconnected line lacks %q: %s", want, disconnected)
		}
	}
}

// aliceOnly is a built-in user database with one user, alice, whose
// password is "secret".
func aliceOnly() []config.Authenticator {
	return []config.Authenticator{{
		Mechanism: "password_based", Backend: "built_in_database",
		Users: []config.User{{UserID: "alice", Password: "sha256:salt:bede90386d450cea8b77b822f8887065e4e5abf132c2f9dccfcc7fbd4cba5e35"}},
	}}
}

package handlertest_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"go.uber.org/goleak"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/sdk"
	"github.com/exgate/exgate/sdk/handlertest"
)

// probe checks the typed errors from inside the callbacks, as a real
// handler would see them.
type probe struct {
	results chan error
}

func (p probe) OnSocketCreated(ctx context.Context, c *sdk.Conn[int]) error {
	c.State = 42 // the typed state slot
	return nil
}

func (p probe) OnReceivedBytes(ctx context.Context, c *sdk.Conn[int], b []byte) error {
	if c.State != 42 {
		p.results <- errors.New("state slot lost")
		return nil
	}
	p.results <- c.Publish(ctx, "t", 0, b)                                  // before Authenticate: ErrUnknown
	p.results <- c.Authenticate(ctx, sdk.ClientInfo{ClientID: "probe"}, "") // nil
	p.results <- c.Authenticate(ctx, sdk.ClientInfo{ClientID: "probe"}, "") // ErrDenied
	p.results <- c.Subscribe(ctx, "a/#/b", 0)                               // ErrUnknown: bad filter
	p.results <- c.Close(ctx)                                               // nil
	p.results <- c.Send(ctx, []byte("late"))                                // ErrNotAlive
	return nil
}

func (probe) OnTimerTimeout(context.Context, *sdk.Conn[int]) error { return nil }
func (probe) OnReceivedMessages(context.Context, *sdk.Conn[int], []*pb.Message) error {
	return nil
}
func (probe) OnSocketClosed(context.Context, *sdk.Conn[int], string) error { return nil }

func TestTypedErrors(t *testing.T) {
	for _, service := range []string{"ConnectionUnaryHandler", "ConnectionHandler", config.Native} {
		t.Run(service, func(t *testing.T) {
			leaks := goleak.IgnoreCurrent()
			t.Cleanup(func() { goleak.VerifyNone(t, leaks) }) // after the harness's own cleanup
			p := probe{results: make(chan error, 10)}
			func() {
				h := handlertest.New(t, p, func(c *config.Config) { c.Gateway.ExProto.Handler.ServiceName = service })
				dev := h.Dial()
				dev.Write([]byte("x"))
				for i, want := range []error{sdk.ErrUnknown, nil, sdk.ErrDenied, sdk.ErrUnknown, nil, sdk.ErrNotAlive} {
					got := <-p.results
					if (want == nil) != (got == nil) || (want != nil && !errors.Is(got, want)) {
						t.Fatalf("call %d: %v, want %v", i, got, want)
					}
				}
				dev.ExpectClosed()
			}()
		})
	}
}

func TestRawPublish(t *testing.T) {
	h := handlertest.New(t, probe{results: make(chan error, 10)})
	if err := h.Client.RawPublish(context.Background(), "raw/t", 1, []byte("r")); err != nil {
		t.Fatal(err)
	}
	h.ExpectPublish("raw/t", []byte("r"))
	if err := h.Client.RawPublish(context.Background(), "raw/#", 0, nil); !errors.Is(err, sdk.ErrUnknown) {
		t.Fatalf("raw publish to a filter: %v", err)
	}
}

// echoNoWait echoes with SendNoWait; after "bye" it closes the device and
// sends once more, reporting what that late send returned.
type echoNoWait struct{ late chan error }

// OnSocketCreated greets the device from a goroutine of its own, with the
// callback's context (its values, not its end) but after the callback
// returned: no Done follows to carry it, so a NoWait send goes at once.
func (echoNoWait) OnSocketCreated(ctx context.Context, c *sdk.Conn[int]) error {
	ctx = context.WithoutCancel(ctx)
	go func() {
		time.Sleep(20 * time.Millisecond)
		_ = c.SendNoWait(ctx, []byte("hi"))
	}()
	return nil
}
func (e echoNoWait) OnReceivedBytes(ctx context.Context, c *sdk.Conn[int], b []byte) error {
	if string(b) == "bye" {
		if err := c.Close(ctx); err != nil {
			return err
		}
		e.late <- c.SendNoWait(ctx, []byte("late"))
		return nil
	}
	return c.SendNoWait(ctx, b)
}
func (echoNoWait) OnTimerTimeout(context.Context, *sdk.Conn[int]) error { return nil }
func (echoNoWait) OnReceivedMessages(context.Context, *sdk.Conn[int], []*pb.Message) error {
	return nil
}
func (echoNoWait) OnSocketClosed(context.Context, *sdk.Conn[int], string) error { return nil }

// SendNoWait delivers in order in both modes, from a callback (with its
// Done) and from elsewhere (at once). Over the native stream it
// does not wait for the gateway's answer, so a send to a closed device
// returns nil there and the gateway counts the failure it could not
// report; over the EMQX adapter it waits, and the same send fails.
func TestSendNoWait(t *testing.T) {
	for _, mode := range []handlertest.Option{nil, handlertest.Native} {
		native := mode != nil
		t.Run(map[bool]string{false: "unary", true: "native"}[native], func(t *testing.T) {
			e := echoNoWait{late: make(chan error, 1)}
			h := handlertest.New(t, e, mode)
			dev := h.Dial()
			dev.Expect([]byte("hi")) // no event of the device's carries it
			for _, s := range []string{"one", "two", "three"} {
				dev.Write([]byte(s))
				dev.Expect([]byte(s))
			}
			dev.Write([]byte("bye"))
			dev.ExpectClosed()
			err := <-e.late
			if native {
				if err != nil {
					t.Fatalf("SendNoWait over the native stream waited: %v", err)
				}
				deadline := time.Now().Add(5 * time.Second)
				for h.Gateway.Stats.NativeUnanswered.Load() != 1 {
					if time.Now().After(deadline) {
						t.Fatalf("the gateway counted %d unanswered failures, want 1", h.Gateway.Stats.NativeUnanswered.Load())
					}
					time.Sleep(5 * time.Millisecond)
				}
			} else if !errors.Is(err, sdk.ErrNotAlive) {
				t.Fatalf("SendNoWait over the adapter to a closed device: %v, want ErrNotAlive", err)
			}
		})
	}
}

// session subscribes its device, forwards what reaches it, unsubscribes
// on "unsub", and reports its keepalive timer's end.
type session struct{ timeouts chan string }

func (session) OnSocketCreated(context.Context, *sdk.Conn[int]) error { return nil }
func (session) OnReceivedBytes(ctx context.Context, c *sdk.Conn[int], b []byte) error {
	switch string(b) {
	case "hello":
		if err := c.Authenticate(ctx, sdk.ClientInfo{ClientID: "kept"}, ""); err != nil {
			return err
		}
		if err := c.Subscribe(ctx, "down/#", 1); err != nil {
			return err
		}
		if err := c.StartKeepalive(ctx, 1); err != nil {
			return err
		}
		return c.Send(ctx, []byte("welcome"))
	case "unsub":
		if err := c.Unsubscribe(ctx, "down/#"); err != nil {
			return err
		}
		return c.Send(ctx, []byte("unsubscribed"))
	}
	return nil
}
func (session) OnReceivedMessages(ctx context.Context, c *sdk.Conn[int], ms []*pb.Message) error {
	for _, m := range ms {
		if err := c.Send(ctx, m.Payload); err != nil {
			return err
		}
	}
	return nil
}
func (s session) OnTimerTimeout(_ context.Context, c *sdk.Conn[int]) error {
	s.timeouts <- c.ID
	return nil
}
func (session) OnSocketClosed(context.Context, *sdk.Conn[int], string) error { return nil }

// A handler's deliveries, Unsubscribe and keepalive timer work the same
// over each service the SDK serves: a message published to the device's
// filter reaches it, none after Unsubscribe, and a device that stays
// silent past its keepalive is reported with OnTimerTimeout, then closed
// by the gateway (as EMQX does).
func TestSessionInEachService(t *testing.T) {
	for _, service := range []string{"ConnectionUnaryHandler", "ConnectionHandler", config.Native} {
		t.Run(service, func(t *testing.T) {
			s := session{timeouts: make(chan string, 1)}
			h := handlertest.New(t, s, func(c *config.Config) { c.Gateway.ExProto.Handler.ServiceName = service })
			dev := h.Dial()
			dev.Write([]byte("hello"))
			dev.Expect([]byte("welcome"))
			h.Publish("down/1", []byte("m1"))
			dev.Expect([]byte("m1"))
			dev.Write([]byte("unsub"))
			dev.Expect([]byte("unsubscribed"))
			h.Publish("down/1", []byte("m2"))
			begin := time.Now()
			select {
			case <-s.timeouts:
			case <-time.After(h.Timeout):
				t.Fatal("no OnTimerTimeout for a device silent past its keepalive")
			}
			if d := time.Since(begin); d < 500*time.Millisecond {
				t.Fatalf("the keepalive of 1 s ran out after %v of silence", d)
			}
			_ = dev.SetReadDeadline(time.Now().Add(h.Timeout))
			if rest, err := io.ReadAll(dev.Conn); err != nil || len(rest) != 0 {
				t.Fatalf("after Unsubscribe the device read %q before its close (%v), want nothing", rest, err)
			}
		})
	}
}

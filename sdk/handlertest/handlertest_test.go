package handlertest_test

import (
	"context"
	"errors"
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

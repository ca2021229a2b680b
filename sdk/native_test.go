package sdk_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/sdk"
	"github.com/exgate/exgate/sdk/handlertest"
)

// gate echoes what a device sends (without waiting for the gateway, so the
// native stream's reader runs the callback itself), but a callback that
// receives "block" first waits until release closes, and one that receives
// "all" first waits until n callbacks are in at once.
type gate struct {
	release chan struct{}
	in      atomic.Int32
	n       int32
	all     chan struct{} // closed when n are in
}

func (g *gate) OnSocketCreated(context.Context, *sdk.Conn[int]) error { return nil }

func (g *gate) OnReceivedBytes(ctx context.Context, c *sdk.Conn[int], b []byte) error {
	switch string(b) {
	case "block":
		<-g.release
	case "all":
		if g.in.Add(1) == g.n {
			close(g.all)
		}
		select {
		case <-g.all:
		case <-g.release:
		}
	}
	return c.SendNoWait(ctx, b)
}

func (g *gate) OnTimerTimeout(context.Context, *sdk.Conn[int]) error { return nil }
func (g *gate) OnReceivedMessages(context.Context, *sdk.Conn[int], []*pb.Message) error {
	return nil
}
func (g *gate) OnSocketClosed(context.Context, *sdk.Conn[int], string) error { return nil }

// A callback that blocks without calling the gateway holds up the other
// devices' events only for a moment: their callbacks run and answer while
// it still blocks. (The native stream runs a message's callbacks on its
// reader; were nothing to move them on, the second device would wait for
// the first.)
func TestNativeBlockedCallbackDoesNotHoldUpOthers(t *testing.T) {
	for _, mode := range []handlertest.Option{nil, handlertest.Native} {
		t.Run(map[bool]string{false: "unary", true: "native"}[mode != nil], func(t *testing.T) {
			leaks := goleak.IgnoreCurrent()
			t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
			g := &gate{release: make(chan struct{})}
			func() {
				h := handlertest.New(t, g, mode)
				defer close(g.release) // before the harness stops
				blocked, other := h.Dial(), h.Dial()
				blocked.Write([]byte("block"))
				for _, s := range []string{"one", "two", "three"} {
					other.Write([]byte(s))
					other.Expect([]byte(s)) // within the harness's 5 s
				}
			}()
		})
	}
}

// The callbacks of many devices can all be running at once, also when each
// one blocks: every callback here waits until all of them are in.
func TestNativeCallbacksRunAtOnce(t *testing.T) {
	const n = 20
	for _, mode := range []handlertest.Option{nil, handlertest.Native} {
		t.Run(map[bool]string{false: "unary", true: "native"}[mode != nil], func(t *testing.T) {
			leaks := goleak.IgnoreCurrent()
			t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
			g := &gate{release: make(chan struct{}), n: n, all: make(chan struct{})}
			func() {
				h := handlertest.New(t, g, mode)
				defer close(g.release)
				devs := make([]*handlertest.Device, n)
				for i := range devs {
					devs[i] = h.Dial()
				}
				for _, d := range devs {
					d.Write([]byte("all"))
				}
				select {
				case <-g.all:
				case <-time.After(10 * time.Second):
					t.Fatalf("%d of %d callbacks were running at once", g.in.Load(), n)
				}
				for _, d := range devs {
					d.Expect([]byte("all"))
				}
			}()
		})
	}
}

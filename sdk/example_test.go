package sdk_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/sdk"
	"github.com/exgate/exgate/sdk/framing"
	"github.com/exgate/exgate/sdk/handlertest"
)

// lineHandler speaks a line protocol: "LOGIN <id>", "PUB <topic> <text>",
// "SUB <filter>"; deliveries come back as "MSG <topic> <text>".
type lineHandler struct{}

// state is each connection's own: its frame splitter.
type state struct{ lines *framing.Delimiter }

func (lineHandler) OnSocketCreated(_ context.Context, c *sdk.Conn[state]) error {
	c.State.lines = framing.NewDelimiter([]byte("\n"), 1024)
	return nil
}

func (lineHandler) OnReceivedBytes(ctx context.Context, c *sdk.Conn[state], b []byte) error {
	frames, err := c.State.lines.Feed(b)
	if err != nil {
		return c.Close(ctx)
	}
	for _, f := range frames {
		cmd, rest, _ := strings.Cut(string(f), " ")
		switch cmd {
		case "LOGIN":
			if err := c.Authenticate(ctx, sdk.ClientInfo{ClientID: rest, ProtoName: "line"}, ""); err != nil {
				_ = c.Send(ctx, []byte("DENIED\n"))
				return c.Close(ctx)
			}
			err = c.Send(ctx, []byte("OK\n"))
		case "PUB":
			topic, text, _ := strings.Cut(rest, " ")
			err = c.Publish(ctx, topic, 1, []byte(text))
		case "SUB":
			err = c.Subscribe(ctx, rest, 1)
			if err == nil {
				err = c.Send(ctx, []byte("SUBSCRIBED\n"))
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (lineHandler) OnTimerTimeout(ctx context.Context, c *sdk.Conn[state]) error { return nil }

func (lineHandler) OnReceivedMessages(ctx context.Context, c *sdk.Conn[state], msgs []*pb.Message) error {
	var out bytes.Buffer
	for _, m := range msgs { // every message of the batch, not only the first
		fmt.Fprintf(&out, "MSG %s %s\n", m.Topic, m.Payload)
	}
	return c.Send(ctx, out.Bytes())
}

func (lineHandler) OnSocketClosed(context.Context, *sdk.Conn[state], string) error { return nil }

// exampleTB runs a harness outside a test.
type exampleTB struct{ cleanups []func() }

func (*exampleTB) Helper()                           {}
func (*exampleTB) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (e *exampleTB) Cleanup(f func())                { e.cleanups = append(e.cleanups, f) }
func (e *exampleTB) done() {
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
}

// A whole handler, tested against the real gateway with handlertest: a
// device logs in, publishes, subscribes and receives.
func Example() {
	t := &exampleTB{}
	defer t.done()
	h := handlertest.New(t, lineHandler{})

	dev := h.Dial()
	dev.Write([]byte("LOGIN dev1\nPUB up/dev1 hel"))
	dev.Write([]byte("lo\n")) // frames may arrive in pieces
	dev.Expect([]byte("OK\n"))
	h.ExpectPublish("up/dev1", []byte("hello"))

	dev.Write([]byte("SUB down/dev1\n"))
	dev.Expect([]byte("SUBSCRIBED\n"))
	h.Publish("down/dev1", []byte("reboot"))
	dev.Expect([]byte("MSG down/dev1 reboot\n"))
	fmt.Println("ok")
	// Output: ok
}

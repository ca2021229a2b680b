package binproto

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/sdk"
	"github.com/exgate/exgate/sdk/framing"
)

// State is each terminal's own.
type State struct {
	frames   framing.Splitter
	terminal string // set at LOGIN
	serial   uint16 // of frames the platform sends
}

// Handler maps the protocol to exgate: LOGIN authenticates the terminal
// (clientid = terminal id) and subscribes it to cmd/<id>; TELEMETRY is
// published as JSON to telemetry/<id>; every message on cmd/<id> goes to
// the terminal as a COMMAND. Keepalive is 3 × 30 s heartbeats.
type Handler struct{}

var _ sdk.Handler[State] = Handler{}

func (Handler) OnSocketCreated(_ context.Context, c *sdk.Conn[State]) error {
	c.State.frames = NewSplitter()
	return nil
}

func (h Handler) OnReceivedBytes(ctx context.Context, c *sdk.Conn[State], b []byte) error {
	frames, err := c.State.frames.Feed(b)
	if err != nil {
		return c.Close(ctx) // out of step with the stream: start again
	}
	for _, raw := range frames {
		f, err := Decode(raw)
		if err != nil {
			if errors.Is(err, ErrChecksum) {
				if err := h.ack(ctx, c, f, ResultBadFrame); err != nil {
					return err
				}
				continue
			}
			return c.Close(ctx)
		}
		if err := h.frame(ctx, c, f); err != nil {
			return err
		}
	}
	return nil
}

func (h Handler) frame(ctx context.Context, c *sdk.Conn[State], f Frame) error {
	switch f.ID {
	case Login:
		id := string(f.Body)
		if err := c.Authenticate(ctx, sdk.ClientInfo{ClientID: id, ProtoName: "binproto", ProtoVer: "1"}, ""); err != nil {
			_ = h.ack(ctx, c, f, ResultFailed)
			return c.Close(ctx)
		}
		c.State.terminal = id
		if err := c.StartKeepalive(ctx, 90); err != nil {
			return err
		}
		if err := c.Subscribe(ctx, "cmd/"+id, 1); err != nil {
			return err
		}
		return h.ack(ctx, c, f, ResultOK)
	case Heartbeat:
		return h.ack(ctx, c, f, ResultOK)
	case Telemetry:
		p, err := DecodePosition(f.Body)
		if err != nil || c.State.terminal == "" {
			return h.ack(ctx, c, f, ResultFailed)
		}
		payload, _ := json.Marshal(map[string]any{"lat": float64(p.Lat) / 1e6, "lon": float64(p.Lon) / 1e6, "speed_kmh": float64(p.Speed) / 10})
		result := ResultOK
		if err := c.Publish(ctx, "telemetry/"+c.State.terminal, 1, payload); err != nil {
			result = ResultFailed
		}
		return h.ack(ctx, c, f, result)
	}
	return h.ack(ctx, c, f, ResultFailed)
}

func (Handler) ack(ctx context.Context, c *sdk.Conn[State], f Frame, result byte) error {
	c.State.serial++
	return c.Send(ctx, Encode(Frame{ID: Ack, Serial: c.State.serial, Body: AckBody(f.Serial, f.ID, result)}))
}

func (Handler) OnTimerTimeout(context.Context, *sdk.Conn[State]) error { return nil }

// OnReceivedMessages sends every message of the batch as a COMMAND.
func (Handler) OnReceivedMessages(ctx context.Context, c *sdk.Conn[State], msgs []*pb.Message) error {
	for _, m := range msgs {
		c.State.serial++
		if err := c.Send(ctx, Encode(Frame{ID: Command, Serial: c.State.serial, Body: m.Payload})); err != nil {
			return fmt.Errorf("command to %s: %w", c.State.terminal, err)
		}
	}
	return nil
}

func (Handler) OnSocketClosed(context.Context, *sdk.Conn[State], string) error { return nil }

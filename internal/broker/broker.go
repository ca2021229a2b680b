// Package broker is the boundary between devices and the pub/sub world.
//
// A Broker opens one Session per authenticated device. Two implementations
// exist: embedded (an in-process mochi-mqtt broker, where a device is a
// connection-less client of mochi's) and mqtt (an external MQTT broker or
// cluster, where a device is an MQTT session of its own). Either way a
// device is a first-class client: the broker's clientid takeover, retained
// messages, shared subscriptions and QoS apply to it unchanged.
package broker

import (
	"context"
	"errors"
	"strconv"
	"time"
)

// Errors a Session or Broker returns or reports; callers map them to
// ExProto result codes and close reasons with errors.Is.
var (
	// ErrNotAuthorized: the broker refused a connect, publish or subscribe.
	ErrNotAuthorized = errors.New("not authorized")
	// ErrTakenOver: another client connected with the same clientid.
	ErrTakenOver = errors.New("session taken over")
	// ErrKicked: the broker or an operator disconnected the session.
	ErrKicked = errors.New("disconnected by the broker")
	// ErrClosed: the session is already closed.
	ErrClosed = errors.New("session closed")
	// ErrBadRequest: an invalid topic, filter or QoS.
	ErrBadRequest = errors.New("bad request")
	// ErrUnavailable: no broker could be reached.
	ErrUnavailable = errors.New("broker unavailable")
)

// ClientInfo identifies a device to the broker.
type ClientInfo struct {
	ClientID string
	Username string
	// From is what deliveries of this session's publishes report as their
	// publisher ("" means ClientID).
	From string
}

// Message is one delivery to a device.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	// From is the publisher's clientid ("exproto" for RawPublish; empty when
	// the broker did not say).
	From string
	// Time is when the broker accepted the publish.
	Time time.Time
}

// Handlers receive a session's events. They may be called from inside the
// broker, with its locks held: Deliver must only queue; Closed may close
// the device (Session.Close is then a no-op) but must not wait for others.
type Handlers struct {
	// Deliver is called for each message matching a subscription.
	Deliver func(Message)
	// Closed is called once if the broker ends the session (ErrTakenOver,
	// ErrKicked, or a transport error), never after Session.Close.
	Closed func(error)
}

// Stamp applies one user property of a delivered publish: the publisher
// (PropFrom) and publish time (PropTime) that MQTT has no field for.
// Other keys are ignored.
func (m *Message) Stamp(key, value string) {
	switch key {
	case PropFrom:
		m.From = value
	case PropTime:
		if ms, err := strconv.ParseInt(value, 10, 64); err == nil {
			m.Time = time.UnixMilli(ms)
		}
	}
}

// A Session is one device's presence in the pub/sub world. Its methods are
// safe for concurrent use.
type Session interface {
	// Publish sends a message; with QoS 1 and 2 it returns once the broker acked.
	Publish(ctx context.Context, topic string, qos byte, payload []byte) error
	// Subscribe adds or updates a subscription.
	Subscribe(ctx context.Context, filter string, qos byte) error
	// Unsubscribe removes a subscription; an unknown filter is not an error.
	Unsubscribe(ctx context.Context, filter string) error
	// Close ends the session at once: no more deliveries, no Closed
	// callback. Its goroutines may say goodbye to the broker a little
	// longer; they are gone when Broker.Close returns.
	Close()
}

// A Broker connects devices.
type Broker interface {
	// Connect opens a clean session for a device whose credentials the
	// gateway already checked; a live session with the same clientid is
	// taken over.
	Connect(ctx context.Context, ci ClientInfo, password string, h Handlers) (Session, error)
	// RawPublish publishes as the gateway itself (from "exproto").
	RawPublish(ctx context.Context, topic string, qos byte, payload []byte) error
	// Close stops the broker and its sessions.
	Close() error
}

// User property keys that carry the publisher and publish time to device
// sessions; MQTT itself has no publisher id on the wire.
const (
	PropFrom = "exgate-from"
	PropTime = "exgate-ts"
)

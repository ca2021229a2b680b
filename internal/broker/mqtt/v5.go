package mqtt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"github.com/exgate/exgate/internal/broker"
)

// MQTT v5 reason codes the gateway maps.
const (
	rcNotAuthorized       = 0x87
	rcBadUserPass         = 0x86
	rcSessionTakenOver    = 0x8E
	rcAdministrativeClose = 0x98
	rcBanned              = 0x8A
	rcUnsupportedVersion  = 0x84
	// rcV3BadVersion is a 3.1.1 server's CONNACK "unacceptable protocol
	// version", read as a v5 CONNACK.
	rcV3BadVersion = 0x01
)

// errNoMQTT5 marks a server that refused an MQTT 5 CONNECT as such: it hung
// up without a CONNACK, or said the version is not supported.
var errNoMQTT5 = errors.New("the server does not speak MQTT 5")

// receiveMaximum bounds how many QoS>0 deliveries the broker keeps in flight
// to one session; paho sizes a channel by it, so the default 65535 would cost
// half a MiB per device.
const receiveMaximum = 128

// mqttSession is a Session over one MQTT v5 connection.
type mqttSession struct {
	c    *paho.Client
	conn net.Conn
	from string // publisher id stamped on every publish

	mu     sync.Mutex
	closed bool // set by Close or when the broker ended the session
}

// connectV5 speaks MQTT v5 over conn for one device: CONNECT with a clean
// start, then PUBLISH/SUBSCRIBE for it. keepalive 0 disables pings (fine for
// in-memory connections). It takes ownership of conn.
func connectV5(ctx context.Context, conn net.Conn, ci broker.ClientInfo, password string, keepalive uint16, h broker.Handlers) (broker.Session, error) {
	s := &mqttSession{from: ci.From, conn: conn}
	if s.from == "" {
		s.from = ci.ClientID
	}
	s.c = paho.NewClient(paho.ClientConfig{
		Conn: packets.NewThreadSafeConn(conn),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			h.Deliver(toMessage(pr.Packet))
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) {
			// Only these two say what happened to the session itself; a
			// server shutting down (0x8B), busy, or sending clients
			// elsewhere ended the connection, not the session's right to be.
			var err error
			switch d.ReasonCode {
			case rcSessionTakenOver:
				err = broker.ErrTakenOver
			case rcAdministrativeClose:
				err = broker.ErrKicked
			default:
				err = fmt.Errorf("broker connection lost: the broker sent DISCONNECT (reason code 0x%02x)", d.ReasonCode)
			}
			s.ended(h, err)
		},
		OnClientError: func(err error) { s.ended(h, fmt.Errorf("broker connection lost: %w", err)) },
	})
	rm := uint16(receiveMaximum)
	cp := &paho.Connect{
		ClientID:   ci.ClientID,
		CleanStart: true,
		KeepAlive:  keepalive,
		Properties: &paho.ConnectProperties{ReceiveMaximum: &rm, RequestProblemInfo: true},
	}
	if ci.Username != "" {
		cp.Username, cp.UsernameFlag = ci.Username, true
	}
	if password != "" {
		cp.Password, cp.PasswordFlag = []byte(password), true
	}
	ca, err := s.c.Connect(ctx, cp)
	if err != nil {
		_ = conn.Close()
		if ca != nil && (ca.ReasonCode == rcNotAuthorized || ca.ReasonCode == rcBadUserPass || ca.ReasonCode == rcBanned) {
			return nil, fmt.Errorf("connect: %w (reason code 0x%02x)", broker.ErrNotAuthorized, ca.ReasonCode)
		}
		if ca != nil && (ca.ReasonCode == rcUnsupportedVersion || ca.ReasonCode == rcV3BadVersion) {
			return nil, fmt.Errorf("connect: %w: %w (reason code 0x%02x)", errNoMQTT5, broker.ErrUnavailable, ca.ReasonCode)
		}
		if ca != nil {
			return nil, fmt.Errorf("connect: %w: %v", broker.ErrUnavailable, err)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			// RabbitMQ's and NATS's MQTT plugins speak 3.1.1 only and hang
			// up on an MQTT 5 CONNECT without a word.
			return nil, fmt.Errorf("connect: %w: %w (the broker hung up on an MQTT 5 CONNECT without a CONNACK: if it speaks MQTT 3.1.1 only, as RabbitMQ and NATS do, set broker.mqtt.protocol_version: auto or 4)", errNoMQTT5, err)
		}
		return nil, fmt.Errorf("connect: %w", err)
	}
	return s, nil
}

// ended marks the session closed by the broker and reports it once, unless
// the gateway closed it first.
func (s *mqttSession) ended(h broker.Handlers, err error) {
	s.mu.Lock()
	was := s.closed
	s.closed = true
	s.mu.Unlock()
	if !was && h.Closed != nil {
		h.Closed(err)
	}
}

func toMessage(p *paho.Publish) broker.Message {
	m := broker.Message{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS}
	if p.Properties != nil {
		for _, up := range p.Properties.User {
			m.Stamp(up.Key, up.Value)
		}
	}
	if m.Time.IsZero() {
		m.Time = time.Now()
	}
	return m
}

func (s *mqttSession) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *mqttSession) Publish(ctx context.Context, topic string, qos byte, payload []byte) error {
	if s.isClosed() {
		return broker.ErrClosed
	}
	// MQTT carries no publisher id: the stamps let other exgate nodes (and
	// the embedded broker, which replaces them) report Message.from and
	// Message.timestamp.
	pr, err := s.c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: payload, Properties: &paho.PublishProperties{
		User: paho.UserProperties{{Key: broker.PropFrom, Value: s.from}, {Key: broker.PropTime, Value: strconv.FormatInt(time.Now().UnixMilli(), 10)}},
	}})
	if err != nil {
		if pr != nil && pr.ReasonCode == rcNotAuthorized {
			return fmt.Errorf("publish %q: %w", topic, broker.ErrNotAuthorized)
		}
		return fmt.Errorf("publish %q: %w", topic, err)
	}
	return nil
}

func (s *mqttSession) Subscribe(ctx context.Context, filter string, qos byte) error {
	if s.isClosed() {
		return broker.ErrClosed
	}
	sa, err := s.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
	if err != nil {
		if sa != nil && len(sa.Reasons) == 1 && sa.Reasons[0] == rcNotAuthorized {
			return fmt.Errorf("subscribe %q: %w", filter, broker.ErrNotAuthorized)
		}
		if sa != nil {
			return fmt.Errorf("subscribe %q: %w: %v", filter, broker.ErrBadRequest, err)
		}
		return fmt.Errorf("subscribe %q: %w", filter, err)
	}
	return nil
}

func (s *mqttSession) Unsubscribe(ctx context.Context, filter string) error {
	if s.isClosed() {
		return broker.ErrClosed
	}
	// An unknown filter gets 0x11 "no subscription existed", which paho
	// does not treat as an error: SUCCESS for ExProto (spec §2).
	if _, err := s.c.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{filter}}); err != nil {
		return fmt.Errorf("unsubscribe %q: %w", filter, err)
	}
	return nil
}

func (s *mqttSession) Close() {
	s.mu.Lock()
	was := s.closed
	s.closed = true
	s.mu.Unlock()
	if !was {
		// With a synchronous in-memory pipe both ends can be blocked writing
		// to each other while one is closing; a deadline unblocks them.
		_ = s.conn.SetDeadline(time.Now().Add(time.Second))
		_ = s.c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	}
	select {
	case <-s.c.Done():
	case <-time.After(2 * time.Second):
		_ = s.conn.Close()
		<-s.c.Done()
	}
}

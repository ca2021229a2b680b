package mqtt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/exgate/exgate/internal/broker"
)

// v4Session is a Session over MQTT 3.1.1, for upstreams without MQTT 5.
// 3.1.1 has no user properties and no reason codes: deliveries carry no
// publisher id, and a denied publish is not reported by every broker.
type v4Session struct {
	c  paho.Client
	mu sync.Mutex
	// closed is set by Close or when the connection was lost.
	closed bool
}

func connectV4(ctx context.Context, conn net.Conn, ci broker.ClientInfo, password string, keepalive uint16, h broker.Handlers) (broker.Session, error) {
	s := &v4Session{}
	o := paho.NewClientOptions().AddBroker("tcp://upstream").SetClientID(ci.ClientID).
		SetUsername(ci.Username).SetPassword(password).SetCleanSession(true).
		SetKeepAlive(time.Duration(keepalive) * time.Second).SetAutoReconnect(false).SetConnectRetry(false).
		SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) { return conn, nil }).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			h.Deliver(broker.Message{Topic: m.Topic(), Payload: m.Payload(), QoS: m.Qos(), Time: time.Now()})
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			s.mu.Lock()
			was := s.closed
			s.closed = true
			s.mu.Unlock()
			if !was && h.Closed != nil {
				h.Closed(fmt.Errorf("broker connection lost: %w", err))
			}
		})
	if d, ok := ctx.Deadline(); ok {
		o.SetConnectTimeout(time.Until(d))
	}
	s.c = paho.NewClient(o)
	if err := wait(ctx, s.c.Connect()); err != nil {
		_ = conn.Close()
		if errors.Is(err, packets.ErrorRefusedNotAuthorised) || errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) {
			return nil, fmt.Errorf("connect: %w", broker.ErrNotAuthorized)
		}
		return nil, fmt.Errorf("connect: %w: %v", broker.ErrUnavailable, err)
	}
	return s, nil
}

func wait(ctx context.Context, tok paho.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *v4Session) live() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return broker.ErrClosed
	}
	return nil
}

func (s *v4Session) Publish(ctx context.Context, topic string, qos byte, payload []byte) error {
	if err := s.live(); err != nil {
		return err
	}
	if err := wait(ctx, s.c.Publish(topic, qos, false, payload)); err != nil {
		return fmt.Errorf("publish %q: %w", topic, err)
	}
	return nil
}

func (s *v4Session) Subscribe(ctx context.Context, filter string, qos byte) error {
	if err := s.live(); err != nil {
		return err
	}
	tok := s.c.Subscribe(filter, qos, nil)
	if err := wait(ctx, tok); err != nil {
		return fmt.Errorf("subscribe %q: %w", filter, err)
	}
	if granted, ok := tok.(*paho.SubscribeToken).Result()[filter]; ok && granted == 0x80 {
		return fmt.Errorf("subscribe %q: %w", filter, broker.ErrNotAuthorized)
	}
	return nil
}

func (s *v4Session) Unsubscribe(ctx context.Context, filter string) error {
	if err := s.live(); err != nil {
		return err
	}
	if err := wait(ctx, s.c.Unsubscribe(filter)); err != nil {
		return fmt.Errorf("unsubscribe %q: %w", filter, err)
	}
	return nil
}

func (s *v4Session) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.c.Disconnect(100)
}

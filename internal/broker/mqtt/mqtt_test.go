package mqtt

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/exgate/exgate/internal/broker"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/testbroker"
)

// A broker that speaks MQTT 3.1.1 only (RabbitMQ's and NATS's MQTT) hangs
// up on an MQTT 5 CONNECT without a CONNACK; the error says what to set
// instead of a bare EOF.
func TestMQTT5RefusedByA311BrokerSaysWhy(t *testing.T) {
	ln := hangingUp(t, true)
	b, err := New(Options{Config: config.External{Servers: []string{"tcp://" + ln.Addr().String()}}, Node: "n"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = b.Connect(ctx, broker.ClientInfo{ClientID: "dev"}, "", broker.Handlers{Deliver: func(broker.Message) {}, Closed: func(error) {}})
	if err == nil || !strings.Contains(err.Error(), "protocol_version: 4") {
		t.Fatalf("connect to a broker that hangs up: %v, want the protocol_version hint", err)
	}
}

// A server that takes the TCP connection but not the session is skipped
// for the next one, and later sessions start with the one that worked.
func TestFailoverWhenTheSessionIsRefused(t *testing.T) {
	hangUp := hangingUp(t, false)
	good := testbroker.Start(t)
	b, err := New(Options{Config: config.External{Servers: []string{"tcp://" + hangUp.Addr().String(), "tcp://" + good.Addr}}, Node: "n"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := broker.Handlers{Deliver: func(broker.Message) {}, Closed: func(error) {}}
	for i := 0; i < 2; i++ {
		s, err := b.Connect(ctx, broker.ClientInfo{ClientID: fmt.Sprintf("dev-%d", i)}, "", h)
		if err != nil {
			t.Fatalf("connect %d with a second, working server: %v", i, err)
		}
		s.Close()
	}
	if b.next.Load() != 1 {
		t.Fatalf("preferred server %d, want 1 (the one that worked)", b.next.Load())
	}
}

// hangingUp is a server that accepts TCP connections and closes them,
// after reading the first packet if readFirst: a broker that will not
// take the session.
func hangingUp(t *testing.T, readFirst bool) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if readFirst {
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, _ = c.Read(make([]byte, 256)) // the CONNECT
			}
			c.Close()
		}
	}()
	return ln
}

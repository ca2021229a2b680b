package main

import (
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/exgate/exgate/internal/testbroker"
	"github.com/exgate/exgate/internal/testhandler"
)

// exgate on real clusters of the two other engines Debian ships: NATS 2.9
// (MQTT over JetStream, three nodes) and RabbitMQ 3.10 (its MQTT plugin,
// two nodes), both MQTT 3.1.1 only. Two exgate processes, each upstream to
// a different broker node, one handler that knows node A only: devices on
// either node and MQTT clients on either broker node reach each other, a
// device's adapter calls on node B are forwarded by A, a clientid taken
// over across nodes closes the first device with the takeover reason, and
// what each engine lacks is held to by configuration (docs/deployment.md's
// table): NATS takes QoS 2 publishes as QoS 1 only through max_qos (it
// closes a session that publishes QoS 2), and a $share subscription, which
// neither has, is refused instead of never delivering.
func TestOnBrokerClusters(t *testing.T) {
	if testing.Short() {
		t.Skip("starts broker clusters: skipped with -short")
	}
	for _, engine := range []struct {
		name  string
		start func(testing.TB) *testbroker.Cluster
		caps  string
	}{
		{"nats", func(t testing.TB) *testbroker.Cluster { return testbroker.StartNATS(t, 3) }, "max_qos: 1, shared_subscriptions: false"},
		{"rabbitmq", func(t testing.TB) *testbroker.Cluster { return testbroker.StartRabbitMQ(t, 2) }, "shared_subscriptions: false"},
	} {
		t.Run(engine.name, func(t *testing.T) {
			t.Parallel()
			c := engine.start(t)
			n1, n2 := "tcp://"+c.Nodes[0].Addr, "tcp://"+c.Nodes[1].Addr
			h := testhandler.Start(t)
			adapterA, adapterB := freePort(t), freePort(t)
			conf := func(name, self, peerName, peer, servers string) string {
				return `
node: {name: ` + name + `}
api: {bind: "127.0.0.1:0"}
broker: {mqtt: {servers: [` + servers + `], ` + engine.caps + `}}
cluster: {peers: {"` + peerName + `": "` + peer + `"}}
gateway:
  exproto:
    server: {bind: "` + self + `"}
    handler: {address: "http://` + h.Addr + `"}
    listeners: {tcp: {default: {bind: "127.0.0.1:0"}}}
`
			}
			a := startNode(t, conf("a@test", adapterA, "b@test", adapterB, `"`+n1+`", "`+n2+`"`))
			b := startNode(t, conf("b@test", adapterB, "a@test", adapterA, `"`+n2+`", "`+n1+`"`))
			h.Attach(t, a.addr(t, "adapter")) // the handler knows node A only

			app1, got1 := appClient(t, n1, "app1", "fleet/#")
			app2, _ := appClient(t, n2, "app2", "")
			_ = app1

			onA := dialDevice(t, a.addr(t, "tcp:default"))
			onA.do(testhandler.Frame{Type: testhandler.Connect, ClientInfo: &testhandler.ClientInfo{ClientID: "c1"}}, testhandler.Connack)
			onA.do(testhandler.Frame{Type: testhandler.Subscribe, Topic: "fleet/#", QoS: 1}, testhandler.Suback)
			onB := dialDevice(t, b.addr(t, "tcp:default")) // its adapter calls go through A
			onB.do(testhandler.Frame{Type: testhandler.Connect, ClientInfo: &testhandler.ClientInfo{ClientID: "c2"}}, testhandler.Connack)
			// The subscription of the device on A reaches every broker node
			// in its own time: publish until it is delivered.
			deadline := time.Now().Add(20 * time.Second)
			for n := 0; ; n++ {
				onB.do(testhandler.Frame{Type: testhandler.Publish, Topic: "fleet/b", QoS: 1, Payload: "from B"}, testhandler.Puback)
				if f, ok := onA.tryRead(testhandler.Publish, 500*time.Millisecond); ok {
					if f.Payload != "from B" {
						t.Fatalf("device on A got %+v", f)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("a device on B's publish never reached the device on A (%d tries)", n+1)
				}
			}
			expectApp(t, got1, "fleet/b", "from B") // device on exgate B → broker node 2 → node 1 → app1
			if tok := app2.Publish("fleet/app", 1, false, "from app2"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("app2 publish: %v", tok.Error())
			}
			if f := onA.readUntil(t, testhandler.Publish, "from app2"); f.Topic != "fleet/app" {
				t.Fatalf("device on A got %+v", f)
			}

			// QoS 2 from a device: at the engine's best, and the session stays.
			onB.do(testhandler.Frame{Type: testhandler.Publish, Topic: "fleet/q2", QoS: 2, Payload: "qos 2"}, testhandler.Puback)
			expectApp(t, got1, "fleet/q2", "qos 2")
			onB.do(testhandler.Frame{Type: testhandler.Publish, Topic: "fleet/after", QoS: 1, Payload: "still up"}, testhandler.Puback)
			expectApp(t, got1, "fleet/after", "still up")
			onA.readUntil(t, testhandler.Publish, "still up") // the device on A is subscribed too

			// A shared subscription neither engine has is refused, with why.
			f := onA.send(testhandler.Frame{Type: testhandler.Subscribe, Topic: "$share/g/fleet/x", QoS: 1})
			if f.Type != testhandler.Suback || f.Code == nil || *f.Code == 0 {
				t.Fatalf("$share subscription: %+v, want refused", f)
			}

			// The same clientid on node B takes over the device on node A.
			first := h.Conns()[0]
			again := dialDevice(t, b.addr(t, "tcp:default"))
			again.do(testhandler.Frame{Type: testhandler.Connect, ClientInfo: &testhandler.ClientInfo{ClientID: "c1"}}, testhandler.Connack)
			if r := h.WaitClosed(t, first, 15*time.Second); r != "{shutdown,discarded}" {
				t.Fatalf("device on A closed with %q, want the takeover reason", r)
			}
			a.waitLine(t, "refused MQTT 5") // learned at connect, said once per server
		})
	}
}

// appClient is an MQTT 3.1.1 client on one broker node; with a filter, the
// messages it receives arrive on the channel.
func appClient(t *testing.T, server, id, filter string) (mqtt.Client, chan mqtt.Message) {
	t.Helper()
	got := make(chan mqtt.Message, 100)
	o := mqtt.NewClientOptions().AddBroker(server).SetClientID(id).SetProtocolVersion(4).SetAutoReconnect(false)
	cl := mqtt.NewClient(o)
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("%s connect: %v", id, tok.Error())
	}
	t.Cleanup(func() { cl.Disconnect(50) })
	if filter != "" {
		if tok := cl.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) { got <- m }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("%s subscribe: %v", id, tok.Error())
		}
	}
	return cl, got
}

// clusterDelivery bounds the wait for a message through a broker cluster.
// A message the broker has acknowledged arrives in milliseconds, but a
// NATS node starved of CPU (the whole suite under -race on two cores)
// stalls its JetStream delivery while its Raft groups elect a leader,
// 4–9 s a round, a round or more: once, in CI, past 15 s. A message lost
// never arrives, however long the wait.
const clusterDelivery = 45 * time.Second

// expectApp waits for a message on topic with payload, skipping others.
func expectApp(t *testing.T, got chan mqtt.Message, topic, payload string) {
	t.Helper()
	timeout := time.After(clusterDelivery)
	for {
		select {
		case m := <-got:
			if m.Topic() == topic && string(m.Payload()) == payload {
				return
			}
		case <-timeout:
			t.Fatalf("the MQTT client got no %q on %s", payload, topic)
		}
	}
}

// send writes a frame and returns the next one, whatever its code.
func (d *jsonDevice) send(f testhandler.Frame) testhandler.Frame {
	d.t.Helper()
	b, _ := json.Marshal(f)
	if _, err := d.c.Write(b); err != nil {
		d.t.Fatal(err)
	}
	var got testhandler.Frame
	_ = d.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := d.dec.Decode(&got); err != nil {
		d.t.Fatalf("device read: %v", err)
	}
	return got
}

// tryRead reads one frame of type want within d; false if none came. A
// decoder keeps the error of a read that timed out, so it is replaced by
// one that starts with what the old one had buffered.
func (d *jsonDevice) tryRead(want int, within time.Duration) (testhandler.Frame, bool) {
	var got testhandler.Frame
	_ = d.c.SetReadDeadline(time.Now().Add(within))
	if err := d.dec.Decode(&got); err != nil {
		d.dec = json.NewDecoder(io.MultiReader(d.dec.Buffered(), d.c))
		return got, false
	}
	return got, got.Type == want
}

// readUntil reads frames of type want until one carries payload, for up
// to clusterDelivery.
func (d *jsonDevice) readUntil(t *testing.T, want int, payload string) testhandler.Frame {
	t.Helper()
	deadline := time.Now().Add(clusterDelivery)
	for time.Now().Before(deadline) {
		f, ok := d.tryRead(want, time.Until(deadline))
		if ok && strings.Contains(f.Payload, payload) {
			return f
		}
		if f.Type != 0 && f.Type != want {
			t.Fatalf("device got %+v, want type %d", f, want)
		}
	}
	t.Fatalf("the device got no frame with %q in %v", payload, clusterDelivery)
	return testhandler.Frame{}
}

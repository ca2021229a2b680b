package embedded

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/exgate/exgate/internal/broker"
)

// A device is present in mochi as a *mqtt.Client that no listener serves:
// it has no connection, no goroutine and no write queue. It is made by a
// second, never-served mochi server (the maker) whose clients have an
// unbuffered outbound channel, so mochi's publishToClient cannot queue a
// delivery and hands it synchronously to the maker's OnPublishDropped hook,
// which queues it on the device's channel. Publishes are injected into the
// real server with the device's client, and so are $share subscriptions,
// so that mochi's group selection serves devices as it serves MQTT clients.
//
// A device's other subscriptions are mochi inline subscriptions, keyed by
// the device's number: mochi's topic index routes to them as to any
// subscription, and calls the device's handler with the publish itself.
// A client subscription's delivery instead takes mochi's per-subscriber
// path built for a socket — a copy of the packet, a write-queue entry,
// and, through the drop path, a debug line that boxes the whole packet:
// a fan-out to 10,000 devices allocated 4.3 KB per delivery that way, 2.0
// this way, and the gateway spent a quarter less CPU per delivery. What
// mochi does for a client's SUBSCRIBE, exgate does here for these:
// validate the filter, send the retained messages, count the subscription.
// Two rules of MQTT that mochi's inline routing misses are kept here: "a/#"
// also matches "a" (the device registers "a" too), and a filter starting
// with a wildcard does not match a topic starting with '$' (filterMatches).
//
// Devices are registered in mochi under an internal id ("\x00dev/<n>") that
// no MQTT client can use (mochi's decoder refuses clientids with NUL), and
// the one clientid namespace shared with MQTT clients is kept here (claims):
// the newest holder of a clientid wins, whoever it is.

// devicePrefix starts the mochi client id of every device session.
const devicePrefix = "\x00dev/"

// devConn is the connection mochi believes a device client has. mochi only
// writes acks to it (SUBACK, UNSUBACK), which the maker hook reads before
// they are encoded; nothing reads from it.
type devConn struct{ d *deviceSession }

func (c *devConn) Read([]byte) (int, error)         { return 0, net.ErrClosed }
func (c *devConn) Write(b []byte) (int, error)      { return len(b), nil }
func (c *devConn) Close() error                     { return nil }
func (c *devConn) LocalAddr() net.Addr              { return memAddr{} }
func (c *devConn) RemoteAddr() net.Addr             { return memAddr{} }
func (c *devConn) SetDeadline(time.Time) error      { return nil }
func (c *devConn) SetReadDeadline(time.Time) error  { return nil }
func (c *devConn) SetWriteDeadline(time.Time) error { return nil }

type memAddr struct{}

func (memAddr) Network() string { return "memory" }
func (memAddr) String() string  { return "exgate-device" }

// deviceSession is one device's presence in the embedded broker. It
// implements broker.Session.
type deviceSession struct {
	b        *Broker
	cl       *mqtt.Client
	conn     devConn
	clientID string
	from     string // publisher id of this device's publishes
	h        broker.Handlers

	// opMu serialises subscribe and unsubscribe, so the ack the maker hook
	// records belongs to the call that waits for it.
	opMu sync.Mutex
	ack  []byte // reason codes of the last SUBACK/UNSUBACK, under opMu

	id     int // the device's key among mochi's inline subscriptions
	inline mqtt.InlineSubFn

	mu     sync.Mutex
	closed bool
	subs   []grant  // few per device: a slice is smaller and faster than a map
	index  []string // the filters registered as inline subscriptions
}

// grant is a subscription as mochi knows it and the QoS granted to the device.
type grant struct {
	filter string
	qos    byte
}

// find returns the index of filter in d.subs, or -1. Called with d.mu held.
func (d *deviceSession) find(filter string) int {
	for i, g := range d.subs {
		if g.filter == filter {
			return i
		}
	}
	return -1
}

var _ broker.Session = (*deviceSession)(nil)

// holder is who holds a clientid: a device or an MQTT client.
type holder struct {
	dev *deviceSession
	mq  *mqtt.Client
}

// Connect makes a device session: a mochi client of its own that takes over
// whoever held the clientid. It starts no goroutine.
func (b *Broker) Connect(_ context.Context, ci broker.ClientInfo, _ string, h broker.Handlers) (broker.Session, error) {
	d := &deviceSession{b: b, clientID: ci.ClientID, from: ci.From, h: h}
	if d.from == "" {
		d.from = ci.ClientID
	}
	d.conn.d = d
	n := b.seq.Add(1)
	d.id = int(n)
	d.inline = d.deliverInline
	d.cl = b.maker.NewClient(&d.conn, deviceListener, devicePrefix+strconv.FormatUint(n, 36), true)
	d.cl.Properties.ProtocolVersion = 5
	d.cl.Properties.Username = []byte(ci.Username)

	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, fmt.Errorf("embedded broker: %w", broker.ErrUnavailable)
	}
	b.srv.Clients.Add(d.cl)
	prev := b.claimLocked(ci.ClientID, holder{dev: d})
	b.mu.Unlock()
	b.evict(prev)
	return d, nil
}

// claimLocked makes h the holder of clientID and returns the previous
// holder, which the caller must evict. A device claiming a clientid that an
// offline MQTT session still holds in mochi discards that session, as a
// clean start does. An empty clientid is nobody's: devices without one are
// independent. Called with b.mu held.
func (b *Broker) claimLocked(clientID string, h holder) holder {
	if clientID == "" {
		if h.dev != nil {
			b.anon[h.dev] = struct{}{}
		}
		return holder{}
	}
	prev := b.holders[clientID]
	b.holders[clientID] = h
	if h.dev != nil && prev.dev == nil && prev.mq == nil {
		if old, ok := b.srv.Clients.Get(clientID); ok {
			b.srv.UnsubscribeClient(old)
			old.ClearInflights()
			b.srv.Clients.Delete(clientID)
		}
	}
	return prev
}

// evict ends a previous holder of a clientid: a device is closed with
// ErrTakenOver; an MQTT client gets DISCONNECT 0x8E and its session is
// discarded (the device's session is a clean start).
func (b *Broker) evict(prev holder) {
	switch {
	case prev.dev != nil:
		prev.dev.end(broker.ErrTakenOver)
	case prev.mq != nil:
		b.takenOver.Store(prev.mq, struct{}{})
		_ = b.srv.DisconnectClient(prev.mq, packets.ErrSessionTakenOver)
		b.srv.UnsubscribeClient(prev.mq)
		prev.mq.ClearInflights()
	}
}

// release forgets d as the holder of its clientid, if it still is.
func (b *Broker) release(d *deviceSession) {
	b.mu.Lock()
	if d.clientID == "" {
		delete(b.anon, d)
	} else if b.holders[d.clientID].dev == d {
		delete(b.holders, d.clientID)
	}
	b.mu.Unlock()
}

// deliver hands one publish that mochi routed to this device to the
// channel, at the QoS qosOf finds among the device's grants; false when it
// finds none (unsubscribed while mochi was routing, or a '$' topic through
// a wildcard filter). Called by mochi, perhaps with another client's lock
// held: it only queues.
func (d *deviceSession) deliver(pk *packets.Packet, qosOf func([]grant, string) (byte, bool)) bool {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return false
	}
	qos, ok := qosOf(d.subs, pk.TopicName)
	d.mu.Unlock()
	if ok {
		d.h.Deliver(toMessage(pk, min(qos, pk.FixedHeader.Qos)))
	}
	return ok
}

// deliverInline is the device's inline subscription handler: mochi calls
// it once per publish that matches any of the device's filters in its
// index (subscribeInline, once per retained message). Only the device's own
// filters other than $share's decide.
func (d *deviceSession) deliverInline(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
	if d.deliver(&pk, matchedQoS) {
		atomic.AddInt64(&d.b.srv.Info.MessagesSent, 1)
	}
}

func toMessage(pk *packets.Packet, qos byte) broker.Message {
	m := broker.Message{Topic: pk.TopicName, Payload: pk.Payload, QoS: qos}
	for _, up := range pk.Properties.User {
		m.Stamp(up.Key, up.Val)
	}
	if m.Time.IsZero() {
		m.Time = time.Now()
	}
	return m
}

func (d *deviceSession) isClosed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

// Publish injects the publish as the device. It returns once mochi has
// routed it to every subscriber, which is stronger than a PUBACK.
func (d *deviceSession) Publish(_ context.Context, topic string, qos byte, payload []byte) error {
	if qos > 2 {
		return fmt.Errorf("publish: qos %d: %w", qos, broker.ErrBadRequest)
	}
	if !mqtt.IsValidFilter(topic, true) || topic == "" {
		if strings.HasPrefix(strings.ToUpper(topic), mqtt.SysPrefix) {
			return fmt.Errorf("publish %q: %w", topic, broker.ErrNotAuthorized)
		}
		return fmt.Errorf("publish %q: %w", topic, broker.ErrBadRequest)
	}
	if d.isClosed() {
		return broker.ErrClosed
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic,
		Payload:     payload,
		PacketID:    uint16(qos), // mochi's own inline publish does the same: no ack flow for inline clients
	}
	if err := d.b.srv.InjectPacket(d.cl, pk); err != nil {
		return fmt.Errorf("publish %q: %w", topic, err)
	}
	return nil
}

// Subscribe registers the filter in mochi: a $share filter as the device
// client's subscription at QoS 0, so mochi keeps no inflight state per
// delivery, any other as an inline subscription. The QoS granted to the
// device is kept here and applied when a message is delivered.
func (d *deviceSession) Subscribe(_ context.Context, filter string, qos byte) error {
	if qos > 2 {
		return fmt.Errorf("subscribe: qos %d: %w", qos, broker.ErrBadRequest)
	}
	d.opMu.Lock()
	defer d.opMu.Unlock()
	if !mqtt.IsSharedFilter(filter) {
		return d.subscribeInline(filter, qos)
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return broker.ErrClosed
	}
	// Before the inject: retained messages are delivered inside it.
	i := d.find(filter)
	var old byte
	if i >= 0 {
		old, d.subs[i].qos = d.subs[i].qos, qos
	} else {
		d.subs = append(d.subs, grant{filter, qos})
	}
	d.mu.Unlock()

	d.ack = nil
	err := d.b.srv.InjectPacket(d.cl, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    1,
		Filters:     packets.Subscriptions{{Filter: filter, Qos: 0}},
	})
	code := byte(packets.ErrUnspecifiedError.Code)
	if err == nil && len(d.ack) == 1 {
		code = d.ack[0]
	}
	if code <= 2 {
		return nil
	}
	d.mu.Lock()
	if j := d.find(filter); j >= 0 && i >= 0 {
		d.subs[j].qos = old
	} else if j >= 0 {
		d.subs = append(d.subs[:j], d.subs[j+1:]...)
	}
	d.mu.Unlock()
	switch {
	case code == packets.ErrNotAuthorized.Code:
		return fmt.Errorf("subscribe %q: %w", filter, broker.ErrNotAuthorized)
	case err != nil:
		return fmt.Errorf("subscribe %q: %w: %v", filter, broker.ErrBadRequest, err)
	}
	return fmt.Errorf("subscribe %q: %w: reason code 0x%02x", filter, broker.ErrBadRequest, code)
}

// subscribeInline subscribes to a filter that is not $share's, as mochi
// would (its validation, then the retained messages, even to a filter
// subscribed before: retain handling 0), as an inline subscription.
// Called with opMu held.
func (d *deviceSession) subscribeInline(filter string, qos byte) error {
	if !mqtt.IsValidFilter(filter, false) {
		return fmt.Errorf("subscribe %q: %w: reason code 0x%02x", filter, broker.ErrBadRequest, packets.ErrTopicFilterInvalid.Code)
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return broker.ErrClosed
	}
	if i := d.find(filter); i >= 0 {
		d.subs[i].qos = qos
	} else {
		d.subs = append(d.subs, grant{filter, qos})
		atomic.AddInt64(&d.b.srv.Info.Subscriptions, 1)
	}
	d.reindex()
	d.mu.Unlock()

	for _, pk := range d.b.srv.Topics.Messages(filter) {
		d.deliverInline(nil, packets.Subscription{}, pk) // the same rules as live messages
	}
	return nil
}

// reindex brings mochi's index of the device's inline subscriptions in
// line with d.subs: each filter that is not $share's and, for "x/#", "x"
// too, as mochi's inline routing does not match "x" to "x/#"
// [MQTT-4.7.1-2]. Called with d.mu held, so that detach, which takes it
// too, removes all that was registered: d.mu comes before the index's lock,
// and mochi calls no device while it holds that.
func (d *deviceSession) reindex() {
	var want []string
	for _, g := range d.subs {
		if mqtt.IsSharedFilter(g.filter) {
			continue
		}
		want = append(want, g.filter)
		if p, ok := strings.CutSuffix(g.filter, "/#"); ok {
			want = append(want, p)
		}
	}
	for _, f := range want {
		if !slices.Contains(d.index, f) {
			d.index = append(d.index, f)
			d.b.srv.Topics.InlineSubscribe(mqtt.InlineSubscription{
				Subscription: packets.Subscription{Filter: f, Identifier: d.id},
				Handler:      d.inline,
			})
		}
	}
	d.index = slices.DeleteFunc(d.index, func(f string) bool {
		if slices.Contains(want, f) {
			return false
		}
		d.b.srv.Topics.InlineUnsubscribe(d.id, f)
		return true
	})
}

// Unsubscribe removes the filter; an unknown filter is not an error.
func (d *deviceSession) Unsubscribe(_ context.Context, filter string) error {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	if d.isClosed() {
		return broker.ErrClosed
	}
	if !mqtt.IsSharedFilter(filter) {
		d.mu.Lock()
		if j := d.find(filter); j >= 0 {
			d.subs = append(d.subs[:j], d.subs[j+1:]...)
			atomic.AddInt64(&d.b.srv.Info.Subscriptions, -1)
			d.reindex()
		}
		d.mu.Unlock()
		return nil
	}
	err := d.b.srv.InjectPacket(d.cl, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1},
		PacketID:    1,
		Filters:     packets.Subscriptions{{Filter: filter}},
	})
	if err != nil {
		return fmt.Errorf("unsubscribe %q: %w: %v", filter, broker.ErrBadRequest, err)
	}
	d.mu.Lock()
	if j := d.find(filter); j >= 0 {
		d.subs = append(d.subs[:j], d.subs[j+1:]...)
	}
	d.mu.Unlock()
	return nil
}

// Close ends the session for the gateway; Handlers.Closed is not called.
func (d *deviceSession) Close() {
	if d.detach() {
		d.b.release(d)
	}
}

// end ends the session for the broker (a takeover or shutdown) and reports
// it through Handlers.Closed, unless the gateway closed it first.
func (d *deviceSession) end(err error) {
	if d.detach() && d.h.Closed != nil {
		d.h.Closed(err)
	}
}

// detach removes the device's client from mochi; it reports false if the
// session was already closed.
func (d *deviceSession) detach() bool {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return false
	}
	d.closed = true
	for _, g := range d.subs {
		if !mqtt.IsSharedFilter(g.filter) {
			atomic.AddInt64(&d.b.srv.Info.Subscriptions, -1)
		}
	}
	d.subs = nil
	d.reindex()
	d.mu.Unlock()
	d.b.srv.UnsubscribeClient(d.cl)
	d.cl.Stop(packets.CodeDisconnect)
	d.b.srv.Clients.Delete(d.cl.ID)
	return true
}

// grantedQoS is the highest QoS among the filters that match topic. mochi
// routed the message here, so if no filter seems to match (a rule of
// mochi's this matcher does not share) the highest QoS granted at all is
// used; ok is false only when the device has no subscription left.
func grantedQoS(subs []grant, topic string) (qos byte, ok bool) {
	if qos, ok = bestQoS(subs, topic, true); ok || len(subs) == 0 {
		return qos, ok
	}
	for _, g := range subs {
		qos = max(qos, g.qos)
	}
	return qos, true
}

// matchedQoS is the highest QoS among the filters other than $share's that
// match topic; ok is false if none does. It decides inline deliveries.
func matchedQoS(subs []grant, topic string) (qos byte, ok bool) {
	return bestQoS(subs, topic, false)
}

// bestQoS is the highest QoS among the filters that match topic, $share's
// among them or not; ok is false if none does.
func bestQoS(subs []grant, topic string, shared bool) (qos byte, ok bool) {
	for _, g := range subs {
		if (!ok || g.qos > qos) && (shared || !mqtt.IsSharedFilter(g.filter)) && filterMatches(g.filter, topic) {
			qos, ok = g.qos, true
		}
	}
	return qos, ok
}

// filterMatches reports whether an MQTT topic filter (possibly a $share
// filter) matches a topic name. A filter starting with a wildcard does not
// match a topic starting with '$' [MQTT-4.7.2-1].
func filterMatches(filter, topic string) bool {
	if mqtt.IsSharedFilter(filter) {
		// $share/<group>/<filter>
		if i := strings.IndexByte(filter[len(mqtt.SharePrefix)+1:], '/'); i >= 0 {
			filter = filter[len(mqtt.SharePrefix)+1+i+1:]
		}
	}
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	for {
		if filter == "#" {
			return true
		}
		fl, frest, fmore := strings.Cut(filter, "/")
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore || !tmore {
			// "a/#" matches "a" too [MQTT-4.7.1-2].
			return fmore == tmore || (fmore && frest == "#")
		}
		filter, topic = frest, trest
	}
}

package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/exgate/exgate/internal/broker"
	"github.com/exgate/exgate/internal/mqttwire"
	"github.com/exgate/exgate/internal/netpoll"
)

// MQTT 5 reason codes the gateway maps.
const (
	rcBadUserPass         = 0x86
	rcNotAuthorized       = 0x87
	rcBanned              = 0x8A
	rcUnsupportedVersion  = 0x84
	rcSessionTakenOver    = 0x8E
	rcAdministrativeClose = 0x98
	// rcV3BadVersion is a 3.1.1 server's CONNACK "unacceptable protocol
	// version"; rcV3BadUserPass and rcV3NotAuthorized its refusals.
	rcV3BadVersion    = 0x01
	rcV3BadUserPass   = 0x04
	rcV3NotAuthorized = 0x05
)

// errNoMQTT5 marks a server that refused an MQTT 5 CONNECT as such: it hung
// up without a CONNACK, or said the version is not supported.
var errNoMQTT5 = errors.New("the server does not speak MQTT 5")

// receiveMaximum bounds how many QoS>0 deliveries the broker keeps in
// flight to one session (MQTT 5).
const receiveMaximum = 128

// writeTimeout bounds one write to the upstream.
const writeTimeout = 15 * time.Second

// conn is one device's session upstream, in MQTT 5 or 3.1.1, on
// mochi-mqtt's packet codec (the embedded broker's). Its only goroutine is
// its reader: calls write from their own goroutine under a lock and wait
// for their acknowledgement, and keepalive pings come from a timer. (paho's
// clients held 4 goroutines per device with MQTT 5 and 11 with 3.1.1.)
// MQTT 3.1.1 has no user properties and no reason codes: deliveries carry
// no publisher id, and a denied publish is not reported by every broker.
type conn struct {
	nc   net.Conn
	v    byte   // 4 or 5
	from string // publisher id stamped on every publish (MQTT 5)
	h    broker.Handlers
	ka   time.Duration
	done chan struct{} // the reader goroutine returned; nil when a poller reads
	last atomic.Int64  // unix nanos of the last packet read

	// When a poller reads the connection (plain TCP on Linux): its watch,
	// the socket, and the part of a packet read so far. rmu is held while
	// a read is handled, so Close can wait for the one under way.
	watch   *netpoll.Watch
	rc      syscall.RawConn
	rmu     sync.Mutex
	partial []byte

	wmu sync.Mutex // one write at a time
	wdl time.Time  // the connection's write deadline, under wmu

	mu      sync.Mutex
	id      uint16
	waiting map[uint16]chan *packets.Packet // acknowledgements awaited, by packet id
	qos2    map[uint16]struct{}             // QoS 2 deliveries awaiting PUBREL
	closed  bool                            // by Close, or the connection ended
	ping    *time.Timer
	// acks wait here while a goroutine writes them (the socket was full,
	// or another write held it): a poller's goroutine never waits.
	acks     []*packets.Packet
	flushing bool
}

var _ broker.Session = (*conn)(nil)

// dial opens an MQTT session over nc in version v (4 or 5): CONNECT with a
// clean start, CONNACK within ctx, then p (if not nil, and nc is plain TCP)
// or a reader goroutine reads what the broker sends. It takes ownership of
// nc.
func dial(ctx context.Context, nc net.Conn, v byte, ci broker.ClientInfo, password string, keepalive uint16, h broker.Handlers, p *netpoll.Poller) (broker.Session, error) {
	// The maps are made on first use: an idle device holds none.
	c := &conn{nc: nc, v: v, from: ci.From, h: h, ka: time.Duration(keepalive) * time.Second}
	if c.from == "" {
		c.from = ci.ClientID
	}
	pk := &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, Connect: packets.ConnectParams{
		ProtocolName: []byte("MQTT"), ClientIdentifier: ci.ClientID, Clean: true, Keepalive: keepalive}}
	if ci.Username != "" {
		pk.Connect.Username, pk.Connect.UsernameFlag = []byte(ci.Username), true
	}
	if password != "" {
		pk.Connect.Password, pk.Connect.PasswordFlag = []byte(password), true
	}
	if v == 5 {
		pk.Properties.ReceiveMaximum = receiveMaximum
		pk.Properties.RequestProblemInfo, pk.Properties.RequestProblemInfoFlag = 1, true
	}
	// The CONNACK is awaited within ctx: its end breaks the read.
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Now()) })
	r := bufio.NewReaderSize(nc, 512)
	ack, err := c.connect(pk, r)
	if !stop() && err != nil {
		err = fmt.Errorf("connect: %w: no CONNACK: %w", broker.ErrUnavailable, ctx.Err())
	}
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	c.wdl = time.Time{} // the next write sets its deadline again
	if v == 5 && ack.Properties.ServerKeepAliveFlag {
		c.ka = time.Duration(ack.Properties.ServerKeepAlive) * time.Second
	}
	c.last.Store(time.Now().UnixNano())
	if c.ka > 0 {
		c.mu.Lock() // keepalive reads ping under mu
		c.ping = time.AfterFunc(c.ka, c.keepalive)
		c.mu.Unlock()
	}
	if tc, ok := nc.(*net.TCPConn); ok && p != nil {
		if rc, err := tc.SyscallConn(); err == nil {
			c.rc = rc
			c.rmu.Lock() // what came with the CONNACK is handled before the poller's first read
			if w, err := p.Watch(rc, c.readable); err == nil {
				c.watch = w
				if n := r.Buffered(); n > 0 {
					b, _ := r.Peek(n)
					c.consume(b)
				}
				c.rmu.Unlock()
				return c, nil
			}
			c.rmu.Unlock()
			c.rc = nil
		}
	}
	c.done = make(chan struct{})
	go c.read(r)
	return c, nil
}

// connect sends CONNECT and reads CONNACK, mapping a refusal.
func (c *conn) connect(pk *packets.Packet, r *bufio.Reader) (*packets.Packet, error) {
	if err := c.write(pk); err != nil {
		return nil, fmt.Errorf("connect: %w: %w", broker.ErrUnavailable, err)
	}
	ack, err := mqttwire.Read(r, c.v)
	if err != nil {
		if c.v == 5 && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
			// RabbitMQ's and NATS's MQTT speak 3.1.1 only and hang up on
			// an MQTT 5 CONNECT without a word.
			return nil, fmt.Errorf("connect: %w: %w (the broker hung up on an MQTT 5 CONNECT without a CONNACK: if it speaks MQTT 3.1.1 only, as RabbitMQ and NATS do, set broker.mqtt.protocol_version: auto or 4)", errNoMQTT5, err)
		}
		var v3 mqttwire.V3Connack
		if errors.As(err, &v3) {
			ack = &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ReasonCode: byte(v3)}
		} else {
			return nil, fmt.Errorf("connect: %w: %w", broker.ErrUnavailable, err)
		}
	}
	if ack.FixedHeader.Type != packets.Connack {
		return nil, fmt.Errorf("connect: %w: the broker answered CONNECT with packet type %d", broker.ErrUnavailable, ack.FixedHeader.Type)
	}
	rc := ack.ReasonCode
	switch {
	case rc == 0:
		return ack, nil
	case c.v == 5 && (rc == rcNotAuthorized || rc == rcBadUserPass || rc == rcBanned), c.v == 4 && (rc == rcV3BadUserPass || rc == rcV3NotAuthorized):
		return nil, fmt.Errorf("connect: %w (reason code 0x%02x)", broker.ErrNotAuthorized, rc)
	case c.v == 5 && (rc == rcUnsupportedVersion || rc == rcV3BadVersion):
		return nil, fmt.Errorf("connect: %w: %w (reason code 0x%02x)", errNoMQTT5, broker.ErrUnavailable, rc)
	}
	return nil, fmt.Errorf("connect: %w: refused (reason code 0x%02x)", broker.ErrUnavailable, rc)
}

var bufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func putBuf(b *bytes.Buffer) {
	if b.Cap() <= 64<<10 {
		b.Reset()
		bufs.Put(b)
	}
}

// encode encodes pk into a pooled buffer (putBuf gives it back).
func (c *conn) encode(pk *packets.Packet) (*bytes.Buffer, error) {
	pk.ProtocolVersion = c.v
	b := bufs.Get().(*bytes.Buffer)
	if err := mqttwire.Encode(pk, b); err != nil {
		putBuf(b)
		return nil, err
	}
	return b, nil
}

// write encodes and sends one packet.
func (c *conn) write(pk *packets.Packet) error {
	b, err := c.encode(pk)
	if err != nil {
		return err
	}
	defer putBuf(b)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err = c.writeLocked(b.Bytes())
	return err
}

// writeLocked writes b, waiting up to writeTimeout. Called with wmu held.
func (c *conn) writeLocked(b []byte) (int, error) {
	// Moving the deadline costs a timer update: it is moved at most once
	// a second, so a write that blocks fails after 14 to 15 s.
	if now := time.Now(); c.wdl.Sub(now) < writeTimeout-time.Second {
		c.wdl = now.Add(writeTimeout)
		_ = c.nc.SetWriteDeadline(c.wdl)
	}
	return c.nc.Write(b)
}

// read handles what the broker sends until the connection ends.
func (c *conn) read(r *bufio.Reader) {
	defer close(c.done)
	for {
		pk, err := mqttwire.Read(r, c.v)
		if err != nil {
			c.end(fmt.Errorf("broker connection lost: %w", err))
			return
		}
		c.last.Store(time.Now().UnixNano())
		if !c.handle(pk) {
			return
		}
	}
}

// readable reads what the socket has, on the poller's goroutine.
func (c *conn) readable(*netpoll.Watch) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.isClosed() { // Close or end came first: nothing more reaches the device
		return
	}
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	n, err := netpoll.ReadNow(c.rc, *bp)
	if n > 0 {
		c.last.Store(time.Now().UnixNano())
		if !c.consume((*bp)[:n]) {
			return
		}
	}
	if err != nil {
		c.end(fmt.Errorf("broker connection lost: %w", err))
	}
}

// readBufs are the poller's read buffers, held for one read.
var readBufs = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

// consume handles the packets in b after what was kept of a packet read
// in part, and keeps the part of a packet b ends with. Called with rmu
// held; false once the connection ended.
func (c *conn) consume(b []byte) bool {
	if len(c.partial) > 0 {
		b = append(c.partial, b...)
	}
	for {
		pk, n, err := mqttwire.Parse(b, c.v)
		if err != nil {
			c.partial = nil
			c.end(fmt.Errorf("broker connection lost: %w", err))
			return false
		}
		if n == 0 {
			break
		}
		b = b[n:]
		if !c.handle(pk) {
			c.partial = nil
			return false
		}
	}
	c.partial = nil
	if len(b) > 0 {
		c.partial = bytes.Clone(b) // b may be a pooled buffer
	}
	return true
}

// handle acts on one packet from the broker; false once the connection ended.
func (c *conn) handle(pk *packets.Packet) bool {
	switch pk.FixedHeader.Type {
	case packets.Publish:
		c.deliver(pk)
	case packets.Pubrec:
		if pk.ReasonCode < 0x80 {
			// QoS 2, second step: the caller waits for PUBCOMP.
			c.ack(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: pk.PacketID})
			return true
		}
		c.acked(pk)
	case packets.Puback, packets.Pubcomp, packets.Suback, packets.Unsuback:
		c.acked(pk)
	case packets.Pubrel:
		c.mu.Lock()
		delete(c.qos2, pk.PacketID)
		c.mu.Unlock()
		c.ack(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: pk.PacketID})
	case packets.Disconnect:
		// Only these two say what happened to the session itself; a
		// server shutting down (0x8B), busy, or sending clients
		// elsewhere ended the connection, not the session's right to be.
		var err error
		switch pk.ReasonCode {
		case rcSessionTakenOver:
			err = broker.ErrTakenOver
		case rcAdministrativeClose:
			err = broker.ErrKicked
		default:
			err = fmt.Errorf("broker connection lost: the broker sent DISCONNECT (reason code 0x%02x)", pk.ReasonCode)
		}
		c.end(err)
		return false
	case packets.Pingresp, packets.Connack:
	default: // what only a client sends
		c.end(fmt.Errorf("broker connection lost: unexpected packet type %d from the broker", pk.FixedHeader.Type))
		return false
	}
	return true
}

// ack writes an acknowledgement of the reader's. A reader goroutine
// writes it and waits if it must; a poller's goroutine writes it only if
// the socket takes it at once, else a goroutine writes it, in order after
// the acks before it.
func (c *conn) ack(pk *packets.Packet) {
	if c.rc == nil {
		_ = c.write(pk)
		return
	}
	c.mu.Lock()
	if c.flushing {
		c.acks = append(c.acks, pk)
		c.mu.Unlock()
		return
	}
	if !c.wmu.TryLock() { // a device's publish is being written
		c.flushing = true
		c.acks = append(c.acks, pk)
		c.mu.Unlock()
		go c.flushAcks(nil)
		return
	}
	c.mu.Unlock()
	b, err := c.encode(pk)
	if err != nil {
		c.wmu.Unlock()
		return
	}
	n, err := netpoll.TryWrite(c.rc, b.Bytes())
	if err != nil || n == b.Len() {
		c.wmu.Unlock()
		putBuf(b)
		if err != nil {
			c.end(fmt.Errorf("broker connection lost: %w", err))
		}
		return
	}
	c.mu.Lock()
	c.flushing = true
	c.mu.Unlock()
	go func() { // holding wmu: the rest of this ack goes before anything else
		_, err := c.writeLocked(b.Bytes()[n:])
		c.wmu.Unlock()
		putBuf(b)
		if err != nil {
			c.end(fmt.Errorf("broker connection lost: %w", err))
		}
		c.flushAcks(err)
	}()
}

// flushAcks writes the queued acks until none is left (or a write failed:
// failed, and the connection ends).
func (c *conn) flushAcks(failed error) {
	for {
		c.mu.Lock()
		if len(c.acks) == 0 || failed != nil {
			c.acks, c.flushing = nil, false
			c.mu.Unlock()
			return
		}
		pk := c.acks[0]
		c.acks[0] = nil
		c.acks = c.acks[1:]
		c.mu.Unlock()
		if failed = c.write(pk); failed != nil {
			c.end(fmt.Errorf("broker connection lost: %w", failed))
		}
	}
}

func (c *conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// deliver hands a message to the device and acknowledges it. A QoS 2
// message sent again before its PUBREL is acknowledged, not delivered twice.
func (c *conn) deliver(pk *packets.Packet) {
	switch pk.FixedHeader.Qos {
	case 1:
		c.h.Deliver(toMessage(pk))
		c.ack(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
		return
	case 2:
		c.mu.Lock()
		_, dup := c.qos2[pk.PacketID]
		if c.qos2 == nil {
			c.qos2 = map[uint16]struct{}{}
		}
		c.qos2[pk.PacketID] = struct{}{}
		c.mu.Unlock()
		if !dup {
			c.h.Deliver(toMessage(pk))
		}
		c.ack(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: pk.PacketID})
		return
	}
	c.h.Deliver(toMessage(pk))
}

func toMessage(pk *packets.Packet) broker.Message {
	m := broker.Message{Topic: pk.TopicName, Payload: pk.Payload, QoS: pk.FixedHeader.Qos}
	for _, up := range pk.Properties.User {
		m.Stamp(up.Key, up.Val)
	}
	if m.Time.IsZero() {
		m.Time = time.Now()
	}
	return m
}

// acked hands an acknowledgement to the call waiting for it.
func (c *conn) acked(pk *packets.Packet) {
	c.mu.Lock()
	ch := c.waiting[pk.PacketID]
	delete(c.waiting, pk.PacketID)
	c.mu.Unlock()
	if ch != nil {
		ch <- pk
	}
}

// keepalive pings the broker every keepalive, and ends a connection that
// sent nothing for one and a half of them.
func (c *conn) keepalive() {
	c.mu.Lock()
	closed, ping := c.closed, c.ping
	c.mu.Unlock()
	if closed {
		return
	}
	if time.Since(time.Unix(0, c.last.Load())) > c.ka*3/2 {
		c.end(errors.New("broker connection lost: no answer within 1.5 × keepalive"))
		return
	}
	_ = c.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
	ping.Reset(c.ka)
}

// end closes the connection, releases the calls waiting on it, and tells
// the device, unless the gateway closed the session itself.
func (c *conn) end(err error) {
	if c.shut() {
		if c.watch != nil {
			c.watch.Stop()
		}
		_ = c.nc.Close()
		if c.h.Closed != nil {
			c.h.Closed(err)
		}
	}
}

// shut marks the session closed and releases the calls waiting on it;
// false if it was closed already.
func (c *conn) shut() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.closed = true
	if c.ping != nil {
		c.ping.Stop()
	}
	for id, ch := range c.waiting {
		close(ch)
		delete(c.waiting, id)
	}
	return true
}

// request sends pk with a fresh packet id and waits for its
// acknowledgement within ctx.
func (c *conn) request(ctx context.Context, pk *packets.Packet) (*packets.Packet, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, broker.ErrClosed
	}
	for {
		c.id++
		if _, used := c.waiting[c.id]; c.id != 0 && !used {
			break
		}
	}
	pk.PacketID = c.id
	ch := make(chan *packets.Packet, 1)
	if c.waiting == nil {
		c.waiting = map[uint16]chan *packets.Packet{}
	}
	c.waiting[pk.PacketID] = ch
	c.mu.Unlock()
	if err := c.write(pk); err != nil {
		err = fmt.Errorf("broker connection lost: %w", err)
		c.end(err)
		return nil, err
	}
	select {
	case ack, ok := <-ch:
		if !ok {
			return nil, errors.New("broker connection lost before the broker acknowledged")
		}
		return ack, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.waiting, pk.PacketID)
		c.mu.Unlock()
		return nil, ctx.Err()
	}
}

func (c *conn) Publish(ctx context.Context, topic string, qos byte, payload []byte) error {
	pk := &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, TopicName: topic, Payload: payload}
	if c.v == 5 {
		// MQTT carries no publisher id: the stamps let other exgate nodes
		// (and the embedded broker, which replaces them) report
		// Message.from and Message.timestamp.
		pk.Properties.User = []packets.UserProperty{{Key: broker.PropFrom, Val: c.from}, {Key: broker.PropTime, Val: strconv.FormatInt(time.Now().UnixMilli(), 10)}}
	}
	if qos == 0 {
		c.mu.Lock()
		closed := c.closed
		c.mu.Unlock()
		if closed {
			return broker.ErrClosed
		}
		if err := c.write(pk); err != nil {
			return fmt.Errorf("publish %q: %w", topic, err)
		}
		return nil
	}
	ack, err := c.request(ctx, pk)
	if err != nil {
		return fmt.Errorf("publish %q: %w", topic, err)
	}
	switch rc := ack.ReasonCode; {
	case rc == rcNotAuthorized:
		return fmt.Errorf("publish %q: %w", topic, broker.ErrNotAuthorized)
	case rc >= 0x80:
		return fmt.Errorf("publish %q: refused (reason code 0x%02x)", topic, rc)
	}
	return nil
}

func (c *conn) Subscribe(ctx context.Context, filter string, qos byte) error {
	ack, err := c.request(ctx, &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		Filters: packets.Subscriptions{{Filter: filter, Qos: qos}}})
	if err != nil {
		return fmt.Errorf("subscribe %q: %w", filter, err)
	}
	if len(ack.ReasonCodes) != 1 {
		return fmt.Errorf("subscribe %q: %w: a SUBACK with %d reason codes", filter, broker.ErrBadRequest, len(ack.ReasonCodes))
	}
	switch rc := ack.ReasonCodes[0]; {
	case rc == rcNotAuthorized || (c.v == 4 && rc == 0x80):
		return fmt.Errorf("subscribe %q: %w", filter, broker.ErrNotAuthorized)
	case rc >= 0x80:
		return fmt.Errorf("subscribe %q: %w: refused (reason code 0x%02x)", filter, broker.ErrBadRequest, rc)
	}
	return nil
}

func (c *conn) Unsubscribe(ctx context.Context, filter string) error {
	ack, err := c.request(ctx, &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1},
		Filters: packets.Subscriptions{{Filter: filter}}})
	if err != nil {
		return fmt.Errorf("unsubscribe %q: %w", filter, err)
	}
	// An unknown filter gets 0x11 "no subscription existed": SUCCESS for
	// ExProto (spec §2).
	for _, rc := range ack.ReasonCodes {
		if rc >= 0x80 {
			return fmt.Errorf("unsubscribe %q: refused (reason code 0x%02x)", filter, rc)
		}
	}
	return nil
}

// Close says goodbye (DISCONNECT) and closes the connection, waiting for
// the reader to return. A write under way (to a broker that stopped
// reading) is not waited for: closing the connection ends it.
func (c *conn) Close() {
	if c.shut() {
		if c.wmu.TryLock() {
			var b bytes.Buffer
			pk := &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ProtocolVersion: c.v}
			if pk.DisconnectEncode(&b) == nil {
				c.wdl = time.Now().Add(time.Second)
				_ = c.nc.SetWriteDeadline(c.wdl)
				_, _ = c.nc.Write(b.Bytes())
			}
			c.wmu.Unlock()
		}
		if c.watch != nil {
			c.watch.Stop()
		}
		_ = c.nc.Close()
	}
	if c.watch != nil { // wait for a read being handled: no delivery after Close
		c.rmu.Lock()
		//lint:ignore SA2001 the empty section is the wait: a read holds rmu while it delivers
		c.rmu.Unlock()
		return
	}
	<-c.done
}

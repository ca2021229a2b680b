package channel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/broker"
)

// Authenticate registers the device as a pub/sub client (spec §2
// "Authenticate"): it checks the credentials, then opens a clean broker
// session, which takes over any client with the same clientid. A failure
// leaves the socket open: the handler decides what happens next.
func (c *Channel) Authenticate(ctx context.Context, ci *pb.ClientInfo, password string) error {
	c.cfg.Stats.ClientConnect.Add(1)
	c.mu.Lock()
	switch {
	case c.state == Closed:
		c.mu.Unlock()
		return denied("Connection is closed")
	case c.state == Connected || c.authBusy:
		c.mu.Unlock()
		return denied("Duplicated authenticate command")
	}
	c.authBusy = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.authBusy = false
		c.mu.Unlock()
	}()

	cred := Credentials{
		ClientID: ci.GetClientid(), Username: ci.GetUsername(), Password: password,
		ProtoName: ci.GetProtoName(), ProtoVer: ci.GetProtoVer(),
		Peer: tcpAddr(c.info.GetPeername()),
	}
	// The logger is made only for a line: With formats its attributes at once.
	log := func() *slog.Logger { return c.logger("clientid", cred.ClientID, "username", cred.Username) }
	if ci.GetMountpoint() != "" {
		log().Warn("ClientInfo.mountpoint is ignored; configure gateway.exproto.mountpoint instead")
	}
	if cred.ClientID == "" {
		log().Warn("device authenticates with an empty clientid")
	}
	if b := c.cfg.Banned; b != nil {
		if e, ok := b.Banned(cred.ClientID, cred.Username, cred.Peer); ok {
			c.cfg.Stats.Banned.Add(1)
			c.refused(log, "banned ("+e.As+" "+e.Who+"): "+e.Reason)
			return denied("Authentication failed: banned")
		}
	}
	var res AuthResult
	if c.cfg.Authenticate != nil {
		var err error
		if res, err = c.cfg.Authenticate(ctx, cred); err != nil {
			c.loginFailed(log, cred.ClientID, err.Error())
			c.trace(cred.ClientID, "authenticate denied", "", nil)
			return denied("Authentication failed: " + err.Error())
		}
	}
	if !res.ExpireAt.IsZero() && !res.ExpireAt.After(time.Now()) {
		c.loginFailed(log, cred.ClientID, "credentials expired")
		return denied("Authentication failed: credentials expired")
	}

	mp := c.cfg.Mountpoint
	if strings.Contains(mp, "${") {
		mp = strings.NewReplacer("${clientid}", cred.ClientID, "${username}", cred.Username).Replace(mp)
	}
	sess, err := c.cfg.Broker.Connect(ctx, broker.ClientInfo{ClientID: cred.ClientID, Username: cred.Username}, password, broker.Handlers{
		Deliver: c.deliver,
		Closed:  c.brokerClosed,
	})
	if err != nil {
		if errors.Is(err, broker.ErrNotAuthorized) {
			c.loginFailed(log, cred.ClientID, "the broker refused the session")
			return denied("Authentication failed: the broker refused the session")
		}
		c.cfg.Stats.AuthFailed.Add(1)
		log().Warn("broker session failed", "error", err)
		return fmt.Errorf("open session: %w", err)
	}

	c.mu.Lock()
	if c.state == Closed {
		c.mu.Unlock()
		sess.Close()
		return denied("Connection is closed")
	}
	c.state = Connected
	if c.authTimer != nil {
		c.authTimer.Stop()
	}
	c.client = cred
	c.client.Password = "" // never kept
	c.superuser = res.Superuser
	c.connectedAt = time.Now()
	c.mountpoint = mp
	c.session = sess
	if !res.ExpireAt.IsZero() {
		c.expireTimer = time.AfterFunc(time.Until(res.ExpireAt), func() { c.closeWith(ReasonExpired, false) })
	}
	c.mu.Unlock()
	c.cfg.Registry.connected(c, cred.ClientID)
	c.cfg.Stats.ClientConnected.Add(1)
	c.trace(cred.ClientID, "authenticated", "", nil)
	c.lifecycle(log, "client connected")
	return nil
}

// lifecycle logs a device's coming or going at info level, as EMQX's
// client.connected and client.disconnected, at most 50 lines a second for
// the gateway: in a storm the next line logged says how many were left out.
func (c *Channel) lifecycle(log func() *slog.Logger, msg string, attrs ...any) {
	if !c.cfg.Logger.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	ok, suppressed := c.cfg.Stats.lifecycle.allow(time.Now(), 50)
	if !ok {
		return
	}
	if suppressed > 0 {
		attrs = append(attrs, "connects_and_disconnects_not_logged", suppressed)
	}
	log().Info(msg, attrs...)
}

// loginFailed is a failed authentication: it counts towards a ban of the
// clientid and the peer host, and is refused.
func (c *Channel) loginFailed(log func() *slog.Logger, clientID, reason string) {
	if b := c.cfg.Banned; b != nil {
		if e, ok := b.Failed(clientID, tcpAddr(c.info.GetPeername())); ok {
			log().Warn("client banned after failed authentications", "as", e.As, "who", e.Who, "until", e.Until)
		}
	}
	c.refused(log, reason)
}

// refused counts a refused Authenticate and logs it as EMQX does
// (client_login_failed, at warning), at most a few lines a second. log
// carries the clientid, username and peer; the password is never logged.
func (c *Channel) refused(log func() *slog.Logger, reason string) {
	c.cfg.Stats.AuthFailed.Add(1)
	if ok, suppressed := c.cfg.Stats.loginFailed.allow(time.Now(), 10); ok {
		attrs := []any{"reason", reason}
		if suppressed > 0 {
			attrs = append(attrs, "not_logged_since_last", suppressed)
		}
		log().Warn("client_login_failed: authentication refused", attrs...)
	}
}

// StartTimer starts or replaces the keepalive (spec §2 "StartTimer"): after
// 1.5 × interval without socket data the handler gets OnTimerTimeout and the
// gateway closes the device with {shutdown,keepalive_timeout}.
func (c *Channel) StartTimer(typ pb.TimerType, interval uint32) error {
	if typ != pb.TimerType_KEEPALIVE {
		return fmt.Errorf("%w: timer type %d", ErrBadParam, typ)
	}
	if interval == 0 {
		return fmt.Errorf("%w: interval must be > 0", ErrBadParam)
	}
	// MQTT's keepalive limit; beyond it time.Duration arithmetic overflowed
	// once and closed the device at once.
	if interval > maxKeepalive {
		return fmt.Errorf("%w: interval %d s is more than %d s", ErrParamsType, interval, maxKeepalive)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == Closed {
		return ErrNotAlive
	}
	c.keepalive = time.Duration(interval) * time.Second
	// The handler now owns liveness: the idle rule no longer applies.
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	// Silence counts from now or from the last read, whichever is later.
	c.lastRecv.Store(max(c.lastRecv.Load(), time.Now().UnixNano()))
	if c.kaTimer != nil {
		c.kaTimer.Stop()
	}
	c.kaTimer = time.AfterFunc(c.keepaliveLimit(), c.keepaliveCheck)
	return nil
}

const maxKeepalive = 65535

func (c *Channel) keepaliveLimit() time.Duration { return c.keepalive * 3 / 2 }

func (c *Channel) keepaliveCheck() {
	c.mu.Lock()
	if c.state == Closed || c.keepalive == 0 {
		c.mu.Unlock()
		return
	}
	limit := c.keepaliveLimit()
	silence := time.Since(time.Unix(0, c.lastRecv.Load()))
	if silence < limit {
		c.kaTimer.Reset(limit - silence)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.closeAfter(ReasonKeepaliveTimeout, false, &event{kind: evTimeout})
}

// authExpired closes a device that did not authenticate in time.
func (c *Channel) authExpired() {
	c.mu.Lock()
	late := c.state == Connecting && !c.authBusy // an Authenticate under way may finish
	c.mu.Unlock()
	if late {
		c.closeWith(ReasonAuthTimeout, false)
	}
}

func (c *Channel) idleExpired() {
	if (!c.gotBytes.Load() || c.cfg.Datagram) && c.State() != Closed && c.keepaliveOff() {
		c.closeWith(ReasonIdleTimeout, false)
	}
}

func (c *Channel) keepaliveOff() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.keepalive == 0
}

// session returns the broker session and identity for a pub/sub call.
func (c *Channel) pubsub() (broker.Session, Who, string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case Closed:
		return nil, Who{}, "", ErrNotAlive
	case Connecting:
		return nil, Who{}, "", ErrNotConnected
	}
	who := Who{ClientID: c.client.ClientID, Username: c.client.Username, Peer: c.client.Peer, Superuser: c.superuser}
	return c.session, who, c.mountpoint, nil
}

func (c *Channel) authorize(ctx context.Context, who Who, publish bool, topic string) error {
	if who.Superuser || c.cfg.Authorize == nil || c.cfg.Authorize(ctx, who, publish, topic) {
		return nil
	}
	c.cfg.Stats.AuthzDenied.Add(1)
	return denied("Authorization deny")
}

// Publish publishes as the device (spec §2 "Publish"): authorization on the
// topic as given, then the mountpoint; never retained.
func (c *Channel) Publish(ctx context.Context, topic string, qos uint32, payload []byte) error {
	if qos > 2 {
		return fmt.Errorf("%w: qos %d", ErrBadParam, qos)
	}
	sess, who, mp, err := c.pubsub()
	if err != nil {
		return err
	}
	if !ValidTopic(topic) {
		return fmt.Errorf("%w: topic %q", ErrBadParam, topic)
	}
	if IsSys(topic) {
		c.cfg.Stats.AuthzDenied.Add(1)
		return denied("Publishing to $SYS topics is not allowed")
	}
	if err := c.authorize(ctx, who, true, topic); err != nil {
		return err
	}
	if err := c.brokerErr(sess.Publish(ctx, mp+topic, byte(qos), payload)); err != nil {
		return err
	}
	c.cfg.Stats.MessagesPublished.Add(1)
	c.published.Add(1)
	c.trace(who.ClientID, "publish", topic, payload)
	return nil
}

// IsSys reports a $SYS topic (as mochi does, case-insensitively): the
// broker's own, never a client's to publish to.
func IsSys(topic string) bool {
	return len(topic) >= 4 && strings.EqualFold(topic[:4], "$SYS") && (len(topic) == 4 || topic[4] == '/')
}

// Subscribe subscribes the device, or updates the QoS of an existing
// subscription (spec §2 "Subscribe").
func (c *Channel) Subscribe(ctx context.Context, filter string, qos uint32) error {
	return c.subscribe(ctx, filter, qos, true)
}

// SubscribeAsOperator subscribes the device on an operator's behalf (the
// management API): the mountpoint applies, authorization does not.
func (c *Channel) SubscribeAsOperator(ctx context.Context, filter string, qos uint32) error {
	return c.subscribe(ctx, filter, qos, false)
}

func (c *Channel) subscribe(ctx context.Context, filter string, qos uint32, authorize bool) error {
	if qos > 2 {
		return fmt.Errorf("%w: qos %d", ErrBadParam, qos)
	}
	sess, who, mp, err := c.pubsub()
	if err != nil {
		return err
	}
	if !ValidFilter(filter) {
		return fmt.Errorf("%w: topic filter %q", ErrBadParam, filter)
	}
	if authorize {
		if err := c.authorize(ctx, who, false, filter); err != nil {
			return err
		}
	}
	if err := c.brokerErr(sess.Subscribe(ctx, Mount(mp, filter), byte(qos))); err != nil {
		return err
	}
	c.mu.Lock()
	if c.state == Connected {
		if c.subs == nil {
			c.subs = make(map[string]byte, 1)
		}
		c.subs[filter] = byte(qos)
	}
	c.mu.Unlock()
	c.trace(who.ClientID, "subscribe", filter, nil)
	return nil
}

// Unsubscribe removes a subscription; an unknown filter is SUCCESS.
func (c *Channel) Unsubscribe(ctx context.Context, filter string) error {
	sess, _, mp, err := c.pubsub()
	if err != nil {
		return err
	}
	if !ValidFilter(filter) {
		return fmt.Errorf("%w: topic filter %q", ErrBadParam, filter)
	}
	if err := c.brokerErr(sess.Unsubscribe(ctx, Mount(mp, filter))); err != nil {
		return err
	}
	c.mu.Lock()
	delete(c.subs, filter)
	c.mu.Unlock()
	return nil
}

func (c *Channel) brokerErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, broker.ErrNotAuthorized):
		c.cfg.Stats.AuthzDenied.Add(1)
		return denied("Authorization deny")
	case errors.Is(err, broker.ErrClosed):
		return ErrNotAlive
	case errors.Is(err, broker.ErrBadRequest):
		return fmt.Errorf("%w: %v", ErrBadParam, err)
	}
	return err
}

// deliver queues a message from the broker. It never blocks the
// publisher: when MaxMqueueLen messages already wait, one is dropped
// (makeRoom), counted, and logged at most a few lines a second.
func (c *Channel) deliver(m broker.Message) {
	c.mu.Lock()
	if c.state != Connected {
		c.droppedClosed(1)
		c.mu.Unlock()
		return
	}
	msg := &pb.Message{
		Node:      c.cfg.Node,
		Qos:       uint32(m.QoS),
		From:      m.From,
		Topic:     strings.TrimPrefix(m.Topic, c.mountpoint),
		Payload:   m.Payload,
		Timestamp: uint64(m.Time.UnixMilli()),
	}
	var victim *pb.Message
	if c.queuedMsgs >= c.cfg.MaxMqueueLen {
		var isNew bool
		if victim, isNew = c.makeRoom(msg); isNew {
			msg = nil
		}
	}
	clientID := c.client.ClientID
	start := false
	if msg != nil {
		msg.Id = c.ids.next()
		start = c.enqueue(event{kind: evMessage, msg: msg})
	}
	c.mu.Unlock()
	if start {
		c.startDispatch(true) // never blocks: safe inside the broker's delivery
	}
	if msg != nil {
		c.trace(clientID, "deliver", m.Topic, m.Payload)
	}
	if victim != nil {
		c.logDropped(clientID, victim)
	}
}

// logDropped warns of a delivery dropped from a full queue, at most ten
// lines a second for the whole gateway.
func (c *Channel) logDropped(clientID string, m *pb.Message) {
	ok, suppressed := c.cfg.Stats.dropped.allow(time.Now(), 10)
	if !ok {
		return
	}
	reason := "queue_full"
	if m.Qos == 0 {
		reason = "qos0_msg"
	}
	c.logger().Warn("delivery dropped: the device's queue is full", "clientid", clientID, "topic", m.Topic, "qos", m.Qos,
		"reason", reason, "max_mqueue_len", c.cfg.MaxMqueueLen, "dropped_since_last_line", suppressed)
}

// brokerClosed handles the broker ending the session: a takeover, a kick,
// or a lost broker connection.
func (c *Channel) brokerClosed(err error) {
	switch {
	case errors.Is(err, broker.ErrTakenOver):
		c.closeWith(ReasonDiscarded, false)
	case errors.Is(err, broker.ErrKicked):
		c.closeWith(ReasonKicked, false)
	default:
		c.logger().Warn("broker session lost", "clientid", c.ClientID(), "error", err)
		c.closeWith("{shutdown,{error,broker_session_lost}}", false)
	}
}

package api

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/exgate/exgate/internal/channel"
)

// clientJSON has the fields of EMQX's gateway client object that mean
// something for an ExProto device (EMQX 5 names; Erlang's mailbox_len,
// heap_size and reductions are left out). Times are RFC 3339 with
// milliseconds and the server's offset, as EMQX writes them.
type clientJSON struct {
	Node             string `json:"node"`
	ClientID         string `json:"clientid"`
	Username         string `json:"username"`
	ConnID           string `json:"conn_id"`
	ProtoName        string `json:"proto_name"`
	ProtoVer         string `json:"proto_ver"`
	IPAddress        string `json:"ip_address"`
	Port             int    `json:"port"`
	IsBridge         bool   `json:"is_bridge"`
	Connected        bool   `json:"connected"`
	ConnState        string `json:"conn_state"`
	CreatedAt        string `json:"created_at"`
	ConnectedAt      string `json:"connected_at,omitempty"`
	DisconnectedAt   string `json:"disconnected_at,omitempty"`
	Keepalive        int    `json:"keepalive"`
	CleanStart       bool   `json:"clean_start"`
	ExpiryInterval   int    `json:"expiry_interval"`
	SubscriptionsCnt int    `json:"subscriptions_cnt"`
	// EMQX's ExProto channel reports these as 0: a device has no
	// subscription cap, no MQTT inflight window and no QoS 2 awaiting
	// PUBREL (exgate's neither); scripts that read them find them.
	SubscriptionsMax int   `json:"subscriptions_max"`
	InflightCnt      int   `json:"inflight_cnt"`
	InflightMax      int   `json:"inflight_max"`
	AwaitingRelCnt   int   `json:"awaiting_rel_cnt"`
	AwaitingRelMax   int   `json:"awaiting_rel_max"`
	MqueueLen        int64 `json:"mqueue_len"`
	MqueueMax        int   `json:"mqueue_max"`
	MqueueDropped    int64 `json:"mqueue_dropped"`
	RecvOct          int64 `json:"recv_oct"`
	RecvCnt          int64 `json:"recv_cnt"`
	RecvPkt          int64 `json:"recv_pkt"` // ExProto has no packets of its own: a socket read (datagram) is one
	RecvMsg          int64 `json:"recv_msg"`
	SendOct          int64 `json:"send_oct"`
	SendCnt          int64 `json:"send_cnt"`
	SendPkt          int64 `json:"send_pkt"` // a Send is one
	SendMsg          int64 `json:"send_msg"`
	EventsQueued     int   `json:"events_queued"` // exgate's: events waiting for the handler
}

// emqxTime formats t as EMQX does: 2024-05-01T10:00:00.123+00:00.
func emqxTime(t time.Time) string { return t.Local().Format("2006-01-02T15:04:05.000-07:00") }

func (s *Server) toJSON(in channel.Info) clientJSON {
	host, port, _ := net.SplitHostPort(in.Peer)
	p, _ := strconv.Atoi(port)
	c := clientJSON{
		ClientID: in.ClientID, Username: in.Username, ConnID: in.ConnID, Node: s.g.Node(),
		ProtoName: in.ProtoName, ProtoVer: in.ProtoVer, IPAddress: host, Port: p,
		Connected: in.State == channel.Connected, ConnState: in.State.String(),
		CreatedAt: emqxTime(in.CreatedAt), Keepalive: int(in.Keepalive / time.Second),
		CleanStart:       true, // a device's broker session always starts clean
		SubscriptionsCnt: len(in.Subscriptions), RecvOct: in.BytesIn, SendOct: in.BytesOut,
		MqueueLen: in.MqueueLen, MqueueMax: in.MaxMqueue, MqueueDropped: in.MqueueDropped,
		RecvCnt: in.Reads, RecvPkt: in.Reads, RecvMsg: in.Published, SendCnt: in.Writes, SendPkt: in.Writes, SendMsg: in.Delivered,
		EventsQueued: in.Queued,
	}
	if !in.ConnectedAt.IsZero() {
		c.ConnectedAt = emqxTime(in.ConnectedAt)
	}
	if !in.DisconnectedAt.IsZero() {
		c.DisconnectedAt = emqxTime(in.DisconnectedAt)
	}
	return c
}

// clients lists devices with EMQX's paging and filters; devices that have
// not authenticated yet are listed too (conn_state "connecting").
// paging reads EMQX's page and limit parameters, answering 400 when they
// are out of range.
func paging(w http.ResponseWriter, q url.Values) (page, limit int, ok bool) {
	page, limit = intParam(q.Get("page"), 1), intParam(q.Get("limit"), 100)
	if page < 1 || limit < 1 || limit > 10000 {
		fail(w, http.StatusBadRequest, "BAD_REQUEST", "page must be ≥ 1 and limit 1…10000")
		return 0, 0, false
	}
	return page, limit, true
}

func (s *Server) clients(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	page, limit, ok := paging(w, q)
	if !ok {
		return
	}
	var gte, lte time.Time
	for key, t := range map[string]*time.Time{"gte_connected_at": &gte, "lte_connected_at": &lte} {
		if v := q.Get(key); v != "" {
			parsed, err := parseTime(v)
			if err != nil {
				fail(w, http.StatusBadRequest, "BAD_REQUEST", key+": expected RFC 3339 or epoch milliseconds")
				return
			}
			*t = parsed
		}
	}
	var all []channel.Info
	for _, c := range s.g.Reg.All() {
		in := c.Snapshot()
		if in.State == channel.Closed {
			continue
		}
		host, _, _ := net.SplitHostPort(in.Peer)
		switch {
		case q.Has("clientid") && in.ClientID != q.Get("clientid"),
			q.Has("username") && in.Username != q.Get("username"),
			q.Has("ip_address") && host != q.Get("ip_address"),
			q.Has("conn_state") && in.State.String() != q.Get("conn_state"),
			q.Has("proto_name") && in.ProtoName != q.Get("proto_name"),
			q.Has("like_clientid") && !strings.Contains(in.ClientID, q.Get("like_clientid")),
			q.Has("like_username") && !strings.Contains(in.Username, q.Get("like_username")),
			!gte.IsZero() && (in.ConnectedAt.IsZero() || in.ConnectedAt.Before(gte)),
			!lte.IsZero() && (in.ConnectedAt.IsZero() || in.ConnectedAt.After(lte)):
			continue
		}
		all = append(all, in)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].CreatedAt.Before(all[j].CreatedAt) })
	data := []clientJSON{}
	for i := (page - 1) * limit; i < len(all) && i < page*limit; i++ {
		data = append(data, s.toJSON(all[i]))
	}
	writeJSON(w, 200, map[string]any{"data": data, "meta": map[string]any{
		"page": page, "limit": limit, "count": len(all), "hasnext": page*limit < len(all)}})
}

func intParam(s string, def int) int {
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

func parseTime(s string) (time.Time, error) {
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.UnixMilli(ms), nil
	}
	return time.Parse(time.RFC3339, s)
}

// find returns the authenticated channel of a clientid, or writes 404.
func (s *Server) find(w http.ResponseWriter, r *http.Request) *channel.Channel {
	id := r.PathValue("clientid")
	if c, ok := s.g.Reg.ByClientID(id); ok && c.State() == channel.Connected {
		return c
	}
	fail(w, http.StatusNotFound, "CLIENTID_NOT_FOUND", "no connected client "+strconv.Quote(id))
	return nil
}

func (s *Server) client(w http.ResponseWriter, r *http.Request) {
	if c := s.find(w, r); c != nil {
		writeJSON(w, 200, s.toJSON(c.Snapshot()))
	}
}

// kick closes a device with {shutdown,kicked}.
func (s *Server) kick(w http.ResponseWriter, r *http.Request) {
	if c := s.find(w, r); c != nil {
		c.Kick(channel.ReasonKicked)
		w.WriteHeader(http.StatusNoContent)
	}
}

type subJSON struct {
	Topic string `json:"topic"`
	QoS   int    `json:"qos"`
}

func (s *Server) subscriptions(w http.ResponseWriter, r *http.Request) {
	c := s.find(w, r)
	if c == nil {
		return
	}
	subs := c.Snapshot().Subscriptions
	out := make([]subJSON, 0, len(subs))
	for t, q := range subs {
		out = append(out, subJSON{t, int(q)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Topic < out[j].Topic })
	writeJSON(w, 200, out)
}

// subscribe subscribes a device on an operator's behalf (the device's
// mountpoint applies; authorization does not: the operator decides).
func (s *Server) subscribe(w http.ResponseWriter, r *http.Request) {
	c := s.find(w, r)
	if c == nil {
		return
	}
	var body subJSON
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Topic == "" || body.QoS < 0 || body.QoS > 2 {
		fail(w, http.StatusBadRequest, "BAD_REQUEST", `expected {"topic": "…", "qos": 0|1|2}`)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	subscribe := c.SubscribeAsOperator
	if s.cfg.SubscriptionsFollowACL {
		subscribe = c.Subscribe
	}
	if err := subscribe(ctx, body.Topic, uint32(body.QoS)); err != nil {
		if errors.Is(err, channel.ErrDenied) {
			fail(w, http.StatusForbidden, "NOT_AUTHORIZED", err.Error())
			return
		}
		fail(w, http.StatusBadRequest, "BAD_REQUEST", err.Error())
		return
	}
	// An administrative act: it bypasses the device's authorization rules.
	s.log.Info("operator subscribed a device", "api_key", caller(r), "clientid", r.PathValue("clientid"), "topic", body.Topic, "qos", body.QoS)
	writeJSON(w, http.StatusCreated, body)
}

func (s *Server) unsubscribe(w http.ResponseWriter, r *http.Request) {
	c := s.find(w, r)
	if c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	if err := c.Unsubscribe(ctx, r.PathValue("topic")); err != nil {
		fail(w, http.StatusBadRequest, "BAD_REQUEST", err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

package api

import (
	"cmp"
	"net/http"
)

type listenerJSON struct {
	ID                 string           `json:"id"`
	Type               string           `json:"type"`
	Name               string           `json:"name"`
	Bind               string           `json:"bind"`
	Running            bool             `json:"running"`
	CurrentConnections int64            `json:"current_connections"`
	MaxConnections     int              `json:"max_connections"`
	Accepted           int64            `json:"accepted"`
	Refused            map[string]int64 `json:"refused"`
	DatagramsDropped   int64            `json:"datagrams_dropped"`
	KernelDrops        *int64           `json:"kernel_drops,omitempty"` // UDP on Linux
}

func (s *Server) listenerList() []listenerJSON {
	var out []listenerJSON
	for _, l := range s.g.Listeners() {
		st := &l.Stats
		lj := listenerJSON{
			ID: "exproto:" + l.Name(), Type: l.Kind().String(), Name: l.Name()[len(l.Kind().String())+1:],
			Bind: l.Addr().String(), Running: true, CurrentConnections: st.Current.Load(), Accepted: st.Accepted.Load(),
			Refused: map[string]int64{"max_connections": st.RefusedLimit.Load(), "max_conn_rate": st.RefusedRate.Load(), "overload": st.RefusedOverload.Load(),
				"access_rules": st.RefusedACL.Load(), "handshake": st.HandshakeFailed.Load()},
			DatagramsDropped: st.DatagramsDropped.Load(),
		}
		if k, ok := l.KernelDrops(); ok {
			lj.KernelDrops = &k
		}
		if c := s.g.ListenerConfig(l.Name()); c != nil {
			lj.MaxConnections = c.MaxConnections
		}
		out = append(out, lj)
	}
	return out
}

func (s *Server) listeners(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, 200, s.listenerList())
}

// gateway is EMQX's gateway summary.
func (s *Server) gateway(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, 200, s.gatewaySummary())
}

// gateways is EMQX's GET /api/v5/gateways: every gateway of the node,
// which for exgate is ExProto alone.
func (s *Server) gateways(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, 200, []map[string]any{s.gatewaySummary()})
}

// notAtRuntime answers EMQX's calls that change the gateway at run time,
// which exgate takes from its configuration file instead.
func (s *Server) notAtRuntime(w http.ResponseWriter, _ *http.Request) {
	fail(w, http.StatusBadRequest, "NOT_SUPPORTED", "exgate takes the gateway's listeners and enable from its configuration file: edit it, then reload (SIGHUP, systemctl reload, or PUT /api/v5/gateways/exproto with no body)")
}

func (s *Server) gatewaySummary() map[string]any {
	ls := s.listenerList()
	maxConns := 0
	for _, l := range ls {
		if l.MaxConnections == 0 {
			maxConns = -1 // unlimited
			break
		}
		maxConns += l.MaxConnections
	}
	st := s.g.Stats
	status := "running"
	if !s.g.Enabled() {
		status = "stopped" // EMQX's word for a gateway with enable = false
	}
	return map[string]any{
		"name": "exproto", "status": status, "node": s.g.Node(), "version": cmp.Or(s.g.Version, "dev"),
		"created_at":          emqxTime(s.g.StartedAt()),
		"current_connections": s.g.Reg.Len(),
		"authenticated":       s.g.Reg.Connected(),
		"max_connections":     maxConns,
		"listeners":           ls,
		"metrics": map[string]int64{
			"bytes.received": st.BytesReceived.Load(), "bytes.sent": st.BytesSent.Load(),
			"messages.delivered": st.MessagesDelivered.Load(), "messages.published": st.MessagesPublished.Load(),
			"client.connect": st.ClientConnect.Load(), "client.connected": st.ClientConnected.Load(),
			"client.disconnected": st.Disconnected.Load(), "session.created": st.ClientConnected.Load(),
			"delivery.dropped": st.DeliveryDropped.Load(), "delivery.dropped.queue_full": st.DroppedQueueFull.Load(),
			"delivery.dropped.qos0_msg": st.DroppedQoS0.Load(), "delivery.dropped.closed": st.DroppedClosed.Load(),
		},
	}
}

package api

import (
	"cmp"
	"net/http"
)

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

func (s *Server) gatewaySummary() map[string]any {
	ls := s.listenerList()
	maxConns := 0
	for _, l := range ls {
		if l["running"] != true {
			continue
		}
		m, _ := l["max_connections"].(int)
		if m == 0 {
			maxConns = -1 // unlimited
			break
		}
		maxConns += m
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

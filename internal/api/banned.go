package api

import (
	"encoding/json"
	"net"
	"net/http"
	"time"

	"github.com/exgate/exgate/internal/banned"
	"github.com/exgate/exgate/internal/channel"
)

// bannedList is GET /api/v5/banned in EMQX's shape.
func (s *Server) bannedList(w http.ResponseWriter, r *http.Request) {
	page, limit, ok := paging(w, r.URL.Query())
	if !ok {
		return
	}
	all := s.g.Banned.All()
	from := min((page-1)*limit, len(all))
	to := min(from+limit, len(all))
	writeJSON(w, 200, map[string]any{"data": all[from:to], "meta": map[string]int{"page": page, "limit": limit, "count": len(all)}})
}

// bannedAdd is POST /api/v5/banned: {"as": "clientid|username|peerhost",
// "who": "…", "reason": "…", "until": "RFC 3339"}. Connected devices it
// matches are kicked.
func (s *Server) bannedAdd(w http.ResponseWriter, r *http.Request) {
	var e banned.Entry
	if err := json.NewDecoder(r.Body).Decode(&e); err != nil || e.Who == "" ||
		(e.As != banned.ClientID && e.As != banned.Username && e.As != banned.PeerHost) {
		fail(w, http.StatusBadRequest, "BAD_REQUEST", `expected {"as": "clientid|username|peerhost", "who": "…", "reason": "…", "until": "2030-01-01T00:00:00Z"}`)
		return
	}
	if e.As == banned.PeerHost && net.ParseIP(e.Who) == nil {
		fail(w, http.StatusBadRequest, "BAD_REQUEST", "peerhost: not an IP address")
		return
	}
	if !e.Until.IsZero() && !e.Until.After(time.Now()) {
		fail(w, http.StatusBadRequest, "BAD_REQUEST", "until is in the past")
		return
	}
	if e.By == "" {
		e.By = caller(r)
	}
	e.At = time.Now()
	s.g.Banned.Add(e)
	kicked := 0
	for _, c := range s.g.Reg.All() {
		info := c.Snapshot()
		host, _, _ := net.SplitHostPort(info.Peer)
		if (e.As == banned.ClientID && info.ClientID == e.Who) || (e.As == banned.Username && info.Username == e.Who) ||
			(e.As == banned.PeerHost && host == e.Who) {
			c.Kick(channel.ReasonKicked)
			kicked++
		}
	}
	s.log.Info("client banned by an operator", "api_key", caller(r), "as", e.As, "who", e.Who, "until", e.Until, "kicked", kicked)
	writeJSON(w, 200, e)
}

// bannedDelete is DELETE /api/v5/banned/{as}/{who}.
func (s *Server) bannedDelete(w http.ResponseWriter, r *http.Request) {
	if !s.g.Banned.Delete(r.PathValue("as"), r.PathValue("who")) {
		fail(w, http.StatusNotFound, "NOT_FOUND", "no such ban")
		return
	}
	s.log.Info("ban lifted", "api_key", caller(r), "as", r.PathValue("as"), "who", r.PathValue("who"))
	w.WriteHeader(http.StatusNoContent)
}

package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/exgate/exgate/internal/config"
)

// The gateway's enable and its listeners can be changed through the API,
// as in EMQX. A change is applied like a reload (built before anything
// old is touched; refused whole, with the reason, if any part fails) and
// kept in api.changes_file, which every start and reload puts over the
// configuration file.

// apiError is a refusal with EMQX's error shape.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, a ...any) *apiError {
	return &apiError{http.StatusBadRequest, "BAD_REQUEST", fmt.Sprintf(format, a...)}
}

func notFound(format string, a ...any) *apiError {
	return &apiError{http.StatusNotFound, "NOT_FOUND", fmt.Sprintf(format, a...)}
}

func failWith(w http.ResponseWriter, err error) {
	var ae *apiError
	if errors.As(err, &ae) {
		fail(w, ae.status, ae.code, ae.msg)
		return
	}
	fail(w, http.StatusInternalServerError, "INTERNAL_ERROR", err.Error())
}

// change edits the API's changes and applies them to the running gateway.
// The edited changes are saved first (so a change that could not be kept
// is not made), then put over the running configuration and reloaded; if
// the gateway refuses them the old file is put back.
func (s *Server) change(edit func(ch *config.Changes, running *config.Config) error) error {
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	path := s.cfg.Changes()
	old, err := config.LoadChanges(path)
	if err != nil {
		return err
	}
	next := old.Clone()
	running := s.g.Config()
	if err := edit(next, &running); err != nil {
		return err
	}
	if err := next.Save(path); err != nil {
		return fmt.Errorf("%w: nothing changed", err)
	}
	next.Apply(&running)
	if _, err := s.g.Reload(&running); err != nil {
		if serr := old.Save(path); serr != nil {
			s.log.Error("could not put the API changes file back after a refused change", "file", path, "error", serr)
		}
		return badRequest("%v", err)
	}
	return nil
}

// setEnable is EMQX's PUT /gateways/exproto/enable/{true|false}.
func (s *Server) setEnable(w http.ResponseWriter, r *http.Request) {
	on, err := strconv.ParseBool(r.PathValue("enable"))
	if err != nil {
		fail(w, http.StatusBadRequest, "BAD_REQUEST", "enable must be true or false")
		return
	}
	if err := s.enable(on, r); err != nil {
		failWith(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) enable(on bool, r *http.Request) error {
	err := s.change(func(ch *config.Changes, _ *config.Config) error {
		ch.Enable = &on
		return nil
	})
	if err == nil {
		s.log.Warn("gateway enable changed through the API", "enable", on, "by", caller(r))
	}
	return err
}

// gatewayReadOnly are the keys of GET /gateways/exproto that describe the
// running gateway; a PUT may carry them back and they are ignored.
var gatewayReadOnly = map[string]bool{"name": true, "status": true, "node": true, "version": true, "created_at": true,
	"current_connections": true, "authenticated": true, "max_connections": true, "metrics": true}

// updateGateway is EMQX's PUT /gateways/exproto with settings in its body.
// exgate changes enable this way; every other gateway setting lives in
// the configuration file, and a body that tries to change one is refused
// (not silently ignored).
func (s *Server) updateGateway(w http.ResponseWriter, r *http.Request, body map[string]any) {
	for k := range body {
		switch {
		case k == "enable" || gatewayReadOnly[k]:
		case k == "listeners":
			fail(w, http.StatusBadRequest, "NOT_SUPPORTED", "change listeners through /api/v5/gateways/exproto/listeners")
			return
		default:
			fail(w, http.StatusBadRequest, "NOT_SUPPORTED", fmt.Sprintf("%q cannot be changed through the API: edit gateway.exproto.%s in the configuration file, then reload", k, k))
			return
		}
	}
	if v, ok := body["enable"]; ok {
		on, isBool := v.(bool)
		if !isBool {
			fail(w, http.StatusBadRequest, "BAD_REQUEST", "enable must be true or false")
			return
		}
		if err := s.enable(on, r); err != nil {
			failWith(w, err)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// listenerRef parses a listener id: EMQX's "exproto:tcp:default", or
// "tcp:default".
func listenerRef(id string) (typ, name string, err error) {
	id = strings.TrimPrefix(id, "exproto:")
	typ, name, ok := strings.Cut(id, ":")
	if !ok || name == "" || !config.ValidListenerType(typ) {
		return "", "", notFound("no listener %q: ids are exproto:<tcp|ssl|udp|dtls>:<name>", id)
	}
	return typ, name, nil
}

// listenerReadOnly are keys of a listener's GET that are not settings.
var listenerReadOnly = []string{"id", "type", "name", "running", "address", "current_connections", "accepted",
	"refused", "datagrams_dropped", "kernel_drops"}

// readListenerBody decodes a listener's settings from a request, over
// into, and returns the body's type and name (a POST's). The keys GET
// answers with that are not settings are taken out first, so what GET
// returned may be sent back.
func readListenerBody(r *http.Request, into *config.Listener) (typ, name string, err error) {
	var doc map[string]any
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&doc); err != nil || doc == nil {
		return "", "", badRequest("the body must be a JSON object of listener settings")
	}
	typ, _ = doc["type"].(string)
	name, _ = doc["name"].(string)
	for _, k := range listenerReadOnly {
		delete(doc, k)
	}
	if err := config.DecodeListener(doc, into); err != nil {
		return "", "", badRequest("listener: %v", err)
	}
	return typ, name, nil
}

// addListener is EMQX's POST /gateways/exproto/listeners: {"type", "name",
// "bind", …settings} → 201 with the listener.
func (s *Server) addListener(w http.ResponseWriter, r *http.Request) {
	l := &config.Listener{}
	typ, name, err := readListenerBody(r, l)
	if err != nil {
		failWith(w, err)
		return
	}
	if !config.ValidListenerType(typ) || name == "" || strings.Contains(name, ":") {
		fail(w, http.StatusBadRequest, "BAD_REQUEST", `a new listener needs "type" (tcp, ssl, udp or dtls), "name" (no colon) and "bind"`)
		return
	}
	err = s.change(func(ch *config.Changes, running *config.Config) error {
		if running.Gateway.ExProto.Listeners.Find(typ, name) != nil {
			return badRequest("listener %s:%s exists already: change it with PUT …/listeners/exproto:%s:%s", typ, name, typ, name)
		}
		ch.SetListener(typ, name, l)
		return nil
	})
	if err != nil {
		failWith(w, err)
		return
	}
	s.log.Info("listener created through the API", "listener", typ+":"+name, "by", caller(r))
	writeJSON(w, http.StatusCreated, s.listenerView(typ, name))
}

// getListener is EMQX's GET /gateways/exproto/listeners/{id}.
func (s *Server) getListener(w http.ResponseWriter, r *http.Request) {
	typ, name, err := listenerRef(r.PathValue("id"))
	if err != nil {
		failWith(w, err)
		return
	}
	v := s.listenerView(typ, name)
	if v == nil {
		failWith(w, notFound("no listener %s:%s", typ, name))
		return
	}
	writeJSON(w, 200, v)
}

// updateListener is EMQX's PUT /gateways/exproto/listeners/{id}: the keys
// the body names change, the others keep their values.
func (s *Server) updateListener(w http.ResponseWriter, r *http.Request) {
	typ, name, err := listenerRef(r.PathValue("id"))
	if err != nil {
		failWith(w, err)
		return
	}
	cur := s.g.ListenerConfig(typ + ":" + name)
	if cur == nil {
		failWith(w, notFound("no listener %s:%s", typ, name))
		return
	}
	l := cur.Clone()
	if _, _, err := readListenerBody(r, l); err != nil {
		failWith(w, err)
		return
	}
	if err := s.replaceListener(typ, name, l); err != nil {
		failWith(w, err)
		return
	}
	s.log.Info("listener changed through the API", "listener", typ+":"+name, "by", caller(r))
	writeJSON(w, 200, s.listenerView(typ, name))
}

// replaceListener changes the existing listener typ:name to l, or deletes
// it when l is nil.
func (s *Server) replaceListener(typ, name string, l *config.Listener) error {
	return s.change(func(ch *config.Changes, running *config.Config) error {
		if running.Gateway.ExProto.Listeners.Find(typ, name) == nil {
			return notFound("no listener %s:%s", typ, name)
		}
		ch.SetListener(typ, name, l)
		return nil
	})
}

// deleteListener is EMQX's DELETE /gateways/exproto/listeners/{id}: the
// listener stops accepting; its devices stay connected (kick them if they
// should go).
func (s *Server) deleteListener(w http.ResponseWriter, r *http.Request) {
	typ, name, err := listenerRef(r.PathValue("id"))
	if err != nil {
		failWith(w, err)
		return
	}
	if err := s.replaceListener(typ, name, nil); err != nil {
		failWith(w, err)
		return
	}
	s.log.Info("listener deleted through the API", "listener", typ+":"+name, "by", caller(r))
	w.WriteHeader(http.StatusNoContent)
}

// listenerView is a listener as the API shows it: its settings (without
// its authentication chain, which may hold secrets) and, while it runs,
// its address and counters. nil if there is no such listener.
func (s *Server) listenerView(typ, name string) map[string]any {
	c := s.g.ListenerConfig(typ + ":" + name)
	if c == nil {
		return nil
	}
	v := map[string]any{}
	if b, err := yaml.Marshal(c); err == nil {
		_ = yaml.Unmarshal(b, &v)
	}
	delete(v, "authentication")
	v["id"], v["type"], v["name"], v["running"] = "exproto:"+typ+":"+name, typ, name, false
	v["enable"] = c.Enabled()
	v["max_connections"] = c.MaxConnections
	l := s.g.Listener(typ + ":" + name)
	if l == nil {
		return v
	}
	st := &l.Stats
	v["running"] = true
	v["address"] = l.Addr().String()
	v["current_connections"] = st.Current.Load()
	v["accepted"] = st.Accepted.Load()
	v["refused"] = map[string]int64{"max_connections": st.RefusedLimit.Load(), "max_conn_rate": st.RefusedRate.Load(), "overload": st.RefusedOverload.Load(),
		"access_rules": st.RefusedACL.Load(), "handshake": st.HandshakeFailed.Load()}
	v["datagrams_dropped"] = st.DatagramsDropped.Load()
	if k, ok := l.KernelDrops(); ok {
		v["kernel_drops"] = k
	}
	return v
}

// listenerList is every configured listener, running or not.
func (s *Server) listenerList() []map[string]any {
	out := []map[string]any{}
	cfg := s.g.Config()
	cfg.Gateway.ExProto.Listeners.Each(func(typ, name string, _ *config.Listener) {
		if v := s.listenerView(typ, name); v != nil {
			out = append(out, v)
		}
	})
	return out
}

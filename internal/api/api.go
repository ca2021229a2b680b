// Package api is exgate's management surface over HTTP: EMQX's REST paths
// and field names under /api/v5/gateways/exproto (so scripts written for
// EMQX keep working), Prometheus metrics on /metrics, /healthz and /readyz,
// and the log level at runtime.
package api

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/gateway"
	"github.com/exgate/exgate/internal/trace"
)

// Server is the management HTTP server.
type Server struct {
	g      *gateway.Gateway
	cfg    config.API
	level  *slog.LevelVar // nil: the level cannot be changed
	reload func() ([]string, error)
	log    *slog.Logger
	ln     net.Listener
	srv    *http.Server
}

// New binds the API port; Serve starts answering. reload, if set, re-reads
// the configuration file and applies it (PUT /api/v5/gateways/exproto).
func New(g *gateway.Gateway, cfg config.API, level *slog.LevelVar, reload func() ([]string, error), log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", config.BindAddress(cfg.Bind))
	if err != nil {
		return nil, fmt.Errorf("api: listen on %s: %w", cfg.Bind, err)
	}
	s := &Server{g: g, cfg: cfg, level: level, reload: reload, log: log, ln: ln}
	mux := http.NewServeMux()
	const gw = "/api/v5/gateways/exproto"
	mux.HandleFunc("GET "+gw, s.gateway)
	mux.HandleFunc("PUT "+gw, s.doReload)
	mux.HandleFunc("GET "+gw+"/listeners", s.listeners)
	mux.HandleFunc("GET "+gw+"/clients", s.clients)
	mux.HandleFunc("GET "+gw+"/clients/{clientid}", s.client)
	mux.HandleFunc("DELETE "+gw+"/clients/{clientid}", s.kick)
	mux.HandleFunc("GET "+gw+"/clients/{clientid}/subscriptions", s.subscriptions)
	mux.HandleFunc("POST "+gw+"/clients/{clientid}/subscriptions", s.subscribe)
	mux.HandleFunc("DELETE "+gw+"/clients/{clientid}/subscriptions/{topic...}", s.unsubscribe)
	mux.HandleFunc("POST "+gw+"/trace", s.startTrace)
	mux.HandleFunc("GET "+gw+"/trace", s.listTraces)
	mux.HandleFunc("DELETE "+gw+"/trace/{name}", s.stopTrace)
	mux.HandleFunc("GET "+gw+"/trace/{name}/download", s.downloadTrace)
	mux.HandleFunc("GET /api/v5/log", s.getLog)
	mux.HandleFunc("PUT /api/v5/log", s.setLog)
	mux.HandleFunc("GET /api/v5/openapi.json", openapi)
	mux.HandleFunc("GET /{$}", dashboard)
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.Metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, map[string]string{"status": "ok"}) })
	mux.HandleFunc("GET /readyz", s.ready)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fail(w, http.StatusNotFound, "NOT_FOUND", "no such API: "+r.Method+" "+r.URL.Path)
	})
	s.srv = &http.Server{Handler: s.auth(mux), ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve answers until Shutdown.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops the server, waiting (until ctx ends) for requests in flight.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// auth requires basic auth when a username is configured; health checks
// stay open for orchestrators.
func (s *Server) auth(next http.Handler) http.Handler {
	if s.cfg.Username == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" && r.URL.Path != "/readyz" {
			u, p, ok := r.BasicAuth()
			if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(s.cfg.Username)) != 1 || subtle.ConstantTimeCompare([]byte(p), []byte(s.cfg.Password)) != 1 {
				w.Header().Set("WWW-Authenticate", `Basic realm="exgate"`)
				fail(w, http.StatusUnauthorized, "BAD_USERNAME_OR_PWD", "authentication required")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// fail writes EMQX's error shape: {"code": "…", "message": "…"}.
func fail(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]string{"code": code, "message": msg})
}

func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	if !s.g.Ready() {
		fail(w, http.StatusServiceUnavailable, "NOT_READY", "listeners not started or no handler reachable")
		return
	}
	writeJSON(w, 200, map[string]string{"status": "ready"})
}

func (s *Server) getLog(w http.ResponseWriter, _ *http.Request) {
	lvl := "info"
	if s.level != nil {
		lvl = s.level.Level().String()
	}
	writeJSON(w, 200, map[string]string{"level": lvl})
}

func (s *Server) setLog(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Level string `json:"level"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		fail(w, http.StatusBadRequest, "BAD_REQUEST", "expected {\"level\": \"debug|info|warn|error\"}")
		return
	}
	var l slog.Level
	if s.level == nil || l.UnmarshalText([]byte(body.Level)) != nil {
		fail(w, http.StatusBadRequest, "BAD_REQUEST", fmt.Sprintf("level %q is not one of debug, info, warn, error", body.Level))
		return
	}
	s.level.Set(l)
	s.log.Info("log level changed", "level", l.String())
	writeJSON(w, 200, map[string]string{"level": l.String()})
}

// doReload re-reads the configuration file: 200 with what needs a restart,
// or 400 with why the new configuration was refused (the old one stays).
func (s *Server) doReload(w http.ResponseWriter, _ *http.Request) {
	if s.reload == nil {
		fail(w, http.StatusNotImplemented, "NOT_SUPPORTED", "exgate was started without a configuration file")
		return
	}
	needs, err := s.reload()
	if err != nil {
		fail(w, http.StatusBadRequest, "BAD_CONFIG", err.Error())
		return
	}
	if needs == nil {
		needs = []string{}
	}
	writeJSON(w, 200, map[string]any{"reloaded": true, "needs_restart": needs})
}

func (s *Server) startTrace(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Name     string `json:"name"`
		ClientID string `json:"clientid"`
		Topic    string `json:"topic"`
		Duration string `json:"duration"` // e.g. "10m"; default 10m
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		fail(w, http.StatusBadRequest, "BAD_REQUEST", `expected {"name": "…", "clientid"|"topic": "…", "duration": "10m"}`)
		return
	}
	d := 10 * time.Minute
	if body.Duration != "" {
		var err error
		if d, err = time.ParseDuration(body.Duration); err != nil {
			fail(w, http.StatusBadRequest, "BAD_REQUEST", "duration: "+err.Error())
			return
		}
	}
	info, err := s.g.Tracer.Start(trace.Spec{Name: body.Name, ClientID: body.ClientID, Topic: body.Topic, Duration: d})
	if err != nil {
		fail(w, http.StatusBadRequest, "BAD_REQUEST", err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, info)
}

func (s *Server) listTraces(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, 200, s.g.Tracer.List())
}

func (s *Server) stopTrace(w http.ResponseWriter, r *http.Request) {
	if err := s.g.Tracer.Stop(r.PathValue("name")); err != nil {
		fail(w, http.StatusNotFound, "NOT_FOUND", err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) downloadTrace(w http.ResponseWriter, r *http.Request) {
	path, err := s.g.Tracer.File(r.PathValue("name"))
	if err != nil {
		fail(w, http.StatusNotFound, "NOT_FOUND", err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	http.ServeFile(w, r, path)
}

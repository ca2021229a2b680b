// Package api is exgate's management surface over HTTP: EMQX's REST paths
// and field names under /api/v5/gateways/exproto (so scripts written for
// EMQX keep working), Prometheus metrics on /metrics, /healthz and /readyz,
// and the log level at runtime.
package api

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/exgate/exgate/internal/apikey"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/gateway"
	"github.com/exgate/exgate/internal/trace"
)

// Server is the management HTTP server.
type Server struct {
	g        *gateway.Gateway
	cfg      config.API
	level    *slog.LevelVar // nil: the level cannot be changed
	reload   func() ([]string, error)
	log      *slog.Logger
	ln       net.Listener
	srv      *http.Server
	keys     *apikey.Store // nil with api.auth: none
	sessions sessions      // the dashboard's logins
	changeMu sync.Mutex    // one change through the API at a time
}

// New binds the API port; Serve starts answering. reload, if set, re-reads
// the configuration file and applies it (PUT /api/v5/gateways/exproto).
func New(g *gateway.Gateway, cfg config.API, level *slog.LevelVar, reload func() ([]string, error), log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", config.BindAddress(cfg.Bind))
	if err != nil {
		return nil, fmt.Errorf("api: listen on %s: %w", cfg.Bind, err)
	}
	s := &Server{g: g, cfg: cfg, level: level, reload: reload, log: log, ln: ln}
	if cfg.Auth != "none" {
		bf, err := apikey.Bootstrap(cfg.Keys())
		if err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("api: %w", err)
		}
		if bf != "" {
			log.Warn("no API key existed: created one; its credentials are in a file readable only by this user (use them as HTTP basic auth, or with the CLI's -c)", "file", bf)
		}
		if s.keys, err = apikey.NewStore(cfg.Keys()); err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("api: %w", err)
		}
	} else {
		log.Warn("management API without authentication (api.auth: none): anyone on this machine can use it")
	}
	mux := http.NewServeMux()
	const gw = "/api/v5/gateways/exproto"
	mux.HandleFunc("GET "+gw, s.gateway)
	mux.HandleFunc("GET /api/v5/gateways", s.gateways)
	mux.HandleFunc("PUT "+gw+"/enable/{enable}", s.setEnable)
	mux.HandleFunc("POST "+gw+"/listeners", s.addListener)
	mux.HandleFunc("GET "+gw+"/listeners/{id}", s.getListener)
	mux.HandleFunc("PUT "+gw+"/listeners/{id}", s.updateListener)
	mux.HandleFunc("DELETE "+gw+"/listeners/{id}", s.deleteListener)
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
	mux.HandleFunc("POST /api/v5/login", s.login)
	mux.HandleFunc("GET /api/v5/session", s.sessionInfo)
	mux.HandleFunc("POST /api/v5/logout", s.logout)
	mux.HandleFunc("GET /api/v5/banned", s.bannedList)
	mux.HandleFunc("POST /api/v5/banned", s.bannedAdd)
	mux.HandleFunc("DELETE /api/v5/banned/{as}/{who}", s.bannedDelete)
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
	s.srv = &http.Server{Handler: s.guard(mux), ReadHeaderTimeout: 10 * time.Second}
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

// guard refuses what a browser could be tricked into sending (a foreign
// Host: DNS rebinding; a foreign Origin or a form's content type: CSRF),
// then requires credentials on everything but the health checks (and
// /metrics when api.metrics_public), unless api.auth is none.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.hostAllowed(r.Host) {
			fail(w, http.StatusForbidden, "BAD_HOST", fmt.Sprintf("Host %q is not this API's: add it to api.allowed_hosts", r.Host))
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodOptions {
			if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r.Host) {
				fail(w, http.StatusForbidden, "BAD_ORIGIN", "cross-origin requests are refused")
				return
			}
			ct := r.Header.Get("Content-Type")
			if mt, _, _ := mime.ParseMediaType(ct); (ct != "" || r.ContentLength != 0) && mt != "application/json" {
				fail(w, http.StatusUnsupportedMediaType, "UNSUPPORTED_MEDIA_TYPE", "send Content-Type: application/json")
				return
			}
		}
		// The dashboard page holds no data and logs in by itself; login and
		// the session check answer for themselves.
		open := r.URL.Path == "/healthz" || r.URL.Path == "/readyz" || (r.URL.Path == "/metrics" && s.cfg.MetricsPublic) ||
			(r.URL.Path == "/" && r.Method == http.MethodGet) || r.URL.Path == "/api/v5/login" || r.URL.Path == "/api/v5/session" || r.URL.Path == "/api/v5/logout"
		if !open && s.keys != nil {
			who, ok := s.authenticate(r)
			if !ok {
				sess, live := s.sessions.get(r)
				if !live {
					if _, err := r.Cookie(sessionCookie); err != nil { // a script's call, not the dashboard's
						w.Header().Set("WWW-Authenticate", `Basic realm="exgate"`)
					}
					fail(w, http.StatusUnauthorized, "BAD_USERNAME_OR_PWD", "an API key is required (HTTP basic auth, key:secret; see `exgate api-keys`)")
					return
				}
				if r.Method != http.MethodGet && r.Method != http.MethodHead && !sess.csrfOK(r) {
					fail(w, http.StatusForbidden, "BAD_CSRF_TOKEN", "a change from the dashboard must carry its "+csrfHeader+" header")
					return
				}
				who = sess.key
			}
			r = r.WithContext(context.WithValue(r.Context(), keyName{}, who))
		}
		next.ServeHTTP(w, r)
	})
}

// keyName is the context key of the API key's name a request used.
type keyName struct{}

// caller names who made a request, for the log.
func caller(r *http.Request) string {
	if n, ok := r.Context().Value(keyName{}).(string); ok {
		return n
	}
	return "anonymous"
}

func (s *Server) authenticate(r *http.Request) (string, bool) {
	u, p, ok := r.BasicAuth()
	if !ok {
		return "", false
	}
	if s.cfg.Username != "" &&
		subtle.ConstantTimeCompare([]byte(u), []byte(s.cfg.Username))&subtle.ConstantTimeCompare([]byte(p), []byte(s.cfg.Password)) == 1 {
		return u, true
	}
	return s.keys.Check(u, p)
}

// hostAllowed: an IP address (DNS rebinding needs a name), localhost, or a
// name in api.allowed_hosts.
func (s *Server) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" || net.ParseIP(host) != nil || strings.EqualFold(host, "localhost") {
		return true
	}
	for _, a := range s.cfg.AllowedHosts {
		if strings.EqualFold(a, host) || strings.EqualFold(a, hostport) {
			return true
		}
	}
	return false
}

func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, host)
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
		lvl = levelName(s.level.Level())
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
	s.log.Info("log level changed", "level", levelName(l))
	writeJSON(w, 200, map[string]string{"level": levelName(l)})
}

// levelName is a level as the configuration file and PUT spell it
// ("debug"), not as slog prints it ("DEBUG").
func levelName(l slog.Level) string { return strings.ToLower(l.String()) }

// doReload, a PUT with no body, re-reads the configuration file: 200 with
// what needs a restart, or 400 with why the new configuration was refused
// (the old one stays). With a body it is EMQX's update (updateGateway).
func (s *Server) doReload(w http.ResponseWriter, r *http.Request) {
	if body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20)); len(bytes.TrimSpace(body)) > 0 && string(bytes.TrimSpace(body)) != "{}" {
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil || m == nil {
			fail(w, http.StatusBadRequest, "BAD_REQUEST", "the body must be a JSON object of gateway settings, e.g. {\"enable\": false}")
			return
		}
		s.updateGateway(w, r, m)
		return
	}
	if s.reload == nil {
		fail(w, http.StatusNotImplemented, "NOT_SUPPORTED", "exgate was started without a configuration file")
		return
	}
	s.changeMu.Lock() // the reload reads the API's changes too
	needs, err := s.reload()
	s.changeMu.Unlock()
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

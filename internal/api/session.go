package api

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"sync"
	"time"
)

// The dashboard logs in with an API key and then holds a session cookie
// (HttpOnly, SameSite=Strict) instead of the key; every change it makes
// carries the session's CSRF token in a header, which a page of another
// site can neither read nor send.
const (
	sessionCookie = "exgate_session"
	csrfHeader    = "X-CSRF-Token"
	sessionIdle   = time.Hour // a session unused this long ends
	maxSessions   = 1000
)

type session struct {
	key     string // the API key's name
	csrf    string
	expires time.Time
}

// sessions are the dashboard's logins. Safe for concurrent use.
type sessions struct {
	mu sync.Mutex
	m  map[string]*session
}

func token() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails on Linux
	return base64.RawURLEncoding.EncodeToString(b)
}

func (ss *sessions) create(key string) (id string, s *session, ok bool) {
	now := time.Now()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.m == nil {
		ss.m = map[string]*session{}
	}
	if len(ss.m) >= maxSessions {
		for id, s := range ss.m {
			if now.After(s.expires) {
				delete(ss.m, id)
			}
		}
		if len(ss.m) >= maxSessions {
			return "", nil, false
		}
	}
	id, s = token(), &session{key: key, csrf: token(), expires: now.Add(sessionIdle)}
	ss.m[id] = s
	return id, s, true
}

// get returns the live session of a request's cookie, extending it.
func (ss *sessions) get(r *http.Request) (*session, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, false
	}
	now := time.Now()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.m[c.Value]
	if !ok || now.After(s.expires) {
		delete(ss.m, c.Value)
		return nil, false
	}
	s.expires = now.Add(sessionIdle)
	return s, true
}

func (ss *sessions) end(r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		ss.mu.Lock()
		delete(ss.m, c.Value)
		ss.mu.Unlock()
	}
}

// csrfOK checks a cookie-authenticated change's token.
func (s *session) csrfOK(r *http.Request) bool {
	return subtle.ConstantTimeCompare([]byte(r.Header.Get(csrfHeader)), []byte(s.csrf)) == 1
}

// login is POST /api/v5/login {"username": key, "password": secret}, as
// EMQX's dashboard logs in: it sets the session cookie and answers the
// CSRF token.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if s.keys == nil { // api.auth: none
		writeJSON(w, 200, map[string]any{"csrf_token": "", "key": "anonymous"})
		return
	}
	var body struct{ Username, Password string }
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		fail(w, http.StatusBadRequest, "BAD_REQUEST", `expected {"username": "<API key>", "password": "<secret>"}`)
		return
	}
	name, ok := s.keys.Check(body.Username, body.Password)
	if !ok {
		s.log.Warn("dashboard login failed", "key", body.Username, "peer", r.RemoteAddr)
		fail(w, http.StatusUnauthorized, "BAD_USERNAME_OR_PWD", "wrong API key or secret")
		return
	}
	id, sess, ok := s.sessions.create(name)
	if !ok {
		fail(w, http.StatusTooManyRequests, "TOO_MANY_SESSIONS", "too many dashboard sessions; try again later")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: id, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: r.TLS != nil, MaxAge: int(sessionIdle / time.Second)})
	s.log.Info("dashboard login", "api_key", name, "peer", r.RemoteAddr)
	writeJSON(w, 200, map[string]any{"csrf_token": sess.csrf, "key": name})
}

// sessionInfo is GET /api/v5/session: the logged-in key and its CSRF token
// (for a reloaded dashboard page), or 401.
func (s *Server) sessionInfo(w http.ResponseWriter, r *http.Request) {
	if s.keys == nil { // api.auth: none
		writeJSON(w, 200, map[string]any{"csrf_token": "", "key": "anonymous"})
		return
	}
	sess, ok := s.sessions.get(r)
	if !ok {
		fail(w, http.StatusUnauthorized, "NOT_LOGGED_IN", "log in first")
		return
	}
	writeJSON(w, 200, map[string]any{"csrf_token": sess.csrf, "key": sess.key})
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	s.sessions.end(r)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	w.WriteHeader(http.StatusNoContent)
}

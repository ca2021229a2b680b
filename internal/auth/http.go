package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/tlsconfig"
)

// httpCaller is what the HTTP authenticator and authorizer share: a pooled
// client, a URL, headers and a templated body.
type httpCaller struct {
	client  *http.Client
	method  string
	url     string
	headers map[string]string
	body    map[string]string
	timeout time.Duration
}

func newHTTPCaller(method, u string, headers, body map[string]string, timeout time.Duration, pool int, tlsOpts *config.ClientTLSOptions) (*httpCaller, error) {
	if method == "" {
		method = "post"
	}
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	if pool == 0 {
		pool = 8
	}
	tr := &http.Transport{MaxIdleConnsPerHost: pool, IdleConnTimeout: 60 * time.Second}
	if strings.HasPrefix(u, "https://") || tlsOpts != nil {
		tc, err := tlsconfig.Client(tlsOpts)
		if err != nil {
			return nil, fmt.Errorf("ssl_options: %w", err)
		}
		tr.TLSClientConfig = tc
	}
	return &httpCaller{client: &http.Client{Transport: tr}, method: method, url: u, headers: headers, body: body, timeout: timeout}, nil
}

// call sends the templated request and returns status and body.
func (h *httpCaller) call(ctx context.Context, vars map[string]string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	fields := make(map[string]string, len(h.body))
	for k, v := range h.body {
		fields[k] = render(v, vars)
	}
	var req *http.Request
	var err error
	if h.method == "get" {
		q := url.Values{}
		for k, v := range fields {
			q.Set(k, v)
		}
		u := h.url
		if len(q) > 0 {
			sep := "?"
			if strings.Contains(u, "?") {
				sep = "&"
			}
			u += sep + q.Encode()
		}
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	} else {
		b, _ := json.Marshal(fields)
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(b))
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
		}
	}
	if err != nil {
		return 0, nil, err
	}
	for k, v := range h.headers {
		req.Header.Set(k, render(v, vars))
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, nil, redactURLError(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, b, err
}

// redactURLError drops the URL (a GET's query carries the password) from
// a client error.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

func render(tmpl string, vars map[string]string) string {
	if !strings.Contains(tmpl, "${") {
		return tmpl
	}
	pairs := make([]string, 0, 2*len(vars))
	for k, v := range vars {
		pairs = append(pairs, "${"+k+"}", v)
	}
	return strings.NewReplacer(pairs...).Replace(tmpl)
}

// httpAuth is EMQX's HTTP authenticator: 200 with {"result": "allow" |
// "deny" | "ignore", "is_superuser": bool, "expire_at": seconds}; 204 allows.
// Any other status, a timeout or garbage is a deny, with the reason logged.
type httpAuth struct {
	*httpCaller
	log *slog.Logger
}

func newHTTPAuth(c config.Authenticator, log *slog.Logger) (*httpAuth, error) {
	hc, err := newHTTPCaller(c.Method, c.URL, c.Headers, c.Body, c.RequestTimeout, c.PoolSize, c.SSLOptions)
	if err != nil {
		return nil, err
	}
	return &httpAuth{httpCaller: hc, log: log}, nil
}

func (h *httpAuth) close() { h.client.CloseIdleConnections() }

func (h *httpAuth) authenticate(ctx context.Context, r Request) (Result, bool, error) {
	vars := map[string]string{"clientid": r.ClientID, "username": r.Username, "password": r.Password,
		"peerhost": peerHost(r.Peer), "proto_name": r.ProtoName}
	status, body, err := h.call(ctx, vars)
	deny := func(reason string) (Result, bool, error) {
		h.log.Warn("HTTP authentication denied", "url", h.url, "clientid", r.ClientID, "reason", reason)
		return Result{}, false, errors.New("HTTP authentication: " + reason)
	}
	switch {
	case err != nil:
		return deny(err.Error())
	case status == http.StatusNoContent:
		return Result{}, true, nil
	case status != http.StatusOK:
		return deny(fmt.Sprintf("status %d", status))
	}
	var ans struct {
		Result      string `json:"result"`
		IsSuperuser bool   `json:"is_superuser"`
		ExpireAt    int64  `json:"expire_at"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return deny("response is not JSON")
	}
	switch ans.Result {
	case "allow":
		res := Result{Superuser: ans.IsSuperuser}
		if ans.ExpireAt > 0 {
			res.ExpireAt = time.Unix(ans.ExpireAt, 0)
		}
		return res, true, nil
	case "deny":
		return Result{}, false, ErrBadPassword
	case "ignore":
		return Result{}, false, nil
	}
	return deny(fmt.Sprintf("unknown result %q", ans.Result))
}

package e2e

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/api"
	"github.com/exgate/exgate/internal/apikey"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/testhandler"
)

// startAPI serves the management API of e's gateway on a loopback port,
// with its keys in a temporary file; call uses the key it created.
func startAPI(t *testing.T, e *env, cfg config.API) string {
	t.Helper()
	cfg.Bind = "127.0.0.1:0"
	if cfg.KeysFile == "" {
		cfg.KeysFile = filepath.Join(t.TempDir(), "api_keys")
	}
	s, err := api.New(e.g, cfg, nil, nil, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve() }()
	t.Cleanup(func() { _ = s.Shutdown(ctx5(t)) })
	if cfg.Auth != "none" {
		key, secret, err := apikey.ReadCredentials(apikey.BootstrapFile(cfg.KeysFile))
		if err != nil {
			t.Fatal(err)
		}
		testKey.Store(&[2]string{key, secret})
	}
	return "http://" + s.Addr().String()
}

// testKey is the API key of the API the running test started.
var testKey atomic.Pointer[[2]string]

// call makes an API request: with the test's API key, or with the given
// username and password, or with none when auth is ("", "").
func call(t *testing.T, method, u string, body string, auth ...string) (int, map[string]any, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	switch {
	case len(auth) == 2 && auth[0] != "":
		req.SetBasicAuth(auth[0], auth[1])
	case len(auth) == 0 && testKey.Load() != nil:
		k := testKey.Load()
		req.SetBasicAuth(k[0], k[1])
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) (int, map[string]any, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, m, string(b)
}

func TestManagementAPI(t *testing.T) {
	e := start(t, nil)
	base := startAPI(t, e, config.API{})
	gw := base + "/api/v5/gateways/exproto"

	a, b := e.dial(), e.dial()
	a.connect("dev-a", 30)
	a.subscribe("cmd/a", 1)
	b.connect("dev-b", 0)
	e.dial() // not authenticated: listed as connecting

	code, m, _ := call(t, "GET", gw, "")
	if code != 200 || m["status"] != "running" || m["current_connections"].(float64) != 3 {
		t.Fatalf("gateway: %d %v", code, m)
	}
	// EMQX's list of gateways: ExProto alone, as its own page shows it.
	code, _, body := call(t, "GET", base+"/api/v5/gateways", "")
	var gws []map[string]any
	if err := json.Unmarshal([]byte(body), &gws); code != 200 || err != nil || len(gws) != 1 ||
		gws[0]["name"] != "exproto" || gws[0]["status"] != "running" || gws[0]["current_connections"].(float64) != 3 {
		t.Fatalf("gateways: %d %s", code, body)
	}
	code, _, body = call(t, "GET", gw+"/listeners", "")
	if code != 200 || !strings.Contains(body, `"id":"exproto:tcp:default"`) {
		t.Fatalf("listeners: %d %s", code, body)
	}
	// Paging and filters.
	code, m, _ = call(t, "GET", gw+"/clients?limit=2&page=1", "")
	meta := m["meta"].(map[string]any)
	if code != 200 || len(m["data"].([]any)) != 2 || meta["count"].(float64) != 3 || meta["hasnext"] != true {
		t.Fatalf("paging: %v", m)
	}
	for q, want := range map[string]int{"clientid=dev-a": 1, "like_clientid=dev-": 2, "conn_state=connecting": 1, "username=u-dev-b": 1, "ip_address=127.0.0.1": 3, "gte_connected_at=" + url.QueryEscape(time.Now().Add(-time.Minute).Format(time.RFC3339)): 2} {
		_, m, _ := call(t, "GET", gw+"/clients?"+q, "")
		if n := len(m["data"].([]any)); n != want {
			t.Errorf("filter %s: %d clients, want %d", q, n, want)
		}
	}
	// One client, EMQX's fields.
	a.send(Frame{Type: testhandler.Publish, Topic: "up/a", Payload: "1"})
	a.expect(testhandler.Puback, 0)
	code, m, _ = call(t, "GET", gw+"/clients/dev-a", "")
	if code != 200 || m["clientid"] != "dev-a" || m["conn_state"] != "connected" || m["keepalive"].(float64) != 30 || m["subscriptions_cnt"].(float64) != 1 || m["proto_name"] != "demo" || m["recv_oct"].(float64) == 0 {
		t.Fatalf("client: %v", m)
	}
	// EMQX's gateway client fields and time format.
	emqxTime := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$`)
	for _, k := range []string{"created_at", "connected_at"} {
		if v, _ := m[k].(string); !emqxTime.MatchString(v) {
			t.Errorf("%s = %q, want EMQX's 2024-05-01T10:00:00.123+00:00", k, v)
		}
	}
	for k, want := range map[string]any{"is_bridge": false, "clean_start": true, "expiry_interval": 0.0, "mqueue_max": 1000.0,
		"mqueue_len": 0.0, "mqueue_dropped": 0.0, "recv_msg": 1.0, "send_msg": 0.0,
		"subscriptions_max": 0.0, "inflight_cnt": 0.0, "inflight_max": 0.0, "awaiting_rel_cnt": 0.0, "awaiting_rel_max": 0.0} {
		if m[k] != want {
			t.Errorf("%s = %v, want %v", k, m[k], want)
		}
	}
	// Connect, subscribe, publish and their acks. A write is counted once
	// it returned, which may be a moment after the device read it.
	for deadline := time.Now().Add(5 * time.Second); m["recv_cnt"].(float64) < 3 || m["send_cnt"].(float64) < 3 || m["send_pkt"] != m["send_cnt"]; {
		if time.Now().After(deadline) {
			t.Fatalf("recv_cnt %v, send_cnt %v (send_pkt %v): want at least 3 each", m["recv_cnt"], m["send_cnt"], m["send_pkt"])
		}
		time.Sleep(20 * time.Millisecond)
		_, m, _ = call(t, "GET", gw+"/clients/dev-a", "")
	}
	// Subscriptions on the device's behalf.
	if code, _, body := call(t, "POST", gw+"/clients/dev-b/subscriptions", `{"topic":"ops/+","qos":1}`); code != 201 {
		t.Fatalf("subscribe: %d %s", code, body)
	}
	e.mqtt("ops").pub("ops/x", 1, false, "from ops")
	if f := b.expect(testhandler.Publish, 0); f.Payload != "from ops" {
		t.Fatal(f)
	}
	if code, _, body := call(t, "GET", gw+"/clients/dev-b/subscriptions", ""); code != 200 || body != "[{\"topic\":\"ops/+\",\"qos\":1}]\n" {
		t.Fatalf("subscriptions: %s", body)
	}
	if code, _, _ := call(t, "DELETE", gw+"/clients/dev-b/subscriptions/"+url.PathEscape("ops/+"), ""); code != 204 {
		t.Fatal(code)
	}
	if _, _, body := call(t, "GET", gw+"/clients/dev-b/subscriptions", ""); body != "[]\n" {
		t.Fatalf("after unsubscribe: %s", body)
	}
	// Kick.
	if code, _, _ := call(t, "DELETE", gw+"/clients/dev-a", ""); code != 204 {
		t.Fatal(code)
	}
	if r := e.h.WaitClosed(t, a.id, 5*time.Second); r != "{shutdown,kicked}" {
		t.Fatalf("kick reason %q", r)
	}
	// Errors in EMQX's shape.
	if code, m, _ := call(t, "GET", gw+"/clients/nobody", ""); code != 404 || m["code"] != "CLIENTID_NOT_FOUND" {
		t.Fatalf("missing client: %d %v", code, m)
	}
	if code, m, _ := call(t, "POST", gw+"/clients/dev-b/subscriptions", `{"topic":""}`); code != 400 || m["code"] != "BAD_REQUEST" {
		t.Fatalf("bad subscription: %d %v", code, m)
	}
	// Metrics, health, OpenAPI. Counters move when callbacks return, a
	// moment after the device saw their effect: poll.
	wants := []string{"exgate_client_connected_total 2", "exgate_connections 2", `exgate_listener_connections{listener="tcp:default"}`,
		`exgate_handler_call_duration_seconds_count{callback="OnSocketCreated"}`, `exgate_adapter_calls_total{code="SUCCESS",method="Authenticate"} 2`, "go_goroutines", "exgate_messages_delivered_total 1"}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, _, metrics := call(t, "GET", base+"/metrics", "")
		var missing []string
		for _, want := range wants {
			if !strings.Contains(metrics, want) {
				missing = append(missing, want)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics lack %q", missing)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, p := range []string{"/healthz", "/readyz", "/api/v5/openapi.json"} {
		if code, _, _ := call(t, "GET", base+p, ""); code != 200 {
			t.Errorf("%s: %d", p, code)
		}
	}
	_, doc, body := call(t, "GET", base+"/api/v5/openapi.json", "")
	paths, _ := doc["paths"].(map[string]any)
	for _, p := range []string{"/api/v5/gateways/exproto/listeners/{id}", "/api/v5/gateways/exproto/enable/{enable}", "/api/v5/gateways/exproto/clients"} {
		if paths[p] == nil {
			t.Errorf("openapi.json (valid JSON: %v) lacks %s", doc != nil, p)
		}
	}
	if t.Failed() {
		t.Log(body[:min(len(body), 300)])
	}
}

func TestManagementAPIAuth(t *testing.T) {
	e := start(t, nil)
	base := startAPI(t, e, config.API{Username: "admin", Password: "api-secret"})
	if code, m, _ := call(t, "GET", base+"/api/v5/gateways/exproto", "", "", ""); code != 401 || m["code"] != "BAD_USERNAME_OR_PWD" {
		t.Fatalf("no credentials: %d %v", code, m)
	}
	if code, _, _ := call(t, "GET", base+"/api/v5/gateways/exproto", "", "admin", "wrong"); code != 401 {
		t.Fatal(code)
	}
	if code, _, _ := call(t, "GET", base+"/api/v5/gateways/exproto", "", "admin", "api-secret"); code != 200 {
		t.Fatal(code)
	}
	if code, _, _ := call(t, "GET", base+"/healthz", "", "", ""); code != 200 {
		t.Fatal("healthz needs no credentials", code)
	}
}

// TestManagementAPISecureByDefault: with the default configuration every
// call but the health checks needs an API key, and what a web page in an
// operator's browser could send is refused.
func TestManagementAPISecureByDefault(t *testing.T) {
	e := start(t, nil)
	base := startAPI(t, e, config.API{})
	gw := base + "/api/v5/gateways/exproto"
	for _, path := range []string{gw, gw + "/clients", "/metrics", "/api/v5/log", "/api/v5/banned", "/api/v5/session"} {
		u := base + path
		if strings.HasPrefix(path, base) {
			u = path
		}
		if code, _, _ := call(t, "GET", u, "", "", ""); code != 401 {
			t.Errorf("GET %s without a key: %d, want 401", path, code)
		}
	}
	for _, path := range []string{"/healthz", "/readyz", "/"} { // "/": the dashboard's page, no data, a login form
		if code, _, _ := call(t, "GET", base+path, "", "", ""); code == 401 {
			t.Errorf("GET %s needs no key", path)
		}
	}
	if code, _, _ := call(t, "GET", gw, "", "ek_wrong", "secret"); code != 401 {
		t.Errorf("a wrong key: %d", code)
	}
	if code, _, _ := call(t, "GET", gw, ""); code != 200 {
		t.Fatalf("with the bootstrap key: %d", code)
	}

	d := e.dial()
	d.connect("victim", 0)
	k := testKey.Load()
	browser := func(contentType, origin, host string) int {
		req, _ := http.NewRequest("POST", gw+"/clients/victim/subscriptions", strings.NewReader(`{"topic":"#","qos":0}`))
		req.SetBasicAuth(k[0], k[1]) // browsers resend cached credentials
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		if host != "" {
			req.Host = host
		}
		code, _, _ := do(t, req)
		return code
	}
	if code := browser("text/plain", "", ""); code != 415 {
		t.Errorf("text/plain POST (a form): %d, want 415", code)
	}
	if code := browser("application/json", "http://evil.example", ""); code != 403 {
		t.Errorf("foreign Origin: %d, want 403", code)
	}
	if code := browser("application/json", "", "evil.example:18083"); code != 403 {
		t.Errorf("foreign Host (DNS rebinding): %d, want 403", code)
	}
	if code := browser("application/json", "", ""); code != 201 {
		t.Errorf("the operator's own request: %d, want 201", code)
	}
}

// TestAPIKeysAreHashedAndReread: keys are stored hashed, and a key added
// to the file while the API runs is accepted without a restart; a deleted
// one is refused.
func TestAPIKeysAreHashedAndReread(t *testing.T) {
	e := start(t, nil)
	keys := filepath.Join(t.TempDir(), "api_keys")
	base := startAPI(t, e, config.API{KeysFile: keys})
	cred, err := apikey.Add(keys, "ci")
	if err != nil {
		t.Fatal(err)
	}
	key, secret, _ := strings.Cut(cred, ":")
	if b, _ := os.ReadFile(keys); strings.Contains(string(b), secret) {
		t.Fatal("the keys file holds a secret in clear")
	}
	u := base + "/api/v5/gateways/exproto"
	deadline := time.Now().Add(5 * time.Second)
	for code, _, _ := call(t, "GET", u, "", key, secret); code != 200; code, _, _ = call(t, "GET", u, "", key, secret) {
		if time.Now().After(deadline) {
			t.Fatalf("a new key is not accepted: %d", code)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := apikey.Delete(keys, "ci"); err != nil {
		t.Fatal(err)
	}
	for code, _, _ := call(t, "GET", u, "", key, secret); code != 401; code, _, _ = call(t, "GET", u, "", key, secret) {
		if time.Now().After(deadline.Add(5 * time.Second)) {
			t.Fatalf("a deleted key is still accepted: %d", code)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestClientTrace(t *testing.T) {
	e := start(t, func(c *config.Config) { c.Trace.Dir = t.TempDir() })
	base := startAPI(t, e, config.API{})
	gw := base + "/api/v5/gateways/exproto"
	if code, _, body := call(t, "POST", gw+"/trace", `{"name":"t1","clientid":"traced","duration":"1m"}`); code != 201 {
		t.Fatalf("start trace: %d %s", code, body)
	}
	if code, m, _ := call(t, "POST", gw+"/trace", `{"name":"t1","clientid":"x"}`); code != 400 || m["code"] != "BAD_REQUEST" {
		t.Fatalf("duplicate trace: %d %v", code, m)
	}
	traces := func() []map[string]any {
		code, _, body := call(t, "GET", gw+"/trace", "")
		var l []map[string]any
		if err := json.Unmarshal([]byte(body), &l); code != 200 || err != nil {
			t.Fatalf("list traces: %d %s", code, body)
		}
		return l
	}
	if l := traces(); len(l) != 1 || l[0]["name"] != "t1" || l[0]["clientid"] != "traced" {
		t.Fatalf("traces while t1 runs: %v", l)
	}
	d := e.dial()
	d.connect("traced", 0)
	d.subscribe("cmd/#", 1)
	d.send(Frame{Type: testhandler.Publish, Topic: "up/1", Payload: "hello"})
	d.expect(testhandler.Puback, 0)
	other := e.dial()
	other.connect("not-traced", 0)
	code, _, body := call(t, "GET", gw+"/trace/t1/download", "")
	if code != 200 {
		t.Fatal(code, body)
	}
	for _, want := range []string{`clientid="traced"`, "event=authenticated", `event=subscribe topic="cmd/#"`, `event=publish topic="up/1" bytes=5 hex=68656c6c6f`, "event=recv", "event=send"} {
		if !strings.Contains(body, want) {
			t.Errorf("trace lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "not-traced") {
		t.Errorf("another client got into the trace:\n%s", body)
	}
	if code, _, _ := call(t, "DELETE", gw+"/trace/t1", ""); code != 204 {
		t.Fatal(code)
	}
	if l := traces(); len(l) != 0 {
		t.Fatalf("traces after t1 stopped: %v", l)
	}
	if code, _, _ := call(t, "GET", gw+"/trace/t1/download", ""); code != 404 {
		t.Fatal("a stopped trace is forgotten", code)
	}
}

// TestOperatorSubscriptionsCanFollowACL: an operator's subscription on a
// device's behalf bypasses its authorization rules (an admin act), unless
// api.subscriptions_follow_acl applies them.
func TestOperatorSubscriptionsCanFollowACL(t *testing.T) {
	for _, follow := range []bool{false, true} {
		e := start(t, func(c *config.Config) {
			c.Gateway.ExProto.Authorization = config.Authorization{NoMatch: "allow", Rules: []config.Rule{
				{Permission: "deny", Action: "subscribe", Topics: []string{"#"}},
			}}
		})
		base := startAPI(t, e, config.API{SubscriptionsFollowACL: follow})
		d := e.dial()
		d.connect("tenant-a", 0)
		code, _, body := call(t, "POST", base+"/api/v5/gateways/exproto/clients/tenant-a/subscriptions", `{"topic":"#","qos":0}`)
		if want := map[bool]int{false: 201, true: 403}[follow]; code != want {
			t.Fatalf("subscriptions_follow_acl %v: %d %s, want %d", follow, code, body, want)
		}
	}
}

// TestFailedLoginsBan: a clientid that fails to authenticate too often is
// banned (even the right password is refused then), listed in
// /api/v5/banned, and let in again once the ban is lifted; an operator's
// ban kicks a connected device.
func TestFailedLoginsBan(t *testing.T) {
	var logs collector
	e := startWith(t, options{logs: &logs}, func(c *config.Config) {
		c.Gateway.ExProto.Authentication = aliceOnly()
		c.Gateway.ExProto.LoginFailureBan.MaxFailures = 3
	})
	base := startAPI(t, e, config.API{})
	d := e.dial()
	auth := func(pw string) pb.ResultCode {
		resp, err := e.h.Adapter.Authenticate(ctx5(t), &pb.AuthenticateRequest{Conn: d.id, Clientinfo: &pb.ClientInfo{Clientid: "guesser", Username: "alice"}, Password: pw})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Code
	}
	for range 3 {
		if c := auth("guess"); c != pb.ResultCode_PERMISSION_DENY {
			t.Fatalf("wrong password: %v", c)
		}
	}
	waitLog(t, &logs, "client banned after failed authentications")
	if c := auth("secret"); c != pb.ResultCode_PERMISSION_DENY {
		t.Fatalf("the right password while banned: %v", c)
	}
	code, m, body := call(t, "GET", base+"/api/v5/banned", "")
	if data, _ := m["data"].([]any); code != 200 || len(data) != 1 || !strings.Contains(body, `"who":"guesser"`) {
		t.Fatalf("banned list: %d %s", code, body)
	}
	if code, _, _ := call(t, "DELETE", base+"/api/v5/banned/clientid/guesser", ""); code != 204 {
		t.Fatalf("lift: %d", code)
	}
	if c := auth("secret"); c != pb.ResultCode_SUCCESS {
		t.Fatalf("after the ban was lifted: %v", c)
	}

	// An operator bans a connected device's clientid: it is kicked.
	victim := e.dial()
	victim.send(Frame{Type: testhandler.Connect, ClientInfo: &testhandler.ClientInfo{ClientID: "naughty", Username: "alice"}, Password: "secret"})
	victim.expect(testhandler.Connack, 0)
	if code, _, body := call(t, "POST", base+"/api/v5/banned", `{"as":"clientid","who":"naughty","reason":"test"}`); code != 200 {
		t.Fatalf("ban: %d %s", code, body)
	}
	if r := e.h.WaitClosed(t, victim.id, 5*time.Second); r != "{shutdown,kicked}" {
		t.Fatalf("banned device closed with %q", r)
	}
	if code, _, _ := call(t, "POST", base+"/api/v5/banned", `{"as":"ip","who":"x"}`); code != 400 {
		t.Fatalf("a bad ban: %d", code)
	}
}

// TestDashboardSession: the dashboard logs in with an API key and gets an
// HttpOnly, SameSite=Strict session cookie; a change made with the cookie
// needs the session's CSRF token; logout ends the session.
func TestDashboardSession(t *testing.T) {
	e := start(t, nil)
	base := startAPI(t, e, config.API{})
	k := testKey.Load()
	if code, _, _ := call(t, "POST", base+"/api/v5/login", `{"username":"`+k[0]+`","password":"wrong"}`, "", ""); code != 401 {
		t.Fatalf("login with a wrong secret: %d", code)
	}
	req, _ := http.NewRequest("POST", base+"/api/v5/login", strings.NewReader(`{"username":"`+k[0]+`","password":"`+k[1]+`"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		CSRF string `json:"csrf_token"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "exgate_session" {
			cookie = c
		}
	}
	if resp.StatusCode != 200 || cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || body.CSRF == "" {
		t.Fatalf("login: %d cookie %+v csrf %q", resp.StatusCode, cookie, body.CSRF)
	}
	withCookie := func(method, path, csrf string) int {
		req, _ := http.NewRequest(method, base+path, nil)
		req.AddCookie(cookie)
		if csrf != "" {
			req.Header.Set("X-CSRF-Token", csrf)
		}
		code, _, _ := do(t, req)
		return code
	}
	d := e.dial()
	d.connect("dash", 0)
	if code := withCookie("GET", "/api/v5/gateways/exproto/clients", ""); code != 200 {
		t.Fatalf("read with the session: %d", code)
	}
	if code := withCookie("DELETE", "/api/v5/gateways/exproto/clients/dash", ""); code != 403 {
		t.Fatalf("a change without the CSRF token: %d, want 403", code)
	}
	if code := withCookie("DELETE", "/api/v5/gateways/exproto/clients/dash", "forged"); code != 403 {
		t.Fatalf("a change with a wrong CSRF token: %d, want 403", code)
	}
	if code := withCookie("DELETE", "/api/v5/gateways/exproto/clients/dash", body.CSRF); code != 204 {
		t.Fatalf("a change with the CSRF token: %d", code)
	}
	if code := withCookie("POST", "/api/v5/logout", body.CSRF); code != 204 {
		t.Fatalf("logout: %d", code)
	}
	if code := withCookie("GET", "/api/v5/gateways/exproto/clients", ""); code != 401 {
		t.Fatalf("after logout: %d", code)
	}
}

// The gateway is disabled and enabled through the API, as in EMQX: every
// listener closes and every device is disconnected with gateway_stopped,
// then the listeners open again. The change is kept in api.changes_file.
// A body that tries to change what only the file sets is refused, not
// answered 200 and ignored.
func TestGatewayEnableThroughAPI(t *testing.T) {
	e := start(t, nil)
	dir := t.TempDir()
	base := startAPI(t, e, config.API{KeysFile: filepath.Join(dir, "api_keys")})
	gw := base + "/api/v5/gateways/exproto"
	d := e.dial()
	d.connect("here", 0)
	if code, _, body := call(t, "PUT", gw+"/enable/false", ""); code != 204 {
		t.Fatalf("PUT enable/false: %d %s", code, body)
	}
	d.expectEOF(5 * time.Second)
	e.h.WaitFor(t, 5*time.Second, "OnSocketClosed of the connected device", func() bool {
		r, ok := e.h.Closed(d.id)
		return ok && r == "{shutdown,gateway_stopped}"
	})
	if code, m, _ := call(t, "GET", gw, ""); code != 200 || m["status"] != "stopped" {
		t.Fatalf("after disabling: %d %v", code, m["status"])
	}
	if ls := e.g.Listeners(); len(ls) != 0 {
		t.Fatalf("%d listeners still open", len(ls))
	}
	kept, err := config.LoadChanges(filepath.Join(dir, "api_changes.yaml"))
	if err != nil || kept.Enable == nil || *kept.Enable {
		t.Fatalf("changes file: %+v %v, want enable: false", kept, err)
	}
	for _, c := range []struct{ body, code, says string }{
		{`{"enable": "no"}`, "BAD_REQUEST", "true or false"},
		{`{"enable": true, "mountpoint": "m/"}`, "NOT_SUPPORTED", "gateway.exproto.mountpoint in the configuration file"},
		{`{"listeners": []}`, "NOT_SUPPORTED", "/listeners"},
		{`[1]`, "BAD_REQUEST", "JSON object"},
	} {
		if code, m, body := call(t, "PUT", gw, c.body); code != 400 || m["code"] != c.code || !strings.Contains(body, c.says) {
			t.Errorf("PUT %s: %d %s", c.body, code, body)
		}
	}
	if code, _, _ := call(t, "PUT", gw+"/enable/maybe", ""); code != 400 {
		t.Errorf("PUT enable/maybe: %d, want 400", code)
	}
	if code, m, _ := call(t, "GET", gw, ""); m["status"] != "stopped" {
		t.Fatalf("a refused PUT changed the gateway: %d %v", code, m["status"])
	}
	// EMQX's update: the body of GET with enable changed.
	if code, _, body := call(t, "PUT", gw, `{"name": "exproto", "status": "stopped", "enable": true}`); code != 204 {
		t.Fatalf("PUT {enable: true}: %d %s", code, body)
	}
	if code, m, _ := call(t, "GET", gw, ""); code != 200 || m["status"] != "running" {
		t.Fatalf("after enabling: %d %v", code, m["status"])
	}
	e.dial().connect("back", 0)
}

// Listeners are created, read, changed and deleted through the API (EMQX's
// calls and shapes); each change applies at once, a bad one is refused
// whole with the reason, and what was changed is kept in api.changes_file.
func TestListenersThroughAPI(t *testing.T) {
	e := start(t, nil)
	dir := t.TempDir()
	changes := filepath.Join(dir, "api_changes.yaml")
	base := startAPI(t, e, config.API{KeysFile: filepath.Join(dir, "api_keys")})
	ls := base + "/api/v5/gateways/exproto/listeners"

	code, m, body := call(t, "POST", ls, `{"type": "tcp", "name": "extra", "bind": "127.0.0.1:0", "max_connections": 5}`)
	if code != 201 || m["id"] != "exproto:tcp:extra" || m["running"] != true || m["max_connections"] != 5.0 {
		t.Fatalf("POST: %d %s", code, body)
	}
	addr, _ := m["address"].(string)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("the new listener at %q: %v", addr, err)
	}
	c.Close()
	e.h.WaitFor(t, 5*time.Second, "a device of the new listener", func() bool { return len(e.h.Conns()) == 1 })

	for _, c := range []struct{ body, says string }{
		{`{"type": "tcp", "name": "extra", "bind": "127.0.0.1:0"}`, "exists already"},
		{`{"type": "tcp", "name": "bad", "bind": "127.0.0.1:0", "max_conections": 1}`, "max_conections"},
		{`{"type": "tcp", "name": "bad", "bind": "nowhere"}`, "bind"},
		{`{"type": "carrier-pigeon", "name": "bad", "bind": "127.0.0.1:0"}`, "type"},
		{`{"type": "tcp", "name": "bad", "bind": "` + addr + `"}`, "address already in use"},
	} {
		if code, m, body := call(t, "POST", ls, c.body); code != 400 || m["code"] != "BAD_REQUEST" || !strings.Contains(body, c.says) {
			t.Errorf("POST %s: %d %s, want 400 saying %q", c.body, code, body, c.says)
		}
	}
	if e.g.ListenerConfig("tcp:bad") != nil {
		t.Fatal("a refused listener was added")
	}

	// GET, then PUT back what GET said with one key changed.
	code, m, body = call(t, "GET", ls+"/exproto:tcp:extra", "")
	if code != 200 || m["bind"] != "127.0.0.1:0" || m["current_connections"] == nil {
		t.Fatalf("GET: %d %s", code, body)
	}
	m["access_rules"] = []string{"deny all"}
	put, _ := json.Marshal(m)
	if code, m, body := call(t, "PUT", ls+"/exproto%3Atcp%3Aextra", string(put)); code != 200 || m["address"] != addr {
		t.Fatalf("PUT (the socket is kept): %d %s", code, body)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Read(make([]byte, 1))
		c.Close()
	}
	if n := e.g.Listener("tcp:extra").Stats.RefusedACL.Load(); n != 1 {
		t.Fatalf("refused by access rules after the PUT: %d, want 1", n)
	}
	if code, _, body := call(t, "PUT", ls+"/exproto:tcp:extra", `{"bind": ["127.0.0.1:0"]}`); code != 400 || !strings.Contains(body, "bind") {
		t.Fatalf("PUT with a wrong type: %d %s", code, body)
	}

	if code, _, body := call(t, "DELETE", ls+"/exproto:tcp:extra", ""); code != 204 {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatal("the deleted listener still accepts")
	}
	for _, p := range []string{"/exproto:tcp:extra", "/exproto:tcp:none", "/garbage"} {
		if code, _, _ := call(t, "GET", ls+p, ""); code != 404 {
			t.Errorf("GET %s: %d, want 404", p, code)
		}
		if code, _, _ := call(t, "DELETE", ls+p, ""); code != 404 {
			t.Errorf("DELETE %s: %d, want 404", p, code)
		}
	}
	if code, _, body := call(t, "DELETE", ls+"/exproto:tcp:default", ""); code != 400 || !strings.Contains(body, "no device listener") {
		t.Fatalf("DELETE of the last listener: %d %s, want refused", code, body)
	}
	e.dial() // the default listener is untouched

	kept, err := config.LoadChanges(changes)
	if err != nil {
		t.Fatal(err)
	}
	if l, ok := kept.Listeners["tcp"]["extra"]; !ok || l != nil {
		t.Fatalf("changes file: tcp:extra = %+v (present %v), want deleted (null)", l, ok)
	}
	if len(kept.Listeners["tcp"]) != 1 || kept.Enable != nil {
		t.Fatalf("changes file holds more than the deletion: %+v", kept)
	}
}

// gateway.exproto.enable: false (EMQX's enable = false) starts exgate
// without the gateway: no device listener, the broker and the API run, the
// gateway reports "stopped"; a reload that enables it opens the listeners.
func TestGatewayDisabled(t *testing.T) {
	e := start(t, func(c *config.Config) { c.Gateway.ExProto.Enable = new(bool) })
	if ls := e.g.Listeners(); len(ls) != 0 {
		t.Fatalf("a disabled gateway opened %d listeners", len(ls))
	}
	base := startAPI(t, e, config.API{})
	if code, m, _ := call(t, "GET", base+"/api/v5/gateways/exproto", ""); code != 200 || m["status"] != "stopped" {
		t.Fatalf("gateway: %d %v", code, m["status"])
	}
	m := e.mqtt("still-a-broker")
	m.sub("t", 0)
	m.pub("t", 0, false, "x")
	m.expect("t", "x")
	if _, err := e.g.Reload(reloaded(t, e, func(c *config.Config) { c.Gateway.ExProto.Enable = nil })); err != nil {
		t.Fatalf("reload that enables the gateway: %v", err)
	}
	e.dial().connect("enabled", 0)
}

package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/exgate/exgate/internal/api"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/testhandler"
)

// startAPI serves the management API of e's gateway on a loopback port.
func startAPI(t *testing.T, e *env, cfg config.API) string {
	t.Helper()
	cfg.Bind = "127.0.0.1:0"
	s, err := api.New(e.g, cfg, nil, nil, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve() }()
	t.Cleanup(func() { _ = s.Shutdown(ctx5(t)) })
	return "http://" + s.Addr().String()
}

func call(t *testing.T, method, u string, body string, auth ...string) (int, map[string]any, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	if len(auth) == 2 {
		req.SetBasicAuth(auth[0], auth[1])
	}
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
	code, _, body := call(t, "GET", gw+"/listeners", "")
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
	code, m, _ = call(t, "GET", gw+"/clients/dev-a", "")
	if code != 200 || m["clientid"] != "dev-a" || m["conn_state"] != "connected" || m["keepalive"].(float64) != 30 || m["subscriptions_cnt"].(float64) != 1 || m["proto_name"] != "demo" || m["recv_oct"].(float64) == 0 {
		t.Fatalf("client: %v", m)
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
}

func TestManagementAPIAuth(t *testing.T) {
	e := start(t, nil)
	base := startAPI(t, e, config.API{Username: "admin", Password: "api-secret"})
	if code, m, _ := call(t, "GET", base+"/api/v5/gateways/exproto", ""); code != 401 || m["code"] != "BAD_USERNAME_OR_PWD" {
		t.Fatalf("no credentials: %d %v", code, m)
	}
	if code, _, _ := call(t, "GET", base+"/api/v5/gateways/exproto", "", "admin", "wrong"); code != 401 {
		t.Fatal(code)
	}
	if code, _, _ := call(t, "GET", base+"/api/v5/gateways/exproto", "", "admin", "api-secret"); code != 200 {
		t.Fatal(code)
	}
	if code, _, _ := call(t, "GET", base+"/healthz", ""); code != 200 {
		t.Fatal("healthz needs no credentials", code)
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
	if code, _, _ := call(t, "GET", gw+"/trace/t1/download", ""); code != 404 {
		t.Fatal("a stopped trace is forgotten", code)
	}
}

package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/internal/auth"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/testhandler"
	"github.com/exgate/exgate/sdk"
)

// login sends CONNECT and returns the CONNACK's result code.
func login(d *device, clientID, username, password string) int {
	d.t.Helper()
	d.send(Frame{Type: testhandler.Connect, ClientInfo: &testhandler.ClientInfo{ProtoName: "demo", ClientID: clientID, Username: username}, Password: password})
	f := d.recv()
	if f.Type != testhandler.Connack {
		d.t.Fatalf("got %+v, want CONNACK", f)
	}
	return *f.RC
}

func TestUsersFileReloaded(t *testing.T) {
	for _, ext := range []string{".yaml", ".csv"} {
		t.Run(ext, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "users"+ext)
			hash, _ := auth.HashPassword("first-pass")
			if err := auth.WriteUsersFile(file, []config.User{{UserID: "alice", Password: hash}}); err != nil {
				t.Fatal(err)
			}
			e := start(t, func(c *config.Config) {
				c.Gateway.ExProto.Authentication = []config.Authenticator{{Mechanism: "password_based", Backend: "built_in_database", UsersFile: file}}
			})
			if rc := login(e.dial(), "c1", "alice", "first-pass"); rc != 0 {
				t.Fatalf("alice: %d", rc)
			}
			if rc := login(e.dial(), "c2", "bob", "second-pass"); rc != int(pb.ResultCode_PERMISSION_DENY) {
				t.Fatalf("unknown bob: %d", rc)
			}
			hash2, _ := auth.HashPassword("second-pass")
			time.Sleep(1100 * time.Millisecond) // a new mtime, and past the 1 s check interval
			if err := auth.WriteUsersFile(file, []config.User{{UserID: "alice", Password: hash}, {UserID: "bob", Password: hash2}}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(1100 * time.Millisecond)
			if rc := login(e.dial(), "c3", "bob", "second-pass"); rc != 0 {
				t.Fatalf("bob after the file changed: %d", rc)
			}
		})
	}
}

// authService is an EMQX-contract HTTP authentication service.
type authService struct {
	*httptest.Server
	mu   sync.Mutex
	seen []map[string]string
}

func startAuthService(t *testing.T, answer func(w http.ResponseWriter, body map[string]string)) *authService {
	s := &authService{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := map[string]string{}
		if r.Method == http.MethodGet {
			for k := range r.URL.Query() {
				body[k] = r.URL.Query().Get(k)
			}
		} else {
			_ = json.NewDecoder(r.Body).Decode(&body)
		}
		body["method"] = r.Method
		s.mu.Lock()
		s.seen = append(s.seen, body)
		s.mu.Unlock()
		answer(w, body)
	}))
	t.Cleanup(s.Close)
	return s
}

func emqxHTTPAuth(url string) config.Authenticator {
	return config.Authenticator{Mechanism: "password_based", Backend: "http", URL: url, RequestTimeout: 500 * time.Millisecond,
		Body: map[string]string{"clientid": "${clientid}", "username": "${username}", "password": "${password}", "peerhost": "${peerhost}", "proto_name": "${proto_name}"}}
}

func TestHTTPAuthenticator(t *testing.T) {
	svc := startAuthService(t, func(w http.ResponseWriter, b map[string]string) {
		switch b["username"] {
		case "slow":
			time.Sleep(time.Second)
		case "garbage":
			fmt.Fprint(w, "<html>oops</html>")
			return
		case "broken":
			w.WriteHeader(http.StatusInternalServerError)
			return
		case "ignored":
			fmt.Fprint(w, `{"result":"ignore"}`)
			return
		case "brief":
			fmt.Fprintf(w, `{"result":"allow","expire_at":%d}`, time.Now().Add(1500*time.Millisecond).Unix())
			return
		}
		if b["password"] == "right" {
			fmt.Fprint(w, `{"result":"allow","is_superuser":false}`)
		} else {
			fmt.Fprint(w, `{"result":"deny"}`)
		}
	})
	e := start(t, func(c *config.Config) {
		c.Gateway.ExProto.Authentication = []config.Authenticator{emqxHTTPAuth(svc.URL),
			{Mechanism: "password_based", Backend: "built_in_database", Users: []config.User{{UserID: "ignored", Password: "sha256:salt:ec3e2f031bd48b4bde903c0d6716ffcd47fab129b0d31f48f90830b4a953b6b0"}}}}
	})
	if rc := login(e.dial(), "h1", "alice", "right"); rc != 0 {
		t.Fatalf("allow: %d", rc)
	}
	svc.mu.Lock()
	got := svc.seen[0]
	svc.mu.Unlock()
	if got["clientid"] != "h1" || got["username"] != "alice" || got["password"] != "right" || got["peerhost"] != "127.0.0.1" || got["proto_name"] != "demo" || got["method"] != "POST" {
		t.Fatalf("the auth service got %v", got)
	}
	for _, c := range []struct{ user, pass string }{{"alice", "wrong"}, {"slow", "right"}, {"garbage", "right"}, {"broken", "right"}} {
		if rc := login(e.dial(), "h-"+c.user, c.user, c.pass); rc != int(pb.ResultCode_PERMISSION_DENY) {
			t.Fatalf("%s: %d, want PERMISSION_DENY", c.user, rc)
		}
	}
	// "ignore" passes the client to the next authenticator.
	if rc := login(e.dial(), "h5", "ignored", "fallback"); rc != 0 {
		t.Fatalf("ignore then built-in: %d", rc)
	}
	// expire_at closes the device at that time.
	d := e.dial()
	if rc := login(d, "h6", "brief", "x"); rc != 0 {
		t.Fatal(rc)
	}
	if r := e.h.WaitClosed(t, d.id, 5*time.Second); r != "{shutdown,expired}" {
		t.Fatalf("reason %q", r)
	}
	// The service is down: a deny, not a hang.
	svc.Close()
	if rc := login(e.dial(), "h7", "alice", "right"); rc != int(pb.ResultCode_PERMISSION_DENY) {
		t.Fatalf("service down: %d", rc)
	}
}

func TestHTTPAuthenticatorGET(t *testing.T) {
	svc := startAuthService(t, func(w http.ResponseWriter, b map[string]string) {
		w.WriteHeader(http.StatusNoContent) // EMQX 4 style: 204 allows
	})
	e := start(t, func(c *config.Config) {
		a := emqxHTTPAuth(svc.URL + "/auth")
		a.Method = "get"
		c.Gateway.ExProto.Authentication = []config.Authenticator{a}
	})
	if rc := login(e.dial(), "g1", "gina", "pw"); rc != 0 {
		t.Fatal(rc)
	}
	if svc.seen[0]["method"] != "GET" || svc.seen[0]["clientid"] != "g1" {
		t.Fatalf("%v", svc.seen[0])
	}
}

func TestJWTAuthenticator(t *testing.T) {
	dir := t.TempDir()
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	pubFile := filepath.Join(dir, "pub.pem")
	_ = os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600)
	jwks := map[string]any{"keys": []map[string]string{{"kty": "RSA", "kid": "k1",
		"n": base64.RawURLEncoding.EncodeToString(rsaKey.N.Bytes()), "e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(rsaKey.E)).Bytes())}}}
	jwksFile := filepath.Join(dir, "jwks.json")
	b, _ := json.Marshal(jwks)
	_ = os.WriteFile(jwksFile, b, 0o600)

	hs := func(secret string, claims jwt.MapClaims) string {
		s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
		return s
	}
	rs := func(kid string, claims jwt.MapClaims) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
		tok.Header["kid"] = kid
		s, _ := tok.SignedString(rsaKey)
		return s
	}
	future := time.Now().Add(time.Hour).Unix()
	for _, c := range []struct {
		name string
		auth config.Authenticator
		good string
		bad  []string
	}{
		{"HS256", config.Authenticator{Mechanism: "jwt", Algorithm: "hmac-based", Secret: "s3cret", VerifyClaims: map[string]string{"clientid": "${clientid}"}},
			hs("s3cret", jwt.MapClaims{"clientid": "j1", "exp": future}),
			[]string{hs("other", jwt.MapClaims{"clientid": "j1", "exp": future}), hs("s3cret", jwt.MapClaims{"clientid": "j1", "exp": time.Now().Add(-time.Minute).Unix()}), hs("s3cret", jwt.MapClaims{"clientid": "someone-else", "exp": future})}},
		{"RS256 public key", config.Authenticator{Mechanism: "jwt", Algorithm: "public-key", PublicKeyFile: pubFile},
			rs("", jwt.MapClaims{"exp": future}), []string{hs("s3cret", jwt.MapClaims{"exp": future})}},
		{"RS256 JWKS", config.Authenticator{Mechanism: "jwt", Algorithm: "public-key", JWKSFile: jwksFile},
			rs("k1", jwt.MapClaims{"exp": future}), []string{rs("k2", jwt.MapClaims{"exp": future})}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := start(t, func(cfg *config.Config) { cfg.Gateway.ExProto.Authentication = []config.Authenticator{c.auth} })
			if rc := login(e.dial(), "j1", "u", c.good); rc != 0 {
				t.Fatalf("good token: %d", rc)
			}
			for i, tok := range c.bad {
				if rc := login(e.dial(), "j1", "u", tok); rc != int(pb.ResultCode_PERMISSION_DENY) {
					t.Fatalf("bad token %d: %d", i, rc)
				}
			}
		})
	}
	// exp becomes expire_at: the device is closed when the token expires.
	e := start(t, func(cfg *config.Config) {
		cfg.Gateway.ExProto.Authentication = []config.Authenticator{{Mechanism: "jwt", Algorithm: "hmac-based", Secret: "s3cret"}}
	})
	d := e.dial()
	if rc := login(d, "j2", "u", hs("s3cret", jwt.MapClaims{"exp": time.Now().Add(1500 * time.Millisecond).Unix()})); rc != 0 {
		t.Fatal(rc)
	}
	if r := e.h.WaitClosed(t, d.id, 5*time.Second); r != "{shutdown,expired}" {
		t.Fatalf("reason %q", r)
	}
	_ = ecdsa.GenerateKey
	_ = elliptic.P256
}

func TestListenerAuthenticationFirst(t *testing.T) {
	e := start(t, func(c *config.Config) {
		c.Gateway.ExProto.Authentication = []config.Authenticator{{Mechanism: "password_based", Backend: "built_in_database", Users: []config.User{{UserID: "gw", Password: "sha256:salt:c48e22d109fbdc9ea9d09115591b16133717abf8f0faad86b3656f23f0a8de5b"}}}}
		defaultListener(c).Authentication = []config.Authenticator{{Mechanism: "password_based", Backend: "built_in_database", Users: []config.User{{UserID: "own", Password: "sha256:salt:08cc95275e0ed367ee112caab807c2b21d536d086f63a7a8254d2c2b15a1c726"}}}}
	})
	if rc := login(e.dial(), "l1", "own", "b"); rc != 0 {
		t.Fatal("the listener's user", rc)
	}
	if rc := login(e.dial(), "l2", "gw", "a"); rc != 0 {
		t.Fatal("the gateway's user, after the listener's chain ignored it", rc)
	}
}

func TestMQTTClientsUseTheSameAuth(t *testing.T) {
	e := start(t, func(c *config.Config) {
		c.Gateway.ExProto.Authentication = []config.Authenticator{{Mechanism: "password_based", Backend: "built_in_database", Users: []config.User{{UserID: "app", Password: "sha256:salt:6ddfe5fa7cba35a77ca493af6ab29ceb4bf266b13e83f051c9b4a3cc851e432a"}}}}
		c.Gateway.ExProto.Authorization = config.Authorization{NoMatch: "allow", Rules: []config.Rule{{Permission: "deny", Action: "subscribe", Topics: []string{"secret/#"}}}}
	})
	try := func(user, pass string) error {
		o := mqtt.NewClientOptions().AddBroker("tcp://" + e.mqttAddr()).SetClientID("m-" + user).SetUsername(user).SetPassword(pass).SetAutoReconnect(false)
		c := mqtt.NewClient(o)
		tok := c.Connect()
		tok.WaitTimeout(5 * time.Second)
		if tok.Error() == nil {
			defer c.Disconnect(50)
			st := c.Subscribe("secret/x", 0, nil)
			st.WaitTimeout(5 * time.Second)
			if r := st.(*mqtt.SubscribeToken).Result()["secret/x"]; r != 0x80 {
				return fmt.Errorf("subscription to a denied topic granted: %d", r)
			}
		}
		return tok.Error()
	}
	if err := try("app", "wrong"); err == nil {
		t.Fatal("MQTT client with a wrong password connected")
	}
	if err := try("app", "apppw"); err != nil {
		t.Fatal(err)
	}
}

func TestSuperuserBypassesAuthorization(t *testing.T) {
	e := start(t, func(c *config.Config) {
		c.Gateway.ExProto.Authentication = []config.Authenticator{{Mechanism: "password_based", Backend: "built_in_database",
			Users: []config.User{{UserID: "root", Password: "sha256:salt:8d0161934145557283f36afcce1000825cea87bbb21ad651446f239d0ad15a14", IsSuperuser: true}, {UserID: "joe", Password: "sha256:salt:afd050d20145be3de9e9b1a5a0fbca733fd3c54b731460cc77c430d3000abcee"}}}}
		c.Gateway.ExProto.Authorization = config.Authorization{NoMatch: "deny"}
	})
	joe := e.dial()
	if rc := login(joe, "c-joe", "joe", "j"); rc != 0 {
		t.Fatal(rc)
	}
	joe.send(Frame{Type: testhandler.Publish, Topic: "any", QoS: 1, Payload: "x"})
	joe.expect(testhandler.Puback, int(pb.ResultCode_PERMISSION_DENY))
	root := e.dial()
	if rc := login(root, "c-root", "root", "r"); rc != 0 {
		t.Fatal(rc)
	}
	root.send(Frame{Type: testhandler.Publish, Topic: "any", QoS: 1, Payload: "x"})
	root.expect(testhandler.Puback, 0)
}

func TestHTTPAuthorizer(t *testing.T) {
	svc := startAuthService(t, func(w http.ResponseWriter, b map[string]string) {
		switch b["topic"] {
		case "ok/t":
			fmt.Fprint(w, `{"result":"allow"}`)
		case "no/t":
			fmt.Fprint(w, `{"result":"deny"}`)
		default:
			fmt.Fprint(w, `{"result":"ignore"}`)
		}
	})
	e := start(t, func(c *config.Config) {
		c.Gateway.ExProto.Authorization = config.Authorization{NoMatch: "deny", HTTP: &config.HTTPAuthorizer{URL: svc.URL,
			Body: map[string]string{"clientid": "${clientid}", "action": "${action}", "topic": "${topic}"}}}
	})
	d := e.dial()
	d.connect("az", 0)
	for topic, rc := range map[string]int{"ok/t": 0, "no/t": int(pb.ResultCode_PERMISSION_DENY), "other": int(pb.ResultCode_PERMISSION_DENY)} {
		d.send(Frame{Type: testhandler.Publish, Topic: topic, QoS: 1, Payload: "x"})
		d.expect(testhandler.Puback, rc)
	}
	if svc.seen[0]["action"] != "publish" || svc.seen[0]["clientid"] != "az" {
		t.Fatalf("%v", svc.seen[0])
	}
}

func TestAdapterAuthToken(t *testing.T) {
	h := testhandler.Start(t)
	e := startWith(t, options{handler: h, attach: func(h *testhandler.Handler, addr string) { h.AttachToken(t, addr, "adapter-token-1") }}, func(c *config.Config) {
		c.Gateway.ExProto.Server.AuthToken = "adapter-token-1"
	})
	exercise(t, e, "tok") // the handler sends the token
	for _, tok := range []string{"", "wrong"} {
		other := testhandler.Start(t)
		if tok == "" {
			other.Attach(t, e.g.AdapterAddr().String())
		} else {
			other.AttachToken(t, e.g.AdapterAddr().String(), tok)
		}
		_, err := other.Adapter.RawPublish(ctx5(t), &pb.RawPublishRequest{Topic: "t", Payload: []byte("x")})
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("token %q: %v, want UNAUTHENTICATED", tok, err)
		}
	}
	// A Go handler's client: sdk.WithToken.
	for tok, want := range map[string]codes.Code{"adapter-token-1": codes.OK, "wrong": codes.Unauthenticated} {
		if code := e.sdkRawPublish(t, sdk.WithToken(tok)); code != want {
			t.Fatalf("sdk client with token %q: %v, want %v", tok, code, want)
		}
	}
	// Health checks need no token.
	cc, err := grpc.NewClient(e.g.AdapterAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx5(t), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	// Nor does the streaming one (Watch); reflection, a stream too, does.
	w, err := healthpb.NewHealthClient(cc).Watch(ctx5(t), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if hr, err := w.Recv(); err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health watch without a token: %v %v", hr, err)
	}
	rs, err := rpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx5(t))
	if err != nil {
		t.Fatal(err)
	}
	_ = rs.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}})
	if resp, err := rs.Recv(); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("reflection without a token: %v %v, want UNAUTHENTICATED", resp, err)
	}
}

func TestHTTPAuthenticatorOverTLS(t *testing.T) {
	svc := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"result":"allow"}`)
	}))
	defer svc.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: svc.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	e := start(t, func(c *config.Config) {
		a := emqxHTTPAuth(svc.URL)
		a.SSLOptions = &config.ClientTLSOptions{Cacertfile: ca, ServerNameIndication: "example.com"}
		c.Gateway.ExProto.Authentication = []config.Authenticator{a}
	})
	if rc := login(e.dial(), "tls1", "u", "p"); rc != 0 {
		t.Fatalf("HTTPS auth service: %d", rc)
	}
	// Without the CA the service is not trusted: a deny, not an allow.
	e2 := start(t, func(c *config.Config) {
		c.Gateway.ExProto.Authentication = []config.Authenticator{emqxHTTPAuth(svc.URL)}
	})
	if rc := login(e2.dial(), "tls2", "u", "p"); rc != int(pb.ResultCode_PERMISSION_DENY) {
		t.Fatalf("untrusted HTTPS auth service: %d", rc)
	}
}

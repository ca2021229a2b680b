package config

import (
	"strings"
	"testing"
	"time"
)

func TestParseEmptyIsDefault(t *testing.T) {
	c, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(c.YAML()) != string(Default().YAML()) {
		t.Fatal("empty config differs from the defaults")
	}
}

func TestListenersReplaceTheDefaultOne(t *testing.T) {
	c, err := Parse([]byte("gateway:\n  exproto:\n    listeners:\n      tcp:\n        mine: {bind: 7000}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Gateway.ExProto.Listeners.TCP) != 1 || c.Gateway.ExProto.Listeners.TCP["mine"] == nil {
		t.Fatalf("listeners %v, want only mine", c.Gateway.ExProto.Listeners.TCP)
	}
	if l := c.Gateway.ExProto.Listeners.TCP["mine"]; !l.Enabled() || !l.AuthnEnabled() || BindAddress(l.Bind) != ":7000" {
		t.Fatalf("listener defaults: %+v", l)
	}
}

func TestParseValues(t *testing.T) {
	c, err := Parse([]byte("gateway:\n  exproto:\n    idle_timeout: 1m30s\n    mountpoint: dev/${clientid}/\n    handler: {address: \"127.0.0.1:9\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Gateway.ExProto.IdleTimeout != 90*time.Second || c.Gateway.ExProto.Mountpoint != "dev/${clientid}/" {
		t.Fatalf("%+v", c.Gateway.ExProto)
	}
	if c.Gateway.ExProto.Handler.ServiceName != "ConnectionUnaryHandler" {
		t.Fatal("a partial handler block lost the other defaults")
	}
}

func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"nodes: {}", "nodes (line 1): unknown key"},
		{"gateway: {exproto: {max_messages_per_delivery: many}}", "gateway.exproto.max_messages_per_delivery (line 1): expected a whole number, got many"},
		{"gateway: {exproto: {idle_timeout: 0s}}", "gateway.exproto.idle_timeout: must be positive"},
		{"gateway: {exproto: {mountpoint: \"a/#\"}}", "gateway.exproto.mountpoint"},
		{"gateway: {exproto: {mountpoint: \"${peer}/\"}}", "only ${clientid} and ${username}"},
		{"gateway: {exproto: {handler: {address: \"ftp://h:1\"}}}", "handler.address"},
		{"gateway: {exproto: {handler: {streaming: sometimes}}}", "handler.streaming"},
		{"gateway: {exproto: {listeners: {tcp: {t: {bind: 1, handler: {service_name: X}}}}}}", "listeners.tcp.t.handler.service_name"},
		{"gateway: {exproto: {listeners: {tcp: {a: {bind: \"x:99999\"}}}}}", "gateway.exproto.listeners.tcp.a.bind"},
		{"gateway: {exproto: {authentication: [{mechanism: password_based, backend: built_in_database, users: [{user_id: u, password: secret}]}]}}", "authentication[0].users[0].password"},
		{"gateway: {exproto: {authorization: {rules: [{permission: maybe, action: all, topics: [t]}]}}}", "authorization.rules[0].permission"},
		{"log: {level: loud}", "log.level"},
	} {
		_, err := Parse([]byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to mention %q", c.yaml, err, c.want)
		}
	}
}

func TestHandlerTarget(t *testing.T) {
	for in, want := range map[string]string{"http://127.0.0.1:9001": "127.0.0.1:9001", "127.0.0.1:9001": "127.0.0.1:9001", "http://[::1]:9001/": "[::1]:9001", "https://h:1": "h:1"} {
		if got, _, err := HandlerTarget(in); err != nil || got != want {
			t.Errorf("HandlerTarget(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"ftp://h:1", "http://h", "http://h:1/path"} {
		if _, _, err := HandlerTarget(bad); err == nil {
			t.Errorf("HandlerTarget(%q) accepted", bad)
		}
	}
}

func TestListenerValidation(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"gateway: {exproto: {listeners: {ssl: {s: {bind: 1}}}}}", "listeners.ssl.s.ssl_options: is required"},
		{"gateway: {exproto: {listeners: {udp: {u: {bind: 1, proxy_protocol: true}}}}}", "listeners.udp.u.proxy_protocol"},
		{"gateway: {exproto: {listeners: {tcp: {t: {bind: 1, ssl_options: {certfile: a, keyfile: b}}}}}}", "listeners.tcp.t.ssl_options: applies to ssl"},
		{"gateway: {exproto: {listeners: {tcp: {t: {bind: 1, access_rules: [\"allow 10.0.0.300\"]}}}}}", "access_rules[0]"},
		{"gateway: {exproto: {listeners: {tcp: {t: {bind: 1, bytes_rate: fast}}}}}", "bytes_rate"},
		{"gateway: {exproto: {listeners: {tcp: {t: {bind: 1, tcp_options: {recbuf: lots}}}}}}", "tcp_options.recbuf (line 1): expected a size"},
		{"gateway: {exproto: {listeners: {tcp: {t: {bind: 1, tcp_options: {keepalive: \"240,30\"}}}}}}", "Idle,Interval,Probes"},
		{"gateway: {exproto: {listeners: {tcp: {t: {bind: 1, tcp_options: {keepalive: \"240,0,5\"}}}}}}", "not a positive whole number"},
		{"gateway: {exproto: {listeners: {dtls: {d: {bind: 1, dtls_options: {certfile: a, keyfile: b, versions: [tlsv1.3]}}}}}}", "dtls_options.versions[0]"},
		{"gateway: {exproto: {listeners: {ssl: {s: {bind: 1, ssl_options: {certfile: a, keyfile: b, verify: verify_peer}}}}}}", "ssl_options.cacertfile"},
	} {
		_, err := Parse([]byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to mention %q", c.yaml, err, c.want)
		}
	}
	c, err := Parse([]byte("gateway: {exproto: {listeners: {udp: {u: {bind: 7993, messages_rate: 10/s, udp_options: {recbuf: 1MB}}}}}}"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Gateway.ExProto.Listeners.UDP["u"].UDPOptions.Recbuf != 1<<20 {
		t.Fatal("size not parsed")
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]float64{"100/s": 100, "64KB/s": 65536, "1MB/10s": 104857.6, "60/m": 1} {
		r, err := ParseRate(in, true)
		if err != nil || r.PerSecond() != want {
			t.Errorf("ParseRate(%q) = %v/s, %v; want %v", in, r.PerSecond(), err, want)
		}
	}
	for _, bad := range []string{"fast", "10", "0/s", "10/fortnight", "-1/s"} {
		if _, err := ParseRate(bad, true); err == nil {
			t.Errorf("ParseRate(%q) accepted", bad)
		}
	}
	if _, err := ParseRate("1KB/s", false); err == nil {
		t.Error("a size in a message rate was accepted")
	}
}

func TestHandlerAddressesAndOverride(t *testing.T) {
	c, err := Parse([]byte("gateway:\n  exproto:\n    handler: {address: \"http://a:1, b:2\", request_timeout: 5s}\n    listeners:\n      tcp:\n        t: {bind: 1, handler: {address: [\"c:3\"]}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Gateway.ExProto.Handler.Address; len(got) != 2 || got[1] != "b:2" {
		t.Fatalf("addresses %v", got)
	}
	h := c.Gateway.ExProto.Listeners.TCP["t"].Handler.Over(c.Gateway.ExProto.Handler)
	if h.Address[0] != "c:3" || h.RequestTimeout != 5*time.Second || h.ServiceName != "ConnectionUnaryHandler" {
		t.Fatalf("listener handler %+v did not inherit the gateway's", h)
	}
}

// TestListenersSayWhatTheFileSays: the default TCP listener applies only
// when the file says nothing about listeners; a TLS-only file, an explicit
// empty set and a disabled listener without an address open no plaintext
// port.
func TestListenersSayWhatTheFileSays(t *testing.T) {
	for _, c := range []struct {
		name, yaml string
		wantTCP    bool
	}{
		{"nothing said", "node: {name: n@h}\n", true},
		{"TLS only", "gateway: {exproto: {listeners: {ssl: {default: {bind: 7994, ssl_options: {certfile: c.pem, keyfile: k.pem}}}}}}\n", false},
		{"disabled without bind", "gateway: {exproto: {listeners: {tcp: {default: {enable: false}}}}}\n", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse([]byte(c.yaml))
			if err != nil {
				t.Fatal(err)
			}
			tcp := false
			cfg.Gateway.ExProto.Listeners.Each(func(typ, _ string, l *Listener) {
				if typ == "tcp" && l.Enabled() {
					tcp = true
				}
			})
			if tcp != c.wantTCP {
				t.Fatalf("an enabled TCP listener: %v, want %v", tcp, c.wantTCP)
			}
		})
	}
	// An explicit empty set is refused with a reason, not filled with 7993.
	if _, err := Parse([]byte("gateway: {exproto: {listeners: {}}}\n")); err == nil || !strings.Contains(err.Error(), "no device listener") {
		t.Fatalf("listeners: {} → %v", err)
	}
}

// A YAML syntax error names the line where the problem is, counted from 1
// as editors do (yaml's parser counts from 0).
func TestYAMLSyntaxErrorLine(t *testing.T) {
	for _, c := range []struct{ name, body, want string }{
		{"unclosed flow mapping", "log:\n  level: info\ngateway:\n  exproto: {server: {bind: \"127.0.0.1:1\"}\n", "line 4: did not find expected ',' or '}'"},
		{"unclosed flow sequence", "log:\n  level: info\n  format: text\n  foo: [1, 2\n", "line 4: did not find expected ',' or ']'"},
		{"item in a mapping", "log:\n  level: info\n- x\n", "line 3: did not find expected key"},
		{"bad indentation", "log:\n  level: info\n   format: text\n", "line 3: mapping values are not allowed"},
		{"tab", "log:\n  level: info\ngateway:\n  exproto:\n\tserver: 1\n", "line 5: found character that cannot start any token"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.body))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want it to contain %q", err, c.want)
			}
		})
	}
}

// A disabled gateway needs no device listener.
func TestDisabledGatewayNeedsNoListener(t *testing.T) {
	c, err := Parse([]byte("gateway: {exproto: {enable: false, listeners: {}}}\n"))
	if err != nil || c.Gateway.ExProto.Enabled() {
		t.Fatalf("disabled gateway without listeners: %v, enabled %v", err, c != nil && c.Gateway.ExProto.Enabled())
	}
}

// TestMessagesPerDelivery: 0 is by service (one message for the EMQX
// services, a batch for the native one); a value set applies to both.
func TestMessagesPerDelivery(t *testing.T) {
	for _, c := range []struct{ set, emqx, native int }{{0, 1, NativeMaxMessagesPerDelivery}, {1, 1, 1}, {4, 4, 4}} {
		x := ExProto{MaxMessagesPerDelivery: c.set}
		if e, n := x.MessagesPerDelivery(false), x.MessagesPerDelivery(true); e != c.emqx || n != c.native {
			t.Errorf("max_messages_per_delivery %d: EMQX services %d, native %d; want %d, %d", c.set, e, n, c.emqx, c.native)
		}
	}
}

// broker.mqtt.protocol_version takes the names operators use for MQTT's
// versions, and says which it takes when given another.
func TestProtocolVersion(t *testing.T) {
	for in, want := range map[string]MQTTVersion{"auto": 0, `""`: 0, "4": 4, `"3.1.1"`: 4, "5": 5, `"5.0"`: 5, "AUTO": 0} {
		c, err := Parse([]byte("broker: {mqtt: {servers: [\"tcp://127.0.0.1:1883\"], protocol_version: " + in + "}}"))
		if err != nil {
			t.Errorf("protocol_version %s: %v", in, err)
			continue
		}
		if got := c.Broker.MQTT.ProtocolVersion; got != want {
			t.Errorf("protocol_version %s: %d, want %d", in, got, want)
		}
		// The API saves a configuration it changed: what it writes reads back the same.
		if again, err := Parse(c.YAML()); err != nil {
			t.Errorf("protocol_version %s written and read again: %v", in, err)
		} else if got := again.Broker.MQTT.ProtocolVersion; got != want {
			t.Errorf("protocol_version %s written and read again: %d, want %d", in, got, want)
		}
	}
	_, err := Parse([]byte("broker: {mqtt: {servers: [\"tcp://127.0.0.1:1883\"], protocol_version: 3}}"))
	if err == nil || !strings.Contains(err.Error(), `protocol_version "3" is not one of auto, 4 (MQTT 3.1.1), 5`) {
		t.Fatalf("protocol_version 3: %v", err)
	}
}

// The embedded broker's MQTT listeners take anonymous clients from other
// machines only when the operator says so: by default the tcp listener
// binds loopback, and one bound wider needs authentication, required
// client certificates, or broker.embedded.allow_anonymous.
func TestEmbeddedMQTTOffLoopbackNeedsCredentials(t *testing.T) {
	c, err := Parse(nil)
	if err != nil || c.Broker.Embedded.Listeners.TCP.Bind != "127.0.0.1:1883" {
		t.Fatalf("default MQTT bind %q (%v), want 127.0.0.1:1883", c.Broker.Embedded.Listeners.TCP.Bind, err)
	}
	const users = `gateway: {exproto: {authentication: [{mechanism: password_based, backend: built_in_database, users: [{user_id: u, password: "sha256:salt:8d0161934145557283f36afcce1000825cea87bbb21ad651446f239d0ad15a14"}]}]}}` + "\n"
	certs := `{certfile: s.pem, keyfile: s.key, cacertfile: ca.pem, verify: verify_peer`
	for _, c := range []struct {
		yaml    string
		refused string // the key named, "" when taken
	}{
		{`broker: {embedded: {listeners: {tcp: {bind: "0.0.0.0:1883"}}}}`, "broker.embedded.listeners.tcp.bind"},
		{`broker: {embedded: {listeners: {tcp: {bind: ":1883"}}}}`, "broker.embedded.listeners.tcp.bind"},
		{`broker: {embedded: {listeners: {tcp: {bind: "1883"}}}}`, "broker.embedded.listeners.tcp.bind"},
		{`broker: {embedded: {listeners: {tcp: {bind: "[::]:1883"}}}}`, "broker.embedded.listeners.tcp.bind"},
		{`broker: {embedded: {listeners: {tcp: {bind: "127.0.0.1:1883"}, ws: {bind: "0.0.0.0:8083"}}}}`, "broker.embedded.listeners.ws.bind"},
		{`broker: {embedded: {listeners: {ssl: {bind: "0.0.0.0:8883", ssl_options: ` + certs + `}}}}}`, "broker.embedded.listeners.ssl.bind"},
		{`broker: {embedded: {listeners: {tcp: {bind: "localhost:1883"}}}}`, ""},
		{`broker: {embedded: {listeners: {tcp: {bind: "[::1]:1883"}}}}`, ""},
		{`broker: {embedded: {allow_anonymous: true, listeners: {tcp: {bind: "0.0.0.0:1883"}}}}`, ""},
		{`broker: {embedded: {listeners: {tcp: {bind: "0.0.0.0:1883"}}}}` + "\n" + users, ""},
		{`broker: {embedded: {listeners: {ssl: {bind: "0.0.0.0:8883", ssl_options: ` + certs + `, fail_if_no_peer_cert: true}}}}}`, ""},
		{`broker: {embedded: {listeners: {tcp: {enable: false, bind: "0.0.0.0:1883"}}}}`, ""},
		{`broker: {mqtt: {servers: ["tcp://127.0.0.1:1884"]}, embedded: {listeners: {tcp: {bind: "0.0.0.0:1883"}}}}`, ""},
	} {
		_, err := Parse([]byte(c.yaml))
		switch {
		case c.refused == "" && err != nil:
			t.Errorf("%s: refused: %v", c.yaml, err)
		case c.refused != "" && (err == nil || !strings.Contains(err.Error(), c.refused) || !strings.Contains(err.Error(), "allow_anonymous")):
			t.Errorf("%s: %v, want a refusal naming %s and the way out", c.yaml, err, c.refused)
		}
	}
}

// The adapter off loopback without a token or required client
// certificates is open to anyone who reaches it (warned about at start).
func TestAdapterOpen(t *testing.T) {
	certs := &TLSOptions{Certfile: "s.pem", Keyfile: "s.key", Cacertfile: "ca.pem", Verify: "verify_peer", FailIfNoPeerCert: true}
	for _, c := range []struct {
		s    Server
		open bool
	}{
		{Server{Bind: "127.0.0.1:9100"}, false},
		{Server{Bind: "0.0.0.0:9100"}, true},
		{Server{Bind: ":9100"}, true},
		{Server{Bind: "0.0.0.0:9100", AuthToken: "t"}, false},
		{Server{Bind: "0.0.0.0:9100", SSLOptions: certs}, false},
		{Server{Bind: "0.0.0.0:9100", SSLOptions: &TLSOptions{Certfile: "s.pem", Keyfile: "s.key"}}, true},
	} {
		if got := c.s.Open(); got != c.open {
			t.Errorf("%+v: open %v, want %v", c.s, got, c.open)
		}
	}
}

package emqxconf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/exgate/exgate/internal/config"
)

// A typical emqx.conf names its node unquoted, with an '@' that EMQX's
// HOCON reader accepts and the HOCON spec does not: the import reads it,
// and leaves nothing behind beside the file.
func TestImportUnquotedAt(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "emqx.conf")
	body := `node {
  name = emqx@127.0.0.1
  cookie = emqxsecretcookie
}
cluster.static.seeds = [emqx@10.0.0.1]
gateway.exproto {
  server.bind = "127.0.0.1:9100"
  handler.address = "http://127.0.0.1:9001"
  listeners.tcp.default.bind = "0.0.0.0:7993" # devices
}
`
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := Import(path)
	if err != nil {
		t.Fatal(err)
	}
	if res.Format != "emqx5" || res.Config.Gateway.ExProto.Listeners.TCP["default"].Bind != "0.0.0.0:7993" {
		t.Fatalf("imported %s: %+v", res.Format, res.Config.Gateway.ExProto.Listeners.TCP)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("the import left files beside the original: %v", entries)
	}
}

// An authenticator EMQX had switched off (enable = false) is not imported:
// it must not become active in exgate.
func TestImportDisabledAuthenticatorDropped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "emqx.conf")
	body := `gateway.exproto {
  server.bind = "127.0.0.1:9100"
  handler.address = "http://127.0.0.1:9001"
  authentication = [
    {mechanism = password_based, backend = http, method = post, url = "http://127.0.0.1:8080/auth", enable = false},
    {mechanism = jwt, algorithm = hmac-based, secret = s3cret}
  ]
  listeners.tcp.default {
    bind = "0.0.0.0:7993"
    authentication { mechanism = jwt, algorithm = hmac-based, secret = other, enable = false }
  }
}
`
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := Import(path)
	if err != nil {
		t.Fatal(err)
	}
	x := res.Config.Gateway.ExProto
	if len(x.Authentication) != 1 || x.Authentication[0].Mechanism != "jwt" {
		t.Fatalf("gateway chain %+v, want only the enabled jwt", x.Authentication)
	}
	if l := x.Listeners.TCP["default"]; len(l.Authentication) != 0 {
		t.Fatalf("listener chain %+v, want none", l.Authentication)
	}
}

// EMQX's gateway.exproto.enable = false stays off in exgate.
func TestImportDisabledGateway(t *testing.T) {
	path := filepath.Join(t.TempDir(), "emqx.conf")
	body := "gateway.exproto {\n  enable = false\n  server.bind = \"127.0.0.1:9100\"\n  handler.address = \"http://127.0.0.1:9001\"\n  listeners.tcp.default.bind = \"0.0.0.0:7993\"\n}\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := Import(path)
	if err != nil {
		t.Fatal(err)
	}
	if res.Config.Gateway.ExProto.Enabled() {
		t.Fatal("a gateway EMQX had disabled was imported enabled")
	}
}

// importFile writes body and imports it; the result must be a
// configuration exgate starts with (what `config check` says).
func importFile(t *testing.T, name, body string) *Result {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := Import(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := config.Parse(res.Config.YAML()); err != nil {
		t.Fatalf("the import of %s needs editing: %v", name, err)
	}
	return res
}

func said(notes []Note, key, words string) bool {
	for _, n := range notes {
		if n.Key == key && strings.Contains(n.Why, words) {
			return true
		}
	}
	return false
}

// EMQX 4.2 named the handler's keys proto_handler_url and
// proto_handler_certfile…: they are the handler (EMQX 4's streaming
// ConnectionHandler), with its TLS files, not dropped for a default
// handler and the wrong service. A bare port is a TCP listener.
func TestImportEMQX42(t *testing.T) {
	res := importFile(t, "emqx_exproto.conf", `## EMQ X ExProto, 4.2
exproto.server.http.port = 9100
exproto.listener.meters = tcp://0.0.0.0:7993
exproto.listener.meters.proto_handler_url = https://10.0.0.5:9001
exproto.listener.meters.proto_handler_cacertfile = /etc/emqx/certs/ca.pem
exproto.listener.meters.max_connections = 20000
exproto.listener.meters.idle_timeout = 45s
exproto.listener.meters.access.1 = allow all
exproto.listener.plain = 7994
exproto.listener.plain.proto_handler_url = https://10.0.0.5:9001
exproto.listener.plain.proto_handler_cacertfile = /etc/emqx/certs/ca.pem
`)
	x := res.Config.Gateway.ExProto
	if res.Format != "emqx4" || x.Handler.Address.String() != "https://10.0.0.5:9001" || x.Handler.ServiceName != "ConnectionHandler" {
		t.Fatalf("handler %+v (format %s), want 4.2's URL and ConnectionHandler", x.Handler, res.Format)
	}
	if x.Handler.SSLOptions == nil || x.Handler.SSLOptions.Cacertfile != "/etc/emqx/certs/ca.pem" {
		t.Fatalf("handler TLS %+v, want 4.2's cacertfile", x.Handler.SSLOptions)
	}
	if l := x.Listeners.TCP["meters"]; l == nil || l.Bind != "0.0.0.0:7993" || l.MaxConnections != 20000 || l.IdleTimeout != 45*time.Second {
		t.Fatalf("listener meters: %+v", l)
	}
	if l := x.Listeners.TCP["plain"]; l == nil || l.Bind != "0.0.0.0:7994" {
		t.Fatalf("a bare port: %+v", l)
	}
	if !said(res.Changed, "exproto.listener.meters.proto_handler_url", "4.2") {
		t.Errorf("the rename is not reported: %v", res.Changed)
	}
}

// The plugin's first releases ran handlers inside EMQX (driver = python3):
// reported as something to port, and the result says no handler was given.
func TestImportEMQX4Driver(t *testing.T) {
	path := filepath.Join(t.TempDir(), "emqx_exproto.conf")
	body := "exproto.listener.p = tcp://0.0.0.0:7993\nexproto.listener.p.driver = python3\nexproto.listener.p.driver_search_path = /opt/ext\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := Import(path)
	if err != nil {
		t.Fatal(err)
	}
	if !said(res.Unmapped, "exproto.listener.p.driver", "port the handler") {
		t.Fatalf("the driver is not reported as a handler to port: %v", res.Unmapped)
	}
}

// EMQX 5.0's pre-releases wrote listener.<type>.<name>, server.ssl and
// authentication {enable, authenticators: [...]}: read as the released
// layout, with no empty authenticator (it came out as {mechanism: ""}).
func TestImportPre50Layout(t *testing.T) {
	res := importFile(t, "emqx_gateway.conf", `gateway: {
  exproto: {
    server: {
      bind: "127.0.0.1:9100"
    }
    handler: {
      address: "https://127.0.0.1:9001"
      ssl.cacertfile: "/etc/emqx/certs/ca.pem"
    }
    authentication: {
      enable: true
      authenticators: [
        { name: "a1", mechanism: password-based, server_type: built-in-database, user_id_type: clientid }
      ]
    }
    listener.tcp.1: {
      bind: 7993
      acceptors: 8
      max_connections: 10240
      authentication.enable: false
    }
  }
}
`)
	x := res.Config.Gateway.ExProto
	if l := x.Listeners.TCP["1"]; l == nil || l.Bind != "7993" || l.MaxConnections != 10240 || len(l.Authentication) != 0 {
		t.Fatalf("listener tcp:1 = %+v", l)
	}
	if len(x.Authentication) != 1 || x.Authentication[0].Mechanism != "password_based" || x.Authentication[0].Backend != "built_in_database" || x.Authentication[0].UserIDType != "clientid" {
		t.Fatalf("authentication %+v", x.Authentication)
	}
	if x.Handler.SSLOptions == nil || x.Handler.SSLOptions.Cacertfile != "/etc/emqx/certs/ca.pem" {
		t.Fatalf("handler.ssl: %+v", x.Handler.SSLOptions)
	}
	if !said(res.Changed, "gateway.exproto.listener.tcp.1", "pre-release") || !said(res.Changed, "gateway.exproto.listeners.tcp.1.authentication.enable", "none imported") {
		t.Errorf("rewrites not reported: %v", res.Changed)
	}
}

// EMQX's shipped gateway.exproto.conf.example gives the adapter
// ssl_options {verify = verify_none} and no certificate: the import starts
// (without TLS, said loudly) instead of failing config check.
func TestImportShippedExample(t *testing.T) {
	res := importFile(t, "gateway.exproto.conf.example", `## Gateway Exproto
gateway.exproto {
    mountpoint = "exproto/"
    server {
        bind = "0.0.0.0:9100"
        ssl_options {verify = "verify_none"}
    }
    handler {
        address = "http://127.0.0.1:9001"
    }
    listeners.tcp.default {
        bind = "0.0.0.0:7993"
    }
}
`)
	x := res.Config.Gateway.ExProto
	if x.Server.SSLOptions != nil || x.Mountpoint != "exproto/" || x.Listeners.TCP["default"] == nil {
		t.Fatalf("imported %+v", x)
	}
	if !said(res.Changed, "gateway.exproto.server.ssl_options", "WITHOUT TLS") {
		t.Fatalf("TLS dropped silently: %v", res.Changed)
	}
}

package emqxconf

import (
	"os"
	"path/filepath"
	"testing"
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

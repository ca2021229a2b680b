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

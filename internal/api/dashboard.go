package api

import (
	_ "embed"
	"net/http"
)

// dashboardHTML is the one-page dashboard: plain HTML and a little JS that
// polls the API; no build step, served from the binary.
//
//go:embed dashboard/index.html
var dashboardHTML []byte

func dashboard(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
	_, _ = w.Write(dashboardHTML)
}

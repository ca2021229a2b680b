package main

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/exgate/exgate/internal/config"
)

// Whatever a code path logs under a secret-named key — as an attribute, in
// a group, in a logger's With — the text and JSON loggers write
// [redacted], never the value, and leave other attributes alone.
func TestLoggersRedactSecrets(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			var out strings.Builder
			log, _ := newLogger(config.Log{Level: "debug", Format: format}, &out)
			log = log.With("Password", "s-with")
			log.Debug("login", "password", "s-pass", "api_secret", "s-secret", "AuthToken", "s-token", "passwd", "s-passwd",
				slog.Group("upstream", "password", "s-group"), "username", "visible-user")
			got := out.String()
			for _, s := range []string{"s-with", "s-pass", "s-secret", "s-token", "s-passwd", "s-group"} {
				if strings.Contains(got, s) {
					t.Errorf("the log shows the secret %q:\n%s", s, got)
				}
			}
			if !strings.Contains(got, "visible-user") || strings.Count(got, "[redacted]") != 6 {
				t.Errorf("want the username and six [redacted] values:\n%s", got)
			}
		})
	}
}

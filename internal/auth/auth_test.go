package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/exgate/exgate/internal/config"
)

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		topic, filter string
		want          bool
	}{
		{"a/b", "a/b", true}, {"a/b", "a/+", true}, {"a/b/c", "a/#", true}, {"a", "a/#", true},
		{"a/b", "a", false}, {"a/b/c", "a/+", false}, {"$SYS/x", "#", false}, {"$SYS/x", "$SYS/#", true},
		{"a/+", "a/+", true}, {"a/#", "a/+", false}, {"a/+", "a/b", false},
	} {
		if got := Match(c.topic, c.filter); got != c.want {
			t.Errorf("Match(%q, %q) = %v", c.topic, c.filter, got)
		}
	}
}

func TestBuiltinPasswords(t *testing.T) {
	bc, _ := bcrypt.GenerateFromPassword([]byte("pw1"), bcrypt.MinCost)
	sum := sha256.Sum256([]byte("salt" + "pw2"))
	a := NewAuthenticator([]config.Authenticator{{UserIDType: "username", Users: []config.User{
		{UserID: "b", Password: string(bc)},
		{UserID: "s", Password: "sha256:salt:" + hex.EncodeToString(sum[:]), IsSuperuser: true},
		{UserID: "p", Password: "plain:pw3"},
	}}})
	ctx := context.Background()
	for _, c := range []struct {
		user, pw string
		ok       bool
	}{{"b", "pw1", true}, {"b", "x", false}, {"s", "pw2", true}, {"s", "pw1", false}, {"p", "pw3", true}, {"nobody", "pw3", false}} {
		_, err := a.Authenticate(ctx, Request{Username: c.user, Password: c.pw})
		if (err == nil) != c.ok {
			t.Errorf("%s/%s: %v", c.user, c.pw, err)
		}
	}
	if res, _ := a.Authenticate(ctx, Request{Username: "s", Password: "pw2"}); !res.Superuser {
		t.Error("superuser flag lost")
	}
	if _, err := a.Authenticate(ctx, Request{Username: "nobody"}); !errors.Is(err, ErrNoUser) {
		t.Errorf("unknown user: %v", err)
	}
}

func TestAuthorizer(t *testing.T) {
	a := NewAuthorizer(config.Authorization{NoMatch: "deny", Rules: []config.Rule{
		{Permission: "allow", Action: "all", Topics: []string{"dev/${clientid}/#"}},
		{Permission: "allow", Username: "admin", Action: "subscribe", Topics: []string{"#"}},
		{Permission: "allow", IPAddr: "10.0.0.0/8", Action: "publish", Topics: []string{"eq lan/+"}},
		{Permission: "deny", Action: "all", Topics: []string{"#"}},
	}})
	lan := &net.TCPAddr{IP: net.ParseIP("10.1.2.3")}
	for _, c := range []struct {
		who     Who
		publish bool
		topic   string
		want    bool
	}{
		{Who{ClientID: "c1"}, true, "dev/c1/t", true},
		{Who{ClientID: "c1"}, true, "dev/c2/t", false},
		{Who{ClientID: "c1"}, false, "$share/g/dev/c1/#", true},
		{Who{Username: "admin"}, false, "any/thing", true},
		{Who{Username: "admin"}, true, "any/thing", false},
		{Who{Peer: lan}, true, "lan/+", true},
		{Who{Peer: lan}, true, "lan/x", false},
	} {
		if got := a.Allow(c.who, c.publish, c.topic); got != c.want {
			t.Errorf("Allow(%+v, %v, %q) = %v", c.who, c.publish, c.topic, got)
		}
	}
	if NewAuthorizer(config.Authorization{NoMatch: "allow"}) != nil {
		t.Error("no rules and no_match allow should need no authorizer")
	}
}

package channel

import (
	"errors"
	"io"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestMount(t *testing.T) {
	for _, c := range []struct{ mp, in, want string }{
		{"", "a/b", "a/b"},
		{"ct/", "a/b", "ct/a/b"},
		{"ct/", "$share/g/a/#", "$share/g/ct/a/#"},
		{"ct/", "$queue/a", "$queue/ct/a"},
	} {
		if got := Mount(c.mp, c.in); got != c.want {
			t.Errorf("Mount(%q, %q) = %q, want %q", c.mp, c.in, got, c.want)
		}
	}
}

func TestValidFilterAndTopic(t *testing.T) {
	for f, want := range map[string]bool{
		"a/b": true, "a/+/c": true, "#": true, "a/#": true, "+": true, "$share/g/a/+": true,
		"": false, "a/#/b": false, "a/b#": false, "a+/b": false, "$share/g": false, "$share//a": false, "$share/g+/a": false,
	} {
		if got := ValidFilter(f); got != want {
			t.Errorf("ValidFilter(%q) = %v", f, got)
		}
	}
	for topic, want := range map[string]bool{"a/b": true, "a/+": false, "#": false, "": false, "a\x00": false} {
		if got := ValidTopic(topic); got != want {
			t.Errorf("ValidTopic(%q) = %v", topic, got)
		}
	}
}

func TestReasons(t *testing.T) {
	for _, c := range []struct {
		err  error
		tls  bool
		want string
	}{
		{io.EOF, false, "{shutdown,tcp_closed}"},
		{io.EOF, true, "{shutdown,ssl_closed}"},
		{syscall.ECONNRESET, false, "{shutdown,econnreset}"},
	} {
		if got := peerClosedReason(c.err, c.tls); got != c.want {
			t.Errorf("peerClosedReason(%v) = %q, want %q", c.err, got, c.want)
		}
	}
	if got := handlerFailedReason("on_received_bytes", status.Error(codes.Unavailable, "x")); got != "{shutdown,{error,{on_received_bytes,unavailable}}}" {
		t.Errorf("got %q", got)
	}
	if got := handlerFailedReason("on_socket_created", errors.Join(errDeadline, status.Error(codes.DeadlineExceeded, "x"))); got != "{shutdown,{error,{on_socket_created,deadline_exceeded}}}" {
		t.Errorf("got %q", got)
	}
}

func TestIDs(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := newID(TagOf("n"))
		if !ValidID(id) || seen[id] {
			t.Fatalf("bad or repeated id %q", id)
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "short", newID(TagOf("n")) + "x", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/"} {
		if ValidID(bad) {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
	if id := newID(TagOf("a@h")); Owner(id) != TagOf("a@h") || Owner(id) == TagOf("b@h") {
		t.Fatal("the owner is not readable from a conn id")
	}
	m := newMsgIDs()
	a, b := m.next(), m.next()
	if len(a) != 32 || a == b {
		t.Fatalf("message ids %q %q", a, b)
	}
}

package handler

import (
	"bytes"
	"testing"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/nativepb"
)

// sendRun takes the non-empty Sends to one device in a row, up to
// maxSendRun bytes, and nothing else.
func TestSendRun(t *testing.T) {
	send := func(conn string, n int) *nativepb.Action {
		return &nativepb.Action{Action: &nativepb.Action_Send{Send: &pb.SendBytesRequest{Conn: conn, Bytes: bytes.Repeat([]byte("x"), n)}}}
	}
	done := &nativepb.Action{Action: &nativepb.Action_Done{Done: &nativepb.Done{Conn: "a"}}}
	for _, tc := range []struct {
		name string
		acts []*nativepb.Action
		want int
	}{
		{"three to one device", []*nativepb.Action{send("a", 1), send("a", 2), send("a", 3)}, 3},
		{"another device ends it", []*nativepb.Action{send("a", 1), send("a", 1), send("b", 1), send("a", 1)}, 2},
		{"a done ends it", []*nativepb.Action{send("a", 1), done, send("a", 1)}, 1},
		{"an empty send ends it", []*nativepb.Action{send("a", 1), send("a", 0), send("a", 1)}, 1},
		{"an empty send goes alone", []*nativepb.Action{send("a", 0), send("a", 1)}, 1},
		{"not a send", []*nativepb.Action{done, send("a", 1)}, 1},
		{"bounded in bytes", []*nativepb.Action{send("a", maxSendRun/2), send("a", maxSendRun/2), send("a", 1)}, 2},
	} {
		if got := sendRun(tc.acts); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}

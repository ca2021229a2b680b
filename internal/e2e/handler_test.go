package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/testhandler"
)

// eachHandlerMode runs f with the handler served as ConnectionUnaryHandler
// and over exgate's native stream: what a handler does wrong has the same
// outcome in both.
func eachHandlerMode(t *testing.T, f func(t *testing.T, tr string)) {
	for _, tr := range []string{"tcp", "tcp+native"} {
		t.Run(tr, func(t *testing.T) { f(t, tr) })
	}
}

func TestHandlerReturnsError(t *testing.T) {
	eachHandlerMode(t, func(t *testing.T, tr string) {
		e := startOn(t, tr, nil)
		e.h.Fail = func(m string) bool { return m == "OnReceivedBytes" }
		d := e.dial()
		d.send(Frame{Type: 42})
		if r := e.h.WaitClosed(t, d.id, 5*time.Second); r != "{shutdown,{error,{on_received_bytes,internal}}}" {
			t.Fatalf("reason %q", r)
		}
		d.expectEOF(2 * time.Second)
	})
}

func TestHandlerNeverAnswers(t *testing.T) {
	eachHandlerMode(t, func(t *testing.T, tr string) {
		e := startOn(t, tr, func(c *config.Config) { c.Gateway.ExProto.Handler.RequestTimeout = 500 * time.Millisecond })
		// A flag, not the field, turns the hang off: the handler reads the field
		// in every callback, OnSocketClosed of the hung device too.
		var hang atomic.Bool
		hang.Store(true)
		e.h.Hang = func(m string) bool { return m == "OnReceivedBytes" && hang.Load() }
		hung := e.dial()
		other := e.dial()
		hung.send(Frame{Type: 42})
		begin := time.Now()
		if r := e.h.WaitClosed(t, hung.id, 5*time.Second); r != "{shutdown,{error,{on_received_bytes,deadline_exceeded}}}" {
			t.Fatalf("reason %q", r)
		}
		if took := time.Since(begin); took > 4*time.Second {
			t.Fatalf("deadline took %v", took)
		}
		hung.expectEOF(time.Second)
		// Only that device: the other one still works.
		hang.Store(false)
		other.connect("fine", 0)
	})
}

func TestHandlerDownAndBack(t *testing.T) {
	eachHandlerMode(t, testHandlerDownAndBack)
}

func testHandlerDownAndBack(t *testing.T, tr string) {
	var logs collector
	e := startWith(t, options{logs: &logs, transport: tr}, nil)
	addr := e.h.Addr
	d := e.dial()
	d.connect("before", 0)

	// The handler goes away: its devices lost their state there and are
	// closed at once, without waiting for their next event.
	e.h.Stop()
	d.expectEOF(5 * time.Second)
	waitLog(t, &logs, "handler connection lost")
	if e.native() {
		waitLog(t, &logs, "native handler stream ended")
	}
	if n := strings.Count(logs.String(), "closing its devices"); n != 1 {
		t.Fatalf("one loss, %d warnings that close its devices:\n%s", n, logs.String())
	}

	// A device connecting while the handler is down waits a moment for it
	// (it may be restarting), then is closed.
	c, err := net.Dial("tcp", e.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expectClosedRaw(t, c, 5*time.Second)
	waitLog(t, &logs, "handler unreachable")
	if !strings.Contains(logs.String(), addr) || !strings.Contains(logs.String(), "service_name="+e.cfg.Gateway.ExProto.Handler.ServiceName) {
		t.Fatalf("the log does not name the handler's address and service:\n%s", logs.String())
	}

	// The handler comes back on the same address: new devices work again.
	h2 := testhandler.StartWith(t, testhandler.Options{Addr: addr, AttachTo: e.g.AdapterAddr().String()})
	e.h = h2
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.Dial("tcp", e.addr())
		if err != nil {
			t.Fatal(err)
		}
		if waitFirstConn(h2, 1500*time.Millisecond) {
			conn.Close()
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatal("gateway did not reconnect to the restarted handler")
		}
	}
	d2 := e.dial()
	d2.connect("after", 0)
}

func waitLog(t *testing.T, logs *collector, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log:\n%s", want, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitFirstConn(h *testhandler.Handler, d time.Duration) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if len(h.Conns()) > 0 {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func TestStreamingHandlerService(t *testing.T) {
	e := start(t, func(c *config.Config) { c.Gateway.ExProto.Handler.ServiceName = "ConnectionHandler" })
	d := e.dial()
	d.connect("streamer", 0)
	d.subscribe("s/#", 0)
	m := e.mqtt("app")
	m.pub("s/1", 0, false, "x")
	d.expect(testhandler.Publish, 0)
	d.send(Frame{Type: testhandler.Disconnect})
	if r := e.h.WaitClosed(t, d.id, 5*time.Second); r != "{shutdown,normal}" {
		t.Fatalf("reason %q", r)
	}
}

// TestHandlerRestartUnderLoad: the handler is killed and restarted while
// 50 devices connect and publish. Every device either completes or is
// closed; none is left waiting, and nothing leaks (goleak at cleanup).
func TestHandlerRestartUnderLoad(t *testing.T) {
	e := start(t, nil)
	addr := e.h.Addr
	const n = 50
	outcome := make(chan string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			time.Sleep(time.Duration(i) * 10 * time.Millisecond) // spread over the restart
			outcome <- runDevice(e.addr(), fmt.Sprintf("r%d", i))
		})
	}
	time.Sleep(150 * time.Millisecond)
	e.h.Stop()
	time.Sleep(100 * time.Millisecond)
	e.h = testhandler.StartWith(t, testhandler.Options{Addr: addr, AttachTo: e.g.AdapterAddr().String()})
	wg.Wait()
	close(outcome)
	count := map[string]int{}
	for o := range outcome {
		count[o]++
	}
	t.Logf("outcomes: %v", count)
	if count["completed"]+count["closed"] != n {
		t.Fatalf("devices left waiting or failing oddly: %v", count)
	}
	if count["completed"] == 0 {
		t.Fatalf("no device completed around the restart: %v", count)
	}
}

// runDevice connects, authenticates and publishes once; it reports
// "completed", "closed" (the gateway closed the socket) or what went wrong.
func runDevice(addr, clientID string) string {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	dec := json.NewDecoder(c)
	for _, f := range []Frame{
		{Type: testhandler.Connect, ClientInfo: &testhandler.ClientInfo{ClientID: clientID}},
		{Type: testhandler.Publish, Topic: "t/" + clientID, Payload: "x"},
	} {
		b, _ := json.Marshal(f)
		if _, err := c.Write(b); err != nil {
			return "closed"
		}
		var ack Frame
		if err := dec.Decode(&ack); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
				return "closed"
			}
			return "hung: " + err.Error()
		}
		if ack.RC == nil || *ack.RC != 0 {
			return fmt.Sprintf("refused: %+v", ack)
		}
	}
	return "completed"
}

// TestBurstToAFirstMessageOnlyHandler: with the default configuration, a
// handler that reads only messages[0] (as EMQX's examples do) loses nothing
// of a burst.
func TestBurstToAFirstMessageOnlyHandler(t *testing.T) {
	e := start(t, nil)
	e.h.ReadOnlyFirst = true
	d := e.dial()
	d.connect("burst", 0)
	d.subscribe("b/#", 1)
	m := e.mqtt("app")
	const n = 100
	for i := range n {
		m.pub("b/t", 1, false, strconv.Itoa(i))
	}
	for i := range n {
		if f := d.expect(testhandler.Publish, 0); f.Payload != strconv.Itoa(i) {
			t.Fatalf("message %d: got %q (lost or out of order)", i, f.Payload)
		}
	}
}

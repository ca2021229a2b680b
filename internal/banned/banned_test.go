package banned

import (
	"net"
	"testing"
	"time"
)

func TestFailuresBanAClientAndAHost(t *testing.T) {
	l := New(Limits{MaxFailures: 3, MaxHostFailures: 5, Window: time.Minute, BanTime: time.Hour})
	peer := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 1234}
	for i := range 2 {
		if _, banned := l.Failed("dev", peer); banned {
			t.Fatalf("banned after %d failures", i+1)
		}
	}
	e, banned := l.Failed("dev", peer)
	if !banned || e.As != ClientID || e.Who != "dev" || !e.Until.After(time.Now().Add(59*time.Minute)) {
		t.Fatalf("third failure: %+v %v", e, banned)
	}
	if _, ok := l.Banned("dev", "", &net.TCPAddr{IP: net.IPv4(10, 0, 0, 9)}); !ok {
		t.Fatal("a banned clientid passes from another host")
	}
	if _, ok := l.Banned("other", "", peer); ok {
		t.Fatal("the host is banned after 3 failures; its limit is 5")
	}
	// Two more from the host (other clientids) ban the host.
	l.Failed("a", peer)
	if e, banned := l.Failed("b", peer); !banned || e.As != PeerHost || e.Who != "10.0.0.1" {
		t.Fatalf("host not banned after 5 failures: %+v %v", e, banned)
	}
	if _, ok := l.Banned("anyone", "", peer); !ok {
		t.Fatal("a banned host passes")
	}
	if !l.Delete(PeerHost, "10.0.0.1") || l.Delete(PeerHost, "10.0.0.1") {
		t.Fatal("delete")
	}
	if _, ok := l.Banned("anyone", "", peer); ok {
		t.Fatal("a lifted ban still applies")
	}
}

func TestFailuresOutsideTheWindowDoNotCount(t *testing.T) {
	l := New(Limits{MaxFailures: 2, Window: 50 * time.Millisecond})
	l.Failed("dev", nil)
	time.Sleep(80 * time.Millisecond)
	if _, banned := l.Failed("dev", nil); banned {
		t.Fatal("a failure outside the window counted")
	}
}

func TestBansExpire(t *testing.T) {
	l := New(Limits{})
	l.Add(Entry{As: Username, Who: "mallory", Until: time.Now().Add(30 * time.Millisecond)})
	l.Add(Entry{As: ClientID, Who: "forever"})
	if _, ok := l.Banned("", "mallory", nil); !ok {
		t.Fatal("not banned")
	}
	time.Sleep(50 * time.Millisecond)
	if _, ok := l.Banned("", "mallory", nil); ok {
		t.Fatal("an expired ban applies")
	}
	if all := l.All(); len(all) != 1 || all[0].Who != "forever" {
		t.Fatalf("All: %+v", all)
	}
}

// Package testbroker runs Debian's mosquitto on a loopback port for tests of
// the external-broker mode, and stops it when the test ends.
package testbroker

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Mosquitto is a running mosquitto.
type Mosquitto struct {
	Addr string // 127.0.0.1:port
	cmd  *exec.Cmd
	log  *syncBuffer
}

// Binary finds mosquitto; CI installs it (scripts/deps.sh).
func Binary() (string, error) {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/bin/mosquitto"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("mosquitto not found (Debian package mosquitto; scripts/deps.sh installs it)")
}

// Options vary the broker: TLS, users, an ACL.
type Options struct {
	// CertFile, KeyFile (and CAFile) make the listener TLS.
	CertFile, KeyFile, CAFile string
	// Users (name → password) turn anonymous access off.
	Users map[string]string
	// ACL is a mosquitto acl_file body.
	ACL string
}

// Start runs mosquitto with anonymous access on a free loopback port. Where
// mosquitto is missing the test is skipped, except under CI, where that is
// a failure.
func Start(t testing.TB) *Mosquitto {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith runs mosquitto as o says.
func StartWith(t testing.TB, o Options) *Mosquitto {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	for attempt := 0; attempt < 5; attempt++ {
		port := freePort(t)
		dir := t.TempDir()
		conf := filepath.Join(dir, "mosquitto.conf")
		body := fmt.Sprintf("listener %d 127.0.0.1\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nmax_keepalive 3600\n", port)
		if o.CertFile != "" {
			body += fmt.Sprintf("certfile %s\nkeyfile %s\n", o.CertFile, o.KeyFile)
			if o.CAFile != "" {
				body += fmt.Sprintf("cafile %s\n", o.CAFile)
			}
		}
		if len(o.Users) > 0 {
			pw := filepath.Join(dir, "passwd")
			for u, p := range o.Users {
				if out, err := exec.Command("mosquitto_passwd", passwdArgs(pw, u, p)...).CombinedOutput(); err != nil {
					t.Fatalf("mosquitto_passwd: %v %s", err, out)
				}
			}
			body += "allow_anonymous false\npassword_file " + pw + "\n"
		} else {
			body += "allow_anonymous true\n"
		}
		if o.ACL != "" {
			acl := filepath.Join(dir, "acl")
			if err := os.WriteFile(acl, []byte(o.ACL), 0o644); err != nil {
				t.Fatal(err)
			}
			body += "acl_file " + acl + "\n"
		}
		if os.Geteuid() == 0 {
			body += "user root\n"
		}
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		m := &Mosquitto{Addr: fmt.Sprintf("127.0.0.1:%d", port), log: &syncBuffer{}}
		m.cmd = exec.Command(bin, "-c", conf)
		m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
		if err := m.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = m.cmd.Wait(); close(exited) }()
		if waitListening(m.Addr, exited, 5*time.Second) {
			t.Cleanup(func() {
				_ = m.cmd.Process.Kill()
				<-exited
			})
			return m
		}
		_ = m.cmd.Process.Kill()
		<-exited
		t.Logf("mosquitto on %s did not start (retrying): %s", m.Addr, m.log.String())
	}
	t.Fatal("mosquitto would not start")
	return nil
}

func passwdArgs(file, user, pass string) []string {
	if _, err := os.Stat(file); err != nil {
		return []string{"-c", "-b", file, user, pass}
	}
	return []string{"-b", file, user, pass}
}

// Stop kills mosquitto now (to test an upstream outage).
func (m *Mosquitto) Stop() { _ = m.cmd.Process.Kill() }

// Terminate shuts mosquitto down as an operator does (SIGTERM): it closes
// its clients' connections on its way out. (A hung broker is a proxy that
// stops answering: see the external broker's tests.)
func (m *Mosquitto) Terminate() { _ = m.cmd.Process.Signal(syscall.SIGTERM) }

func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitListening(addr string, exited <-chan struct{}, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

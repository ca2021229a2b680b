package listener

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/testcert"
)

// A wrong dtls_options value is an error at start that names the option.
func TestDTLSServerOptionsErrors(t *testing.T) {
	certs := testcert.New(t)
	dir := t.TempDir()
	badPSK := filepath.Join(dir, "psk.txt")
	if err := os.WriteFile(badPSK, []byte("# comment\ndevice-1 no colon\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyPSK := filepath.Join(dir, "empty.txt")
	if err := os.WriteFile(emptyPSK, []byte("# nothing\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		o    config.TLSOptions
		want string
	}{
		{config.TLSOptions{Certfile: certs.ServerCert, Keyfile: certs.ServerKey, Ciphers: []string{"TLS_RSA_WITH_RC4_128_SHA"}}, `dtls_options.ciphers: "TLS_RSA_WITH_RC4_128_SHA"`},
		{config.TLSOptions{PSKFile: filepath.Join(dir, "missing.txt")}, "dtls_options.psk_file"},
		{config.TLSOptions{PSKFile: badPSK}, "line 2: expected identity:secret"},
		{config.TLSOptions{PSKFile: emptyPSK}, "no identities"},
		{config.TLSOptions{Certfile: filepath.Join(dir, "missing.pem"), Keyfile: certs.ServerKey}, "dtls_options.certfile/keyfile"},
		{config.TLSOptions{Certfile: certs.ServerCert, Keyfile: certs.ServerKey, Cacertfile: filepath.Join(dir, "missing-ca.pem")}, "dtls_options.cacertfile"},
	} {
		if _, err := DTLSServerOptions(&c.o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one containing %q", c.o, err, c.want)
		}
	}
}

// dtls_options.ciphers is what the listener offers: a client without one
// of those suites is refused at the handshake, one with it is served.
func TestDTLSCiphers(t *testing.T) {
	certs := testcert.New(t)
	opts, err := DTLSServerOptions(&config.TLSOptions{
		Certfile: certs.ServerCert, Keyfile: certs.ServerKey,
		Ciphers: []string{"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"},
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := Listen(Options{Name: "d", Kind: DTLS, Bind: "127.0.0.1:0", DTLS: opts, HandshakeTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// Each side keeps its connection open until the test ends: one that
	// closes right after its end of the handshake can have its
	// close_notify reach the other side before that side's end, on a
	// starved machine, and fail a handshake that succeeded.
	served := make(chan *Conn, 2)
	end := make(chan struct{})
	go func() {
		_ = l.Serve(func(c *Conn) func() {
			served <- c
			return func() { <-end; _ = c.Close() }
		})
	}()
	t.Cleanup(func() { close(end); _ = l.Close(); l.Wait() })

	dial := func(suite dtls.CipherSuiteID) error {
		ua, err := net.ResolveUDPAddr("udp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c, err := dtls.DialWithOptions("udp", ua, dtls.WithRootCAs(certs.CAPool), dtls.WithServerName("127.0.0.1"),
			dtls.WithCipherSuites(suite), dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret))
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = c.HandshakeContext(ctx)
		if err == nil {
			t.Cleanup(func() { _ = c.Close() })
		} else {
			_ = c.Close()
		}
		return err
	}
	if err := dial(dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256); err == nil {
		t.Fatal("a client without the configured suite completed the handshake")
	}
	if err := dial(dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384); err != nil {
		t.Fatalf("a client with the configured suite: %v", err)
	}
	select {
	case <-served:
	case <-time.After(5 * time.Second):
		t.Fatal("the client with the configured suite was not served")
	}
	select {
	case c := <-served:
		t.Fatalf("a second connection was served (%v): the refused client got through", c.Peer)
	case <-time.After(100 * time.Millisecond):
	}
}

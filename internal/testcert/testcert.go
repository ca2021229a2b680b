// Package testcert makes throw-away certificates for tests: a CA, a server
// certificate for the loopback addresses, and client certificates, written
// as PEM files into the test's temporary directory. No key is committed.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Set is one CA with the certificates it signed.
type Set struct {
	Dir                   string
	CAFile                string
	ServerCert, ServerKey string
	ClientCert, ClientKey string
	CAPool                *x509.CertPool
	Client                tls.Certificate // CN=device-1, O=Acme, C=SE
	Server                tls.Certificate
	ca                    *x509.Certificate
	caKey                 *ecdsa.PrivateKey
}

// New makes a CA, a server certificate valid for 127.0.0.1, ::1 and
// localhost, and a client certificate with subject CN=device-1,O=Acme,C=SE.
func New(t testing.TB) *Set {
	t.Helper()
	return build(t, t.TempDir())
}

// NewIn is New for use outside a test (package-level fixtures); it writes
// into dir and panics on failure.
func NewIn(dir string) *Set { return build(panicker{}, dir) }

// panicker is the part of testing.TB that New uses, failing by panic.
type panicker struct{ testing.TB }

func (panicker) Helper()                   {}
func (panicker) Fatal(args ...any)         { panic(fmt.Sprint(args...)) }
func (panicker) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }

func build(t testing.TB, dir string) *Set {
	s := &Set{Dir: dir}
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "exgate test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	s.ca, _ = x509.ParseCertificate(der)
	s.caKey = key
	s.CAPool = x509.NewCertPool()
	s.CAPool.AddCert(s.ca)
	s.CAFile = s.write(t, "ca.pem", "CERTIFICATE", der)

	s.Server, s.ServerCert, s.ServerKey = s.Issue(t, "server", pkix.Name{CommonName: "exgate"}, true)
	s.Client, s.ClientCert, s.ClientKey = s.Issue(t, "client", pkix.Name{CommonName: "device-1", Organization: []string{"Acme"}, Country: []string{"SE"}}, false)
	return s
}

// Issue signs a new certificate for subject and writes it as name.pem and
// name-key.pem.
func (s *Set) Issue(t testing.TB, name string, subject pkix.Name, server bool) (tls.Certificate, string, string) {
	t.Helper()
	key := newKey(t)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
		tmpl.DNSNames = []string{"localhost"}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.ca, &key.PublicKey, s.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile := s.write(t, name+".pem", "CERTIFICATE", der)
	keyFile := s.write(t, name+"-key.pem", "EC PRIVATE KEY", kb)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return pair, certFile, keyFile
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func (s *Set) write(t testing.TB, name, typ string, der []byte) string {
	p := filepath.Join(s.Dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

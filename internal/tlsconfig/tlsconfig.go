// Package tlsconfig builds crypto/tls configurations from exgate's TLS
// options, for device listeners, the adapter server and the handler client
// alike; errors name the option at fault.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/exgate/exgate/internal/config"
)

// Server builds a server configuration: certificate, versions, ciphers and,
// with verify_peer, client-certificate checks. key prefixes error messages
// (e.g. "ssl_options").
func Server(key string, o *config.TLSOptions) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(o.Certfile, o.Keyfile)
	if err != nil {
		return nil, fmt.Errorf("%s.certfile/keyfile: %w", key, err)
	}
	c := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if len(o.Versions) > 0 {
		c.MinVersion, c.MaxVersion = tls.VersionTLS13, tls.VersionTLS12
		for _, v := range o.Versions {
			n := map[string]uint16{"tlsv1.2": tls.VersionTLS12, "tlsv1.3": tls.VersionTLS13}[v]
			c.MinVersion, c.MaxVersion = min(c.MinVersion, n), max(c.MaxVersion, n)
		}
	}
	if len(o.Ciphers) > 0 {
		byName := map[string]uint16{}
		for _, s := range tls.CipherSuites() {
			byName[s.Name] = s.ID
		}
		for _, n := range o.Ciphers {
			id, ok := byName[n]
			if !ok {
				return nil, fmt.Errorf("%s.ciphers: %q is not a secure TLS 1.2 suite Go supports", key, n)
			}
			c.CipherSuites = append(c.CipherSuites, id)
		}
	}
	if o.Cacertfile != "" {
		if c.ClientCAs, err = LoadPool(o.Cacertfile); err != nil {
			return nil, fmt.Errorf("%s.cacertfile: %w", key, err)
		}
	}
	switch {
	case o.ClientCertRequired(): // what the configuration checks count as credentials
		c.ClientAuth = tls.RequireAndVerifyClientCert
	case o.Verify == "verify_peer":
		c.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return c, nil
}

// Client builds a client configuration; nil options mean system roots and
// no client certificate.
func Client(o *config.ClientTLSOptions) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if o == nil {
		return tc, nil
	}
	tc.ServerName = o.ServerNameIndication
	tc.InsecureSkipVerify = o.Verify == "verify_none"
	if o.Cacertfile != "" {
		pool, err := LoadPool(o.Cacertfile)
		if err != nil {
			return nil, fmt.Errorf("cacertfile: %w", err)
		}
		tc.RootCAs = pool
	}
	if o.Certfile != "" {
		cert, err := tls.LoadX509KeyPair(o.Certfile, o.Keyfile)
		if err != nil {
			return nil, fmt.Errorf("certfile/keyfile: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// LoadPool reads PEM certificates into a pool.
func LoadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, errors.New(path + ": no PEM certificate found")
	}
	return pool, nil
}

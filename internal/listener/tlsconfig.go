package listener

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/pion/dtls/v3"

	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/tlsconfig"
)

// DTLSServerOptions builds the server side of a dtls listener: certificates,
// or PSK when psk_file is set. Files are read and names checked here, so a
// wrong option is an error at start, naming it.
func DTLSServerOptions(o *config.TLSOptions) ([]dtls.ServerOption, error) {
	opts := []dtls.ServerOption{dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret)}
	var suites []dtls.CipherSuiteID
	if o.PSKFile != "" {
		keys, err := loadPSK(o.PSKFile)
		if err != nil {
			return nil, fmt.Errorf("dtls_options.psk_file: %w", err)
		}
		opts = append(opts,
			dtls.WithPSK(func(identity []byte) ([]byte, error) {
				if k, ok := keys[string(identity)]; ok {
					return k, nil
				}
				return nil, fmt.Errorf("unknown PSK identity %q", identity)
			}),
			dtls.WithPSKIdentityHint([]byte("exgate")))
		suites = []dtls.CipherSuiteID{dtls.TLS_PSK_WITH_AES_128_GCM_SHA256, dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.TLS_PSK_WITH_AES_128_CBC_SHA256}
	}
	if o.Certfile != "" || o.Keyfile != "" {
		cert, err := tls.LoadX509KeyPair(o.Certfile, o.Keyfile)
		if err != nil {
			return nil, fmt.Errorf("dtls_options.certfile/keyfile: %w", err)
		}
		opts = append(opts, dtls.WithCertificates(cert))
	}
	if o.Cacertfile != "" {
		pool, err := tlsconfig.LoadPool(o.Cacertfile)
		if err != nil {
			return nil, fmt.Errorf("dtls_options.cacertfile: %w", err)
		}
		opts = append(opts, dtls.WithClientCAs(pool))
	}
	switch {
	case o.ClientCertRequired():
		opts = append(opts, dtls.WithClientAuth(dtls.RequireAndVerifyClientCert))
	case o.Verify == "verify_peer":
		opts = append(opts, dtls.WithClientAuth(dtls.VerifyClientCertIfGiven))
	}
	if len(o.Ciphers) > 0 {
		suites = nil
		byName := map[string]dtls.CipherSuiteID{}
		for _, id := range []dtls.CipherSuiteID{
			dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			dtls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, dtls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8,
			dtls.TLS_PSK_WITH_AES_128_GCM_SHA256, dtls.TLS_PSK_WITH_AES_128_CCM, dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.TLS_PSK_WITH_AES_128_CBC_SHA256,
		} {
			byName[id.String()] = id
		}
		for _, n := range o.Ciphers {
			id, ok := byName[n]
			if !ok {
				return nil, fmt.Errorf("dtls_options.ciphers: %q is not a DTLS suite exgate supports", n)
			}
			suites = append(suites, id)
		}
	}
	if len(suites) > 0 {
		opts = append(opts, dtls.WithCipherSuites(suites...))
	}
	return opts, nil
}

// loadPSK reads "identity:secret" lines (EMQX's psk_file format); blank
// lines and # comments are skipped.
func loadPSK(path string) (map[string][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	keys := map[string][]byte{}
	s := bufio.NewScanner(f)
	for n := 1; s.Scan(); n++ {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, secret, ok := strings.Cut(line, ":")
		if !ok || id == "" || secret == "" {
			return nil, fmt.Errorf("%s line %d: expected identity:secret", path, n)
		}
		keys[id] = []byte(secret)
	}
	if len(keys) == 0 {
		return nil, errors.New(path + ": no identities")
	}
	return keys, s.Err()
}

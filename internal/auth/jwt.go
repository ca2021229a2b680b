package auth

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"

	"github.com/golang-jwt/jwt/v5"

	"github.com/exgate/exgate/internal/config"
)

// jwtAuth checks a JWT given as the password: its signature (HMAC secret,
// public key file or JWKS file), its exp (which becomes expire_at) and the
// claims verify_claims asks for. A password that is not a JWT is ignored.
type jwtAuth struct {
	keyFunc jwt.Keyfunc
	methods []string
	claims  map[string]string
}

func newJWT(c config.Authenticator) (*jwtAuth, error) {
	a := &jwtAuth{claims: c.VerifyClaims}
	switch {
	case c.Algorithm == "hmac-based":
		secret := []byte(c.Secret)
		if c.SecretBase64Encoded {
			var err error
			if secret, err = base64.StdEncoding.DecodeString(c.Secret); err != nil {
				return nil, fmt.Errorf("secret: %w", err)
			}
		}
		a.methods = []string{"HS256", "HS384", "HS512"}
		a.keyFunc = func(*jwt.Token) (any, error) { return secret, nil }
	case c.PublicKeyFile != "":
		b, err := os.ReadFile(c.PublicKeyFile)
		if err != nil {
			return nil, fmt.Errorf("public_key_file: %w", err)
		}
		var key any
		if key, err = jwt.ParseRSAPublicKeyFromPEM(b); err != nil {
			if key, err = jwt.ParseECPublicKeyFromPEM(b); err != nil {
				return nil, fmt.Errorf("public_key_file: not an RSA or EC public key in PEM")
			}
		}
		a.methods = []string{"RS256", "RS384", "RS512", "ES256", "ES384"}
		a.keyFunc = func(*jwt.Token) (any, error) { return key, nil }
	default:
		keys, err := readJWKS(c.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("jwks_file: %w", err)
		}
		a.methods = []string{"RS256", "RS384", "RS512"}
		a.keyFunc = func(t *jwt.Token) (any, error) {
			kid, _ := t.Header["kid"].(string)
			if k, ok := keys[kid]; ok {
				return k, nil
			}
			if len(keys) == 1 && kid == "" {
				for _, k := range keys {
					return k, nil
				}
			}
			return nil, fmt.Errorf("no key %q in the JWKS", kid)
		}
	}
	return a, nil
}

func (a *jwtAuth) close() {}

func (a *jwtAuth) authenticate(_ context.Context, r Request) (Result, bool, error) {
	if _, _, err := jwt.NewParser().ParseUnverified(r.Password, jwt.MapClaims{}); err != nil {
		return Result{}, false, nil // not a JWT: someone else's
	}
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(r.Password, claims, a.keyFunc, jwt.WithValidMethods(a.methods))
	if err != nil {
		return Result{}, false, fmt.Errorf("JWT: %w", err)
	}
	vars := map[string]string{"clientid": r.ClientID, "username": r.Username}
	for k, want := range a.claims {
		if got, _ := claims[k].(string); got != render(want, vars) {
			return Result{}, false, fmt.Errorf("JWT: claim %q does not match", k)
		}
	}
	res := Result{}
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil {
		res.ExpireAt = exp.Time
	}
	if su, ok := claims["is_superuser"].(bool); ok {
		res.Superuser = su
	}
	return res, true, nil
}

// readJWKS reads the RSA keys of a JWKS document by kid.
func readJWKS(path string) (map[string]*rsa.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Keys []struct {
			Kty, Kid, N, E string
		} `json:"keys"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	keys := map[string]*rsa.PublicKey{}
	for _, k := range doc.Keys {
		if k.Kty != "RSA" {
			continue
		}
		n, err1 := base64.RawURLEncoding.DecodeString(k.N)
		e, err2 := base64.RawURLEncoding.DecodeString(k.E)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("key %q: bad n or e", k.Kid)
		}
		keys[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	}
	if len(keys) == 0 {
		return nil, errors.New("no RSA keys")
	}
	return keys, nil
}

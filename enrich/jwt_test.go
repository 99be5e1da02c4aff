package enrich

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"hash"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// proximitySecret is Proximity's fallback JWT_SECRET_KEY, the one its
// tokens are signed with when the variable is not exported (research §1.1).
const proximitySecret = "INSECURE_DEV_KEY_CHANGE_IN_PRODUCTION"

// tokenEpoch is where a tokenClock starts.
func tokenEpoch() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) }

type tokenClock struct{ ns atomic.Int64 }

func newTokenClock() *tokenClock {
	c := &tokenClock{}
	c.ns.Store(tokenEpoch().UnixNano())
	return c
}

func (c *tokenClock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *tokenClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// proximityClaims are exactly what Proximity's FastAPI backend signs.
func proximityClaims(now time.Time) jwt.MapClaims {
	return jwt.MapClaims{"sub": "demo", "role": "user", "user_id": 2, "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
}

func mustSign(tb testing.TB, m jwt.SigningMethod, key any, claims jwt.MapClaims, kid string) string {
	tb.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	require.NoError(tb, err)
	return s
}

// mustAlgNone hand-crafts an unsigned token, which jwt/v5 only signs with a
// special key.
func mustAlgNone(tb testing.TB, claims jwt.MapClaims) string {
	tb.Helper()
	payload, err := json.Marshal(claims)
	require.NoError(tb, err)
	return "eyJhbGciOiJub25lIn0." + base64.RawURLEncoding.EncodeToString(payload) + "."
}

func mustRSA(tb testing.TB) *rsa.PrivateKey {
	tb.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(tb, err)
	return k
}

func mustEC(tb testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	require.NoError(tb, err)
	return k
}

func mustEd(tb testing.TB) ed25519.PrivateKey {
	tb.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(tb, err)
	return k
}

func mustPublicPEM(tb testing.TB, pub crypto.PublicKey) []byte {
	tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	require.NoError(tb, err)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func mustCertPEM(tb testing.TB, priv crypto.Signer) []byte {
	tb.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "api.test"},
		NotBefore:    tokenEpoch().Add(-time.Hour),
		NotAfter:     tokenEpoch().Add(time.Hour), // long expired when the test runs later: must not matter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	require.NoError(tb, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func mustPEMKeys(tb testing.TB, pemBytes []byte) Keys {
	tb.Helper()
	k, err := PEMKeys(pemBytes)
	require.NoError(tb, err)
	return k
}

// countCalls wraps k so that every Keyfunc call is counted.
func countCalls(k Keys, n *atomic.Int64) Keys {
	kf := k.Keyfunc
	k.Keyfunc = func(t *jwt.Token) (any, error) {
		n.Add(1)
		return kf(t)
	}
	return k
}

func tokenCacheLen(v *Verifier) (good, bad int) {
	for i := range v.shards {
		sh := &v.shards[i]
		sh.mu.Lock()
		good += sh.good.len()
		bad += sh.bad.len()
		sh.mu.Unlock()
	}
	return good, bad
}

func TestTokenFromRequest(t *testing.T) {
	t.Parallel()
	const cookie = "proximity-auth-cookie"
	tests := []struct {
		name   string
		h      http.Header
		cookie string
		want   string
	}{
		{"no headers", http.Header{}, cookie, ""},
		{"bearer", http.Header{"Authorization": {"Bearer abc.def.ghi"}}, "", "abc.def.ghi"},
		{"lowercase scheme", http.Header{"Authorization": {"bearer abc.def.ghi"}}, "", "abc.def.ghi"},
		{"upper case scheme", http.Header{"Authorization": {"BEARER abc"}}, "", "abc"},
		{"extra spaces and tabs", http.Header{"Authorization": {" \tBearer   abc.def.ghi \t"}}, "", "abc.def.ghi"},
		{"tab after scheme", http.Header{"Authorization": {"Bearer\tabc"}}, "", "abc"},
		{"basic is not a token", http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}}, "", ""},
		{"scheme only", http.Header{"Authorization": {"Bearer"}}, "", ""},
		{"scheme and spaces only", http.Header{"Authorization": {"Bearer    "}}, "", ""},
		{"scheme glued to token", http.Header{"Authorization": {"Bearerabc"}}, "", ""},
		{"second authorization value", http.Header{"Authorization": {"Basic x", "Bearer abc"}}, "", "abc"},
		{"header wins over cookie", http.Header{"Authorization": {"Bearer hdr"}, "Cookie": {cookie + "=ck"}}, cookie, "hdr"},
		{"basic falls back to cookie", http.Header{"Authorization": {"Basic x"}, "Cookie": {cookie + "=ck"}}, cookie, "ck"},
		{"cookie among several", http.Header{"Cookie": {"csrftoken=x; " + cookie + "=a.b.c; proximity-refresh-cookie=r"}}, cookie, "a.b.c"},
		{"quoted cookie", http.Header{"Cookie": {`a=1; ` + cookie + `="a.b.c"`}}, cookie, "a.b.c"},
		{"malformed pairs skipped", http.Header{"Cookie": {"junk; ;=; =x; a; " + cookie + "=tok;;"}}, cookie, "tok"},
		{"spaces around cookie", http.Header{"Cookie": {"  " + cookie + " =  tok  ; b=2"}}, cookie, "tok"},
		{"empty cookie value skipped", http.Header{"Cookie": {cookie + "=; " + cookie + "=second"}}, cookie, "second"},
		{"empty quoted cookie", http.Header{"Cookie": {cookie + `=""`}}, cookie, ""},
		{"lone quote kept", http.Header{"Cookie": {cookie + `="abc`}}, cookie, `"abc`},
		{"second cookie header", http.Header{"Cookie": {"a=1", cookie + "=tok"}}, cookie, "tok"},
		{"cookie names are case sensitive", http.Header{"Cookie": {"Proximity-Auth-Cookie=tok"}}, cookie, ""},
		{"prefix of a name is not the name", http.Header{"Cookie": {"x" + cookie + "=tok"}}, cookie, ""},
		{"no cookie configured", http.Header{"Cookie": {cookie + "=tok"}}, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tc.want, TokenFromRequest(tc.h, tc.cookie))
		})
	}
}

func TestTokenFromRequestDoesNotAllocate(t *testing.T) {
	const cookie = "proximity-auth-cookie"
	tests := []struct {
		name string
		h    http.Header
	}{
		{"absent", http.Header{"Accept": {"*/*"}}},
		{"bearer", http.Header{"Authorization": {"Bearer abc.def.ghi"}}},
		{"cookie", http.Header{"Cookie": {`a=1; b; ` + cookie + `="a.b.c"`}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			allocs := testing.AllocsPerRun(100, func() { _ = TokenFromRequest(tc.h, cookie) })
			assert.Zero(t, allocs)
		})
	}
}

func TestUserFromClaims(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		claims map[string]any
		m      Claims
		want   User
	}{
		{
			"proximity fastapi",
			map[string]any{"sub": "demo", "role": "user", "user_id": float64(2), "exp": float64(1), "iat": float64(1)},
			Claims{},
			User{ID: "2", Username: "demo", Role: "user"},
		},
		{
			"proximity json.Number",
			map[string]any{"sub": "admin", "role": "admin", "user_id": json.Number("1")},
			DefaultClaims(),
			User{ID: "1", Username: "admin", Role: "admin"},
		},
		{
			"django simplejwt, id only",
			map[string]any{"token_type": "access", "exp": float64(1), "iat": float64(1), "jti": "5f0c", "user_id": "7"},
			Claims{ID: []string{"user_id"}},
			User{ID: "7"},
		},
		{
			"django simplejwt 5.3 int id",
			map[string]any{"token_type": "access", "jti": "5f0c", "user_id": float64(7)},
			Claims{ID: []string{"user_id"}},
			User{ID: "7"},
		},
		{"float integral", map[string]any{"user_id": 42.0}, Claims{}, User{ID: "42"}},
		{"float fraction", map[string]any{"user_id": 42.5}, Claims{}, User{ID: "42.5"}},
		{"float 1e21 without exponent", map[string]any{"user_id": 1e21}, Claims{}, User{ID: "1000000000000000000000"}},
		{"negative zero", map[string]any{"user_id": -0.0}, Claims{}, User{ID: "0"}},
		{"json.Number beyond 2^53 keeps digits", map[string]any{"user_id": json.Number("9007199254740993")}, Claims{}, User{ID: "9007199254740993"}},
		{"json.Number with .0", map[string]any{"user_id": json.Number("42.0")}, Claims{}, User{ID: "42"}},
		{"json.Number 1e21", map[string]any{"user_id": json.Number("1e21")}, Claims{}, User{ID: "1000000000000000000000"}},
		{"json.Number out of range kept", map[string]any{"user_id": json.Number("1e400")}, Claims{}, User{ID: "1e400"}},
		{"empty string falls through", map[string]any{"user_id": "", "sub": "alice"}, Claims{}, User{ID: "alice", Username: "alice"}},
		{"bool not used", map[string]any{"user_id": true, "sub": "bob", "role": false}, Claims{}, User{ID: "bob", Username: "bob"}},
		{"objects and arrays not used", map[string]any{"user_id": map[string]any{"a": 1}, "email": []any{"x"}}, Claims{}, User{}},
		{"email and username", map[string]any{"sub": "u-1", "username": "carol", "email": "c@example.com"}, Claims{}, User{ID: "u-1", Username: "carol", Email: "c@example.com"}},
		{"empty list maps nothing", map[string]any{"user_id": "1", "role": "admin"}, Claims{Role: []string{}}, User{ID: "1"}},
		{"custom order", map[string]any{"uid": "9", "user_id": "1"}, Claims{ID: []string{"uid", "user_id"}}, User{ID: "9"}},
		{"nil claims", nil, Claims{}, User{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tc.want, UserFromClaims(tc.claims, tc.m))
		})
	}
}

func TestVerifierProximityToken(t *testing.T) {
	t.Parallel()
	clock := newTokenClock()
	v := NewVerifier(VerifierOptions{Keys: HMACKeys([]byte(proximitySecret)), Verify: true, Now: clock.Now})
	defer v.Close()
	claims := proximityClaims(clock.Now())
	tok := mustSign(t, jwt.SigningMethodHS256, []byte(proximitySecret), claims, "")

	h := http.Header{"Authorization": {"Bearer " + tok}}
	u, out := v.User(TokenFromRequest(h, ""))
	assert.Equal(t, TokenVerified, out)
	assert.Equal(t, User{ID: "2", Username: "demo", Role: "user", Verified: true, Expires: clock.Now().Add(time.Hour).Truncate(time.Second)}, u)
}

// TestVerifierHMAC runs every way a token can go wrong against HS256 keys.
func TestVerifierHMAC(t *testing.T) {
	t.Parallel()
	secret := []byte(proximitySecret)
	now := tokenEpoch()
	valid := proximityClaims(now)
	with := func(kv ...any) jwt.MapClaims {
		c := proximityClaims(now)
		for i := 0; i < len(kv); i += 2 {
			c[kv[i].(string)] = kv[i+1]
		}
		return c
	}
	hs256 := func(c jwt.MapClaims) string { return mustSign(t, jwt.SigningMethodHS256, secret, c, "") }
	good := hs256(valid)
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"admin","role":"admin","user_id":1}`)) + "." + parts[2]

	tests := []struct {
		name  string
		token string
		want  TokenOutcome
	}{
		{"absent", "", TokenAbsent},
		{"valid HS256", good, TokenVerified},
		{"valid HS384", mustSign(t, jwt.SigningMethodHS384, secret, valid, ""), TokenVerified},
		{"valid HS512", mustSign(t, jwt.SigningMethodHS512, secret, valid, ""), TokenVerified},
		{"no exp accepted", hs256(jwt.MapClaims{"sub": "demo", "user_id": 2}), TokenVerified},
		{"expired", hs256(with("exp", now.Add(-time.Minute).Unix())), TokenExpired},
		{"expired within leeway", hs256(with("exp", now.Add(-10*time.Second).Unix())), TokenVerified},
		{"nbf in the future", hs256(with("nbf", now.Add(time.Minute).Unix())), TokenInvalid},
		{"nbf within leeway", hs256(with("nbf", now.Add(10*time.Second).Unix())), TokenVerified},
		{"exp not a number", hs256(with("exp", "tomorrow")), TokenInvalid},
		{"bad signature", mustSign(t, jwt.SigningMethodHS256, []byte("another secret"), valid, ""), TokenInvalid},
		{"expired and bad signature", mustSign(t, jwt.SigningMethodHS256, []byte("x"), with("exp", now.Add(-time.Hour).Unix()), ""), TokenInvalid},
		{"tampered payload", tampered, TokenInvalid},
		{"signature stripped", parts[0] + "." + parts[1] + ".", TokenInvalid},
		{"alg none", mustAlgNone(t, valid), TokenInvalid},
		{"alg NONE", "eyJhbGciOiJOT05FIn0." + parts[1] + ".", TokenInvalid},
		{"RS256 against HMAC keys", mustSign(t, jwt.SigningMethodRS256, mustRSA(t), valid, ""), TokenInvalid},
		{"garbage", "hello", TokenInvalid},
		{"garbage dots", "a.b.c", TokenInvalid},
		{"only dots", "..", TokenInvalid},
		{"four segments", good + ".x", TokenInvalid},
		{"padded segments", parts[0] + "=." + parts[1] + "." + parts[2], TokenInvalid},
		{"spaces inside", parts[0] + ". " + parts[1] + "." + parts[2], TokenInvalid},
		{"not utf-8", "\xff\xfe.\x00.\x80", TokenInvalid},
		{"json array header", base64.RawURLEncoding.EncodeToString([]byte("[]")) + "." + parts[1] + "." + parts[2], TokenInvalid},
		{"64 KiB", strings.Repeat("a", 32<<10) + "." + strings.Repeat("b", 32<<10) + ".c", TokenInvalid},
		{"just over the bound", good + strings.Repeat("A", MaxTokenSize-len(good)+1), TokenInvalid},
	}
	v := NewVerifier(VerifierOptions{Keys: HMACKeys(secret), Verify: true, Now: func() time.Time { return now }})
	defer v.Close()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			u, out := v.User(tc.token)
			assert.Equal(t, tc.want, out)
			if out != TokenVerified {
				assert.Zero(t, u, "a token that is not verified never becomes a user")
			} else {
				assert.True(t, u.Verified)
			}
		})
	}
}

func TestVerifierRejectsOversizedTokenWithoutParsing(t *testing.T) {
	var calls atomic.Int64
	v := NewVerifier(VerifierOptions{Keys: countCalls(HMACKeys([]byte("k")), &calls), Verify: true})
	defer v.Close()
	huge := strings.Repeat("A", 64<<10)
	huge = huge[:len(huge)-2] + ".."
	var out TokenOutcome
	allocs := testing.AllocsPerRun(10, func() { _, out = v.User(huge) })
	assert.Equal(t, TokenInvalid, out)
	assert.Zero(t, allocs)
	assert.Zero(t, calls.Load())
	good, bad := tokenCacheLen(v)
	assert.Zero(t, good+bad, "never cached")
}

func TestVerifierPEM(t *testing.T) {
	t.Parallel()
	rsaKey := mustRSA(t)
	otherRSA := mustRSA(t)
	p256 := mustEC(t, elliptic.P256())
	p384 := mustEC(t, elliptic.P384())
	p521 := mustEC(t, elliptic.P521())
	ed := mustEd(t)
	claims := proximityClaims(time.Now())
	rsaPEM := mustPublicPEM(t, &rsaKey.PublicKey)
	pkcs1PEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)})
	p256PEM := mustPublicPEM(t, &p256.PublicKey)
	edPEM := mustPublicPEM(t, ed.Public())

	tests := []struct {
		name    string
		pem     []byte
		token   string
		want    TokenOutcome
		methods []string
	}{
		{"RS256 public key", rsaPEM, mustSign(t, jwt.SigningMethodRS256, rsaKey, claims, ""), TokenVerified, []string{"PS256", "PS384", "PS512", "RS256", "RS384", "RS512"}},
		{"RS512 PKCS1 key", pkcs1PEM, mustSign(t, jwt.SigningMethodRS512, rsaKey, claims, ""), TokenVerified, nil},
		{"PS256 public key", rsaPEM, mustSign(t, jwt.SigningMethodPS256, rsaKey, claims, ""), TokenVerified, nil},
		{"RS256 certificate", mustCertPEM(t, rsaKey), mustSign(t, jwt.SigningMethodRS256, rsaKey, claims, ""), TokenVerified, nil},
		{"RS256 other key", rsaPEM, mustSign(t, jwt.SigningMethodRS256, otherRSA, claims, ""), TokenInvalid, nil},
		{"ES256", p256PEM, mustSign(t, jwt.SigningMethodES256, p256, claims, ""), TokenVerified, []string{"ES256"}},
		{"ES384", mustPublicPEM(t, &p384.PublicKey), mustSign(t, jwt.SigningMethodES384, p384, claims, ""), TokenVerified, []string{"ES384"}},
		{"ES512 certificate", mustCertPEM(t, p521), mustSign(t, jwt.SigningMethodES512, p521, claims, ""), TokenVerified, []string{"ES512"}},
		{"ES384 token for a P-256 key", p256PEM, mustSign(t, jwt.SigningMethodES384, p384, claims, ""), TokenInvalid, nil},
		{"EdDSA", edPEM, mustSign(t, jwt.SigningMethodEdDSA, ed, claims, ""), TokenVerified, []string{"EdDSA"}},
		{"EdDSA certificate", mustCertPEM(t, ed), mustSign(t, jwt.SigningMethodEdDSA, ed, claims, ""), TokenVerified, nil},
		{"ES256 token for an RSA key", rsaPEM, mustSign(t, jwt.SigningMethodES256, p256, claims, ""), TokenInvalid, nil},
		// The classic key confusion (CVE-2015-9235 in node-jsonwebtoken):
		// the public key's PEM text used as an HMAC secret.
		{"HS256 signed with the RSA PEM", rsaPEM, mustSign(t, jwt.SigningMethodHS256, rsaPEM, claims, ""), TokenInvalid, nil},
		{"HS256 signed with the PKCS1 PEM", pkcs1PEM, mustSign(t, jwt.SigningMethodHS256, pkcs1PEM, claims, ""), TokenInvalid, nil},
		{"HS256 signed with the EC PEM", p256PEM, mustSign(t, jwt.SigningMethodHS256, p256PEM, claims, ""), TokenInvalid, nil},
		{"HS256 signed with the Ed25519 PEM", edPEM, mustSign(t, jwt.SigningMethodHS256, edPEM, claims, ""), TokenInvalid, nil},
		{"HS256 signed with the Ed25519 key bytes", edPEM, mustSign(t, jwt.SigningMethodHS256, []byte(ed.Public().(ed25519.PublicKey)), claims, ""), TokenInvalid, nil},
		{"alg none", rsaPEM, mustAlgNone(t, claims), TokenInvalid, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			keys := mustPEMKeys(t, tc.pem)
			if tc.methods != nil {
				assert.Equal(t, tc.methods, keys.Methods)
			}
			assert.NotContains(t, keys.Methods, "none")
			assert.NotContains(t, keys.Methods, "HS256")
			v := NewVerifier(VerifierOptions{Keys: keys, Verify: true})
			defer v.Close()
			u, out := v.User(tc.token)
			assert.Equal(t, tc.want, out)
			if tc.want == TokenVerified {
				assert.Equal(t, User{ID: "2", Username: "demo", Role: "user", Verified: true, Expires: u.Expires}, u)
			} else {
				assert.Zero(t, u)
			}
		})
	}
}

func TestPEMKeysRotation(t *testing.T) {
	t.Parallel()
	oldKey, newKey := mustEC(t, elliptic.P256()), mustRSA(t)
	pemBytes := append(mustPublicPEM(t, &oldKey.PublicKey), mustCertPEM(t, newKey)...)
	keys := mustPEMKeys(t, append(mustPublicPEM(t, &mustEC(t, elliptic.P256()).PublicKey), pemBytes...))
	assert.Equal(t, []string{"ES256", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512"}, keys.Methods)
	v := NewVerifier(VerifierOptions{Keys: keys, Verify: true})
	defer v.Close()
	claims := proximityClaims(time.Now())
	for _, tok := range []string{
		mustSign(t, jwt.SigningMethodES256, oldKey, claims, ""),
		mustSign(t, jwt.SigningMethodRS256, newKey, claims, ""),
	} {
		_, out := v.User(tok)
		assert.Equal(t, TokenVerified, out)
	}
	_, out := v.User(mustSign(t, jwt.SigningMethodES256, mustEC(t, elliptic.P256()), claims, ""))
	assert.Equal(t, TokenInvalid, out)
}

func TestPEMKeysErrors(t *testing.T) {
	t.Parallel()
	rsaKey := mustRSA(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	p224 := mustEC(t, elliptic.P224())
	pkcs8, err := x509.MarshalPKCS8PrivateKey(rsaKey)
	require.NoError(t, err)
	tests := []struct {
		name string
		pem  []byte
		want string
	}{
		{"empty", nil, "no PEM block found"},
		{"not PEM", []byte("JWT_SECRET_KEY=abc"), "no PEM block found"},
		{"private key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), `PEM block 1 (PRIVATE KEY): is a private key`},
		{"RSA private key", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}), "is a private key"},
		{"EC private key after a good key", append(mustPublicPEM(t, &rsaKey.PublicKey), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1}})...), "PEM block 2 (EC PRIVATE KEY): is a private key"},
		{"other block", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1}}), "not a public key or certificate"},
		{"broken public key", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("nope")}), "PEM block 1 (PUBLIC KEY): parse public key"},
		{"broken certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("nope")}), "parse certificate"},
		{"broken PKCS1", pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: []byte("nope")}), "parse RSA public key"},
		{"small RSA", mustPublicPEM(t, &small.PublicKey), "RSA key of 1024 bits is too small"},
		{"P-224", mustPublicPEM(t, &p224.PublicKey), "ECDSA curve P-224 has no JWT algorithm"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			keys, err := PEMKeys(tc.pem)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Nil(t, keys.Keyfunc)
		})
	}
}

func TestVerifierWithoutKeys(t *testing.T) {
	t.Parallel()
	tok := mustSign(t, jwt.SigningMethodHS256, []byte("s"), proximityClaims(time.Now()), "")
	tests := []struct {
		name string
		keys Keys
	}{
		{"zero keys", Keys{}},
		{"empty secret", HMACKeys(nil)},
		{"keyfunc without methods", Keys{Keyfunc: func(*jwt.Token) (any, error) { return []byte("s"), nil }}},
		{"only none", Keys{Keyfunc: func(*jwt.Token) (any, error) { return jwt.UnsafeAllowNoneSignatureType, nil }, Methods: []string{"none"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := NewVerifier(VerifierOptions{Keys: tc.keys, Verify: true})
			defer v.Close()
			for _, token := range []string{tok, mustAlgNone(t, proximityClaims(time.Now()))} {
				u, out := v.User(token)
				assert.Equal(t, TokenInvalid, out)
				assert.Zero(t, u)
			}
			_, out := v.User("")
			assert.Equal(t, TokenAbsent, out)
		})
	}
}

func TestVerifierUnverified(t *testing.T) {
	t.Parallel()
	clock := newTokenClock()
	unknown := mustRSA(t)
	claims := proximityClaims(clock.Now())
	expired := proximityClaims(clock.Now())
	expired["exp"] = clock.Now().Add(-time.Hour).Unix()
	early := proximityClaims(clock.Now())
	early["nbf"] = clock.Now().Add(time.Hour).Unix()
	tests := []struct {
		name  string
		token string
		want  TokenOutcome
	}{
		{"unknown RSA key", mustSign(t, jwt.SigningMethodRS256, unknown, claims, "k1"), TokenUnverified},
		{"unknown HMAC secret", mustSign(t, jwt.SigningMethodHS256, []byte("whatever"), claims, ""), TokenUnverified},
		{"expired", mustSign(t, jwt.SigningMethodRS256, unknown, expired, ""), TokenExpired},
		{"not yet valid", mustSign(t, jwt.SigningMethodRS256, unknown, early, ""), TokenInvalid},
		{"alg none still refused", mustAlgNone(t, claims), TokenInvalid},
		{"unknown alg", "eyJhbGciOiJYWDk5In0." + strings.Split(mustAlgNone(t, claims), ".")[1] + ".c2ln", TokenInvalid},
		{"garbage", "not-a-token", TokenInvalid},
	}
	// Keys are ignored when verification is off.
	v := NewVerifier(VerifierOptions{Keys: HMACKeys([]byte(proximitySecret)), Verify: false, Now: clock.Now})
	defer v.Close()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			u, out := v.User(tc.token)
			assert.Equal(t, tc.want, out)
			if tc.want == TokenUnverified {
				assert.Equal(t, User{ID: "2", Username: "demo", Role: "user", Verified: false, Expires: clock.Now().Add(time.Hour)}, u)
			} else {
				assert.Zero(t, u)
			}
		})
	}
}

func TestVerifierDjangoCookie(t *testing.T) {
	t.Parallel()
	clock := newTokenClock()
	secret := []byte("django-insecure-secret")
	v := NewVerifier(VerifierOptions{Keys: HMACKeys(secret), Verify: true, Claims: Claims{ID: []string{"user_id"}}, Now: clock.Now})
	defer v.Close()
	claims := jwt.MapClaims{
		"token_type": "access", "exp": clock.Now().Add(time.Hour).Unix(), "iat": clock.Now().Unix(),
		"jti": "8f2e5c0a9b7d4e1f", "user_id": "7",
	}
	tok := mustSign(t, jwt.SigningMethodHS256, secret, claims, "")
	h := http.Header{"Cookie": {`csrftoken=abc; proximity-auth-cookie=` + tok + `; proximity-refresh-cookie=r.e.f`}}
	u, out := v.User(TokenFromRequest(h, "proximity-auth-cookie"))
	assert.Equal(t, TokenVerified, out)
	assert.Equal(t, User{ID: "7", Verified: true, Expires: clock.Now().Add(time.Hour)}, u)
}

func TestVerifierCache(t *testing.T) {
	t.Parallel()
	secret := []byte(proximitySecret)
	setup := func(t *testing.T) (*Verifier, *tokenClock, *atomic.Int64) {
		clock := newTokenClock()
		calls := new(atomic.Int64)
		v := NewVerifier(VerifierOptions{Keys: countCalls(HMACKeys(secret), calls), Verify: true, Now: clock.Now})
		t.Cleanup(v.Close)
		return v, clock, calls
	}
	lookup := func(t *testing.T, v *Verifier, tok string, want TokenOutcome) {
		t.Helper()
		_, out := v.User(tok)
		assert.Equal(t, want, out)
	}

	t.Run("hit does not call the keyfunc", func(t *testing.T) {
		t.Parallel()
		v, clock, calls := setup(t)
		tok := mustSign(t, jwt.SigningMethodHS256, secret, proximityClaims(clock.Now()), "")
		lookup(t, v, tok, TokenVerified)
		lookup(t, v, tok, TokenVerified)
		lookup(t, v, tok, TokenVerified)
		assert.Equal(t, int64(1), calls.Load())
	})
	t.Run("entry expires with the token", func(t *testing.T) {
		t.Parallel()
		v, clock, calls := setup(t)
		c := proximityClaims(clock.Now())
		c["exp"] = clock.Now().Add(2 * time.Minute).Unix()
		tok := mustSign(t, jwt.SigningMethodHS256, secret, c, "")
		lookup(t, v, tok, TokenVerified)
		clock.Advance(2*time.Minute + DefaultLeeway - time.Second)
		lookup(t, v, tok, TokenVerified)
		assert.Equal(t, int64(1), calls.Load())
		clock.Advance(time.Second)
		lookup(t, v, tok, TokenExpired)
		assert.Equal(t, int64(2), calls.Load())
	})
	t.Run("token without exp is checked again after five minutes", func(t *testing.T) {
		t.Parallel()
		v, clock, calls := setup(t)
		tok := mustSign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "demo"}, "")
		lookup(t, v, tok, TokenVerified)
		clock.Advance(positiveTTL - time.Second)
		lookup(t, v, tok, TokenVerified)
		assert.Equal(t, int64(1), calls.Load())
		clock.Advance(time.Second)
		lookup(t, v, tok, TokenVerified)
		assert.Equal(t, int64(2), calls.Load())
	})
	t.Run("forged token cached for a minute", func(t *testing.T) {
		t.Parallel()
		v, clock, calls := setup(t)
		forged := mustSign(t, jwt.SigningMethodHS256, []byte("guess"), proximityClaims(clock.Now()), "")
		for range 100 {
			lookup(t, v, forged, TokenInvalid)
		}
		assert.Equal(t, int64(1), calls.Load())
		clock.Advance(negativeTTL)
		lookup(t, v, forged, TokenInvalid)
		assert.Equal(t, int64(2), calls.Load())
	})
	t.Run("expired token cached as expired", func(t *testing.T) {
		t.Parallel()
		v, clock, calls := setup(t)
		c := proximityClaims(clock.Now())
		c["exp"] = clock.Now().Add(-time.Hour).Unix()
		tok := mustSign(t, jwt.SigningMethodHS256, secret, c, "")
		lookup(t, v, tok, TokenExpired)
		lookup(t, v, tok, TokenExpired)
		assert.Equal(t, int64(1), calls.Load())
	})
	t.Run("not yet valid token is refused until nbf minus leeway", func(t *testing.T) {
		t.Parallel()
		v, clock, calls := setup(t)
		c := proximityClaims(clock.Now())
		c["nbf"] = clock.Now().Add(40 * time.Second).Unix()
		tok := mustSign(t, jwt.SigningMethodHS256, secret, c, "")
		lookup(t, v, tok, TokenInvalid)
		clock.Advance(9 * time.Second)
		lookup(t, v, tok, TokenInvalid)
		assert.Equal(t, int64(1), calls.Load())
		clock.Advance(time.Second)
		lookup(t, v, tok, TokenVerified)
		assert.Equal(t, int64(2), calls.Load())
	})
	t.Run("malformed tokens are not cached", func(t *testing.T) {
		t.Parallel()
		v, _, calls := setup(t)
		for _, s := range []string{"x", "a b", "a.b", strings.Repeat("A", MaxTokenSize+1)} {
			lookup(t, v, s, TokenInvalid)
		}
		good, bad := tokenCacheLen(v)
		assert.Zero(t, good+bad)
		assert.Zero(t, calls.Load())
	})
	t.Run("entries computed with replaced keys are dropped", func(t *testing.T) {
		t.Parallel()
		clock := newTokenClock()
		calls := new(atomic.Int64)
		keys := countCalls(HMACKeys(secret), calls)
		keys.gen = new(atomic.Uint64)
		v := NewVerifier(VerifierOptions{Keys: keys, Verify: true, Now: clock.Now})
		defer v.Close()
		tok := mustSign(t, jwt.SigningMethodHS256, secret, proximityClaims(clock.Now()), "")
		lookup(t, v, tok, TokenVerified)
		lookup(t, v, tok, TokenVerified)
		assert.Equal(t, int64(1), calls.Load())
		keys.gen.Add(1)
		lookup(t, v, tok, TokenVerified)
		assert.Equal(t, int64(2), calls.Load())
	})
}

func TestVerifierCacheBound(t *testing.T) {
	t.Parallel()
	const size = 100
	secret := []byte(proximitySecret)
	clock := newTokenClock()
	var calls atomic.Int64
	v := NewVerifier(VerifierOptions{Keys: countCalls(HMACKeys(secret), &calls), Verify: true, CacheSize: size, Now: clock.Now})
	defer v.Close()
	tokens := make([]string, size+100)
	for i := range tokens {
		c := proximityClaims(clock.Now())
		c["user_id"] = i
		tokens[i] = mustSign(t, jwt.SigningMethodHS256, secret, c, "")
		u, out := v.User(tokens[i])
		require.Equal(t, TokenVerified, out)
		require.Equal(t, fmt.Sprint(i), u.ID)
		good, bad := tokenCacheLen(v)
		require.LessOrEqual(t, good+bad, size)
	}
	good, _ := tokenCacheLen(v)
	assert.Equal(t, size-size/8, good)

	// The most recent tokens are still cached; the oldest were evicted.
	before := calls.Load()
	for _, tok := range tokens[len(tokens)-good:] {
		_, out := v.User(tok)
		assert.Equal(t, TokenVerified, out)
	}
	assert.Equal(t, before, calls.Load())
	_, out := v.User(tokens[0])
	assert.Equal(t, TokenVerified, out)
	assert.Equal(t, before+1, calls.Load())

	// A flood of distinct forged tokens cannot push the good ones out.
	hot := tokens[len(tokens)-10:]
	for i := range 1000 {
		c := proximityClaims(clock.Now())
		c["user_id"] = i
		_, out := v.User(mustSign(t, jwt.SigningMethodHS256, []byte("forged"), c, ""))
		require.Equal(t, TokenInvalid, out)
	}
	good, bad := tokenCacheLen(v)
	assert.LessOrEqual(t, good+bad, size)
	assert.Equal(t, size/8, bad)
	before = calls.Load()
	for _, tok := range hot {
		_, out := v.User(tok)
		assert.Equal(t, TokenVerified, out)
	}
	assert.Equal(t, before, calls.Load())
}

// TestVerifierCacheBoundSharded fills a default-sized cache, which is split
// among locks, past its bound.
func TestVerifierCacheBoundSharded(t *testing.T) {
	t.Parallel()
	secret := []byte(proximitySecret)
	clock := newTokenClock()
	v := NewVerifier(VerifierOptions{Keys: HMACKeys(secret), Verify: true, Now: clock.Now})
	defer v.Close()
	require.Greater(t, len(v.shards), 1)
	for i := range DefaultCacheSize + 100 {
		c := proximityClaims(clock.Now())
		c["user_id"] = i
		_, out := v.User(mustSign(t, jwt.SigningMethodHS256, secret, c, ""))
		require.Equal(t, TokenVerified, out)
		_, out = v.User(mustSign(t, jwt.SigningMethodHS256, []byte("forged"), c, ""))
		require.Equal(t, TokenInvalid, out)
	}
	good, bad := tokenCacheLen(v)
	assert.LessOrEqual(t, good+bad, DefaultCacheSize)
	assert.LessOrEqual(t, bad, DefaultCacheSize/8)
	assert.Greater(t, good, DefaultCacheSize*3/4, "every shard fills")
}

func TestVerifierHitDoesNotAllocate(t *testing.T) {
	secret := []byte(proximitySecret)
	tests := []struct {
		name string
		keys Keys
		tok  string
	}{
		{"verified", HMACKeys(secret), mustSign(t, jwt.SigningMethodHS256, secret, proximityClaims(time.Now()), "")},
		{"forged", HMACKeys(secret), mustSign(t, jwt.SigningMethodHS256, []byte("x"), proximityClaims(time.Now()), "")},
		{"absent", HMACKeys(secret), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := NewVerifier(VerifierOptions{Keys: tc.keys, Verify: true})
			defer v.Close()
			_, want := v.User(tc.tok)
			allocs := testing.AllocsPerRun(1000, func() {
				if _, out := v.User(tc.tok); out != want {
					t.Fatalf("outcome changed: %s", out)
				}
			})
			assert.Zero(t, allocs)
		})
	}
}

func TestVerifierConcurrent(t *testing.T) {
	t.Parallel()
	secret := []byte(proximitySecret)
	v := NewVerifier(VerifierOptions{Keys: HMACKeys(secret), Verify: true, CacheSize: 16})
	defer v.Close()
	type want struct {
		tok string
		out TokenOutcome
		id  string
	}
	var cases []want
	for i := range 20 {
		c := proximityClaims(time.Now())
		c["user_id"] = i
		cases = append(cases,
			want{mustSign(t, jwt.SigningMethodHS256, secret, c, ""), TokenVerified, fmt.Sprint(i)},
			want{mustSign(t, jwt.SigningMethodHS256, []byte("forged"), c, ""), TokenInvalid, ""},
		)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				w := cases[(g*7+i)%len(cases)]
				u, out := v.User(w.tok)
				if out != w.out || u.ID != w.id {
					t.Errorf("got %s %q, want %s %q", out, u.ID, w.out, w.id)
					return
				}
			}
		})
	}
	wg.Wait()
	good, bad := tokenCacheLen(v)
	assert.LessOrEqual(t, good+bad, 16)
}

func TestVerifierCloseIsIdempotent(t *testing.T) {
	t.Parallel()
	var closed atomic.Int64
	keys := HMACKeys([]byte("s"))
	keys.close = func() { closed.Add(1) }
	v := NewVerifier(VerifierOptions{Keys: keys, Verify: true})
	v.Close()
	v.Close()
	assert.Equal(t, int64(1), closed.Load())
}

// jwksServer is an identity provider whose key set the test can rotate and
// whose fetches it counts.
type jwksServer struct {
	*httptest.Server
	hits atomic.Int64

	mu     sync.Mutex
	body   []byte
	fail   int           // answer 500 to this many more fetches
	gate   chan struct{} // when set, fetches after the first wait for it
	served int
}

type jwksKey struct {
	kid string
	key any // public key, or []byte for an "oct" key
	alg jwkset.ALG
	use jwkset.USE
}

func mustJWKSServer(tb testing.TB, keys ...jwksKey) *jwksServer {
	tb.Helper()
	s := &jwksServer{}
	s.setKeys(tb, keys...)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		s.served++
		gate, first, fail := s.gate, s.served == 1, s.fail > 0
		if fail {
			s.fail--
		}
		body := s.body
		s.mu.Unlock()
		if gate != nil && !first {
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			}
		}
		if fail {
			http.Error(w, "identity provider down", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	tb.Cleanup(s.Close)
	return s
}

func (s *jwksServer) setKeys(tb testing.TB, keys ...jwksKey) {
	tb.Helper()
	var set jwkset.JWKSMarshal
	for _, k := range keys {
		j, err := jwkset.NewJWKFromKey(k.key, jwkset.JWKOptions{
			Marshal:  jwkset.JWKMarshalOptions{Private: true}, // needed to publish "oct" keys
			Metadata: jwkset.JWKMetadataOptions{KID: k.kid, ALG: k.alg, USE: k.use},
		})
		require.NoError(tb, err)
		set.Keys = append(set.Keys, j.Marshal())
	}
	body, err := json.Marshal(set)
	require.NoError(tb, err)
	s.mu.Lock()
	s.body = body
	s.mu.Unlock()
}

func mustJWKSKeys(tb testing.TB, url string, o JWKSOptions) Keys {
	tb.Helper()
	keys, err := JWKSKeys(context.Background(), url, o)
	require.NoError(tb, err)
	return keys
}

// mustNotLeak checks, after every other cleanup, that the test's JWKS
// goroutines ended. JWKS tests are not parallel so that others' goroutines
// do not count.
func mustNotLeak(tb testing.TB) {
	tb.Helper()
	opt := goleak.IgnoreCurrent()
	tb.Cleanup(func() { goleak.VerifyNone(tb, opt) })
}

func TestVerifierJWKS(t *testing.T) {
	mustNotLeak(t)
	a, b := mustEC(t, elliptic.P256()), mustEC(t, elliptic.P256())
	ed := mustEd(t)
	rsaKey := mustRSA(t)
	enc := mustEC(t, elliptic.P256())
	secret := []byte("an oct key in the set")
	srv := mustJWKSServer(t,
		jwksKey{"a", &a.PublicKey, jwkset.AlgES256, ""},
		jwksKey{"ed", ed.Public(), jwkset.AlgEdDSA, ""},
		jwksKey{"rsa", &rsaKey.PublicKey, "", ""},
		jwksKey{"oct", secret, jwkset.AlgHS256, ""},
		jwksKey{"enc", &enc.PublicKey, jwkset.AlgES256, jwkset.UseEnc},
	)
	const refresh = 100 * time.Millisecond
	keys := mustJWKSKeys(t, srv.URL, JWKSOptions{Client: srv.Client(), Refresh: refresh})
	assert.Equal(t, int64(1), srv.hits.Load(), "fetched once before JWKSKeys returns")
	assert.NotContains(t, keys.Methods, "HS256")
	assert.NotContains(t, keys.Methods, "none")
	v := NewVerifier(VerifierOptions{Keys: keys, Verify: true})
	t.Cleanup(v.Close)

	claims := proximityClaims(time.Now())
	tokA := mustSign(t, jwt.SigningMethodES256, a, claims, "a")
	tokB := mustSign(t, jwt.SigningMethodES256, b, claims, "b")
	tests := []struct {
		name  string
		token string
		want  TokenOutcome
	}{
		{"ES256 with kid", tokA, TokenVerified},
		{"ES256 without kid", mustSign(t, jwt.SigningMethodES256, a, claims, ""), TokenVerified},
		{"EdDSA", mustSign(t, jwt.SigningMethodEdDSA, ed, claims, "ed"), TokenVerified},
		{"RS256 for a JWK without alg", mustSign(t, jwt.SigningMethodRS256, rsaKey, claims, "rsa"), TokenVerified},
		{"ES256 under the EdDSA kid", mustSign(t, jwt.SigningMethodES256, a, claims, "ed"), TokenInvalid},
		{"HS256 with the oct key", mustSign(t, jwt.SigningMethodHS256, secret, claims, "oct"), TokenInvalid},
		{"ES256 with an encryption key", mustSign(t, jwt.SigningMethodES256, enc, claims, "enc"), TokenInvalid},
		{"HS256 with the EC public key PEM", mustSign(t, jwt.SigningMethodHS256, mustPublicPEM(t, &a.PublicKey), claims, "a"), TokenInvalid},
		{"alg none", mustAlgNone(t, claims), TokenInvalid},
		{"unknown key", tokB, TokenInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, out := v.User(tc.token)
			assert.Equal(t, tc.want, out)
		})
	}

	// Rotate a out and b in: the background refresh picks it up, and cached
	// outcomes computed with the old set are dropped.
	srv.setKeys(t, jwksKey{"b", &b.PublicKey, jwkset.AlgES256, ""})
	require.Eventually(t, func() bool {
		_, outB := v.User(tokB)
		_, outA := v.User(tokA)
		return outB == TokenVerified && outA == TokenInvalid
	}, 5*time.Second, 10*time.Millisecond)

	// Refreshes keep coming on their own, with no request at all.
	h := srv.hits.Load()
	require.Eventually(t, func() bool { return srv.hits.Load() >= h+3 }, 20*refresh, refresh/4)

	// Closed, it stops fetching and still answers from the keys it has.
	v.Close()
	h = srv.hits.Load()
	time.Sleep(3 * refresh)
	assert.LessOrEqual(t, srv.hits.Load(), h+1, "at most a fetch in flight at Close")
	_, out := v.User(mustSign(t, jwt.SigningMethodES256, b, proximityClaims(time.Now()), "b"))
	assert.Equal(t, TokenVerified, out)
}

func TestVerifierJWKSRequestPathNeverFetches(t *testing.T) {
	mustNotLeak(t)
	a := mustEC(t, elliptic.P256())
	srv := mustJWKSServer(t, jwksKey{"a", &a.PublicKey, jwkset.AlgES256, ""})
	gate := make(chan struct{})
	srv.mu.Lock()
	srv.gate = gate // every fetch after the first hangs until the test ends
	srv.mu.Unlock()
	t.Cleanup(func() { close(gate) }) // before srv.Close, which waits for handlers

	keys := mustJWKSKeys(t, srv.URL, JWKSOptions{Client: srv.Client(), Refresh: time.Hour})
	v := NewVerifier(VerifierOptions{Keys: keys, Verify: true})
	t.Cleanup(v.Close) // cancels the hanging background fetch

	claims := proximityClaims(time.Now())
	known := mustSign(t, jwt.SigningMethodES256, a, claims, "a")
	rotated := make([]string, 100)
	for i := range rotated {
		rotated[i] = mustSign(t, jwt.SigningMethodES256, mustEC(t, elliptic.P256()), claims, fmt.Sprintf("rotated-%d", i))
	}
	// Lookups run apart so that one stuck on the hanging fetch fails the
	// test instead of hanging it.
	done := make(chan string, 1)
	go func() {
		for _, tok := range rotated {
			if _, out := v.User(tok); out != TokenInvalid {
				done <- "unknown kid: " + string(out)
				return
			}
			if _, out := v.User(known); out != TokenVerified {
				done <- "known kid: " + string(out)
				return
			}
		}
		done <- ""
	}()
	select {
	case msg := <-done:
		require.Empty(t, msg)
	case <-time.After(5 * time.Second):
		t.Fatal("a lookup waited for a JWKS fetch")
	}
	// Unknown kids woke exactly one background fetch, rate-limited.
	require.Eventually(t, func() bool { return srv.hits.Load() == 2 }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	assert.Equal(t, int64(2), srv.hits.Load())
}

func TestVerifierJWKSFirstFetchFails(t *testing.T) {
	mustNotLeak(t)
	a := mustEC(t, elliptic.P256())
	srv := mustJWKSServer(t, jwksKey{"a", &a.PublicKey, jwkset.AlgES256, ""})
	srv.mu.Lock()
	srv.fail = 1
	srv.mu.Unlock()
	var mu sync.Mutex
	var errs []error
	keys, err := JWKSKeys(context.Background(), srv.URL, JWKSOptions{
		Client:  srv.Client(),
		Refresh: time.Hour,
		OnError: func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() },
	})
	require.NoError(t, err, "the proxy must start while the identity provider is down")
	v := NewVerifier(VerifierOptions{Keys: keys, Verify: true})
	t.Cleanup(v.Close)
	mu.Lock()
	require.Len(t, errs, 1)
	assert.Contains(t, errs[0].Error(), "fetch JWKS "+srv.URL)
	mu.Unlock()

	tok := mustSign(t, jwt.SigningMethodES256, a, proximityClaims(time.Now()), "a")
	_, out := v.User(tok)
	assert.Equal(t, TokenInvalid, out)
	// The refusal woke a fetch; the keys arrive and the cached refusal goes.
	require.Eventually(t, func() bool {
		_, out := v.User(tok)
		return out == TokenVerified
	}, 5*time.Second, 10*time.Millisecond)
	assert.Equal(t, int64(2), srv.hits.Load())
}

func TestVerifierJWKSStopsWithContext(t *testing.T) {
	mustNotLeak(t)
	a := mustEC(t, elliptic.P256())
	srv := mustJWKSServer(t, jwksKey{"a", &a.PublicKey, jwkset.AlgES256, ""})
	ctx, cancel := context.WithCancel(context.Background())
	keys, err := JWKSKeys(ctx, srv.URL, JWKSOptions{Client: srv.Client(), Refresh: 20 * time.Millisecond})
	require.NoError(t, err)
	v := NewVerifier(VerifierOptions{Keys: keys, Verify: true})
	require.Eventually(t, func() bool { return srv.hits.Load() >= 3 }, 5*time.Second, 5*time.Millisecond)
	cancel()
	time.Sleep(50 * time.Millisecond)
	h := srv.hits.Load()
	time.Sleep(100 * time.Millisecond)
	assert.Equal(t, h, srv.hits.Load())
	v.Close() // after ctx ended: returns at once
}

func TestJWKSKeysBadURL(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"::not a url", "", "/jwks.json", "ftp://idp/jwks", "https://user:hunter2@/jwks"} {
		_, err := JWKSKeys(context.Background(), u, JWKSOptions{})
		require.Error(t, err, u)
		assert.Equal(t, "JWKS URL is not an absolute http(s) URL", err.Error())
	}
}

func TestJWKSKeysRedactsPasswordInErrors(t *testing.T) {
	mustNotLeak(t)
	srv := mustJWKSServer(t)
	srv.mu.Lock()
	srv.fail = 1
	srv.mu.Unlock()
	withPassword := strings.Replace(srv.URL, "http://", "http://idp:hunter2@", 1)
	var msgs []string
	keys, err := JWKSKeys(context.Background(), withPassword, JWKSOptions{
		Client:  srv.Client(),
		OnError: func(err error) { msgs = append(msgs, err.Error()) },
	})
	require.NoError(t, err)
	t.Cleanup(NewVerifier(VerifierOptions{Keys: keys, Verify: true}).Close)
	require.Len(t, msgs, 1)
	assert.Contains(t, msgs[0], "fetch JWKS http://idp:xxxxx@")
	assert.NotContains(t, msgs[0], "hunter2")
}

// validHMAC is an independent check of an HS256/384/512 signature.
func validHMAC(token string, secret []byte) bool {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return false
	}
	hdr, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return false
	}
	var h struct{ Alg string }
	if json.Unmarshal(hdr, &h) != nil {
		return false
	}
	var fn func() hash.Hash
	switch h.Alg {
	case "HS256":
		fn = sha256.New
	case "HS384":
		fn = sha512.New384
	case "HS512":
		fn = sha512.New
	default:
		return false
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return false
	}
	m := hmac.New(fn, secret)
	m.Write([]byte(parts[0] + "." + parts[1]))
	return hmac.Equal(m.Sum(nil), sig)
}

func FuzzTokenFromRequest(f *testing.F) {
	for _, s := range [][3]string{
		{"Bearer a.b.c", "", ""},
		{"bearer   x  ", "c=1", "c"},
		{"Basic abc", `a=1; c="q"; ;=;x`, "c"},
		{"", "c=; c=2", "c"},
		{"Bearer", `c="`, "c"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, auth, cookieLine, name string) {
		h := http.Header{"Authorization": {auth}, "Cookie": {cookieLine}}
		got := TokenFromRequest(h, name)
		if got != "" && !strings.Contains(auth, got) && !strings.Contains(cookieLine, got) {
			t.Fatalf("result %q is not part of the input", got)
		}
		if name == "" && got != "" && !strings.Contains(auth, got) {
			t.Fatalf("cookie read without a cookie name: %q", got)
		}
	})
}

func FuzzVerifierUser(f *testing.F) {
	key := []byte("fuzz key, the only one that signs")
	other := []byte("another key")
	now := time.Now()
	claims := proximityClaims(now)
	for _, s := range []string{
		mustSign(f, jwt.SigningMethodHS256, key, claims, ""),
		mustSign(f, jwt.SigningMethodHS512, key, claims, "k"),
		mustSign(f, jwt.SigningMethodHS256, other, claims, ""),
		mustSign(f, jwt.SigningMethodES256, mustEC(f, elliptic.P256()), claims, ""),
		mustAlgNone(f, claims),
		"", "a.b.c", "..", "eyJhbGciOiJIUzI1NiJ9.e30.", "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOiJ4In0.AAAA",
	} {
		f.Add(s)
	}
	strict := NewVerifier(VerifierOptions{Keys: HMACKeys(key), Verify: true})
	otherV := NewVerifier(VerifierOptions{Keys: HMACKeys(other), Verify: true})
	loose := NewVerifier(VerifierOptions{Verify: false})
	f.Cleanup(func() { strict.Close(); otherV.Close(); loose.Close() })
	outcomes := map[TokenOutcome]bool{TokenAbsent: true, TokenVerified: true, TokenUnverified: true, TokenExpired: true, TokenInvalid: true}
	f.Fuzz(func(t *testing.T, tok string) {
		for _, c := range []struct {
			v      *Verifier
			secret []byte
		}{{strict, key}, {otherV, other}} {
			u, out := c.v.User(tok)
			if !outcomes[out] {
				t.Fatalf("unknown outcome %q", out)
			}
			if out == TokenUnverified {
				t.Fatal("unverified outcome with verification on")
			}
			if out == TokenVerified && !validHMAC(tok, c.secret) {
				t.Fatalf("verified a token not signed by the key: %+v", u)
			}
			if out != TokenVerified && u != (User{}) {
				t.Fatalf("user %+v for outcome %s", u, out)
			}
		}
		u, out := loose.User(tok)
		if !outcomes[out] || out == TokenVerified || u.Verified {
			t.Fatalf("verification off gave %s %+v", out, u)
		}
	})
}

func BenchmarkVerifierHit(b *testing.B) {
	secret := []byte(proximitySecret)
	v := NewVerifier(VerifierOptions{Keys: HMACKeys(secret), Verify: true})
	defer v.Close()
	tok := mustSign(b, jwt.SigningMethodHS256, secret, proximityClaims(time.Now()), "")
	v.User(tok)
	b.ReportAllocs()
	for b.Loop() {
		v.User(tok)
	}
}

func BenchmarkVerifierHitParallel(b *testing.B) {
	secret := []byte(proximitySecret)
	v := NewVerifier(VerifierOptions{Keys: HMACKeys(secret), Verify: true})
	defer v.Close()
	tokens := make([]string, 64)
	for i := range tokens {
		c := proximityClaims(time.Now())
		c["user_id"] = i
		tokens[i] = mustSign(b, jwt.SigningMethodHS256, secret, c, "")
		v.User(tokens[i])
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			v.User(tokens[i%len(tokens)])
			i++
		}
	})
}

// benchmarkMiss alternates two tokens through a one-entry cache, so every
// lookup verifies.
func benchmarkMiss(b *testing.B, keys Keys, m jwt.SigningMethod, key any) {
	v := NewVerifier(VerifierOptions{Keys: keys, Verify: true, CacheSize: 1})
	defer v.Close()
	var tokens [2]string
	for i := range tokens {
		c := proximityClaims(time.Now())
		c["user_id"] = i
		tokens[i] = mustSign(b, m, key, c, "")
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, out := v.User(tokens[i&1]); out != TokenVerified {
			b.Fatal(out)
		}
		i++
	}
}

func BenchmarkVerifierMissHS256(b *testing.B) {
	secret := []byte(proximitySecret)
	benchmarkMiss(b, HMACKeys(secret), jwt.SigningMethodHS256, secret)
}

func BenchmarkVerifierMissES256(b *testing.B) {
	k := mustEC(b, elliptic.P256())
	benchmarkMiss(b, mustPEMKeys(b, mustPublicPEM(b, &k.PublicKey)), jwt.SigningMethodES256, k)
}

func BenchmarkVerifierMissRS256(b *testing.B) {
	k := mustRSA(b)
	benchmarkMiss(b, mustPEMKeys(b, mustPublicPEM(b, &k.PublicKey)), jwt.SigningMethodRS256, k)
}

func BenchmarkTokenFromRequest(b *testing.B) {
	h := http.Header{"Cookie": {"csrftoken=abc; sessionid=x; proximity-auth-cookie=a.b.c"}}
	b.ReportAllocs()
	for b.Loop() {
		_ = TokenFromRequest(h, "proximity-auth-cookie")
	}
}

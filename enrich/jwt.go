package enrich

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// User is who the sidecar believes sent a request, from the API's own token.
type User struct {
	ID, Username, Email, Role string
	// Verified is false only when verification is off (jwt.verify: false).
	Verified bool
	// Expires is the token's exp; zero when it has none.
	Expires time.Time
}

// TokenOutcome is what became of a request's token. It is used as a metric
// label, so it has exactly five values.
type TokenOutcome string

// The outcomes of Verifier.User.
const (
	TokenAbsent     TokenOutcome = "absent"     // no token in the request
	TokenVerified   TokenOutcome = "verified"   // signature and times checked
	TokenUnverified TokenOutcome = "unverified" // verification off; times checked
	TokenExpired    TokenOutcome = "expired"    // exp passed (signature was good, or not checked)
	TokenInvalid    TokenOutcome = "invalid"    // anything else: forged, garbage, too big, not yet valid, no key
)

// Defaults and bounds of the Verifier.
const (
	// MaxTokenSize bounds the tokens the Verifier looks at. Proximity's
	// are ~200 bytes, identity providers that pack many roles into a token
	// reach a few KiB, and browsers cap a cookie at about 4 KiB, so 8 KiB
	// turns nothing real away while a 64 KiB header costs one len().
	MaxTokenSize = 8 << 10
	// DefaultLeeway absorbs clock skew between the API and the sidecar when
	// checking exp and nbf.
	DefaultLeeway = 30 * time.Second
	// DefaultCacheSize is the number of tokens a Verifier remembers.
	DefaultCacheSize = 10000
	// DefaultJWKSRefresh is how often a JWKS is fetched again in the
	// background, as keyfunc's own default.
	DefaultJWKSRefresh = time.Hour

	// positiveTTL caps how long a good token is trusted without a new
	// check, so a token without exp is not cached forever.
	positiveTTL = 5 * time.Minute
	// negativeTTL is how long a bad token is remembered: long enough that a
	// flood of one forged token costs a map lookup each, short enough that
	// nothing stays wrong for long.
	negativeTTL = time.Minute
	// jwksKickInterval rate-limits the background fetches triggered by
	// tokens naming a key id the JWKS does not have (yet).
	jwksKickInterval = time.Minute
	// jwksHTTPTimeout bounds one JWKS fetch.
	jwksHTTPTimeout = 10 * time.Second
)

// TokenFromRequest returns the bearer token of the Authorization header
// ("Bearer <t>", scheme in any case, surrounding spaces ignored) or, when
// there is none and cookie is not empty, the value of the named cookie
// (surrounding double quotes removed). Another scheme, such as Basic, is not
// a token. The result is a substring of a header value, so nothing is
// allocated; "" means the request carries no token.
//
// Cookies are read from the Cookie header here rather than with
// http.Request.Cookie, which allocates every cookie of the request and is
// not available to callers holding only headers (the tunnel, tests).
func TokenFromRequest(h http.Header, cookie string) string {
	for _, v := range h["Authorization"] {
		if t := bearerToken(v); t != "" {
			return t
		}
	}
	if cookie == "" {
		return ""
	}
	for _, line := range h["Cookie"] {
		if t := cookieValue(line, cookie); t != "" {
			return t
		}
	}
	return ""
}

// bearerToken returns the credentials of a "Bearer" Authorization value.
func bearerToken(v string) string {
	v = trimOWS(v)
	i := strings.IndexAny(v, " \t")
	if i < 0 || !strings.EqualFold(v[:i], "Bearer") {
		return ""
	}
	return trimOWS(v[i+1:])
}

// cookieValue returns the first non-empty value of the named cookie in one
// Cookie header line. It is lenient like browsers: pairs without "=" and
// empty pairs are skipped rather than failing the whole header.
func cookieValue(line, name string) string {
	for rest := line; rest != ""; {
		var pair string
		pair, rest, _ = strings.Cut(rest, ";")
		k, v, ok := strings.Cut(pair, "=")
		if !ok || trimOWS(k) != name {
			continue
		}
		v = trimOWS(v)
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		if v != "" {
			return v
		}
	}
	return ""
}

// trimOWS trims HTTP optional white space (RFC 9110 §5.6.3).
func trimOWS(s string) string {
	for s != "" && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for s != "" && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// Keys is how tokens are verified: a key lookup plus the algorithms that key
// type allows. The algorithm list is what keeps "none" and HMAC-with-a-
// public-key forgeries out, so a Keys with no Methods verifies nothing. The
// zero Keys has no keys.
type Keys struct {
	Keyfunc jwt.Keyfunc
	Methods []string

	close func()         // stops a JWKS refresh; nil for static keys
	gen   *atomic.Uint64 // bumped when a JWKS is replaced; nil for static keys
}

// generation changes whenever the key set does, so cached outcomes computed
// with older keys are not trusted.
func (k Keys) generation() uint64 {
	if k.gen == nil {
		return 0
	}
	return k.gen.Load()
}

// asymmetricMethods is every public-key algorithm jwt/v5 implements.
func asymmetricMethods() []string {
	return []string{
		"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
		"ES256", "ES384", "ES512", "EdDSA",
	}
}

// HMACKeys verifies HS256, HS384 and HS512 tokens with a shared secret, such
// as Proximity's JWT_SECRET_KEY. An empty secret gives no keys: every HMAC
// signature would otherwise be forgeable.
func HMACKeys(secret []byte) Keys {
	if len(secret) == 0 {
		return Keys{}
	}
	key := slices.Clone(secret) // the caller may reuse its slice
	return Keys{
		Keyfunc: func(t *jwt.Token) (any, error) {
			if _, ok := t.Method.(*jwt.SigningMethodHMAC); !ok {
				return nil, errors.New("not an HMAC algorithm")
			}
			return key, nil
		},
		Methods: []string{"HS256", "HS384", "HS512"},
	}
}

// PEMKeys verifies tokens with the public keys in PEM text: "PUBLIC KEY"
// (PKIX: RSA, ECDSA or Ed25519), "RSA PUBLIC KEY" (PKCS #1) or
// "CERTIFICATE" blocks, several of them for a key rotation. Each key allows
// only its own algorithms: RSA RS256/384/512 and PS256/384/512, ECDSA the
// ES variant of its curve, Ed25519 EdDSA. Private keys are refused: the
// sidecar must never hold the API's signing key. A certificate's dates and
// chain are not checked; it is only a container for the key.
func PEMKeys(pemBytes []byte) (Keys, error) {
	byAlg := make(map[string][]jwt.VerificationKey)
	rest := pemBytes
	for n := 1; ; n++ {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			if n == 1 {
				return Keys{}, errors.New("no PEM block found: want a PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE block")
			}
			break
		}
		pub, err := pemPublicKey(b)
		if err != nil {
			return Keys{}, fmt.Errorf("PEM block %d (%s): %w", n, b.Type, err)
		}
		algs, err := keyMethods(pub)
		if err != nil {
			return Keys{}, fmt.Errorf("PEM block %d (%s): %w", n, b.Type, err)
		}
		for _, a := range algs {
			byAlg[a] = append(byAlg[a], pub)
		}
	}
	keys := make(map[string]any, len(byAlg))
	methods := make([]string, 0, len(byAlg))
	for alg, ks := range byAlg {
		methods = append(methods, alg)
		if len(ks) == 1 {
			keys[alg] = ks[0]
		} else {
			keys[alg] = jwt.VerificationKeySet{Keys: ks}
		}
	}
	slices.Sort(methods)
	return Keys{
		Keyfunc: func(t *jwt.Token) (any, error) {
			if k, ok := keys[t.Method.Alg()]; ok {
				return k, nil
			}
			return nil, errors.New("no key for this algorithm")
		},
		Methods: methods,
	}, nil
}

func pemPublicKey(b *pem.Block) (any, error) {
	switch b.Type {
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse public key: %w", err)
		}
		return k, nil
	case "RSA PUBLIC KEY":
		k, err := x509.ParsePKCS1PublicKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse RSA public key: %w", err)
		}
		return k, nil
	case "CERTIFICATE":
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		return c.PublicKey, nil
	}
	if strings.Contains(b.Type, "PRIVATE KEY") {
		return nil, errors.New("is a private key: give the public key or a certificate, the sidecar must not hold the signing key")
	}
	return nil, errors.New("not a public key or certificate")
}

// keyMethods returns the algorithms a public key may verify. RSA keys under
// 2048 bits are refused (NIST SP 800-131A); jwt/v5 would accept them.
func keyMethods(pub any) ([]string, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < 2048 {
			return nil, fmt.Errorf("RSA key of %d bits is too small, want at least 2048", bits)
		}
		return []string{"PS256", "PS384", "PS512", "RS256", "RS384", "RS512"}, nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return []string{"ES256"}, nil
		case elliptic.P384():
			return []string{"ES384"}, nil
		case elliptic.P521():
			return []string{"ES512"}, nil
		}
		return nil, fmt.Errorf("ECDSA curve %s has no JWT algorithm", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return []string{"EdDSA"}, nil
	}
	return nil, fmt.Errorf("unsupported key type %T", pub)
}

// JWKSOptions tunes JWKSKeys. The zero value is ready to use.
type JWKSOptions struct {
	// Client fetches the JWKS; nil means a client with a 10 s timeout.
	Client *http.Client
	// Refresh is how often the JWKS is fetched again; 0 means
	// DefaultJWKSRefresh.
	Refresh time.Duration
	// OnError receives failed fetches (the first one included); nil drops
	// them. It is how the caller logs without this package holding a logger.
	OnError func(error)
}

// JWKSKeys verifies tokens with the keys of the JSON Web Key Set at jwksURL. The set
// is fetched before JWKSKeys returns and again every o.Refresh in the
// background until ctx ends or the Verifier is closed. A failed first fetch
// goes to o.OnError rather than failing: the sidecar must keep proxying
// while the identity provider is down, and it picks the keys up later.
//
// The request path never fetches. keyfunc's RefreshUnknownKID would make a
// request wait (up to a minute) for a fetch when a token names an unknown
// kid; instead such a token is invalid at once and wakes a background fetch,
// at most one per minute, so a rotated key is usable within a minute at
// worst (seconds, usually) and random kids cannot hammer the identity
// provider. Every fetch also voids the Verifier's cached outcomes, so a
// token refused for lack of its key is checked again, and one whose key
// was withdrawn is refused.
//
// Methods are every asymmetric algorithm rather than those of the keys
// fetched at start, which a rotation can change; a key still verifies only
// its own kind (keyfunc matches a JWK's alg, jwt/v5 its key type). HMAC is
// never allowed, even for "oct" keys in the set, and neither is "none".
func JWKSKeys(ctx context.Context, jwksURL string, o JWKSOptions) (Keys, error) {
	u, err := url.Parse(jwksURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// Not echoed: a malformed URL may still carry a password.
		return Keys{}, errors.New("JWKS URL is not an absolute http(s) URL")
	}
	shown := u.Redacted() // for messages: user:password@ becomes user:xxxxx@
	if o.Client == nil {
		o.Client = &http.Client{Timeout: jwksHTTPTimeout}
	}
	if o.Refresh <= 0 {
		o.Refresh = DefaultJWKSRefresh
	}
	onError := func(err error) {
		if o.OnError != nil {
			o.OnError(fmt.Errorf("fetch JWKS %s: %w", shown, err))
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	gen := new(atomic.Uint64)
	remote, err := jwkset.NewStorageFromHTTP(jwksURL, jwkset.HTTPClientStorageOptions{
		Client:                    o.Client,
		Ctx:                       ctx,
		HTTPTimeout:               jwksHTTPTimeout,
		NoErrorReturnFirstHTTPReq: true,
		RefreshErrorHandler:       func(_ context.Context, err error) { onError(err) },
		RefreshInterval:           o.Refresh,
		Storage:                   &countingStorage{Storage: jwkset.NewMemoryStorage(), gen: gen},
	})
	if err != nil {
		cancel()
		return Keys{}, fmt.Errorf("JWKS %s: %w", shown, err)
	}
	// Two clients share the one remote storage: the request path reads
	// without ever refreshing, the background kicker refreshes on an
	// unknown kid. Its own wait (jwksKickInterval) is the rate limit.
	reader, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{HTTPURLs: map[string]jwkset.Storage{jwksURL: remote}})
	if err != nil {
		cancel()
		return Keys{}, fmt.Errorf("JWKS %s: %w", shown, err)
	}
	refresher, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs:          map[string]jwkset.Storage{jwksURL: remote},
		RefreshUnknownKID: rate.NewLimiter(rate.Inf, 1),
	})
	if err != nil {
		cancel()
		return Keys{}, fmt.Errorf("JWKS %s: %w", shown, err)
	}
	kf, err := keyfunc.New(keyfunc.Options{
		Ctx:     ctx,
		Storage: reader,
		// Keys published for encryption must not verify signatures; most
		// sets leave "use" out.
		UseWhitelist: []jwkset.USE{jwkset.UseSig, ""},
	})
	if err != nil {
		cancel()
		return Keys{}, fmt.Errorf("JWKS %s: %w", shown, err)
	}

	kicks := make(chan string, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case kid := <-kicks:
				fctx, fcancel := context.WithTimeout(ctx, jwksHTTPTimeout)
				_, _ = refresher.KeyRead(fctx, kid) // a failed fetch went to onError; still unknown is normal
				fcancel()
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(jwksKickInterval):
			}
		}
	}()
	kick := func(t *jwt.Token) {
		kid, _ := t.Header["kid"].(string)
		select {
		case kicks <- kid:
		default: // a fetch is pending or rate-limited already
		}
	}
	return Keys{
		Keyfunc: func(t *jwt.Token) (any, error) {
			key, err := kf.Keyfunc(t)
			if errors.Is(err, jwkset.ErrKeyNotFound) {
				kick(t)
			} else if ks, ok := key.(jwt.VerificationKeySet); ok && len(ks.Keys) == 0 {
				kick(t) // no kid and no keys: the first fetch failed
			}
			return key, err
		},
		Methods: asymmetricMethods(),
		close: func() {
			cancel()
			<-done
		},
		gen: gen,
	}, nil
}

// countingStorage bumps gen whenever a fetch replaces the key set.
type countingStorage struct {
	jwkset.Storage
	gen *atomic.Uint64
}

func (s *countingStorage) KeyReplaceAll(ctx context.Context, given []jwkset.JWK) error {
	err := s.Storage.KeyReplaceAll(ctx, given)
	s.gen.Add(1)
	return err
}

// Claims maps user fields to claim names, tried in order; the first claim
// that is a non-empty string or a number wins. A nil list means the default
// of DefaultClaims; an empty non-nil list maps nothing.
type Claims struct {
	ID, Username, Email, Role []string
}

// DefaultClaims fits Proximity's FastAPI tokens ({sub, role, user_id}) and
// the common OIDC names.
func DefaultClaims() Claims {
	return Claims{
		ID:       []string{"user_id", "sub"},
		Username: []string{"username", "sub"},
		Email:    []string{"email"},
		Role:     []string{"role"},
	}
}

// withDefaults fills nil lists from DefaultClaims.
func (m Claims) withDefaults() Claims {
	d := DefaultClaims()
	if m.ID == nil {
		m.ID = d.ID
	}
	if m.Username == nil {
		m.Username = d.Username
	}
	if m.Email == nil {
		m.Email = d.Email
	}
	if m.Role == nil {
		m.Role = d.Role
	}
	return m
}

// UserFromClaims maps decoded claims to a User. Strings are taken as they
// are; numbers (float64 or json.Number) become decimal text without exponent
// or ".0", so user_id 42 is "42" and 1e21 is "1000000000000000000000";
// json.Number integers keep every digit beyond 2^53. Booleans, objects and
// arrays are never a user field. Verified and Expires are left to the
// caller, which knows how the claims were obtained.
func UserFromClaims(claims map[string]any, m Claims) User {
	m = m.withDefaults()
	return User{
		ID:       firstClaim(claims, m.ID),
		Username: firstClaim(claims, m.Username),
		Email:    firstClaim(claims, m.Email),
		Role:     firstClaim(claims, m.Role),
	}
}

func firstClaim(claims map[string]any, names []string) string {
	for _, n := range names {
		if s := claimString(claims[n]); s != "" {
			return s
		}
	}
	return ""
}

func claimString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case float64:
		return formatNumber(v)
	case json.Number:
		s := string(v)
		if isInteger(s) {
			return s
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil { // out of range, e.g. 1e400: keep what was sent
			return s
		}
		return formatNumber(f)
	}
	return ""
}

// formatNumber writes a JSON number in plain decimal. JSON has no NaN or
// infinity, but a caller's map may.
func formatNumber(f float64) string {
	switch {
	case math.IsNaN(f) || math.IsInf(f, 0):
		return ""
	case f == 0:
		return "0" // not "-0"
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

// isInteger reports whether s is an optional minus and digits only.
func isInteger(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// VerifierOptions configures NewVerifier.
type VerifierOptions struct {
	// Keys verify signatures. With Verify on and no keys (zero Keys, or no
	// Methods), every present token is TokenInvalid: a token that cannot be
	// checked never becomes a user.
	Keys Keys
	// Verify false decodes tokens without checking the signature at all
	// (the keys are ignored); exp and nbf are still checked and "none"
	// is still refused, and users come out with Verified false.
	Verify bool
	// Claims maps claims to user fields; nil lists take DefaultClaims.
	Claims Claims
	// Leeway is the clock skew allowed on exp and nbf: 0 means
	// DefaultLeeway, a negative value none at all.
	Leeway time.Duration
	// CacheSize bounds the cached tokens; 0 or less means DefaultCacheSize.
	// One eighth of it holds bad tokens, so a flood of distinct garbage
	// cannot evict the good ones. (A size under 2 still caches one good and
	// one bad token.)
	CacheSize int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verifier turns tokens into users. A bounded cache makes a hot token cost
// one hash and a map lookup. It is safe for concurrent use.
type Verifier struct {
	keys      Keys
	noKeys    bool
	verify    bool
	claims    Claims
	leeway    time.Duration
	now       func() time.Time
	parser    *jwt.Parser
	validator *jwt.Validator

	// The cache is keyed by 128 bits of maphash under per-Verifier random
	// seeds, never by the token itself. sha256 would resist collisions
	// against anyone, but costs ~140 ns for a 180-byte token on the dev box
	// against ~9 ns per maphash (two are taken). maphash's seeds are secret
	// and random, so nobody can aim a collision, and by chance a lookup
	// meets one of 10 000 entries with odds of about 2^-115. The worst a
	// collision could do is name the wrong user in Sentry: the API, not
	// the sidecar, decides access.
	seed0, seed1 maphash.Seed

	shards    []tokenShard // len is a power of two, indexed by the key's low bits
	closeOnce sync.Once
}

// tokenShard is one lock's share of the cache. With a single mutex,
// BenchmarkVerifierHitParallel spent 30% of its CPU spinning in
// Mutex.lockSlow (97 ns/op on 2 cores); 16 shards brought that to 12% and
// 74 ns/op. Each shard is an exact LRU, so the whole is a close
// approximation of one.
type tokenShard struct {
	mu        sync.Mutex
	good, bad tokenCache
	_         [64]byte // keeps the next shard's mutex off this cache line
}

// Caches under 2*minShardSize entries stay one exact LRU under one lock.
const (
	maxShards    = 16
	minShardSize = 256
)

func (v *Verifier) shard(k tokenKey) *tokenShard {
	return &v.shards[k.a&uint64(len(v.shards)-1)]
}

// NewVerifier returns a Verifier; Close it to stop a JWKS refresh.
func NewVerifier(o VerifierOptions) *Verifier {
	v := &Verifier{
		keys:   o.Keys,
		verify: o.Verify,
		claims: o.Claims.withDefaults(),
		leeway: o.Leeway,
		now:    o.Now,
		seed0:  maphash.MakeSeed(),
		seed1:  maphash.MakeSeed(),
	}
	switch {
	case v.leeway == 0:
		v.leeway = DefaultLeeway
	case v.leeway < 0:
		v.leeway = 0
	}
	if v.now == nil {
		v.now = time.Now
	}
	methods := slices.DeleteFunc(slices.Clone(o.Keys.Methods), func(m string) bool { return strings.EqualFold(m, "none") })
	v.noKeys = o.Keys.Keyfunc == nil || len(methods) == 0
	v.parser = jwt.NewParser(
		jwt.WithValidMethods(methods),
		jwt.WithLeeway(v.leeway),
		jwt.WithTimeFunc(v.now),
		jwt.WithJSONNumber(), // ids beyond 2^53 keep their digits
	)
	v.validator = jwt.NewValidator(jwt.WithLeeway(v.leeway), jwt.WithTimeFunc(v.now))
	size := o.CacheSize
	if size <= 0 {
		size = DefaultCacheSize
	}
	n := 1
	for n < maxShards && size/(2*n) >= minShardSize {
		n *= 2
	}
	v.shards = make([]tokenShard, n)
	per := size / n
	badSize := max(per/8, 1)
	for i := range v.shards {
		v.shards[i].good.init(max(per-badSize, 1))
		v.shards[i].bad.init(badSize)
	}
	return v
}

// Close stops the background refresh of JWKS keys, if any. The Verifier
// still answers from the keys it has.
func (v *Verifier) Close() {
	v.closeOnce.Do(func() {
		if v.keys.close != nil {
			v.keys.close()
		}
	})
}

// User returns the user a token names and what became of the token. Only
// TokenVerified and TokenUnverified come with a user; the user's fields may
// still be empty when no mapped claim is present.
func (v *Verifier) User(token string) (User, TokenOutcome) {
	if token == "" {
		return User{}, TokenAbsent
	}
	if len(token) > MaxTokenSize || (v.verify && v.noKeys) {
		return User{}, TokenInvalid
	}
	k := tokenKey{maphash.String(v.seed0, token), maphash.String(v.seed1, token)}
	now := v.now()
	gen := v.keys.generation()
	sh := v.shard(k)
	sh.mu.Lock()
	e := sh.good.get(k, now.UnixNano(), gen)
	if e == nil {
		e = sh.bad.get(k, now.UnixNano(), gen)
	}
	if e != nil {
		u, out := e.user, e.outcome
		sh.mu.Unlock()
		return u, out
	}
	sh.mu.Unlock()

	u, out, until := v.decode(token, now)
	if until.After(now) {
		e := &tokenEntry{key: k, user: u, outcome: out, until: until.UnixNano(), gen: gen}
		sh.mu.Lock()
		if out == TokenVerified || out == TokenUnverified {
			sh.good.put(e)
		} else {
			sh.bad.put(e)
		}
		sh.mu.Unlock()
	}
	return u, out
}

// errAlgNone refuses unsigned tokens even when signatures are not checked:
// "none" is never an accepted algorithm (DESIGN capability 2).
var errAlgNone = errors.New(`alg "none"`)

// decode checks a token and says until when its outcome may be cached; a
// zero time means not at all.
func (v *Verifier) decode(token string, now time.Time) (User, TokenOutcome, time.Time) {
	if !jwtShaped(token) {
		return User{}, TokenInvalid, time.Time{} // cheaper to refuse again than to cache
	}
	claims := jwt.MapClaims{}
	var err error
	if v.verify {
		_, err = v.parser.ParseWithClaims(token, claims, v.keys.Keyfunc)
	} else {
		var t *jwt.Token
		if t, _, err = v.parser.ParseUnverified(token, claims); err == nil {
			if t.Method.Alg() == "none" {
				err = errAlgNone
			} else {
				err = v.validator.Validate(claims)
			}
		}
	}
	bad := now.Add(negativeTTL)
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrTokenExpired):
		return User{}, TokenExpired, bad
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		// Becomes valid at nbf - leeway; forget the refusal by then.
		if nbf, _ := claims.GetNotBefore(); nbf != nil {
			bad = minTime(bad, nbf.Add(-v.leeway))
		}
		return User{}, TokenInvalid, bad
	default:
		return User{}, TokenInvalid, bad
	}

	u := UserFromClaims(claims, v.claims)
	u.Verified = v.verify
	until := now.Add(positiveTTL)
	if exp, _ := claims.GetExpirationTime(); exp != nil {
		u.Expires = exp.UTC()
		until = minTime(until, exp.Add(v.leeway))
	}
	if v.verify {
		return u, TokenVerified, until
	}
	return u, TokenUnverified, until
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// jwtShaped reports whether s is three base64url segments, the only form
// jwt/v5 accepts (unpadded, RFC 7515 §7.1). Anything else is refused before
// any decoding and is not worth a cache tokenEntry.
func jwtShaped(s string) bool {
	dots := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.':
			dots++
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return dots == 2
}

type tokenKey struct{ a, b uint64 }

type tokenEntry struct {
	key        tokenKey
	user       User
	outcome    TokenOutcome
	until      int64 // unix nanoseconds
	gen        uint64
	prev, next *tokenEntry
}

// tokenCache is a bounded map with least-recently-used eviction, kept as an
// intrusive list so that a hit allocates nothing. The caller holds the
// shard's lock.
type tokenCache struct {
	max   int
	items map[tokenKey]*tokenEntry
	root  tokenEntry // sentinel: root.next is the most recent
}

func (c *tokenCache) init(size int) {
	c.max = size
	c.items = make(map[tokenKey]*tokenEntry)
	c.root.next, c.root.prev = &c.root, &c.root
}

// get returns the live tokenEntry for k, dropping it if it expired or was
// computed with other keys.
func (c *tokenCache) get(k tokenKey, now int64, gen uint64) *tokenEntry {
	e := c.items[k]
	if e == nil {
		return nil
	}
	if now >= e.until || e.gen != gen {
		c.remove(e)
		return nil
	}
	c.unlink(e)
	c.pushFront(e)
	return e
}

func (c *tokenCache) put(e *tokenEntry) {
	if old := c.items[e.key]; old != nil {
		c.remove(old)
	}
	c.items[e.key] = e
	c.pushFront(e)
	for len(c.items) > c.max {
		c.remove(c.root.prev)
	}
}

func (c *tokenCache) remove(e *tokenEntry) {
	c.unlink(e)
	delete(c.items, e.key)
}

func (c *tokenCache) unlink(e *tokenEntry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (c *tokenCache) pushFront(e *tokenEntry) {
	e.prev, e.next = &c.root, c.root.next
	c.root.next.prev = e
	c.root.next = e
}

func (c *tokenCache) len() int { return len(c.items) }

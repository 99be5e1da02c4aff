package demo

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// user is a row of Proximity's users table.
type user struct {
	id        int
	username  string
	password  string
	email     *string
	role      string
	createdAt string
}

// demoUsers are the accounts the demo knows. Passwords are in the clear:
// they are published in the docs of the demo command.
func demoUsers() []user {
	adminEmail := "admin@example.com"
	return []user{
		{id: 1, username: "admin", password: "admin123", email: &adminEmail, role: "admin", createdAt: "2025-10-03T09:00:00"},
		{id: 2, username: "demo", password: "demo1234", email: nil, role: "user", createdAt: "2025-10-05T14:30:00"},
	}
}

// userResponse is Proximity's UserResponse.
type userResponse struct {
	ID        int     `json:"id"`
	Username  string  `json:"username"`
	Email     *string `json:"email"`
	Role      string  `json:"role"`
	IsActive  bool    `json:"is_active"`
	CreatedAt string  `json:"created_at"`
}

// tokenResponse is Proximity's Token.
type tokenResponse struct {
	AccessToken string       `json:"access_token"`
	TokenType   string       `json:"token_type"`
	ExpiresIn   int          `json:"expires_in"`
	User        userResponse `json:"user"`
}

// tokenClaims is the payload Proximity v1 signs. The field order is
// python-jose's: the dict the endpoint builds, then exp and iat.
type tokenClaims struct {
	Sub    string `json:"sub"`
	Role   string `json:"role"`
	UserID int    `json:"user_id"`
	Exp    int64  `json:"exp"`
	Iat    int64  `json:"iat"`
}

var _ jwt.Claims = tokenClaims{}

// GetExpirationTime implements jwt.Claims.
func (c tokenClaims) GetExpirationTime() (*jwt.NumericDate, error) {
	return jwt.NewNumericDate(time.Unix(c.Exp, 0)), nil
}

// GetIssuedAt implements jwt.Claims.
func (c tokenClaims) GetIssuedAt() (*jwt.NumericDate, error) {
	return jwt.NewNumericDate(time.Unix(c.Iat, 0)), nil
}

// GetNotBefore implements jwt.Claims; Proximity sets no nbf.
func (c tokenClaims) GetNotBefore() (*jwt.NumericDate, error) { return nil, nil }

// GetIssuer implements jwt.Claims; Proximity sets no iss.
func (c tokenClaims) GetIssuer() (string, error) { return "", nil }

// GetSubject implements jwt.Claims.
func (c tokenClaims) GetSubject() (string, error) { return c.Sub, nil }

// GetAudience implements jwt.Claims; Proximity sets no aud.
func (c tokenClaims) GetAudience() (jwt.ClaimStrings, error) { return nil, nil }

// Token returns a signed token for the demo user (for tests): claims
// {"sub": username, "role": role, "user_id": userID, "iat", "exp": iat+ttl},
// HS256, as Proximity v1 issues them. An empty secret means DefaultSecret,
// as in Options.
func Token(secret, username, role string, userID int, iat time.Time, ttl time.Duration) (string, error) {
	if secret == "" {
		secret = DefaultSecret
	}
	c := tokenClaims{
		Sub:    username,
		Role:   role,
		UserID: userID,
		Exp:    iat.Unix() + int64(ttl/time.Second),
		Iat:    iat.Unix(),
	}
	signed, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(secret))
	if err != nil {
		return "", fmt.Errorf("sign demo token for %q: %w", username, err)
	}
	return signed, nil
}

// authenticate does what Proximity's get_current_user does with a request.
// It returns the claims, or the 401 detail to answer with.
func (s *server) authenticate(r *http.Request) (tokenClaims, string) {
	// FastAPI's HTTPBearer(auto_error=False): split at the first space; an
	// empty part or another scheme counts as no credentials at all.
	scheme, raw, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if scheme == "" || raw == "" || !strings.EqualFold(scheme, "bearer") {
		return tokenClaims{}, "Authentication required"
	}
	c, err := s.verify(raw)
	if err != nil {
		return tokenClaims{}, "Could not validate credentials"
	}
	return c, ""
}

// verify checks a token as Proximity's AuthService.verify_token does:
// HS256 only, exp checked when present, and sub, role and user_id required.
func (s *server) verify(raw string) (tokenClaims, error) {
	mc := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(raw, mc, func(*jwt.Token) (any, error) { return s.key, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithTimeFunc(s.now),
		jwt.WithJSONNumber(),
	)
	if err != nil {
		return tokenClaims{}, fmt.Errorf("parse token: %w", err)
	}
	sub, subOK := mc["sub"].(string)
	role, roleOK := mc["role"].(string)
	id, idErr := claimInt(mc["user_id"])
	if !subOK || !roleOK || idErr != nil {
		return tokenClaims{}, fmt.Errorf("token lacks sub, role or user_id: %v", mc)
	}
	c := tokenClaims{Sub: sub, Role: role, UserID: id}
	if n, isNum := mc["exp"].(json.Number); isNum {
		c.Exp, _ = n.Int64()
	}
	if n, isNum := mc["iat"].(json.Number); isNum {
		c.Iat, _ = n.Int64()
	}
	return c, nil
}

// claimInt reads user_id as pydantic's lax int does: an integral number or
// a string of digits.
func claimInt(v any) (int, error) {
	switch x := v.(type) {
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return int(n), nil
		}
		f, err := x.Float64()
		if err != nil || f != math.Trunc(f) || math.Abs(f) > math.MaxInt32 {
			return 0, fmt.Errorf("user_id %s is not an integer", x)
		}
		return int(f), nil
	case string:
		n, err := strconv.Atoi(strings.TrimSpace(x))
		if err != nil {
			return 0, fmt.Errorf("user_id %q: %w", x, err)
		}
		return n, nil
	}
	return 0, fmt.Errorf("user_id has type %T", v)
}

// issue signs a fresh token for u and builds Proximity's Token response.
func (s *server) issue(u user) (tokenResponse, error) {
	tok, err := Token(string(s.key), u.username, u.role, u.id, s.now(), tokenTTL)
	if err != nil {
		return tokenResponse{}, err
	}
	return tokenResponse{
		AccessToken: tok,
		TokenType:   "bearer",
		// Hard-coded in Proximity, whatever ACCESS_TOKEN_EXPIRE_MINUTES says.
		ExpiresIn: 3600,
		User:      u.response(),
	}, nil
}

func (u user) response() userResponse {
	return userResponse{ID: u.id, Username: u.username, Email: u.email, Role: u.role, IsActive: true, CreatedAt: u.createdAt}
}

// userFor finds the account a token names, or makes one up from its claims
// so that tokens minted by tests for other users still work.
func (s *server) userFor(c tokenClaims) user {
	for _, u := range s.users {
		if u.id == c.UserID {
			return u
		}
	}
	return user{id: c.UserID, username: c.Sub, role: c.Role, createdAt: "2025-10-03T09:00:00"}
}

// login is POST /api/v1/auth/login, body UserLogin {username, password}.
func (s *server) login(w http.ResponseWriter, r *http.Request, _ call) {
	body, ok := readModel(w, r)
	if !ok {
		return
	}
	m := model{body: body}
	username, _ := m.str("username")
	password, _ := m.str("password")
	if m.errs != nil {
		writeValidation(w, m.errs)
		return
	}
	for _, u := range s.users {
		if u.username == username && subtle.ConstantTimeCompare([]byte(u.password), []byte(password)) == 1 {
			resp, err := s.issue(u)
			if err != nil {
				writeDetail(w, http.StatusInternalServerError, err.Error())
				return
			}
			writeJSON(w, http.StatusOK, resp)
			return
		}
	}
	w.Header().Set("WWW-Authenticate", "Bearer")
	writeDetail(w, http.StatusUnauthorized, "Incorrect username or password")
}

// logout is POST /api/v1/auth/logout. Proximity revokes nothing.
func (s *server) logout(w http.ResponseWriter, _ *http.Request, _ call) {
	writeJSON(w, http.StatusOK, success("Logged out successfully. Please discard your token."))
}

// me is GET /api/v1/auth/me.
func (s *server) me(w http.ResponseWriter, _ *http.Request, c call) {
	writeJSON(w, http.StatusOK, s.userFor(c.claims).response())
}

// refresh is POST /api/v1/auth/refresh: a still-valid token buys a new one.
func (s *server) refresh(w http.ResponseWriter, _ *http.Request, c call) {
	u := s.userFor(c.claims)
	resp, err := s.issue(u)
	if err != nil {
		writeDetail(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

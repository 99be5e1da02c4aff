package sentrytest

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// authError is a request Relay would refuse before looking at the envelope
// (401) or whose envelope contradicts the request (400).
type authError struct {
	status int
	detail string
}

func (e *authError) Error() string { return e.detail }

// requestKey finds the public key a request authenticates with, the way
// Relay's request_meta.rs does (tunnel.md §A5): the X-Sentry-Auth or
// Authorization header ("Sentry sentry_key=..., sentry_version=7, ..."), or
// the sentry_key query parameter; two of these at once is an error. With
// none, the envelope header's dsn authenticates ("self authentication",
// Relay >= 21.6.0). A dsn that names another key or project is a 400.
func requestKey(r *http.Request, project string, envHeader map[string]any) (string, error) {
	var keys []string
	if v := authHeader(r.Header); v != "" {
		k, err := parseAuthHeader(v)
		if err != nil {
			return "", err
		}
		keys = append(keys, k)
	}
	if q := r.URL.Query(); q.Has("sentry_key") {
		keys = append(keys, q.Get("sentry_key"))
	}
	if len(keys) > 1 {
		return "", &authError{http.StatusUnauthorized, "multiple authorization payloads detected"}
	}

	dsnKey, dsnProject, hasDSN, err := envelopeDSN(envHeader)
	if err != nil {
		return "", &authError{http.StatusBadRequest, "invalid envelope header: " + err.Error()}
	}
	if hasDSN {
		if dsnProject != project {
			return "", &authError{http.StatusBadRequest, "project id header mismatch between envelope and request"}
		}
		if len(keys) == 1 && keys[0] != dsnKey {
			return "", &authError{http.StatusBadRequest, "public key header mismatch between envelope and request"}
		}
		return dsnKey, nil
	}
	if len(keys) == 0 {
		return "", &authError{http.StatusUnauthorized, "missing authorization information"}
	}
	if keys[0] == "" {
		return "", &authError{http.StatusUnauthorized, "missing public key"}
	}
	return keys[0], nil
}

// authHeader returns the Sentry auth header; Relay reads X-Sentry-Auth and
// then Authorization, and only a value starting with "sentry " counts.
func authHeader(h http.Header) string {
	for _, name := range []string{"X-Sentry-Auth", "Authorization"} {
		v := strings.TrimSpace(h.Get(name))
		if len(v) > 7 && strings.EqualFold(v[:7], "sentry ") {
			return v[7:]
		}
	}
	return ""
}

func parseAuthHeader(v string) (string, error) {
	var key string
	for part := range strings.SplitSeq(v, ",") {
		name, value, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		if strings.TrimSpace(name) == "sentry_key" {
			key = strings.TrimSpace(value)
		}
	}
	if key == "" {
		return "", &authError{http.StatusUnauthorized, "missing public key"}
	}
	return key, nil
}

// envelopeDSN reads the public key and project id from the envelope
// header's dsn: {scheme}://{key}[:{secret}]@{host}[:{port}][/{path}]/{project}.
func envelopeDSN(header map[string]any) (key, project string, ok bool, err error) {
	v, present := header["dsn"]
	if !present || v == nil {
		return "", "", false, nil
	}
	s, isString := v.(string)
	if !isString {
		return "", "", false, errors.New("dsn is not a string")
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", "", false, errors.New("dsn is not a URL")
	}
	if u.User == nil || u.User.Username() == "" {
		return "", "", false, errors.New("dsn has no public key")
	}
	path := strings.TrimSuffix(u.Path, "/")
	project = path[strings.LastIndexByte(path, '/')+1:]
	if _, err := strconv.ParseUint(project, 10, 64); err != nil {
		return "", "", false, errors.New("dsn has no numeric project id")
	}
	return u.User.Username(), project, true, nil
}

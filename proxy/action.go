package proxy

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"strings"

	"github.com/sentry-sidecar/sentry-sidecar/enrich"
)

// Action names requests to a route as something a user did ("app.deploy"),
// with the request JSON fields worth recording.
type Action struct {
	Method, Route, Name string
	// Fields are allowed request JSON fields; a field on the deny-list is
	// never recorded whatever this says.
	Fields []string
}

// maxActionPeek bounds the request body read for an action's fields: the
// upstream gets the same bytes, streamed, and a larger body is not parsed.
const maxActionPeek = 8 << 10

// actions finds a request's action by method and route template, without
// allocating.
type actions map[string]map[string]*Action

func newActions(list []Action, routes *enrich.Router) actions {
	a := actions{}
	for i := range list {
		act := &list[i]
		route := act.Route
		if routes != nil {
			// Template the action's own route like a request's, so
			// "/apps/{id}" meets the configured "/apps/{app_id}".
			route = routes.Template(route)
		}
		if a[act.Method] == nil {
			a[act.Method] = map[string]*Action{}
		}
		if _, dup := a[act.Method][route]; !dup {
			a[act.Method][route] = act
		}
	}
	return a
}

func (a actions) match(method, route string) *Action { return a[method][route] }

// peekFields reads at most maxActionPeek bytes of a JSON request body and
// returns the action's allowed fields from it, with a body that replays
// those bytes and streams the rest. Scalars only; strings are scrubbed and
// shortened.
func peekFields(r *http.Request, act *Action) (map[string]any, io.ReadCloser) {
	body := r.Body
	if len(act.Fields) == 0 || body == nil || body == http.NoBody || r.ContentLength > maxActionPeek {
		return nil, body
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" && !strings.HasSuffix(mt, "+json") {
		return nil, body
	}
	buf, err := io.ReadAll(io.LimitReader(body, maxActionPeek+1))
	replay := &replayBody{Reader: io.MultiReader(bytes.NewReader(buf), body), Closer: body}
	if err != nil || len(buf) > maxActionPeek {
		return nil, replay
	}
	var doc map[string]any
	if json.Unmarshal(buf, &doc) != nil {
		return nil, replay
	}
	fields := map[string]any{}
	for _, f := range act.Fields {
		if enrich.SensitiveKey(f) {
			continue
		}
		switch v := doc[f].(type) {
		case string:
			s := enrich.ScrubText(v)
			if len(s) > 200 {
				s = s[:200] + "…"
			}
			fields[f] = s
		case float64, bool:
			fields[f] = v
		}
	}
	return fields, replay
}

type replayBody struct {
	io.Reader
	io.Closer
}

// clientClass is the coarse origin of a client for metric labels:
// loopback, private or public. Never the address: that would be a series
// per client.
func clientClass(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return "unknown"
	case a.IsLoopback():
		return "loopback"
	case a.IsPrivate(), a.IsLinkLocalUnicast():
		return "private"
	}
	return "public"
}

// loginUser finds who a successful action logged in: a token in the
// response's JSON (access_token, token, id_token) that the verifier
// accepts. The login request itself carries no token, so without this its
// breadcrumb would be anonymous and missing from the user's trail.
func loginUser(body []byte, v *enrich.Verifier) (enrich.User, bool) {
	if v == nil || len(body) == 0 {
		return enrich.User{}, false
	}
	var doc map[string]any
	if json.Unmarshal(body, &doc) != nil {
		return enrich.User{}, false
	}
	for _, k := range []string{"access_token", "token", "id_token"} {
		if tok, ok := doc[k].(string); ok {
			if u, outcome := v.User(tok); outcome == enrich.TokenVerified || outcome == enrich.TokenUnverified {
				return u, true
			}
		}
	}
	return enrich.User{}, false
}

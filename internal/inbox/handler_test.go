package inbox

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// serve asserts nothing, so goroutines other than the test's may call it.
func serve(h http.Handler, method, target string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec
}

type listBody struct {
	Events            []json.RawMessage `json:"events"`
	ErrorsCount       int               `json:"errors_count"`
	TransactionsCount int               `json:"transactions_count"`
	Dropped           int               `json:"dropped"`
}

func mustList(tb testing.TB, h http.Handler, target string) listBody {
	tb.Helper()
	rec := serve(h, http.MethodGet, target)
	require.Equal(tb, http.StatusOK, rec.Code, rec.Body.String())
	require.Equal(tb, "application/json", rec.Header().Get("Content-Type"))
	var b listBody
	require.NoError(tb, json.Unmarshal(rec.Body.Bytes(), &b))
	return b
}

// mustFilled returns an inbox holding three errors (ids 1..3, newest 3) and
// two transactions, captured through a real client.
func mustFilled(tb testing.TB) *Inbox {
	tb.Helper()
	in := mustInbox(tb, Options{})
	client := mustClient(tb, in)
	for n := 1; n <= 3; n++ {
		client.CaptureEvent(deployFailure(id(n)), nil, nil)
	}
	client.CaptureEvent(transaction(id(10), "GET /api/v1/apps", "200", 38e6), nil, nil)
	client.CaptureEvent(transaction(id(11), "POST /api/v1/apps/deploy", "500", 30e9), nil, nil)
	return in
}

func TestListSummaries(t *testing.T) {
	t.Parallel()
	h := mustFilled(t).Handler()
	for _, target := range []string{"/inbox", "/inbox/"} {
		t.Run(target, func(t *testing.T) {
			t.Parallel()
			b := mustList(t, h, target)
			assert.Equal(t, 3, b.ErrorsCount)
			assert.Equal(t, 2, b.TransactionsCount)
			assert.Equal(t, 0, b.Dropped)
			require.Len(t, b.Events, 3)
			var s Summary
			require.NoError(t, json.Unmarshal(b.Events[0], &s))
			assert.Equal(t, id(3), s.EventID, "newest first")
			assert.Equal(t, "Deployment failed: LXC creation timed out on node pve", s.Message)
			assert.Equal(t, &User{ID: "2", Username: "demo", Role: "user", Verified: new(true)}, s.User)
			assert.Equal(t, []string{"/api/v1/apps/deploy", "POST", "500", "req-7f3a"}, []string{s.Route, s.Method, s.Status, s.RequestID})
			assert.Equal(t, 3, s.Breadcrumbs)
			var m map[string]any
			require.NoError(t, json.Unmarshal(b.Events[0], &m))
			assert.NotContains(t, m, "contexts", "a summary, not the event")
		})
	}
}

func TestListQueries(t *testing.T) {
	t.Parallel()
	h := mustFilled(t).Handler()
	tests := []struct {
		name    string
		target  string
		wantIDs []string
	}{
		{"limit", "/inbox?limit=2", []string{id(3), id(2)}},
		{"limit above size", "/inbox?limit=1000", []string{id(3), id(2), id(1)}},
		{"full", "/inbox?full=1&limit=1", []string{id(3)}},
		{"transactions", "/inbox?type=transaction", []string{id(11), id(10)}},
		{"errors by name", "/inbox?type=error&limit=1", []string{id(3)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := mustList(t, h, tc.target)
			var ids []string
			for _, raw := range b.Events {
				ids = append(ids, summarize(raw).EventID)
			}
			assert.Equal(t, tc.wantIDs, ids)
		})
	}

	t.Run("full events are the events", func(t *testing.T) {
		t.Parallel()
		b := mustList(t, h, "/inbox?full=1")
		var m map[string]any
		require.NoError(t, json.Unmarshal(b.Events[0], &m))
		assert.Contains(t, m, "contexts")
		assert.Contains(t, m, "breadcrumbs")
		assert.Equal(t, "t", m["release"])
	})
}

func TestListRejectsBadQueries(t *testing.T) {
	t.Parallel()
	h := mustInbox(t, Options{}).Handler()
	tests := []struct{ target, want string }{
		{"/inbox?limit=0", `limit: want a positive integer, got "0"`},
		{"/inbox?limit=ten", `limit: want a positive integer, got "ten"`},
		{"/inbox?full=yes", "full: want 1 or 0"},
		{"/inbox?type=log", "type: want error or transaction"},
		{"/inbox.html?limit=-1", `limit: want a positive integer, got "-1"`},
	}
	for _, tc := range tests {
		t.Run(tc.target, func(t *testing.T) {
			t.Parallel()
			rec := serve(h, http.MethodGet, tc.target)
			assert.Equal(t, http.StatusBadRequest, rec.Code)
			assert.JSONEq(t, `{"error":`+mustJSON(t, tc.want)+`}`, rec.Body.String())
		})
	}
}

func mustJSON(tb testing.TB, v any) string {
	tb.Helper()
	b, err := json.Marshal(v)
	require.NoError(tb, err)
	return string(b)
}

func TestEventByID(t *testing.T) {
	t.Parallel()
	in := mustFilled(t)
	h := in.Handler()
	for _, want := range []string{id(2), id(11)} {
		rec := serve(h, http.MethodGet, "/inbox/"+want)
		require.Equal(t, http.StatusOK, rec.Code)
		assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
		assert.JSONEq(t, string(in.find(want).raw), rec.Body.String(), "the full event as sent")
	}

	rec := serve(h, http.MethodGet, "/inbox/"+id(404))
	assert.Equal(t, http.StatusNotFound, rec.Code)
	assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	assert.JSONEq(t, `{"error":"no such event in the inbox","event_id":"`+id(404)+`"}`, rec.Body.String())
}

func TestEventByIDNamesOmittedMembers(t *testing.T) {
	t.Parallel()
	in := mustInbox(t, Options{MaxEventBytes: 2048})
	ev := deployFailure(id(1))
	ev.Contexts["response"]["body"] = strings.Repeat("x", 4000)
	in.SendEvent(ev)
	rec := serve(in.Handler(), http.MethodGet, "/inbox/"+id(1))
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.True(t, json.Valid(rec.Body.Bytes()))
	assert.Equal(t, "contexts", rec.Header().Get("Inbox-Omitted"))
}

func TestClear(t *testing.T) {
	t.Parallel()
	in := mustFilled(t)
	h := in.Handler()
	rec := serve(h, http.MethodDelete, "/inbox")
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, 0, in.Len())
	b := mustList(t, h, "/inbox")
	assert.Empty(t, b.Events)
	assert.NotNil(t, b.Events, `"events": [] rather than null`)
	assert.Equal(t, 0, b.TransactionsCount)
}

func TestEveryAnswerIsNoStore(t *testing.T) {
	t.Parallel()
	h := mustFilled(t).Handler()
	tests := []struct {
		method, target string
		status         int
	}{
		{http.MethodGet, "/inbox", 200},
		{http.MethodHead, "/inbox", 200},
		{http.MethodGet, "/inbox/" + id(1), 200},
		{http.MethodGet, "/inbox/" + id(404), 404},
		{http.MethodGet, "/inbox.html", 200},
		{http.MethodGet, "/inbox?limit=x", 400},
		{http.MethodPost, "/inbox", 405},
		{http.MethodGet, "/inbox/a/b", 404},
		{http.MethodDelete, "/inbox", 200},
	}
	// In order, not in parallel: the DELETE comes last.
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			rec := serve(h, tc.method, tc.target)
			assert.Equal(t, tc.status, rec.Code)
			assert.Equal(t, "no-store", rec.Header().Get("Cache-Control"))
			assert.Equal(t, "nosniff", rec.Header().Get("X-Content-Type-Options"))
		})
	}
}

func TestHandlerThroughRealServer(t *testing.T) {
	t.Parallel()
	in := mustFilled(t)
	// Mounted as the admin listener will mount it.
	mux := http.NewServeMux()
	for _, p := range []string{"/inbox", "/inbox/", "/inbox.html"} {
		mux.Handle(p, in.Handler())
	}
	srv := httptest.NewServer(mux) // httptest listens on 127.0.0.1
	defer srv.Close()
	for _, p := range []string{"/inbox", "/inbox/", "/inbox/" + id(1), "/inbox.html"} {
		res, err := srv.Client().Get(srv.URL + p)
		require.NoError(t, err)
		_ = res.Body.Close()
		assert.Equal(t, http.StatusOK, res.StatusCode, p)
	}
}

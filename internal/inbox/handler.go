package inbox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// Default numbers of events the HTML page renders; ?limit= raises them up
// to the ring size. Every rendered event is parsed again, so the page stays
// quick even when the inbox is full.
const (
	pageErrors       = 50
	pageTransactions = 20
)

// Handler serves the inbox on the admin listener. The caller mounts it at
// "/inbox", "/inbox/" and "/inbox.html" without stripping the prefix:
//
//	GET    /inbox              summaries, newest first (?full=1 full events,
//	                           ?type=transaction the transaction ring, ?limit=N)
//	GET    /inbox/{event_id}   one event's JSON as it would have been sent
//	GET    /inbox.html         the page for a person
//	DELETE /inbox              empties the inbox
//
// Every answer carries Cache-Control: no-store: the content changes with
// each request through the proxy and holds user data.
func (i *Inbox) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /inbox", i.serveList)
	mux.HandleFunc("GET /inbox/{$}", i.serveList)
	mux.HandleFunc("DELETE /inbox", i.serveClear)
	mux.HandleFunc("DELETE /inbox/{$}", i.serveClear)
	mux.HandleFunc("GET /inbox/{id}", i.serveEvent)
	mux.HandleFunc("GET /inbox.html", i.servePage)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "no-store")
		// Event content is attacker-influenced; never let a browser guess
		// it is HTML.
		h.Set("X-Content-Type-Options", "nosniff")
		mux.ServeHTTP(w, r)
	})
}

type listResponse struct {
	Events            any `json:"events"`
	ErrorsCount       int `json:"errors_count"`
	TransactionsCount int `json:"transactions_count"`
	Dropped           int `json:"dropped"`
}

func (i *Inbox) serveList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := queryLimit(q.Get("limit"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	full := false
	if v := q.Get("full"); v != "" {
		if full, err = strconv.ParseBool(v); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "full: want 1 or 0"})
			return
		}
	}
	var snap snapshot
	var es []*entry
	switch q.Get("type") {
	case "", TypeError:
		snap = i.snapshot(limit, -1)
		es = snap.errs
	case "transaction":
		snap = i.snapshot(-1, limit)
		es = snap.txs
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "type: want error or transaction"})
		return
	}
	resp := listResponse{ErrorsCount: snap.errsLen, TransactionsCount: snap.txsLen, Dropped: snap.dropped}
	if full {
		events := make([]json.RawMessage, len(es))
		for k, e := range es {
			events[k] = e.raw
		}
		resp.Events = events
	} else {
		events := make([]Summary, len(es))
		for k, e := range es {
			events[k] = e.sum
		}
		resp.Events = events
	}
	writeJSON(w, http.StatusOK, resp)
}

// queryLimit reads ?limit=; 0 means all. Values above the ring size are
// simply all there is.
func queryLimit(v string) (int, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("limit: want a positive integer, got %q", v)
	}
	return n, nil
}

func (i *Inbox) serveEvent(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	e := i.find(id)
	if e == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such event in the inbox", "event_id": id})
		return
	}
	if e.sum.Truncated {
		w.Header().Set("Inbox-Omitted", strings.Join(e.sum.Omitted, ", "))
	}
	var buf bytes.Buffer
	if json.Indent(&buf, e.raw, "", "  ") != nil {
		buf.Reset()
		buf.Write(e.raw)
	}
	buf.WriteByte('\n')
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(buf.Bytes())
}

func (i *Inbox) serveClear(w http.ResponseWriter, r *http.Request) {
	i.Clear()
	writeJSON(w, http.StatusOK, map[string]string{"status": "cleared"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

package demo

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"time"
)

// events is GET /api/v1/events?count=N&interval=D, a server-sent event
// stream Proximity does not have: it is here so that tests and the demo can
// show whether a proxy delivers each event as it is flushed or holds the
// response back. The first event is sent at once, the next every interval.
func (s *server) events(w http.ResponseWriter, r *http.Request, _ call) {
	count, countErr := queryInt(r, "count", 5, 1, 100)
	interval, intervalErr := queryDuration(r, "interval", time.Second, 10*time.Second)
	var errs []fieldError
	for _, fe := range []*fieldError{countErr, intervalErr} {
		if fe != nil {
			errs = append(errs, *fe)
		}
	}
	if errs != nil {
		writeValidation(w, errs)
		return
	}

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	for i := 1; i <= count; i++ {
		if i > 1 {
			if err := sleep(r.Context(), interval); err != nil {
				return // the client has gone
			}
		}
		if _, err := fmt.Fprintf(w, "event: tick\ndata: {\"n\":%d}\n\n", i); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// echoResponse describes a request as the demo received it.
type echoResponse struct {
	Method           string              `json:"method"`
	Path             string              `json:"path"`
	RawPath          string              `json:"raw_path"`
	RequestURI       string              `json:"request_uri"`
	Query            string              `json:"query"`
	Host             string              `json:"host"`
	Headers          map[string][]string `json:"headers"`
	BodyBytes        int64               `json:"body_bytes"`
	BodySHA256       string              `json:"body_sha256"`
	ContentLength    int64               `json:"content_length"`
	TransferEncoding []string            `json:"transfer_encoding"`
}

// echo answers any method on /api/v1/echo and /api/v1/echo/... with what
// arrived, so that proxy tests can check forwarding byte for byte: the
// path as sent (RawPath keeps %2F), the headers, and a hash of the body,
// which it streams rather than holds, so any size works.
func (s *server) echo(w http.ResponseWriter, r *http.Request) {
	sum := sha256.New()
	n, err := io.Copy(sum, r.Body)
	if err != nil {
		writeDetail(w, http.StatusBadRequest, fmt.Sprintf("read request body: %v", err))
		return
	}
	te := r.TransferEncoding
	if te == nil {
		te = []string{}
	}
	headers := r.Header
	if headers == nil {
		headers = http.Header{}
	}
	writeJSON(w, http.StatusOK, echoResponse{
		Method:           r.Method,
		Path:             r.URL.Path,
		RawPath:          r.URL.RawPath,
		RequestURI:       r.RequestURI,
		Query:            r.URL.RawQuery,
		Host:             r.Host,
		Headers:          headers,
		BodyBytes:        n,
		BodySHA256:       hex.EncodeToString(sum.Sum(nil)),
		ContentLength:    r.ContentLength,
		TransferEncoding: te,
	})
}

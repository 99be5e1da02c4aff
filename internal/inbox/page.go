package inbox

import (
	"bytes"
	"cmp"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"go.uber.org/zap"
)

// The page is html/template so every piece of event content (messages,
// URLs, usernames, response excerpts: all of it attacker-influenced) is
// escaped for its context. It needs no JavaScript and loads nothing, which
// the Content-Security-Policy below enforces as a second line of defence.
//
//go:embed page.html
var pageFS embed.FS

const pageCSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func parsePage() (*template.Template, error) {
	return template.New("page.html").Funcs(template.FuncMap{"plural": plural}).ParseFS(pageFS, "page.html")
}

// plural renders "1 breadcrumb", "3 breadcrumbs".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

type pageView struct {
	Rendered          string
	Errors            []eventView
	Transactions      []txView
	ErrorsCount       int
	TransactionsCount int
	Dropped           int
	MoreErrors        int // held but not rendered (see ?limit=)
}

type eventView struct {
	Summary
	Href        string // relative link to the event's JSON
	LevelClass  string
	StatusClass string
	Time        string
	ISO         string // for <time datetime>
	Ago         string
	Unverified  bool
	Release     string
	Environment string
	Crumbs      []crumbView
	Details     []detailView
}

type crumbView struct {
	Time     string
	Category string
	Message  string
	Status   string
	Duration string
	Class    string
	Current  bool // the crumb of the request this event is about
}

type detailView struct {
	Name string
	Body string
}

type txView struct {
	Summary
	Href        string
	StatusClass string
	Time        string
	Duration    string
}

func (i *Inbox) servePage(w http.ResponseWriter, r *http.Request) {
	limit, err := queryLimit(r.URL.Query().Get("limit"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	errLimit := cmp.Or(limit, pageErrors)
	snap := i.snapshot(errLimit, pageTransactions)
	now := i.now()
	v := pageView{
		Rendered:          now.UTC().Format("2006-01-02 15:04:05 UTC"),
		ErrorsCount:       snap.errsLen,
		TransactionsCount: snap.txsLen,
		Dropped:           snap.dropped,
		MoreErrors:        snap.errsLen - len(snap.errs),
	}
	for _, e := range snap.errs {
		v.Errors = append(v.Errors, viewEvent(e, now))
	}
	for _, e := range snap.txs {
		v.Transactions = append(v.Transactions, viewTx(e))
	}
	var buf bytes.Buffer
	if err := i.page.Execute(&buf, v); err != nil {
		i.log.Error("render inbox page", zap.Error(err))
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "render inbox page"})
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("Referrer-Policy", "no-referrer")
	_, _ = w.Write(buf.Bytes())
}

func viewEvent(e *entry, now time.Time) eventView {
	w := parse(e.raw)
	s := e.sum
	v := eventView{
		Summary:     s,
		Href:        "inbox/" + url.PathEscape(s.EventID),
		LevelClass:  levelClass(s.Level),
		StatusClass: statusClass(s.Status),
		Time:        clock(s.Timestamp, "2006-01-02 15:04:05 UTC"),
		ISO:         clock(s.Timestamp, time.RFC3339),
		Ago:         ago(s.Timestamp, now),
		Unverified:  s.User != nil && s.User.Verified != nil && !*s.User.Verified,
		Release:     scalar(w.Release),
		Environment: scalar(w.Environment),
	}

	current := -1
	crumbs := values(w.Breadcrumbs)
	for k, raw := range crumbs {
		c, method := viewCrumb(raw)
		// The trail ends with the failing request itself when the proxy
		// recorded it before capturing; mark it so the eye lands there.
		if s.Method != "" && s.Status != "" && method == s.Method && c.Status == s.Status {
			current = k
		}
		v.Crumbs = append(v.Crumbs, c)
	}
	if current >= 0 {
		v.Crumbs[current].Current = true
	}

	// Response and app first: they answer "what did the API say" and
	// "which build"; the rest alphabetically.
	names := make([]string, 0, len(w.Contexts))
	for name := range w.Contexts {
		names = append(names, name)
	}
	rank := func(n string) int {
		switch n {
		case "response":
			return 0
		case "app":
			return 1
		}
		return 2
	}
	slices.SortFunc(names, func(a, b string) int { return cmp.Or(cmp.Compare(rank(a), rank(b)), cmp.Compare(a, b)) })
	for _, name := range names {
		v.Details = append(v.Details, detailView{Name: name, Body: pretty(w.Contexts[name])})
	}
	for _, d := range []struct {
		name string
		raw  json.RawMessage
	}{{"request", w.Request}, {"tags", w.Tags}, {"extra", w.Extra}} {
		if len(d.raw) > 0 && string(d.raw) != "null" {
			v.Details = append(v.Details, detailView{Name: d.name, Body: pretty(d.raw)})
		}
	}
	return v
}

// viewCrumb also returns the crumb's HTTP method, to find the crumb of the
// event's own request.
func viewCrumb(raw json.RawMessage) (crumbView, string) {
	var b struct {
		Category  json.RawMessage            `json:"category"`
		Type      json.RawMessage            `json:"type"`
		Message   json.RawMessage            `json:"message"`
		Level     json.RawMessage            `json:"level"`
		Timestamp json.RawMessage            `json:"timestamp"`
		Data      map[string]json.RawMessage `json:"data"`
	}
	_ = json.Unmarshal(raw, &b)
	method := scalar(b.Data["method"])
	c := crumbView{
		Time:     clock(timestamp(b.Timestamp), "15:04:05.000"),
		Category: cmp.Or(scalar(b.Category), scalar(b.Type)),
		Message:  capString(scalar(b.Message)),
		Status:   scalar(b.Data["status_code"]),
		Duration: millis(b.Data["duration_ms"]),
	}
	if c.Message == "" {
		c.Message = capString(joinNonEmpty(method, scalar(b.Data["url"])))
	}
	c.Class = statusClass(c.Status)
	if c.Class == "" {
		switch scalar(b.Level) {
		case "error", "fatal":
			c.Class = "bad"
		case "warning":
			c.Class = "warn"
		}
	}
	return c, method
}

func viewTx(e *entry) txView {
	w := parse(e.raw)
	s := e.sum
	v := txView{
		Summary:     s,
		Href:        "inbox/" + url.PathEscape(s.EventID),
		StatusClass: statusClass(s.Status),
		Time:        clock(s.Timestamp, "15:04:05.000"),
	}
	// A transaction's timestamp is its end; a person thinks of when the
	// request came in.
	start, end := timestamp(w.StartTimestamp), s.Timestamp
	if !start.IsZero() && !end.IsZero() && !end.Before(start) {
		v.Time = clock(start, "15:04:05.000")
		v.Duration = duration(end.Sub(start))
	}
	if v.Status == "" {
		var trace struct {
			Status json.RawMessage `json:"status"`
		}
		_ = json.Unmarshal(w.Contexts["trace"], &trace)
		v.Status = capString(scalar(trace.Status))
	}
	return v
}

func levelClass(level string) string {
	switch level {
	case "fatal", "error", "warning", "info", "debug":
		return level
	}
	return "other"
}

func statusClass(status string) string {
	n, err := strconv.Atoi(status)
	switch {
	case err != nil:
		return ""
	case n >= 500:
		return "bad"
	case n >= 400:
		return "warn"
	default:
		return "ok"
	}
}

func clock(t time.Time, layout string) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(layout)
}

func ago(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "in the future"
	case d < 5*time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	}
}

func millis(raw json.RawMessage) string {
	f, err := strconv.ParseFloat(scalar(raw), 64)
	if err != nil || f < 0 {
		return ""
	}
	return duration(time.Duration(f * float64(time.Millisecond)))
}

func duration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%d µs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1f s", d.Seconds())
	default:
		return d.Round(time.Second).String()
	}
}

// pretty re-indents a JSON value for reading. It undoes json.Marshal's
// \u003c escapes (a response excerpt is often HTML) because the template
// escapes the text for the page anyway.
func pretty(raw json.RawMessage) string {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return string(raw)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if enc.Encode(v) != nil {
		return string(raw)
	}
	return string(bytes.TrimRight(buf.Bytes(), "\n"))
}

func joinNonEmpty(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + " " + b
}

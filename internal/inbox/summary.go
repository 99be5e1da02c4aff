package inbox

import (
	"bytes"
	"cmp"
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// TypeError is Summary.Type for error and message events; the SDK sends them
// without a type, and Sentry treats a missing type as an error event.
const TypeError = "error"

// maxSummaryString caps each string in a Summary: a message can be a whole
// stack trace or an attacker's megabyte, and the summary is what /inbox
// lists and the log line repeats.
const maxSummaryString = 1024

// Summary is what /inbox lists for one event: enough to recognise it without
// opening the full JSON.
type Summary struct {
	EventID    string    `json:"event_id"`
	Type       string    `json:"type"` // "error", "transaction", or the telemetry type as sent
	Timestamp  time.Time `json:"timestamp,omitzero"`
	ReceivedAt time.Time `json:"received_at"`
	Level      string    `json:"level,omitempty"`
	// Message is the event's message, else its log entry, else its main
	// exception ("Type: value"); for a transaction, its name.
	Message string `json:"message,omitempty"`
	// User is nil for an anonymous event.
	User        *User    `json:"user,omitempty"`
	Route       string   `json:"route,omitempty"`      // tag http.route
	Method      string   `json:"method,omitempty"`     // tag http.method
	Status      string   `json:"status,omitempty"`     // tag http.status_code
	RequestID   string   `json:"request_id,omitempty"` // tag request_id
	Breadcrumbs int      `json:"breadcrumbs"`          // how many the event carries
	Bytes       int      `json:"bytes"`                // size of the JSON as sent
	Truncated   bool     `json:"truncated,omitempty"`  // only a fitted copy is kept in memory
	Omitted     []string `json:"omitted,omitempty"`    // top-level members the fitted copy lacks
}

// User is the event's user as the summary shows it.
type User struct {
	ID       string `json:"id,omitempty"`
	Username string `json:"username,omitempty"`
	Email    string `json:"email,omitempty"`
	Role     string `json:"role,omitempty"` // user.data.role
	// Verified is user.data.verified: false when the token was decoded
	// without checking its signature; nil when the event does not say.
	Verified *bool `json:"verified,omitempty"`
}

// wireEvent is the part of an event's JSON the inbox reads. Fields whose
// shape differs between SDKs are kept raw: sentry-go sends exception and
// breadcrumbs as arrays and timestamps as RFC 3339, the browser SDK sends
// {"values": [...]} and float seconds, and Relay accepts both.
type wireEvent struct {
	EventID        json.RawMessage            `json:"event_id"`
	Type           json.RawMessage            `json:"type"`
	Timestamp      json.RawMessage            `json:"timestamp"`
	StartTimestamp json.RawMessage            `json:"start_timestamp"`
	Level          json.RawMessage            `json:"level"`
	Message        json.RawMessage            `json:"message"`
	Logentry       json.RawMessage            `json:"logentry"`
	Exception      json.RawMessage            `json:"exception"`
	Transaction    json.RawMessage            `json:"transaction"`
	Release        json.RawMessage            `json:"release"`
	Environment    json.RawMessage            `json:"environment"`
	User           json.RawMessage            `json:"user"`
	Tags           json.RawMessage            `json:"tags"`
	Breadcrumbs    json.RawMessage            `json:"breadcrumbs"`
	Contexts       map[string]json.RawMessage `json:"contexts"`
	Request        json.RawMessage            `json:"request"`
	Extra          json.RawMessage            `json:"extra"`
}

// parse decodes what it can: one ill-typed field must not hide the rest.
func parse(raw []byte) wireEvent {
	var w wireEvent
	_ = json.Unmarshal(raw, &w)
	return w
}

// summarize builds the Summary of one event's JSON. It never fails: bytes
// that are not an event give an empty summary.
func summarize(raw []byte) Summary {
	w := parse(raw)
	s := Summary{
		EventID:     capString(scalar(w.EventID)),
		Type:        capString(scalar(w.Type)),
		Timestamp:   timestamp(w.Timestamp),
		Level:       capString(scalar(w.Level)),
		User:        user(w.User),
		Breadcrumbs: len(values(w.Breadcrumbs)),
	}
	s.Type = normalType(s.Type)
	tags := tagMap(w.Tags)
	s.Route = capString(tags["http.route"])
	s.Method = capString(tags["http.method"])
	s.Status = capString(tags["http.status_code"])
	s.RequestID = capString(tags["request_id"])
	if s.Type == TypeError {
		s.Message = capString(message(w))
	} else {
		s.Message = capString(scalar(w.Transaction))
	}
	return s
}

// normalType names error events "error" whether they came without a type
// (sentry-go), as "default" (the protocol's name) or as an envelope's
// "event" item.
func normalType(t string) string {
	switch t {
	case "", "default", "event":
		return TypeError
	}
	return t
}

// message picks what Sentry would title the event with.
func message(w wireEvent) string {
	// "message" is a string from sentry-go and may be the older
	// {"message", "formatted"} object from other SDKs.
	if m := scalar(w.Message); m != "" {
		return m
	}
	if m := formatted(w.Message); m != "" {
		return m
	}
	if m := formatted(w.Logentry); m != "" {
		return m
	}
	// The last exception is the outermost one: sentry-go lists a wrapped
	// error's causes first, and Sentry titles the issue with the last.
	if ex := values(w.Exception); len(ex) > 0 {
		var e struct {
			Type  json.RawMessage `json:"type"`
			Value json.RawMessage `json:"value"`
		}
		_ = json.Unmarshal(ex[len(ex)-1], &e)
		typ, val := scalar(e.Type), scalar(e.Value)
		switch {
		case typ != "" && val != "":
			return typ + ": " + val
		case val != "":
			return val
		default:
			return typ
		}
	}
	return ""
}

func formatted(raw json.RawMessage) string {
	var m struct {
		Formatted json.RawMessage `json:"formatted"`
		Message   json.RawMessage `json:"message"`
	}
	if json.Unmarshal(raw, &m) != nil {
		return ""
	}
	return cmp.Or(scalar(m.Formatted), scalar(m.Message))
}

func user(raw json.RawMessage) *User {
	var u struct {
		ID       json.RawMessage            `json:"id"`
		Username json.RawMessage            `json:"username"`
		Email    json.RawMessage            `json:"email"`
		Data     map[string]json.RawMessage `json:"data"`
	}
	if json.Unmarshal(raw, &u) != nil {
		return nil
	}
	out := &User{
		ID:       capString(scalar(u.ID)),
		Username: capString(scalar(u.Username)),
		Email:    capString(scalar(u.Email)),
		Role:     capString(scalar(u.Data["role"])),
	}
	if v, err := strconv.ParseBool(scalar(u.Data["verified"])); err == nil {
		out.Verified = &v
	}
	// An IP address alone (or nothing) is not someone a developer can name.
	if out.ID == "" && out.Username == "" && out.Email == "" {
		return nil
	}
	return out
}

// tagMap reads tags as an object or as Relay's [[key, value], ...] pairs.
func tagMap(raw json.RawMessage) map[string]string {
	out := map[string]string{}
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) == nil {
		for k, v := range obj {
			out[k] = scalar(v)
		}
		return out
	}
	var pairs [][]json.RawMessage
	if json.Unmarshal(raw, &pairs) == nil {
		for _, p := range pairs {
			if len(p) == 2 {
				out[scalar(p[0])] = scalar(p[1])
			}
		}
	}
	return out
}

// values returns the items of a list sent bare or as {"values": [...]}.
func values(raw json.RawMessage) []json.RawMessage {
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) == nil {
		return list
	}
	var obj struct {
		Values []json.RawMessage `json:"values"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		return obj.Values
	}
	return nil
}

// scalar renders a JSON string, number or bool as text (user ids and tag
// values arrive as numbers from some SDKs); anything else is "".
func scalar(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return ""
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	case 't', 'f':
		if string(raw) == "true" || string(raw) == "false" {
			return string(raw)
		}
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		var n json.Number
		if json.Unmarshal(raw, &n) == nil {
			return n.String()
		}
	}
	return ""
}

// timestamp reads RFC 3339 text or float Unix seconds.
func timestamp(raw json.RawMessage) time.Time {
	if s := scalar(raw); s != "" {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return t.UTC()
		}
		if f, err := strconv.ParseFloat(s, 64); err == nil && f > 0 && f < 1e11 {
			sec, frac := math.Modf(f)
			return time.Unix(int64(sec), int64(frac*1e9)).UTC()
		}
	}
	return time.Time{}
}

func capString(s string) string {
	if len(s) <= maxSummaryString {
		return s
	}
	cut := maxSummaryString
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// fit returns a copy of the event JSON no longer than limit, made by
// removing its largest top-level members one by one, and the names removed.
// Cutting the bytes instead would leave JSON nobody can open; dropping
// whole members (usually breadcrumbs, a response excerpt or spans) keeps a
// valid event that says honestly what it lacks. The full event still goes
// to the JSON-lines file.
func fit(raw []byte, limit int) ([]byte, []string) {
	var members map[string]json.RawMessage
	if json.Unmarshal(raw, &members) != nil || members == nil {
		return []byte("{}"), []string{"*"}
	}
	var omitted []string
	for {
		out, err := json.Marshal(members)
		if err != nil {
			return []byte("{}"), []string{"*"}
		}
		if len(out) <= limit || len(members) == 0 {
			return out, omitted
		}
		keys := make([]string, 0, len(members))
		for k := range members {
			keys = append(keys, k)
		}
		// Largest first; ties by name so the result does not depend on
		// map order.
		slices.SortFunc(keys, func(a, b string) int {
			return cmp.Or(cmp.Compare(len(members[b]), len(members[a])), strings.Compare(a, b))
		})
		delete(members, keys[0])
		omitted = append(omitted, keys[0])
	}
}

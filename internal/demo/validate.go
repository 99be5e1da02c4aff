package demo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// fieldError is one entry of FastAPI's 422 body, as pydantic v2 reports it
// and FastAPI serialises it (without pydantic's "url").
type fieldError struct {
	Type  string         `json:"type"`
	Loc   []any          `json:"loc"`
	Msg   string         `json:"msg"`
	Input any            `json:"input"`
	Ctx   map[string]any `json:"ctx,omitempty"`
}

// readModel reads a JSON route's body, at most maxJSONBody bytes, and
// decodes it for validation. When it reports false it has already answered.
func readModel(w http.ResponseWriter, r *http.Request) (map[string]any, bool) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSONBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeDetail(w, http.StatusRequestEntityTooLarge, "Request body too large")
			return nil, false
		}
		writeDetail(w, http.StatusBadRequest, fmt.Sprintf("read request body: %v", err))
		return nil, false
	}
	body, errs := decodeModel(r.Header.Get("Content-Type"), b)
	if errs != nil {
		writeValidation(w, errs)
		return nil, false
	}
	return body, true
}

// decodeModel turns a request body into the object a pydantic model is
// validated against, with FastAPI's errors when it cannot: an empty body is
// a missing body; a body is parsed as JSON only when Content-Type is absent
// or JSON, otherwise the model sees a string; anything but an object is not
// a model. Numbers stay json.Number so that an echoed "input" keeps its form.
func decodeModel(contentType string, b []byte) (map[string]any, []fieldError) {
	if len(b) == 0 {
		return nil, []fieldError{{Type: "missing", Loc: []any{"body"}, Msg: "Field required", Input: nil}}
	}
	if !isJSONType(contentType) {
		return nil, []fieldError{notAnObject(string(b))}
	}
	var probe any
	if err := json.Unmarshal(b, &probe); err != nil {
		// Python reports the index of the offending character, or the
		// length at end of input; Go's Offset counts the byte it stopped on.
		pos := int64(len(b))
		var se *json.SyntaxError
		if errors.As(err, &se) && se.Error() != "unexpected end of JSON input" {
			pos = max(se.Offset-1, 0)
		}
		return nil, []fieldError{{
			Type:  "json_invalid",
			Loc:   []any{"body", pos},
			Msg:   "JSON decode error",
			Input: struct{}{},
			Ctx:   map[string]any{"error": err.Error()},
		}}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		// Unreachable after the probe; treat it like a missing body.
		return nil, []fieldError{{Type: "missing", Loc: []any{"body"}, Msg: "Field required", Input: nil}}
	}
	obj, isObj := v.(map[string]any)
	if !isObj {
		return nil, []fieldError{notAnObject(v)}
	}
	return obj, nil
}

func notAnObject(input any) fieldError {
	return fieldError{
		Type:  "model_attributes_type",
		Loc:   []any{"body"},
		Msg:   "Input should be a valid dictionary or object to extract fields from",
		Input: input,
	}
}

// isJSONType mirrors FastAPI's check: no Content-Type, application/json or
// application/*+json.
func isJSONType(contentType string) bool {
	if contentType == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}

// model validates the fields of one decoded body, collecting every error
// as pydantic does rather than stopping at the first.
type model struct {
	body map[string]any
	errs []fieldError
}

func (m *model) add(e fieldError) { m.errs = append(m.errs, e) }

// str reads a required str field.
func (m *model) str(name string) (string, bool) {
	v, present := m.body[name]
	if !present {
		m.add(fieldError{Type: "missing", Loc: []any{"body", name}, Msg: "Field required", Input: m.body})
		return "", false
	}
	return m.isString([]any{"body", name}, v)
}

// optStr reads an Optional[str] field whose default is None.
func (m *model) optStr(name string) (string, bool) {
	v, present := m.body[name]
	if !present || v == nil {
		return "", false
	}
	return m.isString([]any{"body", name}, v)
}

func (m *model) isString(loc []any, v any) (string, bool) {
	s, isStr := v.(string)
	if !isStr {
		m.add(fieldError{Type: "string_type", Loc: loc, Msg: "Input should be a valid string", Input: v})
		return "", false
	}
	return s, true
}

// dict reads a Dict[str, Any] field whose default is {}.
func (m *model) dict(name string) map[string]any {
	v, present := m.body[name]
	if !present {
		return map[string]any{}
	}
	d, isDict := v.(map[string]any)
	if !isDict {
		m.add(fieldError{Type: "dict_type", Loc: []any{"body", name}, Msg: "Input should be a valid dictionary", Input: v})
		return map[string]any{}
	}
	return d
}

// strDict reads a Dict[str, str] field whose default is {}.
func (m *model) strDict(name string) map[string]string {
	out := map[string]string{}
	for k, v := range m.dict(name) {
		if s, isStr := m.isString([]any{"body", name, k}, v); isStr {
			out[k] = s
		}
	}
	return out
}

// length applies Field(min_length=..., max_length=...), counted in
// characters as Python does.
func (m *model) length(name, s string, minLen, maxLen int) bool {
	n := len([]rune(s))
	switch {
	case n < minLen:
		m.add(fieldError{
			Type: "string_too_short", Loc: []any{"body", name}, Input: s,
			Msg: fmt.Sprintf("String should have at least %d characters", minLen),
			Ctx: map[string]any{"min_length": minLen},
		})
		return false
	case n > maxLen:
		m.add(fieldError{
			Type: "string_too_long", Loc: []any{"body", name}, Input: s,
			Msg: fmt.Sprintf("String should have at most %d characters", maxLen),
			Ctx: map[string]any{"max_length": maxLen},
		})
		return false
	}
	return true
}

// valueError records what a pydantic @validator raising ValueError yields.
// FastAPI serialises the exception in ctx as {}.
func (m *model) valueError(name string, input any, msg string) {
	m.add(fieldError{
		Type: "value_error", Loc: []any{"body", name}, Input: input,
		Msg: "Value error, " + msg,
		Ctx: map[string]any{"error": struct{}{}},
	})
}

// queryInt reads an int query parameter with FastAPI's Query(default, ge, le).
func queryInt(r *http.Request, name string, def, ge, le int) (int, *fieldError) {
	raw, present := r.URL.Query()[name]
	if !present || len(raw) == 0 {
		return def, nil
	}
	v := raw[len(raw)-1] // Starlette's QueryParams keep the last value
	n, err := strconv.Atoi(strings.TrimSpace(v))
	switch {
	case err != nil:
		return 0, &fieldError{
			Type: "int_parsing", Loc: []any{"query", name}, Input: v,
			Msg: "Input should be a valid integer, unable to parse string as an integer",
		}
	case n < ge:
		return 0, &fieldError{
			Type: "greater_than_equal", Loc: []any{"query", name}, Input: v,
			Msg: fmt.Sprintf("Input should be greater than or equal to %d", ge),
			Ctx: map[string]any{"ge": ge},
		}
	case n > le:
		return 0, &fieldError{
			Type: "less_than_equal", Loc: []any{"query", name}, Input: v,
			Msg: fmt.Sprintf("Input should be less than or equal to %d", le),
			Ctx: map[string]any{"le": le},
		}
	}
	return n, nil
}

// queryDuration reads a Go duration query parameter in [0, le]. It has no
// FastAPI counterpart, so its errors borrow pydantic's value_error shape.
func queryDuration(r *http.Request, name string, def, le time.Duration) (time.Duration, *fieldError) {
	raw, present := r.URL.Query()[name]
	if !present || len(raw) == 0 {
		return def, nil
	}
	v := raw[len(raw)-1]
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > le {
		return 0, &fieldError{
			Type: "value_error", Loc: []any{"query", name}, Input: v,
			Msg: fmt.Sprintf("Value error, %s must be a Go duration between 0s and %s", name, le),
			Ctx: map[string]any{"error": struct{}{}},
		}
	}
	return d, nil
}

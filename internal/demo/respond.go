package demo

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// apiResponse is Proximity's APIResponse wrapper.
type apiResponse struct {
	Success bool    `json:"success"`
	Message *string `json:"message"`
	Data    any     `json:"data"`
	Error   *string `json:"error"`
}

// success returns the APIResponse Proximity sends on success.
func success(message string) apiResponse {
	return apiResponse{Success: true, Message: &message}
}

// serviceError is the body of Proximity's exception handlers for
// ProxmoxError (502), AppServiceError (400) and unhandled exceptions (500).
type serviceError struct {
	Success bool   `json:"success"`
	Error   string `json:"error"`
	Details string `json:"details,omitempty"`
}

// writeDetail sends FastAPI's HTTPException body, {"detail": msg}.
func writeDetail(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, struct {
		Detail string `json:"detail"`
	}{msg})
}

// writeValidation sends FastAPI's 422 body for request validation errors.
func writeValidation(w http.ResponseWriter, errs []fieldError) {
	writeJSON(w, http.StatusUnprocessableEntity, struct {
		Detail []fieldError `json:"detail"`
	}{errs})
}

// writeJSON sends v the way Starlette's JSONResponse does: compact, no HTML
// escaping (Python's json.dumps leaves <, > and & alone), no trailing
// newline, and an explicit Content-Length.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only the package's own types reach here, so this is a bug; answer
		// as Proximity's catch-all exception handler would.
		buf.Reset()
		buf.WriteString(`{"success":false,"error":"Internal server error"}`)
		status = http.StatusInternalServerError
	}
	body := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	// A write error means the client has gone; there is no one to tell.
	_, _ = w.Write(body)
}

// isoformat renders t as pydantic v2 renders a naive datetime (Proximity
// stores datetime.utcnow() and datetime.now()): no zone, and microseconds
// only when they are not zero.
func isoformat(t time.Time) string {
	t = t.UTC()
	if t.Nanosecond()/1000 != 0 {
		return t.Format("2006-01-02T15:04:05.000000")
	}
	return t.Format("2006-01-02T15:04:05")
}

package proxy

import (
	"bufio"
	"net"
	"net/http"
)

// recorder remembers the status and the size of the response while passing
// everything through. It implements Unwrap so http.ResponseController finds
// the server's Flusher and Hijacker: a wrapper without it silently buffers
// event streams and breaks WebSocket upgrades (go-chi/chi#544,
// prometheus/client_golang#1480).
type recorder struct {
	http.ResponseWriter
	status   int
	bytes    int64
	writeErr error
	proxy    *Proxy // tracks upgraded connections; nil in tests of the writer alone
}

var (
	_ http.Flusher  = (*recorder)(nil)
	_ http.Hijacker = (*recorder)(nil)
)

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 || (w.status >= 100 && w.status < 200) {
		// 1xx answers (103 Early Hints) may precede the final one.
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	if err != nil && w.writeErr == nil {
		w.writeErr = err
	}
	return n, err
}

// Flush sends what is buffered to the client at once.
func (w *recorder) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack hands the connection over for a protocol switch. ReverseProxy
// writes the 101 straight onto the connection, so the status is recorded
// here.
func (w *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.status = http.StatusSwitchingProtocols
	if w.proxy != nil {
		conn = w.proxy.trackUpgraded(conn)
	}
	return conn, brw, nil
}

// Unwrap returns the server's ResponseWriter for http.ResponseController.
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// clientGone reports whether writing to the client failed: it went away.
func (w *recorder) clientGone() bool { return w.writeErr != nil }

// written reports whether the response has started.
func (w *recorder) written() bool { return w.status != 0 }

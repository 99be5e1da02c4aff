package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// upgradeDeadline bounds every read and write on an upgraded connection.
const upgradeDeadline = 5 * time.Second

// wsUpstream answers an Upgrade: websocket request with 101 on the raw
// connection and then runs serve on it. handlers counts the connections
// still being served.
type wsUpstream struct {
	handlers sync.WaitGroup
	serve    func(conn net.Conn, br *bufio.Reader)
}

func (u *wsUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != "websocket" {
		http.Error(w, "want an upgrade", http.StatusBadRequest)
		return
	}
	u.handlers.Add(1)
	defer u.handlers.Done()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * upgradeDeadline))
	_, err = io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\n"+
		"Upgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
	if err != nil {
		return
	}
	u.serve(conn, brw.Reader)
}

// echo sends back every byte until the proxy closes its side.
func echo(conn net.Conn, br *bufio.Reader) { _, _ = io.Copy(conn, br) }

// mustUpgrade opens a raw connection to the proxy and completes an
// Upgrade: websocket handshake; bytes can be exchanged on the result.
func mustUpgrade(tb testing.TB, addr string) (net.Conn, *bufio.Reader, *http.Response) {
	tb.Helper()
	conn, err := net.DialTimeout("tcp", addr, upgradeDeadline)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = conn.Close() })
	require.NoError(tb, conn.SetDeadline(time.Now().Add(upgradeDeadline)))
	_, err = io.WriteString(conn, "GET /ws/chat?room=1 HTTP/1.1\r\nHost: api.example.test\r\n"+
		"Upgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	require.NoError(tb, err)
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	require.NoError(tb, err)
	return conn, br, res
}

func mustEchoMessages(tb testing.TB, conn net.Conn, br *bufio.Reader, msgs ...[]byte) {
	tb.Helper()
	for _, msg := range msgs {
		_, err := conn.Write(msg)
		require.NoError(tb, err)
		got := make([]byte, len(msg))
		_, err = io.ReadFull(br, got)
		require.NoError(tb, err)
		assert.Equal(tb, msg, got)
	}
}

func (f *fixture) upgradedConns() int {
	f.p.mu.Lock()
	defer f.p.mu.Unlock()
	return len(f.p.upgraded)
}

// TestUpgrade is not parallel: it checks with goleak that the proxy's
// goroutines for an upgraded connection end once the connection does.
func TestUpgrade(t *testing.T) {
	ignoreBefore := goleak.IgnoreCurrent()
	upstream := &wsUpstream{serve: echo}
	up := mustUpstream(t, upstream.ServeHTTP)
	f := mustProxy(t, up.URL)

	t.Run("echo, then the client closes", func(t *testing.T) {
		conn, br, res := mustUpgrade(t, f.srv.Listener.Addr().String())
		require.Equal(t, http.StatusSwitchingProtocols, res.StatusCode)
		assert.Equal(t, "websocket", res.Header.Get("Upgrade"))
		assert.Equal(t, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", res.Header.Get("Sec-WebSocket-Accept"))
		id := res.Header.Get(RequestIDHeader)
		assert.Regexp(t, hexID, id)

		mustEchoMessages(t, conn, br, []byte("hello"), []byte("\x81\x05world"), make([]byte, 100_000), []byte("bye"))
		assert.Equal(t, 1.0, mustMetric(t, f.reg, "sidecar_requests_in_flight"), "an upgraded connection is in flight")
		assert.Equal(t, 1, f.upgradedConns(), "tracked upgraded connections")

		require.NoError(t, conn.Close())
		f.mustInFlightZero(t)
		assert.Equal(t, 0, f.upgradedConns(), "tracked upgraded connections")
		log := f.mustAccessLog(t, id)
		assert.EqualValues(t, http.StatusSwitchingProtocols, log["status"])
		assert.Equal(t, "/ws/chat?room=1", log["path"])
	})

	t.Run("CloseUpgraded closes an open connection", func(t *testing.T) {
		conn, br, res := mustUpgrade(t, f.srv.Listener.Addr().String())
		require.Equal(t, http.StatusSwitchingProtocols, res.StatusCode)
		mustEchoMessages(t, conn, br, []byte("ping"))
		require.Equal(t, 1, f.upgradedConns(), "tracked upgraded connections")

		f.p.CloseUpgraded()
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(2*time.Second)))
		start := time.Now()
		_, err := br.ReadByte()
		require.Error(t, err, "the connection is still open")
		assert.False(t, errors.Is(err, os.ErrDeadlineExceeded), "read waited for the deadline: %v", err)
		assert.Less(t, time.Since(start), time.Second)
		f.mustInFlightZero(t)
		assert.Equal(t, 0, f.upgradedConns(), "tracked upgraded connections")
	})

	t.Run("goroutines end", func(t *testing.T) {
		upstream.handlers.Wait()
		f.srv.Close()
		f.p.CloseIdleConnections()
		up.Close()
		goleak.VerifyNone(t, ignoreBefore)
	})
}

// TestUpgradeHalfClose checks that a half-close passes through: the
// upstream finishes sending, and still reads what the client sends after.
func TestUpgradeHalfClose(t *testing.T) {
	t.Parallel()
	received := make(chan string, 1)
	upstream := &wsUpstream{serve: func(conn net.Conn, br *bufio.Reader) {
		_, _ = io.WriteString(conn, "last words")
		if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
			received <- "CloseWrite: " + err.Error()
			return
		}
		b, err := io.ReadAll(br)
		if err != nil {
			received <- "read: " + err.Error()
			return
		}
		received <- string(b)
	}}
	f := mustProxy(t, mustUpstream(t, upstream.ServeHTTP).URL)

	conn, br, res := mustUpgrade(t, f.srv.Listener.Addr().String())
	require.Equal(t, http.StatusSwitchingProtocols, res.StatusCode)
	got, err := io.ReadAll(br)
	require.NoError(t, err, "the upstream's half-close should reach the client as EOF")
	assert.Equal(t, "last words", string(got))
	_, err = io.WriteString(conn, "late reply")
	require.NoError(t, err)
	require.NoError(t, conn.(*net.TCPConn).CloseWrite())
	select {
	case s := <-received:
		assert.Equal(t, "late reply", s)
	case <-time.After(upgradeDeadline):
		require.Fail(t, "the upstream never finished reading")
	}
	f.mustInFlightZero(t)
}

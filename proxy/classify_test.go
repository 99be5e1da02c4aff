package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
)

// timeoutError has the shape of net/http's unexported timeout errors, such
// as the transport's "timeout awaiting response headers": a net.Error whose
// Timeout is true, wrapping nothing.
type timeoutError struct{ msg string }

func (e *timeoutError) Error() string   { return e.msg }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }

var _ net.Error = (*timeoutError)(nil)

func TestClassify(t *testing.T) {
	t.Parallel()
	var (
		headerTimeout = &timeoutError{"net/http: timeout awaiting response headers"}
		refused       = &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
		reset         = &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
		pipe          = &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)}
		notFound      = &net.DNSError{Err: "no such host", Name: "api.invalid", IsNotFound: true}
		certErr       = &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}
	)
	tests := []struct {
		name       string
		err        error
		clientGone bool
		status     int
		kind       string
	}{
		{"context canceled", context.Canceled, false, StatusClientClosed, KindClientClosed},
		{"context canceled wrapped", fmt.Errorf("round trip: %w", context.Canceled), false, StatusClientClosed, KindClientClosed},
		{"context canceled in url.Error", &url.Error{Op: "Get", URL: "http://api/x", Err: context.Canceled}, false, StatusClientClosed, KindClientClosed},
		{"client gone, refused", refused, true, StatusClientClosed, KindClientClosed},
		{"client gone, timeout", headerTimeout, true, StatusClientClosed, KindClientClosed},
		{"client gone, unexpected EOF", io.ErrUnexpectedEOF, true, StatusClientClosed, KindClientClosed},
		{"client gone, plain error", errors.New("anything"), true, StatusClientClosed, KindClientClosed},
		{"deadline exceeded", context.DeadlineExceeded, false, http.StatusGatewayTimeout, KindTimeout},
		{"deadline exceeded wrapped", fmt.Errorf("dial: %w", context.DeadlineExceeded), false, http.StatusGatewayTimeout, KindTimeout},
		{"response header timeout", headerTimeout, false, http.StatusGatewayTimeout, KindTimeout},
		{"dial i/o timeout", &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}, false, http.StatusGatewayTimeout, KindTimeout},
		{"timeout in url.Error", &url.Error{Op: "Get", URL: "http://api/x", Err: headerTimeout}, false, http.StatusGatewayTimeout, KindTimeout},
		{"DNS timeout is a timeout", &net.DNSError{Err: "i/o timeout", Name: "api", IsTimeout: true}, false, http.StatusGatewayTimeout, KindTimeout},
		{"DNS not found", notFound, false, http.StatusBadGateway, KindDNS},
		{"DNS not found in net.OpError", &net.OpError{Op: "dial", Net: "tcp", Err: notFound}, false, http.StatusBadGateway, KindDNS},
		{"refused in net.OpError", refused, false, http.StatusBadGateway, KindRefused},
		{"refused in url.Error", &url.Error{Op: "Post", URL: "http://api/x", Err: refused}, false, http.StatusBadGateway, KindRefused},
		{"bare ECONNREFUSED", syscall.ECONNREFUSED, false, http.StatusBadGateway, KindRefused},
		{"connection reset", reset, false, http.StatusBadGateway, KindReset},
		{"connection reset in url.Error", &url.Error{Op: "Get", URL: "http://api/x", Err: reset}, false, http.StatusBadGateway, KindReset},
		{"broken pipe", pipe, false, http.StatusBadGateway, KindReset},
		{"EOF", io.EOF, false, http.StatusBadGateway, KindReset},
		{"EOF wrapped", fmt.Errorf("net/http: HTTP/1.x transport connection broken: %w", io.EOF), false, http.StatusBadGateway, KindReset},
		{"unexpected EOF", io.ErrUnexpectedEOF, false, http.StatusBadGateway, KindReset},
		{"TLS record header", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, false, http.StatusBadGateway, KindTLS},
		{"TLS certificate verification", certErr, false, http.StatusBadGateway, KindTLS},
		{"TLS certificate verification in url.Error", &url.Error{Op: "Get", URL: "https://api/x", Err: certErr}, false, http.StatusBadGateway, KindTLS},
		{"x509 unknown authority", x509.UnknownAuthorityError{}, false, http.StatusBadGateway, KindTLS},
		{"x509 host name", x509.HostnameError{Host: "api"}, false, http.StatusBadGateway, KindTLS},
		{"protocol error", &http.ProtocolError{ErrorString: "malformed HTTP response"}, false, http.StatusBadGateway, KindProtocol},
		{"protocol error wrapped", fmt.Errorf("read response: %w", &http.ProtocolError{ErrorString: "bad"}), false, http.StatusBadGateway, KindProtocol},
		{"plain error", errors.New("malformed HTTP status code \"abc\""), false, http.StatusBadGateway, KindUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			status, kind := classify(tc.err, tc.clientGone)
			assert.Equal(t, tc.status, status, "status")
			assert.Equal(t, tc.kind, kind, "kind")
		})
	}
}

func TestErrorMessage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status int
		want   string
	}{
		{http.StatusGatewayTimeout, "upstream timeout"},
		{http.StatusBadGateway, "upstream unavailable"},
	}
	for _, tc := range tests {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tc.want, errorMessage(tc.status))
		})
	}
}

package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"
)

// StatusClientClosed is the status logged when the client went away before
// the answer was complete (nginx's 499). It is never an upstream failure
// and never a Sentry event.
const StatusClientClosed = 499

// Error kinds, used in logs, metrics and (by later issues) Sentry events.
const (
	KindClientClosed = "client_closed" // the client went away
	KindTimeout      = "timeout"       // the upstream did not answer in time
	KindRefused      = "refused"       // nothing listens at the upstream address
	KindDNS          = "dns"           // the upstream host name does not resolve
	KindReset        = "reset"         // the upstream closed or reset the connection
	KindTLS          = "tls"           // the TLS handshake with the upstream failed
	KindProtocol     = "protocol"      // the upstream answered something that is not HTTP we can pass on
	KindUnavailable  = "unavailable"   // any other failure to reach the upstream
)

// classify decides how a failed upstream round trip is answered: the status
// the client gets and the kind recorded in logs and metrics. clientGone says
// the client's side ended first (its context was cancelled or its body could
// not be read), which makes any error a 499. One pure function, like
// Traefik's ComputeStatusCode, so every path answers the same way.
func classify(err error, clientGone bool) (status int, kind string) {
	var (
		dnsErr  *net.DNSError
		netErr  net.Error
		recErr  tls.RecordHeaderError
		certErr *tls.CertificateVerificationError
		unkErr  x509.UnknownAuthorityError
		hostErr x509.HostnameError
		protErr *http.ProtocolError
	)
	switch {
	case clientGone || errors.Is(err, context.Canceled):
		return StatusClientClosed, KindClientClosed
	case errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout():
		return http.StatusGatewayTimeout, KindTimeout
	case errors.As(err, &dnsErr):
		return http.StatusBadGateway, KindDNS
	case errors.Is(err, syscall.ECONNREFUSED):
		return http.StatusBadGateway, KindRefused
	case errors.As(err, &recErr), errors.As(err, &certErr),
		errors.As(err, &unkErr), errors.As(err, &hostErr):
		return http.StatusBadGateway, KindTLS
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return http.StatusBadGateway, KindReset
	case errors.As(err, &protErr):
		return http.StatusBadGateway, KindProtocol
	default:
		return http.StatusBadGateway, KindUnavailable
	}
}

// errorMessage is the text of the small JSON body the client gets for a
// status made by the sidecar. Go's error text never reaches the client: it
// names internal addresses.
func errorMessage(status int) string {
	if status == http.StatusGatewayTimeout {
		return "upstream timeout"
	}
	return "upstream unavailable"
}

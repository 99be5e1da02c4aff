package proxy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func mustPrefixes(tb testing.TB, cidrs ...string) trustedNets {
	tb.Helper()
	t := make(trustedNets, 0, len(cidrs))
	for _, c := range cidrs {
		t = append(t, netip.MustParsePrefix(c))
	}
	return t
}

func TestClientIP(t *testing.T) {
	t.Parallel()
	local := mustPrefixes(t, "127.0.0.0/8", "::1/128")
	private := mustPrefixes(t, "127.0.0.0/8", "::1/128", "10.0.0.0/8", "fd00::/8")
	tests := []struct {
		name        string
		trusted     trustedNets
		remoteAddr  string
		xff         []string
		want        string // "" is the invalid address
		peerTrusted bool
	}{
		{"no trusted proxies, no header", nil, "192.0.2.10:5555", nil, "192.0.2.10", false},
		{"no trusted proxies: header ignored, peer wins", nil, "192.0.2.10:5555", []string{"203.0.113.7"}, "192.0.2.10", false},
		{"no trusted proxies: loopback peer not special", nil, "127.0.0.1:5555", []string{"203.0.113.7"}, "127.0.0.1", false},
		{"untrusted peer: header ignored", local, "192.0.2.10:5555", []string{"203.0.113.7, 127.0.0.1"}, "192.0.2.10", false},
		{"trusted peer without header is the client", local, "127.0.0.1:5555", nil, "127.0.0.1", true},
		{"trusted peer, one hop", local, "127.0.0.1:5555", []string{"203.0.113.7"}, "203.0.113.7", true},
		{"rightmost untrusted wins", local, "127.0.0.1:5555", []string{"198.51.100.1, 203.0.113.7"}, "203.0.113.7", true},
		{"trusted hops skipped", private, "127.0.0.1:5555", []string{"198.51.100.1, 203.0.113.7, 10.0.0.2, 10.1.1.1"}, "203.0.113.7", true},
		{"spoofed leftmost ignored", private, "10.0.0.9:5555", []string{"6.6.6.6, 203.0.113.7"}, "203.0.113.7", true},
		{"several header lines read as one list", private, "127.0.0.1:5555", []string{"6.6.6.6, 203.0.113.7", "10.0.0.2", "10.0.0.3"}, "203.0.113.7", true},
		{"last header line holds the client", private, "127.0.0.1:5555", []string{"6.6.6.6", "203.0.113.7, 10.0.0.3"}, "203.0.113.7", true},
		{"spaces around hops", private, "127.0.0.1:5555", []string{"  6.6.6.6 ,  203.0.113.7  ,10.0.0.2 "}, "203.0.113.7", true},
		{"unparsable hop ends the walk at the last believed hop", private, "127.0.0.1:5555", []string{"203.0.113.7, bogus, 10.0.0.2"}, "10.0.0.2", true},
		{"unparsable rightmost hop leaves the peer", private, "127.0.0.1:5555", []string{"203.0.113.7, 1.2.3.4:80"}, "127.0.0.1", true},
		{"empty hop is unparsable", private, "127.0.0.1:5555", []string{"203.0.113.7,,10.0.0.2"}, "10.0.0.2", true},
		{"all hops trusted: the leftmost", private, "127.0.0.1:5555", []string{"10.0.0.1, 10.0.0.2"}, "10.0.0.1", true},
		{"empty header line", private, "127.0.0.1:5555", []string{""}, "127.0.0.1", true},
		{"IPv6 peer untrusted", local, "[2001:db8::5]:443", []string{"203.0.113.7"}, "2001:db8::5", false},
		{"IPv6 trusted peer, IPv6 client", private, "[::1]:443", []string{"2001:db8::7, fd00::1"}, "2001:db8::7", true},
		{"IPv6 peer with zone untrusted", local, "[fe80::1%eth0]:443", []string{"203.0.113.7"}, "fe80::1%eth0", false},
		{"IPv4-mapped peer is unmapped and trusted", local, "[::ffff:127.0.0.1]:5555", []string{"203.0.113.7"}, "203.0.113.7", true},
		{"IPv4-mapped peer without trust is unmapped", nil, "[::ffff:192.0.2.10]:5555", nil, "192.0.2.10", false},
		{"IPv4-mapped hop is unmapped and skipped when trusted", private, "127.0.0.1:5555", []string{"203.0.113.7, ::ffff:10.0.0.2"}, "203.0.113.7", true},
		{"IPv4-mapped client hop is unmapped", private, "127.0.0.1:5555", []string{"::ffff:203.0.113.7"}, "203.0.113.7", true},
		{"unparsable peer", local, "pipe", []string{"203.0.113.7"}, "", false},
		{"empty peer (unix socket)", local, "", []string{"203.0.113.7"}, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ip, peerTrusted := tc.trusted.clientIP(tc.remoteAddr, tc.xff)
			if tc.want == "" {
				assert.False(t, ip.IsValid(), "ip = %v", ip)
			} else {
				assert.Equal(t, tc.want, ip.String())
			}
			assert.Equal(t, tc.peerTrusted, peerTrusted, "peerTrusted")
		})
	}
}

// FuzzClientIP checks that clientIP never panics and never invents an
// address: the answer is the peer or one of the header's hops.
func FuzzClientIP(f *testing.F) {
	f.Add("127.0.0.1:5555", "203.0.113.7, 10.0.0.2")
	f.Add("[::1]:80", "2001:db8::7,fd00::1\n10.0.0.3")
	f.Add("[::ffff:127.0.0.1]:1", "::ffff:10.0.0.1, , bogus")
	f.Add("10.0.0.9:1", "fe80::1%eth0, 1.2.3.4:80")
	f.Add("", "203.0.113.7")
	f.Add("192.0.2.1:1", "")
	trusted := mustPrefixes(f, "127.0.0.0/8", "10.0.0.0/8", "::1/128", "fd00::/8")
	f.Fuzz(func(t *testing.T, remoteAddr, header string) {
		// Newlines split the header into lines, as repeated headers arrive.
		xff := strings.Split(header, "\n")
		ip, peerTrusted := trusted.clientIP(remoteAddr, xff)
		peer, err := netip.ParseAddrPort(remoteAddr)
		if err != nil {
			require.False(t, ip.IsValid() || peerTrusted, "unparsable peer %q gave %v, %v", remoteAddr, ip, peerTrusted)
			return
		}
		if ip == peer.Addr().Unmap() {
			return
		}
		require.True(t, peerTrusted, "untrusted peer %q gave %v, not itself", remoteAddr, ip)
		for _, line := range xff {
			for _, hop := range strings.Split(line, ",") {
				if a, err := netip.ParseAddr(strings.TrimSpace(hop)); err == nil && a.Unmap() == ip {
					return
				}
			}
		}
		require.Failf(t, "invented address", "clientIP(%q, %q) = %v: neither the peer nor a hop", remoteAddr, xff, ip)
	})
}

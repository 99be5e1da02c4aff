package proxy

import (
	"net/netip"
	"strings"
)

// trustedNets is the set of peers whose forwarding headers are believed.
// Empty by default, as in Caddy: a client can write any X-Forwarded-For.
type trustedNets []netip.Prefix

func (t trustedNets) contains(a netip.Addr) bool {
	for _, p := range t {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientIP returns the address of the client that the sidecar believes sent
// the request, and whether the immediate peer is a trusted proxy. The peer
// itself unless it is trusted; then X-Forwarded-For is walked from the right,
// skipping trusted hops, and the first untrusted address wins. Never the
// leftmost: the client writes that one (Envoy's and Caddy's strict rule).
func (t trustedNets) clientIP(remoteAddr string, xff []string) (ip netip.Addr, peerTrusted bool) {
	peer, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	ip = peer.Addr().Unmap()
	if len(t) == 0 || !t.contains(ip) {
		return ip, false
	}
	for i := len(xff) - 1; i >= 0; i-- {
		hops := xff[i]
		for hops != "" {
			var hop string
			if j := strings.LastIndexByte(hops, ','); j >= 0 {
				hop, hops = hops[j+1:], hops[:j]
			} else {
				hop, hops = hops, ""
			}
			a, err := netip.ParseAddr(strings.TrimSpace(hop))
			if err != nil {
				// An unparsable hop ends what can be believed.
				return ip, true
			}
			ip = a.Unmap()
			if !t.contains(ip) {
				return ip, true
			}
		}
	}
	return ip, true
}

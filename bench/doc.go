// Package bench measures what the sidecar costs a client, end to end: every
// request goes through a real http.Server on 127.0.0.1, a reverse proxy, a
// real upstream and, for the sidecar, the production Sentry transport
// delivering to an in-process Sentry double that parses every envelope.
// Its one piece of code is BareProxy, the baseline, which the load driver
// (bench/load, run by scripts/bench.sh) measures too; the benchmarks and
// their fixtures are its tests.
//
// Each case is one top-level benchmark with two (or three) sub-benchmarks
// run back to back: the baseline and what is compared with it.
//
//   - GET1K: GET /api/v1/apps/wordpress-blog with a valid HS256 token,
//     answered 200 with 1 KiB of JSON. proxy=bare is httputil.ReverseProxy
//     (Rewrite with SetURL and SetXForwarded, the sidecar's tuned transport
//     pool), proxy=sidecar is the sidecar with every feature on as
//     cmd/sentry-sidecar wires it: token verification, trails, route
//     templates, actions, 5xx capture with the throttle, tracing at 0.1,
//     the JSON access log (to io.Discard), the tunnel on its path.
//   - POST64K: a 64 KiB JSON body with Content-Length to /api/v1/upload (a
//     route that is not an action), which the upstream reads whole.
//   - All500: POST /api/v1/apps/deploy (an action with fields), always
//     answered 500 {"detail":"deploy failed"}; the sidecar captures the
//     first five and throttles the rest. events/op is what reached the
//     double.
//   - Tunnel10K: a 10 KiB browser error envelope posted straight to the
//     double (path=direct, the baseline) or through the sidecar's tunnel
//     with scrubbing on (path=tunnel, the product default) and off
//     (path=tunnel-noscrub).
//
// Run it with
//
//	go test -run '^$' -bench . -benchmem ./bench/
//
// After the sub-benchmarks of a case have run, the case prints one line
// comparing them, such as
//
//	GET1K: sidecar/bare time 1.04×, allocs +31/op (...)
//
// the ratio of ns/op and the difference of allocs/op, measured over the
// same timed loops as the benchmark lines above it. The ratio is the
// number to read: ns/op alone moves with the machine. When -bench leaves
// out the baseline or the subject, nothing is printed.
//
// -count n does not alternate the pair: the testing package runs each
// sub-benchmark n times in a row (bare, bare, bare, then sidecar...), and
// the case then prints n lines comparing the first runs, the second runs
// and so on, minutes apart on a slow machine. For ratios that drift
// cancels out of, run the compiled tests in a loop, each run one round
// of every case:
//
//	go test -c -o bench.test ./bench/
//	for i in 1 2 3 4 5 6; do
//		./bench.test -test.run '^$' -test.bench . -test.benchmem | tee -a bench.txt
//	done
//	grep × bench.txt
//	benchstat -col /proxy bench.txt   # -col /path for Tunnel10K
//
// allocs/op counts every goroutine of the process: the client, both
// servers, the upstream and the double are in it, the same for both
// sub-benchmarks, so the difference is the sidecar's (plus, for the
// sidecar, the sampled transactions and captured events it encodes and
// sends). Requests are sent one at a time over one kept-alive connection:
// ns/op is the latency a client sees, not the throughput of a loaded
// sidecar (see benchThroughServer in proxy/bench_test.go for why).
//
// The sidecar sub-benchmarks also report tx/op (sampled transactions per
// request, about 0.1) and %delivered (the share of what the transport was
// given that the double received after a flush); they fail if anything was
// lost with a healthy double. CI runs the benchmarks briefly, as a check
// that they work, with no timing assertions:
//
//	go test -run '^$' -bench . -benchmem -benchtime 200x ./bench/
//
// go test ./bench/ runs the fast tests that check the fixtures and the
// pipeline's answers; the benchmarks are left out under -race, which
// changes what allocates and how long everything takes.
package bench

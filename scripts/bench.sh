#!/usr/bin/env bash
# The load benchmark (BENCHMARKS.md): the sidecar, everything on, side by
# side with a bare httputil.ReverseProxy under wrk, and the tunnel side by
# side with posting straight to a Sentry double. One command from a fresh
# clone:
#
#   scripts/bench.sh                          # 5 cases, 10 s per proxy, 3 rounds
#   scripts/bench.sh -cases get1k -rounds 5   # flags go to bench/load (-h lists them)
#
# It installs wrk (Debian's package) when it can, builds the sidecar and the
# load driver into bin/, and prints one Markdown table on stdout (progress on
# stderr). Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "bench.sh: installing wrk" >&2
		apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; }
	else
		echo "bench.sh: wrk is missing: install Debian's package (apt-get install wrk) or put a wrk on PATH" >&2
		exit 1
	fi
fi
if ! command -v taskset >/dev/null 2>&1; then
	echo "bench.sh: taskset is missing (Debian: util-linux); without it load and servers share every CPU" >&2
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		apt-get install -y -qq util-linux >/dev/null
	else
		exit 1
	fi
fi

mkdir -p bin
go build -o bin/sentry-sidecar ./cmd/sentry-sidecar
go build -o bin/sidecar-load ./bench/load
exec bin/sidecar-load -sidecar bin/sentry-sidecar "$@"

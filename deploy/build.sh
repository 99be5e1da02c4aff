#!/bin/sh
# Builds the static sentry-sidecar binary that the image ships. The
# Dockerfile runs this script, and deploy/deploy_test.go runs it too and
# checks the result (static, stamped, starts), so the two cannot drift.
#
#   VERSION=0.1.0 COMMIT=$(git rev-parse HEAD) sh deploy/build.sh bin/sentry-sidecar
#
# Run it from the repository root. GOOS and GOARCH pass through for
# cross-builds (the Dockerfile sets them from TARGETOS and TARGETARCH).
set -eu
out=${1:?usage: deploy/build.sh OUTPUT}
# CGO_ENABLED=0: a static binary, no libc, so it runs on distroless/static
# or scratch. -trimpath: no build-machine paths in the binary.
# -buildvcs=false: the commit comes from COMMIT, never from whatever .git
# the build happens to see, so the same inputs give the same binary.
export CGO_ENABLED=0
exec go build -trimpath -buildvcs=false \
	-ldflags "-s -w -X main.version=${VERSION:-dev} -X main.commit=${COMMIT:-unknown}" \
	-o "$out" ./cmd/sentry-sidecar

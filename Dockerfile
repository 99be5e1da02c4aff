# syntax=docker/dockerfile:1
#
# sentry-sidecar: a static binary on distroless/static, non-root, no shell.
#
#   docker build --build-arg VERSION=0.1.0 --build-arg COMMIT=$(git rev-parse HEAD) \
#     -t sentry-sidecar:0.1.0 .
#   docker run --rm -p 8080:8080 -e SIDECAR_UPSTREAM_URL=http://api:8765 sentry-sidecar:0.1.0
#
# Needs BuildKit (the default builder since Docker Engine 23). What is
# checked without a Docker engine, and how to deploy the image (compose,
# Kubernetes): deploy/README.md.

ARG GO_VERSION=1.26.8

# The build runs on the builder's own platform and cross-compiles, so a
# multi-platform build (--platform linux/amd64,linux/arm64) needs no emulation.
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first: a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
ARG TARGETOS
ARG TARGETARCH
# The one build command lives in deploy/build.sh (static, -trimpath,
# version and commit stamped); deploy/deploy_test.go runs the same script.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH VERSION=$VERSION COMMIT=$COMMIT \
    sh deploy/build.sh /out/sentry-sidecar

# distroless/static: CA certificates, tzdata and /etc/passwd with the
# nonroot user (65532), nothing else: no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sentry-sidecar /usr/local/bin/sentry-sidecar
# The default configuration: every key with its default. Mount your own
# over it (read-only) at the same path.
COPY config.example.yaml /etc/sentry-sidecar/config.yaml
# The admin listener (probes, metrics) on every interface: Kubernetes
# probes come from the kubelet to the pod's IP, and Docker publishes ports
# from outside the container's loopback. Environment variables override the
# file, so set SIDECAR_ADMIN_LISTEN (not admin.listen) to change it. Never
# publish 9090 to the internet or put it in a Service: it has no
# authentication (deploy/README.md, "Security").
ENV SIDECAR_CONFIG=/etc/sentry-sidecar/config.yaml \
    SIDECAR_ADMIN_LISTEN=:9090
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
# 8080: the proxied listener (listen). 9090: the admin listener.
EXPOSE 8080 9090
# No HEALTHCHECK: orchestrators probe GET /healthz and /readyz on 9090, and
# the image has no shell or curl to run one.
ENTRYPOINT ["/usr/local/bin/sentry-sidecar"]
CMD ["run"]

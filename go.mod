module github.com/sentry-sidecar/sentry-sidecar

go 1.26.0

require (
	github.com/caarlos0/env/v11 v11.4.2
	github.com/getsentry/sentry-go v0.46.2
	gopkg.in/yaml.v3 v3.0.1
)

require (
	github.com/google/go-cmp v0.7.0 // indirect
	github.com/kr/text v0.2.0 // indirect
	github.com/stretchr/testify v1.12.1 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
)

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/getsentry/sentry-go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sentry-sidecar/sentry-sidecar/internal/admin"
	"github.com/sentry-sidecar/sentry-sidecar/internal/config"
	"github.com/sentry-sidecar/sentry-sidecar/internal/demo"
	"github.com/sentry-sidecar/sentry-sidecar/internal/inbox"
	"github.com/sentry-sidecar/sentry-sidecar/proxy"
)

// Set by -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = ""
)

// errReported means the problem was already written to stderr; main only
// exits 1.
var errReported = errors.New("reported")

const usage = `sentry-sidecar: a reverse proxy that gives an API and its browser app Sentry
monitoring without touching their code.

Usage:
  sentry-sidecar [run] [-config FILE]   proxy to the upstream (the default command)
  sentry-sidecar check [-config FILE]   validate the configuration and print it, secrets redacted
  sentry-sidecar demo [-config FILE]    run a built-in Proximity-like API behind the sidecar
  sentry-sidecar version                print the version

Each command takes --help. Without -config, SIDECAR_CONFIG names the file;
with neither, the defaults and the environment apply.
`

// run is the whole program; main only wires signals and the exit code.
func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return runCmd(ctx, args, lookupEnv, stderr, false)
	case "demo":
		return runCmd(ctx, args, lookupEnv, stderr, true)
	case "check":
		return checkCmd(args, lookupEnv, stdout, stderr)
	case "version":
		fs := flag.NewFlagSet("version", flag.ContinueOnError)
		fs.SetOutput(stderr)
		fs.Usage = func() {
			fmt.Fprintln(stderr, "Usage: sentry-sidecar version\n\nPrints the version, commit, Go version and sentry-go version.")
		}
		if err := fs.Parse(args); err != nil {
			return flagErr(err)
		}
		fmt.Fprintln(stdout, versionString())
		return nil
	case "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

func versionString() string {
	c := commit
	if c == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					c = s.Value
				}
			}
		}
	}
	if c == "" {
		c = "unknown"
	}
	return fmt.Sprintf("sentry-sidecar %s (commit %s, %s, sentry-go %s)", version, c, runtime.Version(), sentry.SDKVersion)
}

// flagErr turns -help into a clean exit and anything else into an error
// already printed by the flag package.
func flagErr(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return errReported
}

// configFlags parses the flags shared by run, check and demo; extra adds a
// command's own.
func configFlags(name, help string, args []string, lookupEnv func(string) (string, bool), stderr io.Writer, extra func(*flag.FlagSet)) (path string, err error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&path, "config", "", "YAML configuration `file` (default $SIDECAR_CONFIG)")
	if extra != nil {
		extra(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: sentry-sidecar %s [flags]\n\n%s\n\nFlags:\n", name, help)
		fs.PrintDefaults()
		fmt.Fprintln(stderr, "\nEnvironment variables (they override the file):")
		tw := tabwriter.NewWriter(stderr, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  SIDECAR_CONFIG\tthe configuration file")
		for _, v := range config.EnvVars() {
			fmt.Fprintf(tw, "  %s\t%s\n", v.Name, v.Key)
		}
		tw.Flush()
	}
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sentry-sidecar %s: unexpected argument %q\n", name, fs.Arg(0))
		return "", errReported
	}
	if path == "" {
		path, _ = lookupEnv("SIDECAR_CONFIG")
	}
	return path, nil
}

// loadConfig loads and validates, writing every problem to stderr, one per
// line.
func loadConfig(path string, lookupEnv func(string) (string, bool), hostname string, stderr io.Writer, adjust func(*config.Config)) (config.Config, error) {
	cfg, err := config.Load(path, lookupEnv, hostname)
	if err == nil && adjust != nil {
		adjust(&cfg)
		err = cfg.Validate()
	}
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(stderr, line)
		}
		return cfg, errReported
	}
	return cfg, nil
}

func checkCmd(args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	var sendTest bool
	path, err := configFlags("check", "Validates the configuration (defaults < file < environment). Exits 0 and prints\nthe effective configuration, secrets redacted, when it is valid; exits 1 and\nlists every problem on stderr, one per line, when it is not.\n\nWith -send-test-event it also sends a deliberate test event where events go\n(Sentry, or the local inbox) and exits 1 unless it was accepted: the\noperator's check after a deploy.", args, lookupEnv, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&sendTest, "send-test-event", false, "also send a test event and report whether it was accepted")
	})
	if err != nil {
		return flagErr(err)
	}
	host, _ := os.Hostname()
	cfg, err := loadConfig(path, lookupEnv, host, stderr, nil)
	if err != nil {
		return err
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintln(stderr, "warning:", w)
	}
	fmt.Fprint(stdout, cfg.YAML())
	fmt.Fprintln(stderr, "configuration is valid")
	if !sendTest {
		return nil
	}
	log, stopLog, err := newLogger(cfg.Log, stderr)
	if err != nil {
		return err
	}
	defer stopLog()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rp, err := newReporting(ctx, cfg, log, prometheus.NewRegistry(), host)
	if err != nil {
		return err
	}
	defer rp.close(cfg.Shutdown.FlushTimeout.Std())
	// It can take seconds (up to 15): say so, rather than seem to hang.
	fmt.Fprintf(stderr, "sending a test event to %s (waiting up to 15s for the answer)...\n", newSentryInfo(cfg).Sink)
	res := rp.sendTestEvent(ctx, 15*time.Second)
	fmt.Fprintf(stderr, "test event %s to %s: delivered=%t %s %s\n", res.EventID, res.Sink, res.Delivered, res.Outcome, res.Error)
	if !res.Delivered {
		return errReported
	}
	return nil
}

func runCmd(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stderr io.Writer, isDemo bool) error {
	name, help := "run", "Runs the sidecar in front of upstream.url until SIGTERM or SIGINT."
	if isDemo {
		name, help = "demo", "Starts a built-in Proximity-like API on a loopback port and the sidecar in front\nof it, with events kept in the local inbox. No Sentry account needed."
	}
	path, err := configFlags(name, help, args, lookupEnv, stderr, nil)
	if err != nil {
		return flagErr(err)
	}
	var demoSrv *http.Server
	var demoURL string
	var adjust func(*config.Config)
	if isDemo {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("demo upstream: %w", err)
		}
		demoURL = "http://" + ln.Addr().String()
		secret := ""
		adjust = func(c *config.Config) {
			c.Upstream.URL = demoURL
			if c.Listen == config.Default().Listen {
				c.Listen = "127.0.0.1:8080"
			}
			if c.Shutdown.DrainDelay == config.Default().Shutdown.DrainDelay {
				c.Shutdown.DrainDelay = 0 // no load balancer to tell on a laptop
			}
			if len(c.Sentry.Contexts) == 0 {
				c.Sentry.Contexts = map[string]map[string]any{"proxmox": {"host": "pve.local", "port": 8006}}
			}
			if c.JWT.Secret == "" && c.JWT.PublicKeyFile == "" && c.JWT.JWKSURL == "" {
				c.JWT.Secret = demo.DefaultSecret
			}
			secret = c.JWT.Secret
		}
		defer ln.Close()
		// Everything the demo runs is on loopback: detect the environment as
		// a developer's machine (an explicit one still wins).
		cfg, err := loadConfig(path, lookupEnv, "localhost", stderr, adjust)
		if err != nil {
			return err
		}
		demoSrv = &http.Server{Handler: demo.New(demo.Options{Secret: secret, DeployDelay: 2 * time.Second}), ReadHeaderTimeout: 10 * time.Second}
		go demoSrv.Serve(ln)
		defer demoSrv.Close()
		return serve(ctx, cfg, stderr, func(mainAddr, adminAddr string) {
			fmt.Fprint(stderr, demoHelp(mainAddr, adminAddr, demoURL))
		})
	}
	host, _ := os.Hostname()
	cfg, err := loadConfig(path, lookupEnv, host, stderr, nil)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, stderr, nil)
}

func demoHelp(mainAddr, adminAddr, upstream string) string {
	base := "http://" + mainAddr
	return fmt.Sprintf(`
The demo is running: a Proximity-like API at %[3]s, the sidecar in front of it at %[1]s.
Try:

  curl -s %[1]s/api/v1/apps/catalog                 # 401 from the API, passed through
  TOKEN=$(curl -s %[1]s/api/v1/auth/login -H 'Content-Type: application/json' \
            -d '{"username":"demo","password":"demo1234"}' | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
  curl -s %[1]s/api/v1/apps -H "Authorization: Bearer $TOKEN"
  curl -s %[1]s/api/v1/apps/deploy -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
       -d '{"catalog_id":"nginx","hostname":"will-fail"}'   # a FastAPI-style 500 after 2 s
  curl -sN '%[1]s/api/v1/events?count=3&interval=500ms'      # server-sent events, streamed
  curl -s %[1]s/api/v1/system/nodes?fail=1 -H "Authorization: Bearer $TOKEN"   # the API's own 502

Then open http://%[2]s/inbox.html: the failing deploy is there as the event Sentry
would get, with the user and the requests that led to it.

Admin: curl -s http://%[2]s/readyz ; curl -s http://%[2]s/metrics | grep sidecar_ ; curl -s http://%[2]s/sentry-info
       curl -s -X POST http://%[2]s/test-event
Stop with Ctrl-C.

`, base, adminAddr, upstream)
}

// newLogger builds the injected zap logger: JSON in production, console in
// development, both to w.
func newLogger(cfg config.Log, w io.Writer) (*zap.Logger, func(), error) {
	var level zapcore.Level
	if err := level.UnmarshalText([]byte(cfg.Level)); err != nil {
		return nil, nil, fmt.Errorf("log.level: %w", err)
	}
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = "time"
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	ec.EncodeDuration = zapcore.MillisDurationEncoder
	enc := zapcore.NewJSONEncoder(ec)
	if cfg.Format == "console" {
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		ec.EncodeDuration = zapcore.StringDurationEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	}
	// Buffered: one write per access-log line was a syscall per request,
	// about 2.5 µs of the proxy's 60 under load (BENCHMARKS.md). A line waits
	// at most logFlushInterval; stop writes out the rest. The buffer's
	// periodic Sync would also fsync w when it is a file, holding the
	// logger's lock meanwhile, so w is given without its Sync: the lines
	// are written, and durability is the file system's business.
	ws := &zapcore.BufferedWriteSyncer{WS: zapcore.AddSync(struct{ io.Writer }{w}), Size: logBufferSize, FlushInterval: logFlushInterval}
	return zap.New(zapcore.NewCore(enc, ws, level)), func() { _ = ws.Stop() }, nil
}

// The log buffer: lines are written in batches of up to logBufferSize,
// none later than logFlushInterval after it was logged.
const (
	logBufferSize    = 64 << 10
	logFlushInterval = 100 * time.Millisecond
)

// sentryInfo is what /sentry-info shows: nothing secret.
type sentryInfo struct {
	Enabled     bool   `json:"enabled"`
	Sink        string `json:"sink"`
	Environment string `json:"environment"`
	Release     string `json:"release"`
	App         struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		Debug   bool   `json:"debug_mode"`
	} `json:"app"`
	DSNHost          string  `json:"dsn_host,omitempty"`
	DSNProject       string  `json:"dsn_project,omitempty"`
	TracesSampleRate float64 `json:"traces_sample_rate"`
	TunnelPath       string  `json:"tunnel_path,omitempty"`
	BrowserConfig    string  `json:"browser_config_path,omitempty"`
	Version          string  `json:"sidecar_version"`
}

func newSentryInfo(cfg config.Config) sentryInfo {
	info := sentryInfo{
		Sink:             "inbox",
		Environment:      cfg.Sentry.Environment,
		Release:          cfg.Sentry.Release,
		TracesSampleRate: *cfg.Sentry.TracesSampleRate,
		TunnelPath:       cfg.Tunnel.Path,
		BrowserConfig:    cfg.Browser.ConfigPath,
		Version:          version,
	}
	info.App.Name, info.App.Version, info.App.Debug = cfg.App.Name, cfg.App.Version, cfg.App.Debug
	if dsn, err := sentry.NewDsn(cfg.Sentry.DSN); err == nil {
		info.DSNHost, info.DSNProject = dsn.GetHost(), dsn.GetProjectID()
	}
	if toSentry(cfg) {
		info.Enabled, info.Sink = true, "sentry"
	}
	return info
}

// mainHandler serves the tunnel and the browser config at their exact
// paths and proxies everything else. No ServeMux: it would clean paths
// and redirect, and every other path belongs to the API as sent.
func mainHandler(px http.Handler, tunnelPath string, tunnelH http.Handler, configPath string, configH http.Handler) http.Handler {
	if tunnelH == nil && configH == nil {
		return px
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case tunnelH != nil && r.URL.Path == tunnelPath:
			tunnelH.ServeHTTP(w, r)
		case configH != nil && r.URL.Path == configPath:
			configH.ServeHTTP(w, r)
		default:
			px.ServeHTTP(w, r)
		}
	})
}

// inboxHandler is the admin's inbox, or nil (501) when events go to Sentry.
func inboxHandler(ib *inbox.Inbox) http.Handler {
	if ib == nil {
		return nil
	}
	return ib.Handler()
}

// serve runs the sidecar until ctx ends, then drains: readiness 503, a short
// delay, Shutdown with the grace period, Close, upgraded connections closed.
// started, if set, is called with the bound addresses once both listen.
func serve(ctx context.Context, cfg config.Config, stderr io.Writer, started func(mainAddr, adminAddr string)) error {
	log, stopLog, err := newLogger(cfg.Log, stderr)
	if err != nil {
		return err
	}
	defer stopLog()
	for _, w := range cfg.Warnings() {
		log.Warn(w)
	}
	log.Info("configuration", zap.Any("config", cfg.Redacted().Map()))

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	host, _ := os.Hostname()
	bg, stopBackground := context.WithCancel(context.Background())
	defer stopBackground()
	rp, err := newReporting(bg, cfg, log, reg, host)
	if err != nil {
		return err
	}
	flushed := false
	defer func() {
		if !flushed {
			rp.close(0)
		}
	}()

	upstream, _ := url.Parse(cfg.Upstream.URL) // validated
	trusted := make([]netip.Prefix, 0, len(cfg.Upstream.TrustedProxies))
	for _, s := range cfg.Upstream.TrustedProxies {
		p, _ := config.ParsePrefix(s) // validated
		trusted = append(trusted, p)
	}
	px, err := proxy.New(proxy.Config{
		Upstream:              upstream,
		PreserveHost:          cfg.Upstream.PreserveHost,
		TrustedProxies:        trusted,
		DialTimeout:           cfg.Upstream.DialTimeout.Std(),
		ResponseHeaderTimeout: cfg.Upstream.ResponseHeaderTimeout.Std(),
		IdleConnTimeout:       cfg.Upstream.IdleConnTimeout.Std(),
		MaxIdleConnsPerHost:   cfg.Upstream.MaxIdleConnsPerHost,
		HealthPath:            cfg.Upstream.HealthPath,
		Report:                rp.report,
	}, log, reg)
	if err != nil {
		return err
	}

	tunnelH, browserH, err := rp.browserHandlers(cfg, px, log, reg)
	if err != nil {
		return err
	}
	var tunnelHandler http.Handler // a nil *tunnel.Handler would be a non-nil interface
	if tunnelH != nil {
		defer tunnelH.Close()
		tunnelHandler = px.Logged(tunnelH)
	}
	if browserH != nil {
		browserH = px.Logged(browserH)
	}

	ready := admin.NewReadiness()
	probeCtx, stopProbe := context.WithCancel(context.Background())
	defer stopProbe()
	probeDone := make(chan struct{})
	go func() {
		defer close(probeDone)
		ready.Run(probeCtx, px.Probe, cfg.Upstream.HealthInterval.Std())
	}()
	defer func() { stopProbe(); <-probeDone }()

	errLog := zap.NewStdLog(log.Named("http"))
	mainSrv := &http.Server{
		Handler:           mainHandler(px, cfg.Tunnel.Path, tunnelHandler, cfg.Browser.ConfigPath, browserH),
		ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout.Std(),
		IdleTimeout:       cfg.Server.IdleTimeout.Std(),
		MaxHeaderBytes:    cfg.Server.MaxHeaderBytes,
		// No WriteTimeout: it is a hard cap on the whole response and would
		// cut long deploys, downloads and event streams.
		ErrorLog: errLog,
	}
	adminSrv := &http.Server{
		Handler: admin.New(admin.Options{
			Readiness: ready,
			Gatherer:  reg,
			Info:      newSentryInfo(cfg),
			Inbox:     inboxHandler(rp.inbox),
			TestEvent: rp.testEventHandler(),
			Token:     cfg.Admin.Token,
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          errLog,
	}

	mainLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	adminLn, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		mainLn.Close()
		return fmt.Errorf("admin.listen: %w", err)
	}
	log.Info("listening",
		zap.String("addr", mainLn.Addr().String()),
		zap.String("admin_addr", adminLn.Addr().String()),
		zap.String("upstream", config.Config{Upstream: cfg.Upstream}.Redacted().Upstream.URL),
		zap.String("environment", cfg.Sentry.Environment),
		zap.String("sink", newSentryInfo(cfg).Sink),
		zap.Float64("traces_sample_rate", *cfg.Sentry.TracesSampleRate),
		zap.String("tunnel", cfg.Tunnel.Path),
		zap.String("browser_config", cfg.Browser.ConfigPath),
		zap.Bool("users", rp.users != nil),
		zap.String("version", version))

	serveErr := make(chan error, 2)
	go func() { serveErr <- mainSrv.Serve(mainLn) }()
	go func() { serveErr <- adminSrv.Serve(adminLn) }()
	if started != nil {
		started(mainLn.Addr().String(), adminLn.Addr().String())
	}

	select {
	case err := <-serveErr:
		mainSrv.Close()
		adminSrv.Close()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	drain := cfg.Shutdown
	log.Info("shutting down", zap.Duration("drain_delay", drain.DrainDelay.Std()), zap.Duration("grace_period", drain.GracePeriod.Std()))
	ready.Drain()
	time.Sleep(drain.DrainDelay.Std())

	graceCtx, cancel := context.WithTimeout(context.Background(), drain.GracePeriod.Std())
	defer cancel()
	if err := mainSrv.Shutdown(graceCtx); err != nil {
		log.Warn("grace period over, closing open connections", zap.Error(err))
		mainSrv.Close()
	}
	px.CloseUpgraded()
	// Handlers cut by Close still build their events; let them finish
	// (briefly) so the flush below carries them.
	waitCtx, cancelWait := context.WithTimeout(context.Background(), time.Second)
	defer cancelWait()
	_ = px.Wait(waitCtx)
	px.CloseIdleConnections()
	adminCtx, cancelAdmin := context.WithTimeout(context.Background(), time.Second)
	defer cancelAdmin()
	if err := adminSrv.Shutdown(adminCtx); err != nil {
		adminSrv.Close()
	}
	// Last, Sentry: bounded, so a hanging Sentry cannot hold the exit.
	rp.close(drain.FlushTimeout.Std())
	flushed = true
	log.Info("stopped")
	return nil
}

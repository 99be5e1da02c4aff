// Command load measures the sidecar's cost under load, side by side with a
// bare httputil.ReverseProxy in the same run. It starts a small upstream
// and a Sentry double that counts what it receives, starts each proxy as
// its own process, drives it with wrk (wrk on one set of CPUs, the servers
// on another when the machine has two or more), and prints one table:
// req/s, the ratio to the baseline of the same round, p50/p99, the proxy's
// CPU time per request, its peak RSS, envelopes delivered of those the
// sidecar had to send, and socket errors.
//
//	scripts/bench.sh                       # builds, installs wrk if it can, runs
//	go run ./bench/load -sidecar bin/sentry-sidecar -duration 10s -rounds 3
//
// Every case runs for -duration per proxy and round; the order of the
// proxies rotates each round, and ratios are taken within a round, so a
// machine that slows down between rounds moves both sides alike.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/sentry-sidecar/sentry-sidecar/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "bare" {
		return runBare(ctx, args[1:])
	}
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.sidecar, "sidecar", "bin/sentry-sidecar", "the sidecar binary to measure")
	fs.StringVar(&o.wrk, "wrk", "wrk", "the wrk binary")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long each proxy is loaded per case and round")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; the proxies' order rotates each round")
	fs.IntVar(&o.conns, "conns", 64, "wrk's keep-alive connections")
	fs.IntVar(&o.threads, "threads", 1, "wrk's threads")
	fs.Float64Var(&o.traces, "traces", 0.1, "the sidecar's traces_sample_rate")
	fs.StringVar(&o.cases, "cases", strings.Join(caseNames(), ","), "cases to run, comma-separated")
	fs.StringVar(&o.loadCPUs, "load-cpus", "", "CPUs for wrk (taskset -c list); empty: CPU 0 when there are two or more")
	fs.StringVar(&o.serverCPUs, "server-cpus", "", "CPUs for the proxies, the upstream and the double; empty: the others")
	fs.Func("also", "another sidecar build to measure in every case, NAME=BINARY (repeatable): a before and after in one run", func(v string) error {
		name, bin, ok := strings.Cut(v, "=")
		if !ok || name == "" || bin == "" {
			return fmt.Errorf("want NAME=BINARY, got %q", v)
		}
		if _, err := os.Stat(bin); err != nil {
			return err
		}
		o.also = append(o.also, proxy{name: "sidecar " + name, kind: "sidecar", traces: -1, binary: bin})
		return nil
	})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.rounds < 1 || o.duration < time.Second || o.conns < 1 || o.threads < 1 || o.threads > o.conns {
		return errors.New("need -rounds >= 1, -duration >= 1s, -conns >= -threads >= 1")
	}
	if o.loadCPUs == "" && o.serverCPUs == "" && runtime.NumCPU() >= 2 {
		o.loadCPUs = "0"
		o.serverCPUs = fmt.Sprintf("1-%d", runtime.NumCPU()-1)
	}
	return measure(ctx, o, stdout, stderr)
}

// runBare serves the baseline proxy: "load bare -listen ADDR -upstream URL".
func runBare(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bare", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address")
	up := fs.String("upstream", "", "upstream URL")
	if err := fs.Parse(args); err != nil {
		return err
	}
	target, err := url.Parse(*up)
	if err != nil || target.Host == "" {
		return fmt.Errorf("bare: -upstream must be a URL, got %q", *up)
	}
	h, _ := bench.BareProxy(target)
	srv := &http.Server{Addr: *listen, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

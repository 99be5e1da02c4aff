// Command sentry-sidecar is a reverse proxy that runs beside a web API and
// gives it, and the browser app it serves, Sentry error monitoring without
// touching their code.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal, restore the default handling: a second
		// one ends the process at once instead of waiting for the drain.
		<-ctx.Done()
		stop()
	}()
	if err := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, errReported) {
			fmt.Fprintln(os.Stderr, "sentry-sidecar:", err)
		}
		os.Exit(1)
	}
}

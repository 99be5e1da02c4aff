// Package proctest runs programs as children of a test, for the suites
// that need real processes (e2e/ and faults/): each child runs in a
// process group of its own with exactly the environment it is given, its
// output is kept for the test and for failures, and it is stopped, group
// and all, when the test ends. It also builds the sidecar binary once per
// suite and finds the addresses the binary bound in its log.
package proctest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// stopTimeout is how long Stop waits after SIGTERM before SIGKILL: longer
// than the drain a test's sidecar config gives itself.
const stopTimeout = 15 * time.Second

// Buffer collects a process's output; it is safe for concurrent use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// Bytes returns a copy of what was written so far.
func (s *Buffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// String returns what was written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Process is a child started by Start.
type Process struct {
	Name string
	Cmd  *exec.Cmd
	Out  *Buffer // stdout and stderr, as they came

	done chan struct{} // closed when Wait returned
	err  error         // Wait's result, set before done is closed
}

// Start starts argv in dir with exactly env (nothing of the test's own
// environment leaks in: a SENTRY_DSN in CI must not reach the sidecar) and
// stops it, and its group, when tb ends.
func Start(tb testing.TB, name, dir string, env []string, argv ...string) *Process {
	tb.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = env
	out := &Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// If the test binary dies (a -timeout panic skips every cleanup),
		// the kernel kills the child: no leftovers.
		Pdeathsig: syscall.SIGKILL,
	}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	p := &Process{Name: name, Cmd: cmd, Out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	tb.Cleanup(func() { p.Stop(tb) })
	return p
}

// Env is an environment of exactly PATH, HOME=home and vars.
func Env(home string, vars map[string]string) []string {
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + home}
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	return env
}

// Done is closed when the process has ended.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is the process's exit error (nil for exit status 0); it means
// something only once the process has ended.
func (p *Process) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// Wait waits at most timeout for the process to end and returns its exit
// code (-1 when a signal ended it); ok is false if it is still running.
func (p *Process) Wait(timeout time.Duration) (code int, ok bool) {
	select {
	case <-p.done:
		return p.Cmd.ProcessState.ExitCode(), true
	case <-time.After(timeout):
		return 0, false
	}
}

// Stop sends SIGTERM to the group, SIGKILL after 15 s, and waits; then
// anything the process left in its group goes too.
func (p *Process) Stop(tb testing.TB) {
	tb.Helper()
	pgid := p.Cmd.Process.Pid
	if !p.Exited() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(stopTimeout):
			tb.Errorf("%s did not stop within %v of SIGTERM; killing its group", p.Name, stopTimeout)
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// WaitListening waits up to 15 s for the sidecar's JSON "listening" log
// line (its config must say log.format: json) and returns the addresses it
// bound: the proxied listener and the admin one, host:port. It fails tb if
// the process ends first.
func WaitListening(tb testing.TB, p *Process) (addr, admin string) {
	tb.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		sc := bufio.NewScanner(strings.NewReader(p.Out.String()))
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			var line struct {
				Msg       string `json:"msg"`
				Addr      string `json:"addr"`
				AdminAddr string `json:"admin_addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
				return line.Addr, line.AdminAddr
			}
		}
		if p.Exited() {
			tb.Fatalf("the sidecar exited before listening (%v):\n%s", p.Err(), p.Out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatalf("the sidecar logged no \"listening\" line within 15 s:\n%s", p.Out.String())
	return "", ""
}

// BuildSidecar builds cmd/sentry-sidecar of the module at root into dir
// and returns the binary's path and how long the build took. Suites call
// it once, from TestMain.
func BuildSidecar(root, dir string) (bin string, took time.Duration, err error) {
	bin = filepath.Join(dir, "sentry-sidecar")
	build := exec.Command("go", "build", "-o", bin, "./cmd/sentry-sidecar")
	build.Dir = root
	start := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		return "", 0, fmt.Errorf("go build ./cmd/sentry-sidecar: %w\n%s", err, out)
	}
	return bin, time.Since(start), nil
}

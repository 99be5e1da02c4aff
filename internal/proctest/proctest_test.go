package proctest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStopEndsTheGroup: Stop ends the process and what it started in its
// group, and the output is kept.
func TestStopEndsTheGroup(t *testing.T) {
	t.Parallel()
	pidFile := filepath.Join(t.TempDir(), "pid")
	p := Start(t, "sh", t.TempDir(), Env(t.TempDir(), nil),
		"/bin/sh", "-c", `echo started; sleep 60 & echo $! >`+pidFile+`; wait`)
	var child int
	for deadline := time.Now().Add(5 * time.Second); child == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(pidFile)
		child, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if child == 0 {
		t.Fatalf("the shell never started its child:\n%s", p.Out.String())
	}
	p.Stop(t)
	if !p.Exited() || p.Err() == nil {
		t.Fatalf("after Stop: exited %v, err %v", p.Exited(), p.Err())
	}
	if !strings.Contains(p.Out.String(), "started") {
		t.Errorf("output lost: %q", p.Out.String())
	}
	// The grandchild got the group's SIGKILL; Signal(0) fails once it is
	// reaped, or it lingers as a zombie of init, which is gone too.
	time.Sleep(50 * time.Millisecond)
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(child) + "/stat"); err == nil && !strings.Contains(string(b), ") Z") {
		_ = syscall.Kill(child, syscall.SIGKILL)
		t.Errorf("the group's other process %d survived Stop: %s", child, b)
	}
}

// TestWaitAndEnv: the exit code comes back, and the child sees exactly the
// environment it was given.
func TestWaitAndEnv(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	p := Start(t, "sh", home, Env(home, map[string]string{"X": "1"}), "/bin/sh", "-c", "env; exit 3")
	code, ok := p.Wait(5 * time.Second)
	if !ok || code != 3 {
		t.Fatalf("Wait: %d, %v", code, ok)
	}
	got := strings.Fields(p.Out.String())
	want := []string{"HOME=" + home, "PATH=/usr/bin:/bin", "X=1"}
	for _, w := range want {
		if !strings.Contains(p.Out.String(), w) {
			t.Errorf("env lacks %s: %q", w, got)
		}
	}
	for _, kv := range got {
		if !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "X=") && !strings.HasPrefix(kv, "PWD=") && !strings.HasPrefix(kv, "SHLVL=") && !strings.HasPrefix(kv, "_=") {
			t.Errorf("an environment variable leaked in: %s", kv)
		}
	}
}

// TestWaitListening finds the bound addresses in a JSON log line, and
// fails for a process that ends without one.
func TestWaitListening(t *testing.T) {
	t.Parallel()
	p := Start(t, "sh", t.TempDir(), nil, "/bin/sh", "-c",
		`echo '{"level":"info","msg":"configuration"}'; echo '{"msg":"listening","addr":"127.0.0.1:1","admin_addr":"127.0.0.1:2"}'; sleep 60`)
	addr, admin := WaitListening(t, p)
	if addr != "127.0.0.1:1" || admin != "127.0.0.1:2" {
		t.Errorf("addresses %q %q", addr, admin)
	}
}

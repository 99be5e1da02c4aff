package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"fmt"
	"go/version"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sentry-sidecar/sentry-sidecar/internal/config"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd   string   // upper case: FROM, RUN, COPY, ...
	flags []string // leading --name=value flags: --from=build, --mount=...
	args  string   // the rest
	line  int      // where it starts
}

// dockerfileInstructions are the instructions the Dockerfile reference
// defines; anything else is a typo.
var dockerfileInstructions = []string{
	"ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM",
	"HEALTHCHECK", "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL",
	"STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}

// parseDockerfile reads a Dockerfile the way the builder splits it: comment
// lines (and parser directives) dropped, also inside continued
// instructions, a trailing backslash continuing the line. Heredocs are
// refused: this parser would misread them.
func parseDockerfile(b []byte) ([]instruction, error) {
	var out []instruction
	var cur *instruction
	for i, raw := range strings.Split(string(b), "\n") {
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cont := strings.HasSuffix(line, `\`)
		line = strings.TrimSpace(strings.TrimSuffix(line, `\`))
		if cur == nil {
			word, rest, _ := strings.Cut(line, " ")
			cmd := strings.ToUpper(word)
			if !slices.Contains(dockerfileInstructions, cmd) {
				return nil, fmt.Errorf("line %d: unknown instruction %q", i+1, word)
			}
			cur = &instruction{cmd: cmd, args: strings.TrimSpace(rest), line: i + 1}
		} else {
			cur.args = strings.TrimSpace(cur.args + " " + line)
		}
		if strings.Contains(line, "<<") {
			return nil, fmt.Errorf("line %d: heredocs are not supported here", i+1)
		}
		if cont {
			continue
		}
		for strings.HasPrefix(cur.args, "--") {
			flag, rest, _ := strings.Cut(cur.args, " ")
			cur.flags = append(cur.flags, flag)
			cur.args = strings.TrimSpace(rest)
		}
		out = append(out, *cur)
		cur = nil
	}
	if cur != nil {
		return nil, fmt.Errorf("line %d: instruction continues past the end of the file", cur.line)
	}
	return out, nil
}

// flag returns the value of --name=value, or "".
func (in instruction) flag(name string) string {
	for _, f := range in.flags {
		if v, ok := strings.CutPrefix(f, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

// envPairs reads ENV's two forms: "K=V K2=V2" and the legacy "K V".
func envPairs(args string) (map[string]string, error) {
	out := map[string]string{}
	fields := strings.Fields(args)
	if len(fields) == 0 {
		return nil, fmt.Errorf("ENV without a variable")
	}
	if !strings.Contains(fields[0], "=") {
		out[fields[0]] = strings.TrimSpace(strings.TrimPrefix(args, fields[0]))
		return out, nil
	}
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return nil, fmt.Errorf("ENV %q: want KEY=value", f)
		}
		uq, err := strconv.Unquote(v)
		if err == nil {
			v = uq
		}
		out[k] = v
	}
	return out, nil
}

// image is what the final stage of the Dockerfile makes.
type image struct {
	stages     int
	base       string            // the final FROM
	env        map[string]string // the final stage's ENV
	user       string            // the final USER
	uid        int
	expose     []int
	entrypoint []string
	cmd        []string
	copies     map[string]string // destination -> source, final stage
	copyFrom   map[string]string // destination -> source, COPY --from
	buildOut   string            // the binary deploy/build.sh writes
	buildRun   instruction
	args       map[string]string // ARG defaults, all stages
	health     bool              // a HEALTHCHECK other than NONE
}

// configPath is where the image reads its configuration.
func (im image) configPath() string { return im.env["SIDECAR_CONFIG"] }

// mustImage parses the top-level Dockerfile into what its final stage holds.
func mustImage(tb testing.TB) image {
	tb.Helper()
	ins, err := parseDockerfile(mustRead(tb, filepath.Join(root, "Dockerfile")))
	if err != nil {
		tb.Fatalf("Dockerfile: %v", err)
	}
	im := image{env: map[string]string{}, args: map[string]string{}, uid: -1}
	for _, in := range ins {
		switch in.cmd {
		case "FROM":
			im.stages++
			im.base = strings.Fields(in.args)[0]
			im.env, im.user, im.uid, im.expose = map[string]string{}, "", -1, nil
			im.entrypoint, im.cmd = nil, nil
			im.copies, im.copyFrom = map[string]string{}, map[string]string{}
		case "ARG":
			for _, a := range strings.Fields(in.args) {
				k, v, _ := strings.Cut(a, "=")
				im.args[k] = v
			}
		case "ENV":
			pairs, err := envPairs(in.args)
			if err != nil {
				tb.Fatalf("Dockerfile:%d: %v", in.line, err)
			}
			for k, v := range pairs {
				im.env[k] = v
			}
		case "USER":
			im.user = in.args
			im.uid, err = strconv.Atoi(strings.Split(in.args, ":")[0])
			if err != nil {
				im.uid = -1
			}
		case "EXPOSE":
			for _, p := range strings.Fields(in.args) {
				n, err := strconv.Atoi(strings.TrimSuffix(p, "/tcp"))
				if err != nil {
					tb.Fatalf("Dockerfile:%d: EXPOSE %q: %v", in.line, p, err)
				}
				im.expose = append(im.expose, n)
			}
		case "ENTRYPOINT", "CMD":
			var v []string
			if err := json.Unmarshal([]byte(in.args), &v); err != nil {
				tb.Fatalf("Dockerfile:%d: %s must be in exec form, a JSON array: %v", in.line, in.cmd, err)
			}
			if in.cmd == "ENTRYPOINT" {
				im.entrypoint = v
			} else {
				im.cmd = v
			}
		case "COPY":
			f := strings.Fields(in.args)
			if len(f) < 2 {
				tb.Fatalf("Dockerfile:%d: COPY needs a source and a destination", in.line)
			}
			srcs, dst := f[:len(f)-1], f[len(f)-1]
			for _, src := range srcs {
				to := dst
				if len(srcs) > 1 || strings.HasSuffix(dst, "/") {
					to = path.Join(dst, path.Base(src))
				}
				if in.flag("from") != "" {
					im.copyFrom[to] = src
				} else {
					im.copies[to] = src
				}
			}
		case "RUN":
			if f := strings.Fields(in.args); slices.Contains(f, "deploy/build.sh") {
				i := slices.Index(f, "deploy/build.sh")
				if i+1 < len(f) {
					im.buildOut = f[i+1]
				}
				im.buildRun = in
			}
		case "HEALTHCHECK":
			im.health = strings.ToUpper(strings.TrimSpace(in.args)) != "NONE"
		}
	}
	return im
}

// TestDockerfile: the image is multi-stage, static-friendly, non-root,
// exposes the ports the config listens on, builds with deploy/build.sh, and
// has no HEALTHCHECK.
func TestDockerfile(t *testing.T) {
	im := mustImage(t)
	if im.stages < 2 {
		t.Errorf("%d stages, want a build stage and a final stage", im.stages)
	}
	if im.base != "gcr.io/distroless/static-debian12:nonroot" && im.base != "scratch" {
		t.Errorf("final stage FROM %s, want gcr.io/distroless/static-debian12:nonroot or scratch", im.base)
	}
	if im.uid <= 0 {
		t.Errorf("final USER %q, want a numeric non-root UID (Kubernetes' runAsNonRoot cannot check a name)", im.user)
	}
	if im.health {
		t.Error("HEALTHCHECK: orchestrators probe /healthz and /readyz; the image has no shell to run one")
	}

	// The build: deploy/build.sh, stamped, its output copied into the image.
	if im.buildOut == "" {
		t.Fatal("no RUN ... deploy/build.sh OUTPUT in the Dockerfile")
	}
	for _, want := range []string{"sh", "VERSION=$VERSION", "COMMIT=$COMMIT", "GOOS=$TARGETOS", "GOARCH=$TARGETARCH"} {
		if !slices.Contains(strings.Fields(im.buildRun.args), want) {
			t.Errorf("Dockerfile:%d: the build RUN lacks %q", im.buildRun.line, want)
		}
	}
	for _, arg := range []string{"VERSION", "COMMIT", "TARGETOS", "TARGETARCH"} {
		if _, ok := im.args[arg]; !ok {
			t.Errorf("no ARG %s", arg)
		}
	}
	if len(im.entrypoint) != 1 {
		t.Fatalf("ENTRYPOINT %q, want the binary alone", im.entrypoint)
	}
	if src := im.copyFrom[im.entrypoint[0]]; src != im.buildOut {
		t.Errorf("ENTRYPOINT %s comes from COPY --from %q, want deploy/build.sh's output %s", im.entrypoint[0], src, im.buildOut)
	}
	if !slices.Equal(im.cmd, []string{"run"}) {
		t.Errorf("CMD %q, want [\"run\"]", im.cmd)
	}
	goMod := string(mustRead(t, filepath.Join(root, "go.mod")))
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(goMod)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	if v := im.args["GO_VERSION"]; version.Compare("go"+v, "go"+m[1]) < 0 {
		t.Errorf("ARG GO_VERSION=%s is older than go.mod's go %s", v, m[1])
	}

	// The configuration: a file at SIDECAR_CONFIG, the environment, and the
	// ports they give are the ones exposed.
	if im.configPath() != "/etc/sentry-sidecar/config.yaml" {
		t.Errorf("SIDECAR_CONFIG=%q, want the documented /etc/sentry-sidecar/config.yaml", im.configPath())
	}
	src, ok := im.copies[im.configPath()]
	if !ok {
		t.Fatalf("no COPY of a default config to SIDECAR_CONFIG %s", im.configPath())
	}
	known := knownEnv()
	for k := range im.env {
		if !known[k] {
			t.Errorf("ENV %s: not a variable the sidecar reads", k)
		}
	}
	cfg := mustLoadConfig(t, mustRead(t, filepath.Join(root, src)), im.env)
	if loopbackOnly(cfg.Admin.Listen) {
		t.Errorf("admin.listen %q in the image: probes from the kubelet and Docker's published ports cannot reach loopback", cfg.Admin.Listen)
	}
	want := []int{mustPort(t, cfg.Listen), mustPort(t, cfg.Admin.Listen)}
	got := slices.Clone(im.expose)
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("EXPOSE %v, want the listen and admin.listen ports %v", got, want)
	}
}

func TestParseDockerfile(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []instruction
		err  string
	}{
		{
			name: "continuation with a comment inside",
			in:   "# syntax=docker/dockerfile:1\nRUN --mount=type=cache,target=/x \\\n  # a comment\n  echo a \\\n  b\nUSER 1:1\n",
			want: []instruction{
				{cmd: "RUN", flags: []string{"--mount=type=cache,target=/x"}, args: "echo a b", line: 2},
				{cmd: "USER", args: "1:1", line: 6},
			},
		},
		{name: "lower case", in: "from scratch\n", want: []instruction{{cmd: "FROM", args: "scratch", line: 1}}},
		{name: "typo", in: "EXPOSES 80\n", err: `line 1: unknown instruction "EXPOSES"`},
		{name: "heredoc", in: "RUN <<EOF\necho\nEOF\n", err: "line 1: heredocs are not supported here"},
		{name: "dangling", in: "RUN a \\\n", err: "line 1: instruction continues past the end of the file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseDockerfile([]byte(tc.in))
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// ignoreRule is one line of a .dockerignore.
type ignoreRule struct {
	pattern string // cleaned, without the "!"
	re      *regexp.Regexp
	negate  bool
}

// parseDockerignore reads .dockerignore with Docker's rules: patterns are
// cleaned paths relative to the context, "*" and "?" stay within one path
// element, "**" spans any number, "!" lets back in, and the last rule that
// matches a path or one of its parents decides.
func parseDockerignore(b []byte) []ignoreRule {
	var rules []ignoreRule
	for _, line := range strings.Split(string(b), "\n") {
		p := strings.TrimSpace(line)
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		r := ignoreRule{}
		if rest, ok := strings.CutPrefix(p, "!"); ok {
			r.negate, p = true, strings.TrimSpace(rest)
		}
		p = filepath.ToSlash(filepath.Clean(strings.TrimPrefix(p, "/")))
		var re strings.Builder
		for i := 0; i < len(p); i++ {
			switch {
			case strings.HasPrefix(p[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(p[i:], "**"):
				re.WriteString(".*")
				i++
			case p[i] == '*':
				re.WriteString("[^/]*")
			case p[i] == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(p[i : i+1]))
			}
		}
		r.pattern = p
		r.re = regexp.MustCompile("^" + re.String() + "$")
		rules = append(rules, r)
	}
	return rules
}

// ignored reports whether rel (slash-separated) stays out of the context.
func ignored(rules []ignoreRule, rel string) bool {
	out := false
	for _, r := range rules {
		match := false
		for p := rel; ; {
			if r.re.MatchString(p) {
				match = true
				break
			}
			i := strings.LastIndex(p, "/")
			if i < 0 {
				break
			}
			p = p[:i]
		}
		if match {
			out = !r.negate
		}
	}
	return out
}

func TestDockerignore(t *testing.T) {
	rules := parseDockerignore(mustRead(t, filepath.Join(root, ".dockerignore")))
	for path, want := range map[string]bool{
		".git/config":                       true,
		"bin/sentry-sidecar":                true,
		"README.md":                         true,
		"e2e/go.mod":                        true,
		"deploy/compose/.env":               true,
		"deploy/kubernetes/secret.yaml":     true,
		"go.mod":                            false,
		"go.sum":                            false,
		"config.example.yaml":               false,
		"deploy/build.sh":                   false,
		"cmd/sentry-sidecar/main.go":        false,
		"cmd/sentry-sidecar/main_test.go":   true,
		"internal/config/testdata/bad.yaml": true,
		"internal/inbox/page.html":          false,
	} {
		if got := ignored(rules, path); got != want {
			t.Errorf("%s: ignored=%t, want %t", path, got, want)
		}
	}
}

// reincludes reports whether a "!" rule may let back in something under the
// directory dir, so the walk must go into it even though dir is ignored.
func reincludes(rules []ignoreRule, dir string) bool {
	for _, r := range rules {
		if r.negate && (strings.HasPrefix(r.pattern, dir+"/") || strings.ContainsAny(r.pattern, "*?")) {
			return true
		}
	}
	return false
}

// mustBuildContext copies the files Docker would send as the build context
// (the repository less .dockerignore) into a new directory.
func mustBuildContext(tb testing.TB) string {
	tb.Helper()
	rules := parseDockerignore(mustRead(tb, filepath.Join(root, ".dockerignore")))
	dir := tb.TempDir()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if ignored(rules, rel) && !reincludes(rules, rel) {
				return filepath.SkipDir
			}
			return nil
		}
		if ignored(rules, rel) || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		tb.Fatal(err)
	}
	return dir
}

// TestImageBuild runs the image's build (deploy/build.sh, on exactly the
// files .dockerignore lets into the context) and checks that the binary is
// static, stamped, accepts the image's default config, and starts, serves
// and drains with the image's environment.
func TestImageBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	if runtime.GOOS != "linux" {
		t.Skip("checks a Linux ELF binary")
	}
	t.Parallel()
	im := mustImage(t)
	ctxDir := mustBuildContext(t)
	bin := filepath.Join(t.TempDir(), "sentry-sidecar")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "sh", "deploy/build.sh", bin)
	build.Dir = ctxDir
	build.Env = append(os.Environ(), "VERSION=9.8.7-deploytest", "COMMIT=0123abcd", "GOOS=", "GOARCH=", "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("deploy/build.sh in the Docker build context: %v\n%s", err, out)
	}

	t.Run("static", func(t *testing.T) {
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
				t.Errorf("program header %v: the binary is dynamically linked", p.Type)
			}
		}
		if s := f.Section(".dynamic"); s != nil {
			t.Error("the binary has a .dynamic section")
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Errorf("the binary needs shared libraries %v", libs)
		}
	})

	t.Run("stamped", func(t *testing.T) {
		info, err := buildinfo.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		settings := map[string]string{}
		for _, s := range info.Settings {
			settings[s.Key] = s.Value
		}
		if settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
			t.Errorf("build settings CGO_ENABLED=%q -trimpath=%q, want 0 and true", settings["CGO_ENABLED"], settings["-trimpath"])
		}
		out, err := exec.CommandContext(ctx, bin, "version").Output()
		if err != nil {
			t.Fatalf("version: %v", err)
		}
		if want := "sentry-sidecar 9.8.7-deploytest (commit 0123abcd,"; !strings.HasPrefix(string(out), want) {
			t.Errorf("version printed %q, want it to start with %q", out, want)
		}
	})

	// The image's environment, with its config path pointing at the copy of
	// the file the Dockerfile puts there.
	imageEnv := func(extra ...string) []string {
		env := []string{"HOME=" + t.TempDir()}
		for k, v := range im.env {
			if k == "SIDECAR_CONFIG" {
				v = filepath.Join(ctxDir, im.copies[v])
			}
			env = append(env, k+"="+v)
		}
		return append(env, extra...)
	}

	t.Run("check", func(t *testing.T) {
		for _, args := range [][]string{
			{"check"}, // SIDECAR_CONFIG, as in the image
			{"check", "-config", filepath.Join(ctxDir, "config.example.yaml")},
		} {
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Env = imageEnv()
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%v: %v\n%s", args, err, out)
			}
		}
	})

	t.Run("run", func(t *testing.T) {
		mustRunAndDrain(t, bin, append(im.entrypoint[1:], im.cmd...), imageEnv)
	})
}

// logLines hands each line a process writes to a callback, and keeps the
// tail for failure messages.
type logLines struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	tail   []string
	onLine func(string)
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	for {
		line, err := l.buf.ReadString('\n')
		if err == io.EOF {
			l.buf.WriteString(line)
			return len(p), nil
		}
		l.tail = append(l.tail, line)
		if len(l.tail) > 20 {
			l.tail = l.tail[1:]
		}
		l.onLine(strings.TrimSpace(line))
	}
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.tail, "")
}

// mustRunAndDrain starts the binary as the image would, on loopback ports,
// in front of a stub API, checks that it proxies and that /healthz and
// /readyz answer on the admin listener, then sends SIGTERM: /readyz must
// turn 503 (what Kubernetes and load balancers rely on, instead of a preStop
// hook), and the process must exit 0 within its drain budget.
func mustRunAndDrain(t *testing.T, bin string, args []string, imageEnv func(...string) []string) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "api:"+r.URL.Path)
	}))
	defer api.Close()

	type addrs struct{ main, admin string }
	started := make(chan addrs, 1)
	logs := &logLines{onLine: func(line string) {
		var rec struct {
			Msg   string `json:"msg"`
			Addr  string `json:"addr"`
			Admin string `json:"admin_addr"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" {
			select {
			case started <- addrs{rec.Addr, rec.Admin}:
			default:
			}
		}
	}}
	cmd := exec.Command(bin, args...)
	cmd.Env = imageEnv(
		"SIDECAR_LISTEN=127.0.0.1:0",
		"SIDECAR_ADMIN_LISTEN=127.0.0.1:0",
		"SIDECAR_UPSTREAM_URL="+api.URL,
		"LOG_FORMAT=json",
	)
	cmd.Stdout, cmd.Stderr = io.Discard, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}

	var a addrs
	select {
	case a = <-started:
	case err := <-exited:
		t.Fatalf("exited before listening: %v\n%s", err, logs)
	case <-time.After(30 * time.Second):
		stop()
		t.Fatalf("no \"listening\" log line in 30s\n%s", logs)
	}

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(url string) (int, string) {
		res, err := client.Get(url)
		if err != nil {
			return 0, err.Error()
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	waitFor := func(url string, status int) bool {
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if got, _ := get(url); got == status {
				return true
			}
		}
		return false
	}

	if code, body := get("http://" + a.admin + "/healthz"); code != http.StatusOK {
		t.Errorf("GET /healthz: %d %s", code, body)
	}
	if !waitFor("http://"+a.admin+"/readyz", http.StatusOK) {
		t.Errorf("/readyz never answered 200 with the API up\n%s", logs)
	}
	if code, body := get("http://" + a.main + "/api/v1/apps"); code != http.StatusOK || body != "api:/api/v1/apps" {
		t.Errorf("GET /api/v1/apps through the sidecar: %d %q", code, body)
	}

	began := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		stop()
		t.Fatal(err)
	}
	if !waitFor("http://"+a.admin+"/readyz", http.StatusServiceUnavailable) {
		t.Errorf("/readyz did not turn 503 after SIGTERM\n%s", logs)
	}
	cfg := mustLoadConfigFromEnv(t, cmd.Env)
	limit := drainBudget(cfg) + stopMargin
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v, want 0\n%s", err, logs)
		}
		if took := time.Since(began); took > limit {
			t.Errorf("drained in %s, over the budget %s", took, limit)
		}
	case <-time.After(limit):
		stop()
		t.Errorf("still running %s after SIGTERM\n%s", limit, logs)
	}
	scan := bufio.NewScanner(strings.NewReader(logs.String()))
	for scan.Scan() {
		if strings.Contains(scan.Text(), `"level":"error"`) {
			t.Errorf("error logged: %s", scan.Text())
		}
	}
}

// mustLoadConfigFromEnv loads the configuration a process with env sees.
func mustLoadConfigFromEnv(tb testing.TB, env []string) config.Config {
	tb.Helper()
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return mustLoadConfig(tb, mustRead(tb, m["SIDECAR_CONFIG"]), m)
}

package config

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite testdata/bad/*.err from the current error text")

// noEnv is an empty environment.
func noEnv(string) (string, bool) { return "", false }

// problemLine is the shape of every line of a config error: the key (with
// the environment variable that set it, if any) or "config file", then the
// problem, ending with the file line where the value was written.
var problemLine = regexp.MustCompile(`^(config file|` + keySegment + `(\.` + keySegment + `|\[\d+\])*( \([A-Z0-9_]+\))?): \S.*\S$`)

// keySegment is a plain key or a quoted one (see keyPart).
const keySegment = `([A-Za-z0-9_<-]+|"([^"\\]|\\.)*")`

// TestBadConfigs loads every testdata/bad/*.yaml and compares the whole
// joined error with its .err file. Run with -update to rewrite the .err
// files, then read them: each line must name its key and read well to an
// operator.
func TestBadConfigs(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join("testdata", "bad", "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := Load(file, noEnv, "web-1")
			require.Error(t, err, "a bad config must not load")
			got := err.Error() + "\n"

			golden := strings.TrimSuffix(file, ".yaml") + ".err"
			if *update {
				require.NoError(t, os.WriteFile(golden, []byte(got), 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "missing golden file; run go test -run TestBadConfigs -update")
			assert.Equal(t, string(want), got)

			for _, line := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
				assert.Regexp(t, problemLine, line, "each problem names its key")
			}
			// The test files mark every secret with "sekrit": DSN keys,
			// passwords and JWT secrets never reach an error.
			assert.NotContains(t, strings.ToLower(got), "sekrit")
		})
	}
}

// TestBadConfigsHaveGoldenFiles keeps testdata/bad tidy: no .err file
// without its .yaml.
func TestBadConfigsHaveGoldenFiles(t *testing.T) {
	t.Parallel()
	errs, err := filepath.Glob(filepath.Join("testdata", "bad", "*.err"))
	require.NoError(t, err)
	for _, e := range errs {
		assert.FileExists(t, strings.TrimSuffix(e, ".err")+".yaml")
	}
}

// TestGoodConfigs loads every testdata/good/*.yaml: each must be valid.
func TestGoodConfigs(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join("testdata", "good", "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			t.Parallel()
			cfg, err := Load(file, noEnv, "web-1")
			require.NoError(t, err)
			assert.NoError(t, cfg.Validate())
		})
	}
}

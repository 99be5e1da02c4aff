package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to Load as a config file. Load must never
// panic; a config it accepts must validate, print, and load back from its
// own YAML to the same printout.
func FuzzLoad(f *testing.F) {
	for _, pattern := range []string{"testdata/bad/*.yaml", "testdata/good/*.yaml"} {
		files, err := filepath.Glob(pattern)
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("upstream: &u {<<: *u}\n"))
	f.Add([]byte("listen: !!binary aGVsbG8=\n"))

	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path, err := os.CreateTemp(dir, "fuzz-*.yaml")
		if err != nil {
			t.Fatal(err)
		}
		defer os.Remove(path.Name())
		if _, err := path.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := path.Close(); err != nil {
			t.Fatal(err)
		}

		cfg, err := Load(path.Name(), noEnv, "web-1")
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !problemLine.MatchString(line) {
					t.Errorf("error line does not name its key: %q", line)
				}
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Load accepted a config that does not validate: %v", err)
		}
		_ = cfg.Warnings()

		out := cfg.YAML()
		again, err := os.CreateTemp(dir, "again-*.yaml")
		if err != nil {
			t.Fatal(err)
		}
		defer os.Remove(again.Name())
		if _, err := again.WriteString(out); err != nil {
			t.Fatal(err)
		}
		if err := again.Close(); err != nil {
			t.Fatal(err)
		}
		cfg2, err := Load(again.Name(), noEnv, "web-1")
		if err != nil {
			t.Fatalf("YAML() of an accepted config does not load: %v\n%s", err, out)
		}
		if out2 := cfg2.YAML(); out2 != out {
			t.Fatalf("YAML() does not round-trip:\n%s\n---\n%s", out, out2)
		}
		if !reflect.DeepEqual(cfg.Redacted().Sentry.Contexts, cfg2.Sentry.Contexts) {
			t.Fatalf("contexts do not round-trip: %#v != %#v", cfg.Sentry.Contexts, cfg2.Sentry.Contexts)
		}
	})
}

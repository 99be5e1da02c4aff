package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/sentry-sidecar/sentry-sidecar/internal/config"
)

// structKeys lists the dotted YAML keys of t's fields, leaves and sections
// alike; slices of structs contribute their item keys under the slice key.
func structKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		key := prefix + tag
		keys = append(keys, key)
		ft := f.Type
		if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft.NumField() > 0 && ft != reflect.TypeOf(config.Duration(0)) {
			keys = append(keys, structKeys(ft, key+".")...)
		}
	}
	return keys
}

// nodeKeys lists the dotted keys present in a YAML document, stopping at
// maps whose keys are data (claims, contexts).
func nodeKeys(n *yaml.Node, prefix string, out map[string]bool) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			nodeKeys(c, prefix, out)
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			nodeKeys(c, prefix, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := prefix + n.Content[i].Value
			out[key] = true
			if key == "jwt.claims" || key == "sentry.contexts" {
				continue
			}
			nodeKeys(n.Content[i+1], key+".", out)
		}
	}
}

// TestExampleConfigDocumentsEveryKey keeps config.example.yaml, the README
// and --help in step with the Config struct: every key is in the example,
// every environment variable is named next to its key there, in the README
// table and in --help.
func TestExampleConfigDocumentsEveryKey(t *testing.T) {
	t.Parallel()
	example, err := os.ReadFile("../../config.example.yaml")
	require.NoError(t, err)
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)

	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal(example, &doc))
	present := map[string]bool{}
	nodeKeys(&doc, "", present)
	want := structKeys(reflect.TypeOf(config.Config{}), "")
	for _, k := range want {
		assert.True(t, present[k], "config.example.yaml lacks key %s", k)
	}
	for k := range present {
		assert.True(t, slices.Contains(want, k), "config.example.yaml has key %s that Config lacks", k)
	}

	var help bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"run", "--help"}, envFrom(nil), io.Discard, &help))
	for _, v := range config.EnvVars() {
		leaf := v.Key[strings.LastIndex(v.Key, ".")+1:]
		line := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(leaf) + `:.*#.*\b` + v.Name + `\b`)
		assert.Regexp(t, line, string(example), "config.example.yaml must name %s on the line of %s", v.Name, v.Key)
		assert.Contains(t, string(readme), "| `"+v.Name+"` | `"+v.Key+"`", "README table lacks %s", v.Name)
		assert.Contains(t, help.String(), v.Name, "--help lacks %s", v.Name)
	}
}

// TestExampleConfigIsValid: the example loads, validates and is what the
// README says: the defaults, plus the examples of lists that default empty.
func TestExampleConfigIsValid(t *testing.T) {
	t.Parallel()
	cfg, err := config.Load("../../config.example.yaml", envFrom(nil), "web-1")
	require.NoError(t, err)
	want := config.Default()
	want.Resolve("web-1")
	want.Actions = cfg.Actions
	want.Sentry.TracesSampler = cfg.Sentry.TracesSampler
	assert.Equal(t, want, cfg, "config.example.yaml must show the defaults")
	assert.Len(t, cfg.Actions, 3)
	assert.Len(t, cfg.Sentry.TracesSampler, 2)
}

package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"github.com/caarlos0/env/v11"
	"gopkg.in/yaml.v3"
)

// Load builds the effective configuration: Default, then the YAML file at
// path (none when path is empty), then the environment seen through
// lookupEnv, then Resolve with hostname. It returns every problem it finds,
// joined, each naming its key; the Config is only usable when err is nil.
func Load(path string, lookupEnv func(string) (string, bool), hostname string) (Config, error) {
	cfg := Default()
	var errs []error
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("read config: %w", err)
		}
		errs = append(errs, decodeYAML(b, &cfg)...)
	}
	errs = append(errs, overlayEnv(&cfg, lookupEnv)...)
	if len(errs) > 0 {
		// Values that failed to decode would only produce follow-on errors.
		return cfg, errors.Join(errs...)
	}
	cfg.Resolve(hostname)
	return cfg, cfg.Validate()
}

// decodeYAML decodes b over cfg. Unknown keys are collected first, all of
// them with their dotted key and line, because yaml.v3 stops at the first
// and names a Go type instead of the key.
func decodeYAML(b []byte, cfg *Config) []error {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return []error{fmt.Errorf("config file: %s", strings.TrimPrefix(err.Error(), "yaml: "))}
	}
	if len(root.Content) == 0 {
		return nil // an empty file is valid: defaults plus environment
	}
	keys := map[int]string{}
	errs := walkKeys(root.Content[0], reflect.TypeOf(*cfg), "", keys)
	if len(errs) > 0 {
		return errs
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	err := dec.Decode(cfg)
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return []error{fmt.Errorf("config file: %s", strings.TrimPrefix(err.Error(), "yaml: "))}
	}
	for _, msg := range te.Errors {
		errs = append(errs, typeError(msg, keys))
	}
	return errs
}

var lineRE = regexp.MustCompile(`^line (\d+): (.*)$`)

// typeError rewrites yaml.v3's "line 3: cannot unmarshal !!seq into string"
// so it names the key at that line.
func typeError(msg string, keys map[int]string) error {
	m := lineRE.FindStringSubmatch(msg)
	if m == nil {
		return fmt.Errorf("config file: %s", msg)
	}
	line, _ := strconv.Atoi(m[1])
	detail := strings.Replace(m[2], "cannot unmarshal", "cannot decode", 1)
	detail = strings.ReplaceAll(detail, "config.Duration", "duration")
	if key, ok := keys[line]; ok {
		return fmt.Errorf("%s: %s (line %d)", key, detail, line)
	}
	return fmt.Errorf("config file line %d: %s", line, detail)
}

// walkKeys checks every mapping key under n against the yaml tags of t and
// records the dotted key of each line for later messages.
func walkKeys(n *yaml.Node, t reflect.Type, prefix string, keys map[int]string) []error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var errs []error
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := join(prefix, k.Value)
			f, ok := fieldByTag(t, k.Value)
			if !ok {
				errs = append(errs, fmt.Errorf("%s: unknown key (line %d)", key, k.Line))
				continue
			}
			keys[k.Line] = key
			if v.Line != k.Line {
				keys[v.Line] = key
			}
			errs = append(errs, walkKeys(v, f.Type, key, keys)...)
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, item := range n.Content {
			key := fmt.Sprintf("%s[%d]", prefix, i)
			keys[item.Line] = key
			errs = append(errs, walkKeys(item, t.Elem(), key, keys)...)
		}
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := join(prefix, k.Value)
			keys[k.Line] = key
			errs = append(errs, walkKeys(v, t.Elem(), key, keys)...)
		}
	}
	return errs
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); tag == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// EnvVar pairs an environment variable with the YAML key it overrides.
type EnvVar struct {
	Name string
	Key  string
}

// EnvVars lists every environment variable the configuration reads, in the
// order of the YAML keys. Help text and docs are built from it, so they
// cannot drift from the struct tags.
func EnvVars() []EnvVar {
	var out []EnvVar
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			key := join(prefix, tag)
			if name := f.Tag.Get("env"); name != "" {
				out = append(out, EnvVar{Name: name, Key: key})
			}
			if f.Type.Kind() == reflect.Struct && f.Type.NumField() > 0 {
				walk(f.Type, key)
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	return out
}

// overlayEnv sets the fields whose variables lookupEnv knows. Variables are
// applied one at a time so each bad value is reported with its own name and
// key (env.ParseError names the Go field, and App.Debug and Sentry.Debug
// share one).
func overlayEnv(cfg *Config, lookupEnv func(string) (string, bool)) []error {
	var errs []error
	for _, v := range EnvVars() {
		val, ok := lookupEnv(v.Name)
		if !ok {
			continue
		}
		err := env.ParseWithOptions(cfg, env.Options{Environment: map[string]string{v.Name: val}})
		var pe env.ParseError
		switch {
		case errors.As(err, &pe):
			errs = append(errs, fmt.Errorf("%s (%s): cannot parse %q as %s", v.Key, v.Name, val, pe.Type))
		case err != nil:
			errs = append(errs, fmt.Errorf("%s (%s): %w", v.Key, v.Name, err))
		}
	}
	return errs
}

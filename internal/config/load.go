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
	"time"
	"unicode/utf8"

	"github.com/caarlos0/env/v11"
	"gopkg.in/yaml.v3"
)

// Load builds the effective configuration: Default, then the YAML file at
// path (none when path is empty), then the environment seen through
// lookupEnv, then Resolve with hostname. It returns every problem it finds,
// joined, each naming its key and where the value came from (the file's
// line or the environment variable); the Config is only usable when err is
// nil.
func Load(path string, lookupEnv func(string) (string, bool), hostname string) (Config, error) {
	cfg := Default()
	// origin maps a dotted key to where its value was set: "line 3" or the
	// name of an environment variable.
	origin := map[string]string{}
	var errs []error
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("read config: %w", err)
		}
		errs = append(errs, decodeYAML(b, &cfg, origin)...)
	}
	errs = append(errs, overlayEnv(&cfg, lookupEnv, origin)...)
	if len(errs) > 0 {
		// Values that failed to decode would only produce follow-on errors.
		return cfg, errors.Join(errs...)
	}
	cfg.Resolve(hostname)
	return cfg, locate(cfg.Validate(), origin)
}

// problem is one thing wrong with one key.
type problem struct {
	key string
	msg string
}

func (p *problem) Error() string { return p.key + ": " + p.msg }

// locate adds to each problem of Validate where its value came from, so an
// operator knows whether to fix the file or the environment.
func locate(err error, origin map[string]string) error {
	if err == nil {
		return nil
	}
	var in []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		in = j.Unwrap()
	} else {
		in = []error{err}
	}
	out := make([]error, len(in))
	for i, e := range in {
		out[i] = e
		var p *problem
		if !errors.As(e, &p) {
			continue
		}
		switch from := originOf(p.key, origin); {
		case strings.HasPrefix(from, "line "):
			out[i] = &problem{key: p.key, msg: p.msg + " (" + from + ")"}
		case from != "":
			out[i] = &problem{key: p.key + " (" + from + ")", msg: p.msg}
		}
	}
	return errors.Join(out...)
}

// originOf finds where key, or the nearest key that contains it
// (upstream.trusted_proxies for upstream.trusted_proxies[1]), was set.
func originOf(key string, origin map[string]string) string {
	for key != "" {
		if from, ok := origin[key]; ok {
			return from
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			break
		}
		key = key[:i]
	}
	return ""
}

// decodeYAML decodes b over cfg. The document is walked first, against the
// yaml tags of Config, so that every unknown key, duplicate key and value of
// the wrong type is reported at once with its dotted key and line: yaml.v3
// stops at the first unknown key, names Go types instead of keys, and aborts
// the whole decode at the first bad duration. It records the line of every
// key in origin.
func decodeYAML(b []byte, cfg *Config, origin map[string]string) []error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file is valid: defaults plus environment
		}
		return []error{syntaxError(err)}
	}
	// A second document would be silently ignored; only empty ones (a
	// trailing "---") are harmless.
	for {
		var next yaml.Node
		err := dec.Decode(&next)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return []error{syntaxError(err)}
		}
		if len(next.Content) > 0 && !isNull(next.Content[0]) {
			return []error{fmt.Errorf("config file: holds more than one YAML document (the second starts at line %d), want one", next.Content[0].Line)}
		}
	}
	if len(root.Content) == 0 || isNull(root.Content[0]) {
		return nil // a document of only comments, or "---", is empty too
	}
	doc := root.Content[0]
	if doc.Kind != yaml.MappingNode {
		return []error{fmt.Errorf("config file: must be a mapping of keys (listen, upstream, ...), got %s (line %d)", describe(doc), doc.Line)}
	}
	w := walker{origin: origin, merging: map[*yaml.Node]bool{}}
	if errs := w.walk(doc, reflect.TypeOf(*cfg), ""); len(errs) > 0 {
		return errs
	}
	if err := doc.Decode(cfg); err != nil {
		// The walk should have found every problem; this is the fallback.
		return []error{fmt.Errorf("config file: %s", strings.TrimPrefix(err.Error(), "yaml: "))}
	}
	// yaml.v3 keeps the default under a null scalar or section but empties
	// a list or map, so a blank "capture_status:" would silently capture
	// nothing and "claims: null" would map no user. A null keeps the default
	// everywhere ([] and {} still say "none" and "no more").
	def := Default()
	for _, key := range w.nulls {
		dst, ok1 := fieldAt(reflect.ValueOf(cfg).Elem(), key)
		src, ok2 := fieldAt(reflect.ValueOf(&def).Elem(), key)
		if ok1 && ok2 && dst.IsNil() {
			dst.Set(src)
		}
	}
	return nil
}

// fieldAt finds the struct field of v at a dotted key of struct fields
// ("upstream.trusted_proxies"); ok is false for keys inside lists and maps.
func fieldAt(v reflect.Value, key string) (reflect.Value, bool) {
	for _, part := range strings.Split(key, ".") {
		if v.Kind() != reflect.Struct {
			return reflect.Value{}, false
		}
		f, ok := fieldByTag(v.Type(), part)
		if !ok {
			return reflect.Value{}, false
		}
		v = v.FieldByIndex(f.Index)
	}
	return v, true
}

var syntaxRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError words a parse error of the YAML text.
func syntaxError(err error) error {
	if m := syntaxRE.FindStringSubmatch(err.Error()); m != nil {
		return fmt.Errorf("config file: not valid YAML: %s (line %s)", m[2], m[1])
	}
	return fmt.Errorf("config file: not valid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
}

// walker checks a YAML tree against the Go type it will be decoded into.
type walker struct {
	origin map[string]string
	// merging holds the "<<" merge sources being walked, so a mapping that
	// merges itself cannot recurse forever.
	merging map[*yaml.Node]bool
	// nulls are the keys of lists and maps set to null.
	nulls []string
	// steps counts the values checked: aliases and merges can make a
	// short file stand for an exponential number of them.
	steps int
}

// maxSteps bounds the work of a walk; a real config has a few hundred
// values.
const maxSteps = 100_000

// tired counts one step and says, once, when the budget is spent.
func (w *walker) tired() []error {
	w.steps++
	if w.steps == maxSteps+1 {
		return []error{fmt.Errorf("config file: too many aliases and merges to check (more than %d values)", maxSteps)}
	}
	if w.steps > maxSteps {
		return []error{}
	}
	return nil
}

var durationType = reflect.TypeOf(Duration(0))

// walk checks n against t. Recursion follows t, never the YAML tree, so
// aliases that point back at their own ancestors cannot loop.
func (w *walker) walk(n *yaml.Node, t reflect.Type, key string) []error {
	if errs := w.tired(); errs != nil {
		return errs
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if isNull(n) {
		if t.Kind() == reflect.Map || t.Kind() == reflect.Slice {
			w.nulls = append(w.nulls, key)
		}
		return nil // null keeps the default; see decodeYAML
	}
	mismatch := func(want string) []error {
		return []error{fmt.Errorf("%s: must be %s, got %s (line %d)", key, want, describe(n), n.Line)}
	}
	switch {
	case t == durationType:
		// Checked here because yaml.v3 aborts the decode at the first
		// failing UnmarshalText and reports it without key or line.
		if n.Kind != yaml.ScalarNode {
			return mismatch("a duration such as 5s, 250ms or 1m30s")
		}
		if _, err := time.ParseDuration(n.Value); err != nil {
			return mismatch("a duration such as 5s, 250ms or 1m30s")
		}
		return nil
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return mismatch("a mapping of keys")
		}
		return w.mapping(n, key, func(k *yaml.Node) (reflect.Type, []error) {
			f, ok := fieldByTag(t, k.Value)
			if !ok {
				return nil, []error{unknownKey(t, join(key, keyPart(k.Value)), k)}
			}
			return f.Type, nil
		})
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			return mismatch("a mapping")
		}
		return w.mapping(n, key, func(*yaml.Node) (reflect.Type, []error) { return t.Elem(), nil })
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return mismatch("a list")
		}
		var errs []error
		for i, item := range n.Content {
			k := fmt.Sprintf("%s[%d]", key, i)
			w.origin[k] = fmt.Sprintf("line %d", item.Line)
			errs = append(errs, w.walk(item, t.Elem(), k)...)
		}
		return errs
	case t.Kind() == reflect.Interface:
		return nil // any YAML value (contexts)
	default:
		// A scalar: let yaml.v3 decide, on this node alone, so its error
		// belongs to this key even when a flow mapping puts several keys on
		// one line.
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			return mismatch(kindWords(t))
		}
		return nil
	}
}

// mapping walks the keys of a mapping node; field gives the Go type of the
// value under each key, or the error for a key that has none.
func (w *walker) mapping(n *yaml.Node, prefix string, field func(k *yaml.Node) (reflect.Type, []error)) []error {
	var errs []error
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if e := w.tired(); e != nil {
			return append(errs, e...)
		}
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			errs = append(errs, w.merge(v, prefix, field)...)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			name := prefix
			if name == "" {
				name = "config file"
			}
			errs = append(errs, fmt.Errorf("%s: keys must be plain names, got %s (line %d)", name, describe(k), k.Line))
			continue
		}
		key := join(prefix, keyPart(k.Value))
		if first, dup := seen[k.Value]; dup {
			errs = append(errs, fmt.Errorf("%s: set twice, first at line %d (line %d)", key, first, k.Line))
			continue
		}
		seen[k.Value] = k.Line
		t, ferrs := field(k)
		if ferrs != nil {
			errs = append(errs, ferrs...)
			continue
		}
		w.origin[key] = fmt.Sprintf("line %d", k.Line)
		errs = append(errs, w.walk(v, t, key)...)
	}
	return errs
}

// merge walks the value of a "<<" key: a mapping, or a list of mappings,
// whose keys join the mapping that holds it.
func (w *walker) merge(v *yaml.Node, prefix string, field func(k *yaml.Node) (reflect.Type, []error)) []error {
	key := join(prefix, "<<")
	sources := []*yaml.Node{v}
	if v.Kind == yaml.SequenceNode {
		sources = v.Content
	}
	var errs []error
	for _, s := range sources {
		if s.Kind == yaml.AliasNode && s.Alias != nil {
			s = s.Alias
		}
		switch {
		case s.Kind != yaml.MappingNode:
			errs = append(errs, fmt.Errorf("%s: must be a mapping or a list of mappings, got %s (line %d)", key, describe(s), s.Line))
		case w.merging[s]:
			errs = append(errs, fmt.Errorf("%s: merges the mapping that contains it (line %d)", key, s.Line))
		default:
			w.merging[s] = true
			errs = append(errs, w.mapping(s, prefix, field)...)
			delete(w.merging, s)
		}
	}
	return errs
}

// unknownKey reports a key that t does not have, with the closest known key
// when it looks like a typo.
func unknownKey(t reflect.Type, key string, k *yaml.Node) error {
	best, bestDist := "", 3
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if d := editDistance(k.Value, name); d < bestDist && d < len(name)/2+1 {
			best, bestDist = name, d
		}
	}
	if best != "" {
		return fmt.Errorf("%s: unknown key, did you mean %q? (line %d)", key, best, k.Line)
	}
	if parent, child, ok := strings.Cut(k.Value, "."); ok && plainKey.MatchString(parent) && plainKey.MatchString(child) {
		if _, known := fieldByTag(t, parent); known {
			return fmt.Errorf("%s: unknown key, write it nested as %s: {%s: ...} (line %d)", key, parent, child, k.Line)
		}
	}
	return fmt.Errorf("%s: unknown key (line %d)", key, k.Line)
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64 // not a typo; keeps fuzzed keys cheap
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe words a YAML node for a message: a list, a mapping, or the
// scalar itself, shortened and with any URL userinfo (a DSN key) hidden.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.AliasNode:
		return "an alias"
	}
	v := redactURL(n.Value)
	if utf8.RuneCountInString(v) > 40 {
		v = string([]rune(v)[:37]) + "..."
	}
	return strconv.Quote(v)
}

// kindWords says what a scalar of type t looks like in YAML.
func kindWords(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return "a " + t.String()
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

var plainKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// keyPart is one part of a dotted key as messages show it: quoted unless
// it is a plain name, so a key with dots, spaces or a newline can neither
// pass for another key nor split a message over two lines.
func keyPart(s string) string {
	if plainKey.MatchString(s) {
		return s
	}
	return strconv.Quote(s)
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
// share one). An empty variable counts as unset, as it does for
// caarlos0/env: compose files often pass VAR: ${VAR:-}. Each variable that
// is applied becomes the origin of its key.
func overlayEnv(cfg *Config, lookupEnv func(string) (string, bool), origin map[string]string) []error {
	var errs []error
	for _, v := range EnvVars() {
		val, ok := lookupEnv(v.Name)
		if !ok || val == "" {
			continue
		}
		for k := range origin {
			if k == v.Key || strings.HasPrefix(k, v.Key+"[") || strings.HasPrefix(k, v.Key+".") {
				delete(origin, k)
			}
		}
		origin[v.Key] = v.Name
		err := env.ParseWithOptions(cfg, env.Options{Environment: map[string]string{v.Name: val}})
		var pe env.ParseError
		switch {
		case errors.As(err, &pe):
			t := pe.Type
			for t.Kind() == reflect.Pointer {
				t = t.Elem()
			}
			errs = append(errs, fmt.Errorf("%s (%s): must be %s, got %q", v.Key, v.Name, kindWords(t), val))
		case err != nil:
			errs = append(errs, fmt.Errorf("%s (%s): %w", v.Key, v.Name, err))
		}
	}
	return errs
}

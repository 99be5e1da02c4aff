package enrich

import (
	"strings"
	"testing"
)

func BenchmarkScrubTextClean(b *testing.B) {
	s := "GET /api/v1/apps/{app_id} Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36"
	b.ReportAllocs()
	for b.Loop() {
		ScrubText(s)
	}
}

// BenchmarkScrubTextLong is a 10 KiB string with no sensitive word, as the
// padding, stack frames and messages of a browser event mostly are.
func BenchmarkScrubTextLong(b *testing.B) {
	s := strings.Repeat("at renderApp (http://localhost:8080/assets/index-4f2a.js:12:345) ", 160)
	b.ReportAllocs()
	for b.Loop() {
		ScrubText(s)
	}
}

func BenchmarkSensitiveKey(b *testing.B) {
	keys := []string{"catalog_id", "hostname", "User-Agent", "X-Api-Key", "exception", "stacktrace", "breadcrumbs"}
	b.ReportAllocs()
	for b.Loop() {
		for _, k := range keys {
			SensitiveKey(k)
		}
	}
}

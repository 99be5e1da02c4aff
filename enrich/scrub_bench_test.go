package enrich

import "testing"

func BenchmarkScrubTextClean(b *testing.B) {
	s := "GET /api/v1/apps/{app_id} Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36"
	b.ReportAllocs()
	for b.Loop() {
		ScrubText(s)
	}
}

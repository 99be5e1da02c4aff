package enrich

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

var proximityTemplates = []string{
	"/api/v1/apps/catalog",
	"/api/v1/apps/catalog/{catalog_id}",
	"/api/v1/apps/deploy",
	"/api/v1/apps/{app_id}",
}

func TestRouterTemplate(t *testing.T) {
	t.Parallel()
	r, err := NewRouter(proximityTemplates, 100)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ path, want string }{
		{"/api/v1/apps", "/api/v1/apps"},
		{"/api/v1/apps/", "/api/v1/apps/"},
		{"/api/v1/apps/catalog", "/api/v1/apps/catalog"},
		{"/api/v1/apps/catalog/nginx", "/api/v1/apps/catalog/{catalog_id}"},
		{"/api/v1/apps/deploy", "/api/v1/apps/deploy"},
		{"/api/v1/apps/wordpress-myblog", "/api/v1/apps/{app_id}"},
		{"/api/v1/apps/nginx-mysite/status", "/api/v1/apps/{app_id}/status"},
		{"/api/v1/apps/nginx-mysite/backups/12/restore", "/api/v1/apps/{app_id}/backups/{id}/restore"},
		{"/api/v1/apps/101", "/api/v1/apps/{app_id}"},
		{"/api/v1/system/nodes/pve", "/api/v1/system/nodes/pve"},
		{"/api/v1/test/sentry-backend", "/api/v1/test/sentry-backend"},
		{"/users/42/orders/7", "/users/{id}/orders/{id}"},
		{"/items/3fa85f64-5717-4562-b3fc-2c963f66afa6", "/items/{id}"},
		{"/objects/507f1f77bcf86cd799439011", "/objects/{id}"},
		{"/blobs/deadbeefcafe1234", "/blobs/{id}"},
		{"/files/abcdef", "/files/abcdef"},
		{"/share/Xk9fQ2mZ7pL4vB8nR1tY", "/share/{id}"},
		{"/docs/getting-started-with-sentry", "/docs/getting-started-with-sentry"},
		{"/v2/api", "/v2/api"},
		{"/", "/"},
		{"", ""},
		{"//a//b", "//a//b"},
		{"/api/v1/users/alice@example.com", "/api/v1/users/{id}"},
		{"/assets/index-4f3a9b.js", "/assets/{file}"},
		{"/assets/app.js", "/assets/app.js"},
		{"/api/v1/openapi.json", "/api/v1/openapi.json"},
		{"/v1.2/x", "/v1.2/x"},
		{"/p/" + strings.Repeat("a", 65), "/p/{id}"},
		{"/p/\xff\xfe/x", "/p/{id}/x"},
	}
	for _, tc := range tests {
		if got := r.Template(tc.path); got != tc.want {
			t.Errorf("Template(%q) = %q, want %q", tc.path, got, tc.want)
		}
		if got := r.Template(tc.path); got != tc.want {
			t.Errorf("cached Template(%q) = %q, want %q", tc.path, got, tc.want)
		}
	}
}

func TestRouterCachedPathDoesNotAllocate(t *testing.T) {
	r, err := NewRouter(proximityTemplates, 100)
	if err != nil {
		t.Fatal(err)
	}
	r.Template("/api/v1/apps/nginx-mysite/status")
	if n := testing.AllocsPerRun(100, func() { r.Template("/api/v1/apps/nginx-mysite/status") }); n != 0 {
		t.Errorf("cached lookup allocates %v times", n)
	}
}

func TestRouterCacheIsBounded(t *testing.T) {
	t.Parallel()
	r, _ := NewRouter(nil, 10)
	for i := range 1000 {
		r.Template(fmt.Sprintf("/p/%d/x", i))
	}
	if n := len(r.cache); n > 10 {
		t.Errorf("cache holds %d paths, want at most 10", n)
	}
}

func TestCheckTemplate(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"/", "/a/{id}", "/a/{id}/b"} {
		if err := CheckTemplate(ok); err != nil {
			t.Errorf("CheckTemplate(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"a/b", "/a/{id", "/a/x{id}", "/a/{}"} {
		if err := CheckTemplate(bad); err == nil {
			t.Errorf("CheckTemplate(%q) accepted", bad)
		}
	}
}

func FuzzRouterTemplate(f *testing.F) {
	for _, p := range []string{"/api/v1/apps/101", "/api/v1/apps/catalog/x", "//", "/a/3fa85f64-5717-4562-b3fc-2c963f66afa6"} {
		f.Add(p)
	}
	r, _ := NewRouter(proximityTemplates, 64)
	f.Fuzz(func(t *testing.T, path string) {
		got := r.Template(path)
		if strings.Count(got, "/") != strings.Count(path, "/") {
			t.Fatalf("Template(%q) = %q changes the number of segments", path, got)
		}
		if r.Template(got) != got && !strings.Contains(got, "{") {
			t.Fatalf("Template not stable on %q -> %q", path, got)
		}
		if !utf8.ValidString(got) {
			t.Fatalf("Template(%q) = %q is not UTF-8: it becomes a metric label", path, got)
		}
	})
}

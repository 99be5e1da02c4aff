package demo

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// catalogItem is Proximity's AppCatalogItem.
type catalogItem struct {
	ID            string            `json:"id"`
	Name          string            `json:"name"`
	Description   string            `json:"description"`
	Version       string            `json:"version"`
	Icon          *string           `json:"icon"`
	Category      string            `json:"category"`
	DockerCompose map[string]any    `json:"docker_compose"`
	ConfigSchema  map[string]any    `json:"config_schema"`
	Ports         []int             `json:"ports"`
	Volumes       []string          `json:"volumes"`
	Environment   map[string]string `json:"environment"`
	MinMemory     int               `json:"min_memory"`
	MinCPU        int               `json:"min_cpu"`
}

// demoCatalog is a short version of Proximity's catalog.
func demoCatalog() []catalogItem {
	compose := func(image string, port int) map[string]any {
		return map[string]any{
			"version":  "3.8",
			"services": map[string]any{"app": map[string]any{"image": image, "ports": []string{fmt.Sprintf("%d:%d", port, port)}, "restart": "unless-stopped"}},
		}
	}
	return []catalogItem{
		{
			ID: "nginx", Name: "Nginx", Description: "High-performance web server and reverse proxy", Version: "1.25",
			Category: "Web Server", DockerCompose: compose("nginx:1.25-alpine", 80), MinMemory: 512, MinCPU: 1,
			Ports: []int{80}, Volumes: []string{"/usr/share/nginx/html"}, Environment: map[string]string{},
		},
		{
			ID: "wordpress", Name: "WordPress", Description: "Blog and CMS with a MySQL database", Version: "6.4",
			Category: "CMS", DockerCompose: compose("wordpress:6.4-apache", 80), MinMemory: 1024, MinCPU: 1,
			Ports: []int{80}, Volumes: []string{"/var/www/html"},
			Environment: map[string]string{"WORDPRESS_DB_HOST": "db", "WORDPRESS_DB_NAME": "wordpress"},
		},
		{
			ID: "grafana", Name: "Grafana", Description: "Dashboards for metrics and logs", Version: "10.2",
			Category: "Monitoring", DockerCompose: compose("grafana/grafana:10.2.0", 3000), MinMemory: 1024, MinCPU: 1,
			Ports: []int{3000}, Volumes: []string{"/var/lib/grafana"},
			Environment: map[string]string{"GF_SECURITY_ADMIN_USER": "admin"},
		},
		{
			ID: "uptime-kuma", Name: "Uptime Kuma", Description: "Self-hosted uptime monitoring", Version: "1.23",
			Category: "Monitoring", DockerCompose: compose("louislam/uptime-kuma:1", 3001), MinMemory: 512, MinCPU: 1,
			Ports: []int{3001}, Volumes: []string{"/app/data"}, Environment: map[string]string{},
		},
	}
}

// catalogResponse is Proximity's CatalogResponse.
type catalogResponse struct {
	Items      []catalogItem `json:"items"`
	Categories []string      `json:"categories"`
	Total      int           `json:"total"`
}

// app is Proximity's App.
type app struct {
	ID          string            `json:"id"`
	CatalogID   string            `json:"catalog_id"`
	Name        string            `json:"name"`
	Hostname    string            `json:"hostname"`
	Status      string            `json:"status"`
	URL         *string           `json:"url"`
	LXCID       int               `json:"lxc_id"`
	Node        string            `json:"node"`
	CreatedAt   string            `json:"created_at"`
	UpdatedAt   string            `json:"updated_at"`
	Config      map[string]any    `json:"config"`
	Ports       map[string]int    `json:"ports"`
	Volumes     []string          `json:"volumes"`
	Environment map[string]string `json:"environment"`
}

// deploymentStatus is Proximity's DeploymentStatus.
type deploymentStatus struct {
	AppID       string  `json:"app_id"`
	Status      string  `json:"status"`
	Progress    int     `json:"progress"`
	CurrentStep *string `json:"current_step"`
	Logs        []any   `json:"logs"`
	Error       *string `json:"error"`
}

// record is one app the demo knows, with its deployment state.
type record struct {
	app     app
	started time.Time // when its deploy began
	err     string    // why its deploy failed; set with app.Status "error"
}

// visible reports whether the app is listed: Proximity keeps a failed
// deployment's status for polling but has no app to show.
func (rec *record) visible() bool { return rec.app.Status != "error" }

// seed installs the app the research notes use as the example id.
func (s *server) seed() {
	s.nextLXC = 100
	item, _ := s.catalogItem("nginx")
	a := s.newApp(item, "mysite", "pve", map[string]any{}, map[string]string{}, time.Date(2025, 10, 10, 8, 0, 0, 0, time.UTC))
	a.Status = "running"
	s.apps[a.ID] = &record{app: a}
}

// newApp builds the App a deploy creates. Callers hold mu or own s.
func (s *server) newApp(item catalogItem, hostname, node string, cfg map[string]any, env map[string]string, at time.Time) app {
	lxc := s.nextLXC
	s.nextLXC++
	url := fmt.Sprintf("http://%s.local", hostname)
	ports := map[string]int{}
	for _, p := range item.Ports {
		ports[strconv.Itoa(p)] = 30000 + lxc
	}
	merged := map[string]string{}
	for k, v := range item.Environment {
		merged[k] = v
	}
	for k, v := range env {
		merged[k] = v
	}
	ts := isoformat(at)
	return app{
		ID: item.ID + "-" + hostname, CatalogID: item.ID, Name: item.Name, Hostname: hostname,
		Status: "deploying", URL: &url, LXCID: lxc, Node: node, CreatedAt: ts, UpdatedAt: ts,
		Config: cfg, Ports: ports, Volumes: slices.Clone(item.Volumes), Environment: merged,
	}
}

func (s *server) catalogItem(id string) (catalogItem, bool) {
	for _, it := range s.catalog {
		if it.ID == id {
			return it, true
		}
	}
	return catalogItem{}, false
}

// getCatalog is GET /api/v1/apps/catalog, with Proximity's ?category=
// filter (case-insensitive; categories are listed whatever the filter).
func (s *server) getCatalog(w http.ResponseWriter, r *http.Request, _ call) {
	resp := catalogResponse{Items: []catalogItem{}, Categories: []string{}}
	category := r.URL.Query().Get("category")
	for _, it := range s.catalog {
		if !slices.Contains(resp.Categories, it.Category) {
			resp.Categories = append(resp.Categories, it.Category)
		}
		if category == "" || strings.EqualFold(it.Category, category) {
			resp.Items = append(resp.Items, it)
		}
	}
	slices.Sort(resp.Categories)
	resp.Total = len(resp.Items)
	writeJSON(w, http.StatusOK, resp)
}

// getCatalogItem is GET /api/v1/apps/catalog/{catalog_id}.
func (s *server) getCatalogItem(w http.ResponseWriter, _ *http.Request, c call) {
	it, found := s.catalogItem(c.args[0])
	if !found {
		writeDetail(w, http.StatusNotFound, catalogNotFound(c.args[0]))
		return
	}
	writeJSON(w, http.StatusOK, it)
}

func catalogNotFound(id string) string { return fmt.Sprintf("Catalog item '%s' not found", id) }

func appNotFound(id string) string { return fmt.Sprintf("App %s not found", id) }

// listApps is GET /api/v1/apps and /api/v1/apps/, with ?status= and ?node=.
func (s *server) listApps(w http.ResponseWriter, r *http.Request, _ call) {
	status, node := r.URL.Query().Get("status"), r.URL.Query().Get("node")
	s.mu.Lock()
	list := []app{}
	for _, rec := range s.apps {
		if rec.visible() && (status == "" || rec.app.Status == status) && (node == "" || rec.app.Node == node) {
			list = append(list, rec.app)
		}
	}
	s.mu.Unlock()
	slices.SortFunc(list, func(a, b app) int { return a.LXCID - b.LXCID })
	writeJSON(w, http.StatusOK, list)
}

// getApp is GET /api/v1/apps/{app_id}.
func (s *server) getApp(w http.ResponseWriter, _ *http.Request, c call) {
	s.mu.Lock()
	rec, found := s.apps[c.args[0]]
	var a app
	if found {
		a = rec.app
	}
	s.mu.Unlock()
	if !found || !rec.visible() {
		writeDetail(w, http.StatusNotFound, appNotFound(c.args[0]))
		return
	}
	writeJSON(w, http.StatusOK, a)
}

// deployRequest is Proximity's AppCreate after validation.
type deployRequest struct {
	catalogID   string
	hostname    string
	config      map[string]any
	environment map[string]string
	node        string
}

// parseDeploy validates an AppCreate body with pydantic's rules: field
// constraints first, then the @validator, which lowercases the hostname.
func parseDeploy(body map[string]any) (deployRequest, []fieldError) {
	m := model{body: body}
	var req deployRequest
	req.catalogID, _ = m.str("catalog_id")
	if h, isStr := m.str("hostname"); isStr && m.length("hostname", h, 3, 63) {
		switch {
		case !hostnameChars(h):
			m.valueError("hostname", h, "Hostname must contain only alphanumeric characters, hyphens, and underscores")
		case strings.HasPrefix(h, "-") || strings.HasSuffix(h, "-"):
			m.valueError("hostname", h, "Hostname cannot start or end with a hyphen")
		default:
			req.hostname = strings.ToLower(h)
		}
	}
	req.config = m.dict("config")
	req.environment = m.strDict("environment")
	req.node, _ = m.optStr("node")
	return req, m.errs
}

// hostnameChars is Proximity's check (isalnum once hyphens and underscores are removed),
// kept to ASCII: the hostname ends up in a DNS name.
func hostnameChars(h string) bool {
	stripped := strings.NewReplacer("-", "", "_", "").Replace(h)
	if stripped == "" {
		return false
	}
	for _, r := range stripped {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return false
		}
	}
	return true
}

// deploy is POST /api/v1/apps/deploy. Like Proximity's it answers only once
// the deployment is over, DeployDelay later, which is what makes it the
// route for testing a proxy's timeouts and client disconnects. A hostname
// containing "fail" makes the deployment fail.
func (s *server) deploy(w http.ResponseWriter, r *http.Request, _ call) {
	body, ok := readModel(w, r)
	if !ok {
		return
	}
	req, errs := parseDeploy(body)
	if errs != nil {
		writeValidation(w, errs)
		return
	}
	item, found := s.catalogItem(req.catalogID)
	if !found {
		writeDetail(w, http.StatusNotFound, catalogNotFound(req.catalogID))
		return
	}
	node := req.node
	if node == "" {
		node = "pve"
	}

	start := s.now()
	s.mu.Lock()
	// A deploy of an existing id replaces it rather than answering 409, so
	// that demo scripts and tests can be run again against one server.
	rec := &record{app: s.newApp(item, req.hostname, node, req.config, req.environment, start), started: start}
	s.apps[rec.app.ID] = rec
	s.mu.Unlock()

	if err := sleep(r.Context(), s.deployDelay); err != nil {
		// The client has gone: Proximity would carry on, but the demo has
		// nothing left to do, and nobody to answer.
		s.mu.Lock()
		if s.apps[rec.app.ID] == rec {
			delete(s.apps, rec.app.ID)
		}
		s.mu.Unlock()
		return
	}

	fail := strings.Contains(req.hostname, "fail")
	s.mu.Lock()
	rec.app.UpdatedAt = isoformat(s.now())
	if fail {
		rec.app.Status = "error"
		rec.err = "LXC creation timed out on node " + node
	} else {
		rec.app.Status = "running"
	}
	a, reason := rec.app, rec.err
	s.mu.Unlock()

	if fail {
		writeDetail(w, http.StatusInternalServerError, "Deployment failed: "+reason)
		return
	}
	writeJSON(w, http.StatusOK, a)
}

// sleep waits for d or until ctx ends, whichever is first.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait %s: %w", d, ctx.Err())
	}
}

// deploySteps are the steps Proximity's deployment reports, with the
// progress at which each starts.
func deploySteps() []struct {
	from int
	name string
} {
	return []struct {
		from int
		name string
	}{
		{0, "Creating LXC container"},
		{30, "Starting container"},
		{50, "Installing Docker"},
		{75, "Pulling images"},
		{90, "Starting application"},
	}
}

// appStatus is GET /api/v1/apps/{app_id}/status, which the UI polls every
// 2 s while a deploy request is open.
func (s *server) appStatus(w http.ResponseWriter, _ *http.Request, c call) {
	s.mu.Lock()
	rec, found := s.apps[c.args[0]]
	var (
		a       app
		started time.Time
		reason  string
	)
	if found {
		a, started, reason = rec.app, rec.started, rec.err
	}
	s.mu.Unlock()
	if !found {
		writeDetail(w, http.StatusNotFound, appNotFound(c.args[0]))
		return
	}
	st := deploymentStatus{AppID: a.ID, Status: a.Status, Progress: 100, Logs: []any{}}
	switch a.Status {
	case "deploying":
		st.Progress = 0
		if s.deployDelay > 0 {
			st.Progress = min(max(int(s.now().Sub(started)*100/s.deployDelay), 0), 99)
		}
		for _, step := range deploySteps() {
			if st.Progress >= step.from {
				st.CurrentStep = &step.name
			}
		}
	case "error":
		st.Error = &reason
	}
	writeJSON(w, http.StatusOK, st)
}

// appAction is POST /api/v1/apps/{app_id}/actions, body AppAction.
func (s *server) appAction(w http.ResponseWriter, r *http.Request, c call) {
	body, ok := readModel(w, r)
	if !ok {
		return
	}
	m := model{body: body}
	action, isStr := m.str("action")
	if isStr && !slices.Contains([]string{"start", "stop", "restart", "rebuild"}, action) {
		m.valueError("action", action, "Action must be one of: start, stop, restart, rebuild")
	}
	if m.errs != nil {
		writeValidation(w, m.errs)
		return
	}
	s.mu.Lock()
	rec, found := s.apps[c.args[0]]
	var a app
	if found && rec.visible() {
		rec.app.Status = "running"
		if action == "stop" {
			rec.app.Status = "stopped"
		}
		rec.app.UpdatedAt = isoformat(s.now())
		a = rec.app
	}
	s.mu.Unlock()
	if !found || !rec.visible() {
		writeDetail(w, http.StatusNotFound, appNotFound(c.args[0]))
		return
	}
	writeJSON(w, http.StatusOK, a)
}

// deleteApp is DELETE /api/v1/apps/{app_id}.
func (s *server) deleteApp(w http.ResponseWriter, _ *http.Request, c call) {
	id := c.args[0]
	s.mu.Lock()
	_, found := s.apps[id]
	delete(s.apps, id)
	s.mu.Unlock()
	if !found {
		writeDetail(w, http.StatusNotFound, appNotFound(id))
		return
	}
	writeJSON(w, http.StatusOK, success(fmt.Sprintf("App %s deleted successfully", id)))
}

// appLogs is GET /api/v1/apps/{app_id}/logs?lines=N, the tail of
// `docker compose logs`.
func (s *server) appLogs(w http.ResponseWriter, r *http.Request, c call) {
	lines, fe := queryInt(r, "lines", 100, -1<<31, 1<<31-1)
	if fe != nil {
		writeValidation(w, []fieldError{*fe})
		return
	}
	s.mu.Lock()
	rec, found := s.apps[c.args[0]]
	visible := found && rec.visible()
	s.mu.Unlock()
	if !visible {
		writeDetail(w, http.StatusNotFound, appNotFound(c.args[0]))
		return
	}
	all := []string{
		"app-1  | /docker-entrypoint.sh: Configuration complete; ready for start up",
		`app-1  | 10.0.0.1 - - [10/Oct/2025:08:00:01 +0000] "GET / HTTP/1.1" 200 615`,
		`app-1  | 10.0.0.1 - - [10/Oct/2025:08:00:02 +0000] "GET /favicon.ico HTTP/1.1" 404 153`,
		`app-1  | 10.0.0.1 - - [10/Oct/2025:08:00:05 +0000] "GET /health HTTP/1.1" 200 2`,
	}
	tail := all[len(all)-min(max(lines, 0), len(all)):]
	text := strings.Join(tail, "\n")
	if text != "" {
		text += "\n"
	}
	writeJSON(w, http.StatusOK, struct {
		Logs string `json:"logs"`
	}{text})
}

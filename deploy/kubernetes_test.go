package deploy_test

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8syaml "sigs.k8s.io/yaml"

	"github.com/sentry-sidecar/sentry-sidecar/internal/config"
)

const sidecarName = "sentry-sidecar"

// manifests holds the Kubernetes objects of deploy/kubernetes, decoded
// strictly into their real types: a misspelt field is an error.
type manifests struct {
	configMaps  map[string]corev1.ConfigMap
	secrets     map[string]corev1.Secret
	deployments map[string]appsv1.Deployment // by file
	services    []corev1.Service
	policies    []networkingv1.NetworkPolicy
}

// kustomization mirrors the fields of kustomization.yaml this layout uses;
// decoded strictly, so any other field is an error here.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
}

func mustManifests(tb testing.TB) manifests {
	tb.Helper()
	m := manifests{
		configMaps:  map[string]corev1.ConfigMap{},
		secrets:     map[string]corev1.Secret{},
		deployments: map[string]appsv1.Deployment{},
	}
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	files = append(files, "kubernetes/native-sidecar/deployment.yaml")
	for _, path := range files {
		for _, doc := range mustYAMLDocuments(tb, mustRead(tb, path)) {
			b, err := yaml.Marshal(doc)
			if err != nil {
				tb.Fatal(err)
			}
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := k8syaml.Unmarshal(b, &head); err != nil {
				tb.Fatalf("%s: %v", path, err)
			}
			decode := func(into any) {
				tb.Helper()
				if err := k8syaml.UnmarshalStrict(b, into); err != nil {
					tb.Fatalf("%s: %s: %v", path, head.Kind, err)
				}
			}
			switch head.APIVersion + " " + head.Kind {
			case "v1 ConfigMap":
				var o corev1.ConfigMap
				decode(&o)
				m.configMaps[o.Name] = o
			case "v1 Secret":
				var o corev1.Secret
				decode(&o)
				m.secrets[o.Name] = o
			case "apps/v1 Deployment":
				var o appsv1.Deployment
				decode(&o)
				m.deployments[path] = o
			case "v1 Service":
				var o corev1.Service
				decode(&o)
				m.services = append(m.services, o)
			case "networking.k8s.io/v1 NetworkPolicy":
				var o networkingv1.NetworkPolicy
				decode(&o)
				m.policies = append(m.policies, o)
			case "kustomize.config.k8s.io/v1beta1 Kustomization":
				var o kustomization
				decode(&o)
			default:
				tb.Fatalf("%s: unexpected object %s %s", path, head.APIVersion, head.Kind)
			}
		}
	}
	return m
}

// TestKubernetesKustomization: kustomization.yaml lists every manifest
// beside it, and each entry exists.
func TestKubernetesKustomization(t *testing.T) {
	var k kustomization
	if err := k8syaml.UnmarshalStrict(mustRead(t, "kubernetes/kustomization.yaml"), &k); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("kubernetes/*.yaml")
	for _, f := range files {
		if name := filepath.Base(f); name != "kustomization.yaml" && !slices.Contains(k.Resources, name) {
			t.Errorf("kustomization.yaml does not list %s", name)
		}
	}
	for _, r := range k.Resources {
		if _, err := os.Stat(filepath.Join("kubernetes", r)); err != nil {
			t.Errorf("kustomization.yaml: %v", err)
		}
	}
}

// TestKubernetes checks both Deployments (two containers, and the native
// sidecar variant) against the config the sidecar would load in them.
func TestKubernetes(t *testing.T) {
	m := mustManifests(t)
	im := mustImage(t)
	if len(m.deployments) != 2 {
		t.Fatalf("%d Deployments, want deployment.yaml and native-sidecar/deployment.yaml", len(m.deployments))
	}
	for path, d := range m.deployments {
		t.Run(path, func(t *testing.T) {
			checkDeployment(t, m, im, d, strings.Contains(path, "native-sidecar"))
		})
	}
}

func checkDeployment(t *testing.T, m manifests, im image, d appsv1.Deployment, native bool) {
	spec := d.Spec.Template.Spec
	labels := d.Spec.Template.Labels
	if d.Spec.Selector == nil || !subset(d.Spec.Selector.MatchLabels, labels) {
		t.Errorf("selector %v does not select the pod's labels %v", d.Spec.Selector, labels)
	}

	// Where the sidecar is: a container, or an init container that
	// restarts (a native sidecar).
	var sc *corev1.Container
	var api []corev1.Container
	for i, c := range spec.Containers {
		if c.Name == sidecarName {
			sc = &spec.Containers[i]
		} else {
			api = append(api, c)
		}
	}
	for i, c := range spec.InitContainers {
		if c.Name != sidecarName {
			continue
		}
		if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Errorf("init container %s without restartPolicy: Always is not a sidecar: it would block the pod's start", c.Name)
		}
		sc = &spec.InitContainers[i]
	}
	if sc == nil {
		t.Fatalf("no container %s", sidecarName)
	}
	if native != slices.ContainsFunc(spec.InitContainers, func(c corev1.Container) bool { return c.Name == sidecarName }) {
		t.Errorf("native=%t, but the sidecar's place does not match", native)
	}
	if len(api) != 1 {
		t.Fatalf("%d API containers, want 1", len(api))
	}

	cfg := mustPodConfig(t, m, im, spec, *sc)

	// Ports: the container's match what the config listens on.
	ports := map[string]int32{}
	for _, p := range sc.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if got, want := ports["http"], mustPort(t, cfg.Listen); int(got) != want {
		t.Errorf("containerPort http %d, listen is %s", got, cfg.Listen)
	}
	if got, want := ports["admin"], mustPort(t, cfg.Admin.Listen); int(got) != want {
		t.Errorf("containerPort admin %d, admin.listen is %s", got, cfg.Admin.Listen)
	}
	if loopbackOnly(cfg.Admin.Listen) {
		t.Errorf("admin.listen %s: the kubelet probes the pod IP, not loopback", cfg.Admin.Listen)
	}
	for _, c := range api {
		if len(c.Ports) > 0 {
			t.Errorf("container %s declares ports: the sidecar is the only way in", c.Name)
		}
	}

	// Probes: /healthz for liveness, /readyz for readiness, on admin.
	adminPort := mustPort(t, cfg.Admin.Listen)
	checkProbe := func(kind string, p *corev1.Probe, path string) {
		t.Helper()
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s: want an HTTP GET of %s on the admin port", kind, path)
			return
		}
		if p.HTTPGet.Path != path {
			t.Errorf("%s: path %s, want %s", kind, p.HTTPGet.Path, path)
		}
		if got := resolvePort(p.HTTPGet.Port, sc.Ports); got != adminPort {
			t.Errorf("%s: port %s is %d, want the admin port %d", kind, p.HTTPGet.Port.String(), got, adminPort)
		}
	}
	checkProbe("livenessProbe", sc.LivenessProbe, "/healthz")
	checkProbe("readinessProbe", sc.ReadinessProbe, "/readyz")
	if native {
		checkProbe("startupProbe", sc.StartupProbe, "/healthz")
	}

	// The API: on loopback at the port upstream.url names, so only the
	// sidecar reaches it.
	apiEnv := map[string]string{}
	for _, e := range api[0].Env {
		apiEnv[e.Name] = e.Value
	}
	up := mustUpstreamHost(t, cfg)
	if !loopbackOnly(up) {
		t.Errorf("upstream.url %s: in a pod the API is on loopback", cfg.Upstream.URL)
	}
	if want := strconv.Itoa(mustPort(t, up)); apiEnv["API_PORT"] != want || apiEnv["API_HOST"] != "127.0.0.1" {
		t.Errorf("API at %s:%s, want 127.0.0.1:%s (upstream.url %s)", apiEnv["API_HOST"], apiEnv["API_PORT"], want, cfg.Upstream.URL)
	}

	// Shutdown: the pod's grace period covers the sidecar's drain. In the
	// native variant the sidecar stops only after the API, whose preStop
	// comes first.
	var apiPreStop time.Duration
	if l := api[0].Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
		apiPreStop = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
	}
	need := drainBudget(cfg) + stopMargin
	if native {
		need += apiPreStop
	} else if apiPreStop <= cfg.Shutdown.DrainDelay.Std() {
		t.Errorf("API preStop sleep %s: want it longer than drain_delay %s, so the API answers while the sidecar drains", apiPreStop, cfg.Shutdown.DrainDelay.Std())
	}
	if sc.Lifecycle != nil && sc.Lifecycle.PreStop != nil {
		t.Error("sidecar preStop: the sidecar drains by itself on SIGTERM; a preStop would only add to the budget")
	}
	if spec.TerminationGracePeriodSeconds == nil {
		t.Fatal("no terminationGracePeriodSeconds")
	}
	if got := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second; got < need {
		t.Errorf("terminationGracePeriodSeconds %s, want at least %s (drain_delay+grace_period+flush_timeout+%s fixed, +%s margin)", got, need, fixedShutdownWaits, stopMargin)
	}

	// Security: non-root as in the image, read-only, no capabilities.
	s := sc.SecurityContext
	switch {
	case s == nil:
		t.Fatal("sidecar: no securityContext")
	case s.RunAsNonRoot == nil || !*s.RunAsNonRoot:
		t.Error("sidecar: runAsNonRoot is not true")
	case s.RunAsUser == nil || int(*s.RunAsUser) != im.uid:
		t.Errorf("sidecar: runAsUser %v, want the image's USER %d", s.RunAsUser, im.uid)
	case s.ReadOnlyRootFilesystem == nil || !*s.ReadOnlyRootFilesystem:
		t.Error("sidecar: readOnlyRootFilesystem is not true")
	case s.AllowPrivilegeEscalation == nil || *s.AllowPrivilegeEscalation:
		t.Error("sidecar: allowPrivilegeEscalation is not false")
	case s.Capabilities == nil || !slices.Contains(s.Capabilities.Drop, "ALL"):
		t.Error("sidecar: capabilities do not drop ALL")
	}
	seccomp := s.SeccompProfile
	if seccomp == nil && spec.SecurityContext != nil {
		seccomp = spec.SecurityContext.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("sidecar: seccompProfile is not RuntimeDefault")
	}

	// Resources: a memory limit that holds the tunnel's largest envelope
	// and its rewritten copy, and GOMEMLIMIT below it.
	limit, ok := sc.Resources.Limits[corev1.ResourceMemory]
	if !ok || sc.Resources.Requests.Memory().IsZero() || sc.Resources.Requests.Cpu().IsZero() {
		t.Fatal("sidecar: want cpu and memory requests and a memory limit")
	}
	envelope := int64(cfg.Tunnel.Limits.Body + cfg.Tunnel.Limits.Decompressed)
	if limit.Value() < 2*envelope {
		t.Errorf("sidecar: memory limit %s holds less than two envelopes at tunnel.limits (%d bytes each)", limit.String(), envelope)
	}
	for _, e := range sc.Env {
		if e.Name != "GOMEMLIMIT" {
			continue
		}
		// The runtime's units (KiB, MiB, GiB, or bytes with B) are the
		// binary suffixes of a Kubernetes quantity plus a B.
		q, err := resource.ParseQuantity(strings.TrimSuffix(e.Value, "B"))
		if err != nil {
			t.Fatalf("GOMEMLIMIT %q: %v", e.Value, err)
		}
		if q.Cmp(limit) >= 0 {
			t.Errorf("GOMEMLIMIT %s is not below the memory limit %s", e.Value, limit.String())
		}
	}

	checkServices(t, m, labels, *sc)
	checkPolicies(t, m, labels, *sc)
}

// mustPodConfig is the config the sidecar loads in the pod: the ConfigMap's
// config.yaml at SIDECAR_CONFIG, the image's ENV, the container's env (a
// Secret's value counts as empty: unset). Every variable must be known and
// every Secret reference must exist.
func mustPodConfig(t *testing.T, m manifests, im image, spec corev1.PodSpec, sc corev1.Container) config.Config {
	t.Helper()
	env := map[string]string{}
	for k, v := range im.env {
		env[k] = v
	}
	known := knownEnv()
	for _, c := range append(slices.Clone(spec.Containers), spec.InitContainers...) {
		for _, e := range c.Env {
			if c.Name == sc.Name && !known[e.Name] {
				t.Errorf("sidecar env %s: not a variable the sidecar reads", e.Name)
			}
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				ref := e.ValueFrom.SecretKeyRef
				sec, ok := m.secrets[ref.Name]
				if _, has := sec.StringData[ref.Key]; !ok || !has {
					t.Errorf("%s env %s: Secret %s has no key %s", c.Name, e.Name, ref.Name, ref.Key)
				}
				continue
			}
			if c.Name == sc.Name {
				env[e.Name] = e.Value
			}
		}
	}
	for name, sec := range m.secrets {
		for k, v := range sec.StringData {
			if v != "" {
				t.Errorf("Secret %s: %s has a value; ship it empty", name, k)
			}
		}
	}
	if len(sc.Args) > 0 && sc.Args[0] != "run" {
		t.Errorf("sidecar args %v: want the run command", sc.Args)
	}

	path := env["SIDECAR_CONFIG"]
	var text string
	for _, vm := range sc.VolumeMounts {
		if filepath.Dir(path) != filepath.Clean(vm.MountPath) {
			continue
		}
		if !vm.ReadOnly {
			t.Errorf("volumeMount %s is not readOnly", vm.Name)
		}
		for _, v := range spec.Volumes {
			if v.Name == vm.Name && v.ConfigMap != nil {
				cm, ok := m.configMaps[v.ConfigMap.Name]
				if !ok {
					t.Fatalf("volume %s: no ConfigMap %s", v.Name, v.ConfigMap.Name)
				}
				text = cm.Data[filepath.Base(path)]
			}
		}
	}
	if text == "" {
		t.Fatalf("SIDECAR_CONFIG %s: no ConfigMap with that file is mounted there", path)
	}
	return mustLoadConfig(t, []byte(text), env)
}

// checkServices: exactly one port, the sidecar's proxied one.
func checkServices(t *testing.T, m manifests, labels map[string]string, sc corev1.Container) {
	t.Helper()
	if len(m.services) != 1 {
		t.Fatalf("%d Services, want 1", len(m.services))
	}
	svc := m.services[0]
	if !subset(svc.Spec.Selector, labels) {
		t.Errorf("Service selector %v does not select the pod %v", svc.Spec.Selector, labels)
	}
	if len(svc.Spec.Ports) != 1 {
		t.Fatalf("Service has %d ports, want only the sidecar's proxied port", len(svc.Spec.Ports))
	}
	http := portNamed(sc.Ports, "http")
	if got := resolvePort(svc.Spec.Ports[0].TargetPort, sc.Ports); got != int(http) {
		t.Errorf("Service targetPort %s is %d, want the sidecar's http port %d", svc.Spec.Ports[0].TargetPort.String(), got, http)
	}
}

// checkPolicies: the NetworkPolicy selects the pod, names existing ports,
// and lets the admin port be reached from somewhere named only.
func checkPolicies(t *testing.T, m manifests, labels map[string]string, sc corev1.Container) {
	t.Helper()
	admin := int(portNamed(sc.Ports, "admin"))
	for _, np := range m.policies {
		if !subset(np.Spec.PodSelector.MatchLabels, labels) {
			t.Errorf("NetworkPolicy %s does not select the pod", np.Name)
		}
		for _, rule := range np.Spec.Ingress {
			for _, p := range rule.Ports {
				got := resolvePort(*p.Port, sc.Ports)
				if got == 0 {
					t.Errorf("NetworkPolicy %s: port %s is not one of the sidecar's", np.Name, p.Port.String())
				}
				if got == admin && len(rule.From) == 0 {
					t.Errorf("NetworkPolicy %s: the admin port is open to every peer", np.Name)
				}
			}
		}
	}
}

// resolvePort turns a port number or name into the container's number;
// 0 when it names none.
func resolvePort(p intstr.IntOrString, ports []corev1.ContainerPort) int {
	if p.Type == intstr.Int {
		return p.IntValue()
	}
	return int(portNamed(ports, p.StrVal))
}

func portNamed(ports []corev1.ContainerPort, name string) int32 {
	for _, p := range ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

func subset(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

# voicegateway — make targets. Every target works on a fresh machine with Go.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X github.com/voicegateway/voicegateway/server/version.Version=$(VERSION) -X github.com/voicegateway/voicegateway/server/version.Commit=$(COMMIT)
FUZZTIME ?= 15s
CONTROLLER_GEN_VERSION ?= v0.23.0
CONTROLLER_GEN := $(BIN)/controller-gen
CHART := charts/voicegateway-operator
# The image of both binaries; its tag is the version they report.
IMG ?= ghcr.io/voicegateway/voicegateway:$(VERSION)
PLATFORMS ?= linux/amd64,linux/arm64
# kube-apiserver and etcd for envtest, kube-controller-manager for the
# garbage-collection test, kubectl for kustomize, helm for the chart's tests;
# built from source.
ENVTEST_BINARIES ?= etcd kube-apiserver kube-controller-manager kubectl helm
export KUBEBUILDER_ASSETS := $(BIN)/k8s

.PHONY: compat all build run demo-drain test test-short bench bench-go bench-load bench-compare soak soak-short abuse fuzz lint fmt vet clean \
	envtest-binaries tools controller-gen generate manifests run-manager scale-test image image-push image-oci image-publish \
	chart chart-push helm-lint

all: lint build test

build: ## Build the binaries into bin/
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/voice-server ./cmd/voice-server
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/manager ./cmd/manager
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/vgload ./cmd/vgload

build-voice-server:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/voice-server ./cmd/voice-server

# No load balancer routes to a local run, so it need not wait for one to
# catch up before refusing new sessions (--propagation-delay 0s). Only the
# voice server is built: the operator takes minutes on a small machine.
run: build-voice-server ## The voice server on loopback, echo backend, auth OFF (local only)
	$(BIN)/voice-server --listen 127.0.0.1:8080 --admin-listen 127.0.0.1:9090 \
		--backend echo --insecure-no-auth --log-format console --propagation-delay 0s

# Two voice servers behind a small proxy that, like a Service, sends new
# connections to a ready one: press Enter to drain the server the call is on
# and watch the demo page move to the other (http://127.0.0.1:8080/).
demo-drain: build-voice-server ## Two voice servers behind a proxy; Enter drains the busy one (the demo page moves)
	$(GO) run ./hack/demo-drain --voice-server $(BIN)/voice-server

test: lint envtest-binaries tools controller-gen ## Every test: unit, fuzz seeds, end-to-end, operator on a real API server (race detector on)
	$(GO) test -race -count=1 -timeout 30m ./...

test-short: ## Unit tests only, no end-to-end
	$(GO) test -short -count=1 ./...

bench: bench-go bench-load ## Go benchmarks, then the load benchmarks (numbers go to docs/benchmarks.md)

bench-go: ## Go benchmarks of the hot paths
	$(GO) test -run '^$$' -bench . -benchmem -count=1 ./server/...

bench-load: ## Load benchmarks on loopback with cmd/vgload: idle density, relay, drain, limiter flood (~10 min)
	hack/bench.sh

# The same vgload loads, one server at a time on its own core, against the
# voice server (echo backend, auth off) and a bare Node.js ws echo kept in
# bench/node-peer (npm ci from its lock file, only when the lock changed).
# Skipped with a message when node or npm is missing. One run's CPU moves by
# a quarter from minute to minute on a shared machine, so each load runs
# BENCH_COMPARE_ROUNDS times against each server, the order alternating
# round by round; the table shows medians and the per-round ratios' range.
BENCH_COMPARE_TALKING ?= 50,150,300
BENCH_COMPARE_IDLE ?= 2000
BENCH_COMPARE_DURATION ?= 20s
BENCH_COMPARE_ROUNDS ?= 3
bench-compare: build-voice-server ## The voice server beside a bare Node ws echo, same vgload loads in BENCH_COMPARE_ROUNDS rounds: CPU, RSS, echo lateness; medians, table and chart in bin/bench-compare/ (~9 min)
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/vgload ./cmd/vgload
	$(GO) run ./hack/bench-compare --voice-server $(BIN)/voice-server --vgload $(BIN)/vgload \
		--talking $(BENCH_COMPARE_TALKING) --idle $(BENCH_COMPARE_IDLE) --duration $(BENCH_COMPARE_DURATION) \
		--rounds $(BENCH_COMPARE_ROUNDS) --out $(BIN)/bench-compare

# The soak gate fails only on goroutine or open-file growth, never on timing.
SOAK_DURATION ?= 2h
soak-short: ## 3-minute session churn; fails if the server's goroutines or open files grew
	hack/soak.sh 3m

# The abuse gate fails on an honest caller's lost frame or abnormal close, or
# an attacker past its documented limit; never on timing.
abuse: ## Every known attack on a real voice server under GOMEMLIMIT=256MiB, 20 honest callers beside each (~5 min)
	hack/abuse.sh

soak: ## Long session churn (SOAK_DURATION=2h); prints heap MB/day and goroutines/day
	hack/soak.sh $(SOAK_DURATION)

# The official openai npm SDK, pinned by test/compat/package-lock.json, against
# a real voice server (echo backend) behind TLS. npm ci runs only when the
# lock file changed since the last install, so it runs offline once installed.
compat: ## The official openai SDK against a real voice server: one line per scenario with the events seen
	@cd test/compat && if ! cmp -s package-lock.json node_modules/.vgw-installed-lock 2>/dev/null; then \
	  npm ci --no-audit --no-fund --prefer-offline && cp package-lock.json node_modules/.vgw-installed-lock; fi
	$(GO) run ./hack/compat --dir test/compat

fuzz: ## Run each fuzz target briefly (FUZZTIME=15s)
	@set -e; for pkg in $$($(GO) list ./server/...); do \
	  for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$target"; \
	    $(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)

envtest-binaries: ## Build kube-apiserver, etcd, kube-controller-manager, kubectl into bin/k8s (cached)
	GO=$(GO) hack/build-k8s-binaries.sh $(ENVTEST_BINARIES)

tools: ## Build promtool, promql-metrics and fetch the Prometheus Operator CRDs into bin/tools (cached)
	GO=$(GO) hack/build-tools.sh

controller-gen: ## Install controller-gen into bin/
	@if [ ! -x $(CONTROLLER_GEN) ] || ! $(CONTROLLER_GEN) --version | grep -q '$(CONTROLLER_GEN_VERSION)$$'; then \
	  GOBIN=$(BIN) $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION); fi

generate: controller-gen ## Regenerate the deepcopy functions of api/
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

manifests: controller-gen ## Regenerate the CRD and the operator's ClusterRole under config/, and their copies in the chart
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths=./api/... paths=./controllers/... \
	  output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	rm -f $(CHART)/crds/*.yaml
	cp config/crd/bases/*.yaml $(CHART)/crds/
	cp config/rbac/role.yaml $(CHART)/files/manager-role.yaml

# The operator on this machine against the cluster in $$KUBECONFIG; install
# the CRD first with `kubectl apply -k config/crd`.
run-manager: ## Run the operator locally against $$KUBECONFIG
	$(GO) run -ldflags "$(LDFLAGS)" ./cmd/manager --health-probe-bind-address=127.0.0.1:8081 \
	  --metrics-bind-address=127.0.0.1:8082 --log-format console

scale-test: envtest-binaries ## Reconcile 1,000 VoiceGateways on a real API server and report timings
	$(GO) run ./hack/scale-test

# Needs a Docker engine with buildx (none on the test machines: the tests
# check the Dockerfile and run its build command without Docker).
image: ## Build the image with both binaries (docker buildx) and load it into the local engine as $(IMG)
	docker buildx build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) --tag $(IMG) --load .

image-push: ## Build the image for $(PLATFORMS) and push it as $(IMG)
	docker buildx build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) --platform $(PLATFORMS) --tag $(IMG) --push .

# The same image without Docker (hack/image, go-containerregistry): the same
# files on the same base, reproducible. IMAGE_BASE=scratch for a minimal base
# that needs no registry.
IMAGE_BASE ?= gcr.io/distroless/static:nonroot
image-oci: ## Build the image for $(PLATFORMS) without Docker into the OCI layout bin/image/$(VERSION)
	$(GO) run ./hack/image --version $(VERSION) --commit $(COMMIT) --platform $(PLATFORMS) --base $(IMAGE_BASE) \
		--tag $(IMG) --oci-layout $(BIN)/image/$(VERSION)

image-publish: ## Build the image for $(PLATFORMS) without Docker and push it as $(IMG) (~/.docker/config.json credentials)
	$(GO) run ./hack/image --version $(VERSION) --commit $(COMMIT) --platform $(PLATFORMS) --base $(IMAGE_BASE) \
		--tag $(IMG) --push

# The chart's version is the app version without its "v": chart 0.2.0 ships
# the operator v0.2.0 (a test keeps Chart.yaml so). Only a release is
# packaged: VERSION (git describe --tags --dirty) must be exactly a tag
# vMAJOR.MINOR.PATCH[-PRERELEASE] on a clean tree; a commit past a tag
# (v0.1.0-3-gabc1234), a dirty tree or an untagged commit is refused, so
# that no chart is ever published under a release's version with other
# content. CHART_REPO is an OCI registry path; log in first with
# `helm registry login`.
CHART_APP_VERSION = $(VERSION)
CHART_VERSION = $(patsubst v%,%,$(CHART_APP_VERSION))
CHART_OUT ?= $(BIN)/chart
CHART_REPO ?= oci://ghcr.io/voicegateway/charts
chart: ## helm package the chart into bin/chart/ (VERSION must be a release tag; chart version = VERSION without its v)
	@v='$(VERSION)'; if ! echo "$$v" | grep -Eq '^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$$' || \
	  echo "$$v" | grep -Eq -- '-dirty$$|-[0-9]+-g[0-9a-f]{4,}$$'; then \
	  echo "make chart: VERSION=$$v is not a release. The chart is packaged only at a release tag (vMAJOR.MINOR.PATCH[-PRERELEASE]) on a clean tree, as its version; commit and tag (git tag v1.2.3), or name the release: make chart VERSION=v1.2.3" >&2; \
	  exit 2; fi
	@GO=$(GO) hack/build-k8s-binaries.sh helm >/dev/null
	$(BIN)/k8s/helm package $(CHART) --version $(CHART_VERSION) --app-version $(CHART_APP_VERSION) --destination $(CHART_OUT)

chart-push: chart ## helm push the packaged chart to $(CHART_REPO) (an OCI registry)
	$(BIN)/k8s/helm push $(CHART_OUT)/voicegateway-operator-$(CHART_VERSION).tgz $(CHART_REPO)

helm-lint: ## helm lint the chart (helm built from source into bin/k8s)
	GO=$(GO) hack/build-k8s-binaries.sh helm
	$(BIN)/k8s/helm lint --strict $(CHART)

# A real single-node Kubernetes on this machine (root; containerd, runc and
# the CNI plugins from Debian, the rest built from source into bin/k8s).
.PHONY: cluster-up cluster-down e2e
cluster-up: ## Start the local single-node cluster (hack/cluster-up); KUBECONFIG=/var/lib/vgw-cluster/admin.kubeconfig
	hack/cluster-up

cluster-down: ## Stop the local cluster and remove everything it made
	hack/cluster-down

e2e: ## Cluster up, helm install, sample, sessions through a rollout, GC, uninstall, teardown (bin/e2e/)
	hack/e2e.sh

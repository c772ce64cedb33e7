# voicegateway — make targets. Every target works on a fresh machine with Go.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/voicegateway/voicegateway/server/version.Version=$(VERSION)
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

.PHONY: all build run test test-short bench bench-go bench-load soak soak-short fuzz lint fmt vet clean \
	envtest-binaries controller-gen generate manifests run-manager scale-test image image-push helm-lint

all: lint build test

build: ## Build the binaries into bin/
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/voice-server ./cmd/voice-server
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/manager ./cmd/manager

# No load balancer routes to a local run, so it need not wait for one to
# catch up before refusing new sessions (--propagation-delay 0s).
run: build ## The voice server on loopback, echo backend, auth OFF (local only)
	$(BIN)/voice-server --listen 127.0.0.1:8080 --admin-listen 127.0.0.1:9090 \
		--backend echo --insecure-no-auth --dev --propagation-delay 0s

test: lint envtest-binaries controller-gen ## Every test: unit, fuzz seeds, end-to-end, operator on a real API server (race detector on)
	$(GO) test -race -count=1 -timeout 30m ./...

test-short: ## Unit tests only, no end-to-end
	$(GO) test -short -count=1 ./...

bench: bench-go bench-load ## Go benchmarks, then the load benchmarks (numbers go to docs/benchmarks.md)

bench-go: ## Go benchmarks of the hot paths
	$(GO) test -run '^$$' -bench . -benchmem -count=1 ./server/...

bench-load: ## Load benchmarks on loopback with cmd/vgload: idle density, relay, drain, limiter flood (~10 min)
	hack/bench.sh

# The soak gate fails only on goroutine or open-file growth, never on timing.
SOAK_DURATION ?= 2h
soak-short: ## 3-minute session churn; fails if the server's goroutines or open files grew
	hack/soak.sh 3m

soak: ## Long session churn (SOAK_DURATION=2h); prints heap MB/day and goroutines/day
	hack/soak.sh $(SOAK_DURATION)

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
	  --metrics-bind-address=127.0.0.1:8082 --zap-devel

scale-test: envtest-binaries ## Reconcile 1,000 VoiceGateways on a real API server and report timings
	$(GO) run ./hack/scale-test

# Needs a Docker engine with buildx (none on the test machines: the tests
# check the Dockerfile and run its build command without Docker).
image: ## Build the image with both binaries (docker buildx) and load it into the local engine as $(IMG)
	docker buildx build --build-arg VERSION=$(VERSION) --tag $(IMG) --load .

image-push: ## Build the image for $(PLATFORMS) and push it as $(IMG)
	docker buildx build --build-arg VERSION=$(VERSION) --platform $(PLATFORMS) --tag $(IMG) --push .

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

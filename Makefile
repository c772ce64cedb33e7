# voicegateway — make targets. Every target works on a fresh machine with Go.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/voicegateway/voicegateway/server/version.Version=$(VERSION)
FUZZTIME ?= 15s

.PHONY: all build run test test-short bench fuzz lint fmt vet clean

all: lint build test

build: ## Build the binaries into bin/
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/voice-server ./cmd/voice-server

# No load balancer routes to a local run, so it need not wait for one to
# catch up before refusing new sessions (--propagation-delay 0s).
run: build ## The voice server on loopback, echo backend, auth OFF (local only)
	$(BIN)/voice-server --listen 127.0.0.1:8080 --admin-listen 127.0.0.1:9090 \
		--backend echo --insecure-no-auth --dev --propagation-delay 0s

test: lint ## Every test: unit, fuzz seeds, end-to-end (race detector on)
	$(GO) test -race -count=1 -timeout 20m ./...

test-short: ## Unit tests only, no end-to-end
	$(GO) test -short -count=1 ./...

bench: ## Go benchmarks (numbers go to docs/benchmarks.md)
	$(GO) test -run '^$$' -bench . -benchmem -count=1 ./server/...

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

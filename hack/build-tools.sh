#!/usr/bin/env bash
# Builds the tools of the observability checks into bin/tools/ (cached), all
# through the Go module proxy:
#   promtool        Prometheus' own, at the version hack/tools/go.mod pins
#                   (a `tool` of that module): `promtool test rules` runs the
#                   alert rules' unit tests (test/observability/testdata)
#   promql-metrics  hack/tools/promql-metrics: the metric names PromQL
#                   expressions read, parsed by Prometheus' own parser
#   prometheus-operator-crds/
#                   the ServiceMonitor, PodMonitor and PrometheusRule CRDs of
#                   the Prometheus Operator, copied from its Go module
#                   (github.com/prometheus-operator/prometheus-operator at
#                   PROMETHEUS_OPERATOR_VERSION): the tests and `make e2e`
#                   install them (CRDs only, no Prometheus)
#
#   hack/build-tools.sh
#
# Idempotent: nothing is rebuilt while bin/tools/.stamp matches the inputs
# (hack/tools' go.mod, go.sum and sources, and the operator version).
# hack/tools is a module of its own, so that Prometheus' dependencies never
# reach the main module.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${TOOLS_BIN_DIR:-$ROOT/bin/tools}"
GO="${GO:-go}"
PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
CRDS=(servicemonitors podmonitors prometheusrules)

stamp="$(cat "$ROOT/hack/tools/go.mod" "$ROOT/hack/tools/go.sum" "$ROOT"/hack/tools/promql-metrics/*.go | sha256sum | cut -c1-16) prometheus-operator $PROMETHEUS_OPERATOR_VERSION"
up_to_date() {
	[[ -x "$OUT/promtool" && -x "$OUT/promql-metrics" && -f "$OUT/.stamp" && "$(cat "$OUT/.stamp")" == "$stamp" ]] || return 1
	local crd
	for crd in "${CRDS[@]}"; do
		[[ -f "$OUT/prometheus-operator-crds/monitoring.coreos.com_$crd.yaml" ]] || return 1
	done
}
if up_to_date; then
	echo "bin/tools: up to date"
	exit 0
fi

start=$(date +%s)
mkdir -p "$OUT"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/vgw-tools.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export GOWORK=off CGO_ENABLED=0

(
	cd "$ROOT/hack/tools"
	export GOFLAGS="-mod=readonly -buildvcs=false"
	version="$("$GO" list -m -f '{{.Version}}' github.com/prometheus/prometheus)"
	# The module's v0.316.0 is Prometheus 3.16.0.
	release="${version#v0.}"
	release="${release:0:1}.${release:1}"
	# The service discovery plugins are left out (remove_all_sd): promtool
	# only tests rules here.
	"$GO" build -tags remove_all_sd,netgo,builtinassets -trimpath \
		-ldflags "-s -w -X github.com/prometheus/common/version.Version=$release -X github.com/prometheus/common/version.Revision=$version" \
		-o "$WORK/promtool" github.com/prometheus/prometheus/cmd/promtool
	"$GO" build -trimpath -ldflags "-s -w" -o "$WORK/promql-metrics" ./promql-metrics
)
mv -f "$WORK/promtool" "$WORK/promql-metrics" "$OUT/"

# The CRDs, from the module as the proxy serves it (checked against the
# checksum database like any module).
(
	cd "$WORK"
	export GOFLAGS="-mod=mod"
	"$GO" mod init vgw-build/crds >/dev/null 2>&1
	dir="$("$GO" mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" | awk -F'"' '$2 == "Dir" { print $4 }')"
	rm -rf "$OUT/prometheus-operator-crds"
	mkdir -p "$OUT/prometheus-operator-crds"
	for crd in "${CRDS[@]}"; do
		install -m 0644 "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$crd.yaml" "$OUT/prometheus-operator-crds/"
	done
	echo "$PROMETHEUS_OPERATOR_VERSION" >"$OUT/prometheus-operator-crds/VERSION"
)
echo "$stamp" >"$OUT/.stamp"
echo "built bin/tools (promtool $("$OUT/promtool" --version 2>&1 | awk 'NR == 1 { print $3 }'), promql-metrics, Prometheus Operator CRDs $PROMETHEUS_OPERATOR_VERSION) in $(($(date +%s) - start))s"

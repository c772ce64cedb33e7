#!/usr/bin/env bash
# Builds the Kubernetes control-plane binaries that the operator's tests run
# against (envtest: kube-apiserver and etcd; the garbage-collection test:
# kube-controller-manager) from source, through the Go module proxy, and caches
# them in bin/k8s/. Nothing is downloaded from anywhere else.
#
#   hack/build-k8s-binaries.sh                 # etcd kube-apiserver kube-controller-manager
#   hack/build-k8s-binaries.sh kubectl helm    # any of the names below
#
# Names: etcd kube-apiserver kube-controller-manager kube-scheduler kubelet
# kube-proxy kubectl helm.
#
# Idempotent: a binary whose stamp (bin/k8s/.NAME.version) names the wanted
# version is not rebuilt. The Kubernetes version follows the k8s.io/api version
# in go.mod (v0.X.Y -> v1.X.Y) unless K8S_VERSION is set; ETCD_VERSION and
# HELM_VERSION choose the others.
#
# Each part is built in a throwaway module in a temporary folder: for
# Kubernetes one that requires k8s.io/kubernetes and pins every staging module
# (the replace block of Kubernetes' own go.mod points at ./staging, which a
# module download does not have) to the matching v0.X.Y.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${K8S_BIN_DIR:-$ROOT/bin/k8s}"
GO="${GO:-go}"

if [[ -z "${K8S_VERSION:-}" ]]; then
	api="$(awk '$1 == "k8s.io/api" { print $2; exit }' "$ROOT/go.mod" || true)"
	if [[ "$api" =~ ^v0\.([0-9]+)\.([0-9]+)$ ]]; then
		K8S_VERSION="v1.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
	else
		K8S_VERSION="v1.37.2"
	fi
fi
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"

if [[ ! "$K8S_VERSION" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]]; then
	echo "K8S_VERSION must look like v1.37.2, got $K8S_VERSION" >&2
	exit 2
fi
K8S_MINOR="${BASH_REMATCH[1]}"
STAGING_VERSION="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"

if [[ $# -eq 0 ]]; then
	set -- etcd kube-apiserver kube-controller-manager
fi

version_of() {
	case "$1" in
	etcd) echo "$ETCD_VERSION" ;;
	helm) echo "$HELM_VERSION" ;;
	kube-apiserver | kube-controller-manager | kube-scheduler | kubelet | kube-proxy | kubectl) echo "$K8S_VERSION" ;;
	*)
		echo "unknown binary: $1" >&2
		exit 2
		;;
	esac
}

# stamp_of is what a binary's stamp holds: its version, and for helm how it
# was built (a helm built without the Kubernetes version ldflags below must
# be rebuilt).
stamp_of() {
	case "$1" in
	helm) echo "$HELM_VERSION kube-version-ldflags" ;;
	*) version_of "$1" ;;
	esac
}

up_to_date() {
	[[ -x "$OUT/$1" && -f "$OUT/.$1.version" && "$(cat "$OUT/.$1.version")" == "$(stamp_of "$1")" ]]
}

mkdir -p "$OUT"
k8s_wanted=()
etcd_wanted=0
helm_wanted=0
for name in "$@"; do
	version="$(version_of "$name")"
	if up_to_date "$name"; then
		echo "bin/k8s/$name $version: up to date"
		continue
	fi
	case "$name" in
	etcd) etcd_wanted=1 ;;
	helm) helm_wanted=1 ;;
	*) k8s_wanted+=("$name") ;;
	esac
done

if [[ ${#k8s_wanted[@]} -eq 0 && $etcd_wanted -eq 0 && $helm_wanted -eq 0 ]]; then
	exit 0
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/vgw-k8s-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0
# The throwaway modules must not pick up a go.work from above.
export GOWORK=off

# quiet runs a command and shows its output only when it fails.
quiet() {
	local log="$WORK/quiet.log"
	if ! "$@" >"$log" 2>&1; then
		cat "$log" >&2
		return 1
	fi
}

stamp() { # name version
	echo "$2" >"$OUT/.$1.version"
}

elapsed() { # start
	echo "$(($(date +%s) - $1))s"
}

if [[ ${#k8s_wanted[@]} -gt 0 ]]; then
	start=$(date +%s)
	echo "building ${k8s_wanted[*]} $K8S_VERSION from k8s.io/kubernetes (staging modules $STAGING_VERSION)..."
	mod="$WORK/kubernetes"
	mkdir -p "$mod"
	(
		cd "$mod"
		"$GO" mod init vgw-build/kubernetes >/dev/null 2>&1
		gomod_file="$("$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" | awk -F'"' '$2 == "GoMod" { print $4 }')"
		{
			echo
			echo "require k8s.io/kubernetes $K8S_VERSION"
			echo
			echo "replace ("
			awk '$2 == "=>" && $3 ~ /^\.\/staging\// { printf "\t%s => %s '"$STAGING_VERSION"'\n", $1, $1 }' "$gomod_file"
			echo ")"
		} >>go.mod
		pkgs=()
		for name in "${k8s_wanted[@]}"; do
			pkgs+=("k8s.io/kubernetes/cmd/$name")
		done
		build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
		ldflags="-s -w"
		for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
			ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$K8S_MINOR"
			ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
		done
		"$GO" build -trimpath -ldflags "$ldflags" -o "$WORK/out/" "${pkgs[@]}"
	)
	for name in "${k8s_wanted[@]}"; do
		mv -f "$WORK/out/$name" "$OUT/$name"
		stamp "$name" "$K8S_VERSION"
	done
	echo "built ${k8s_wanted[*]} $K8S_VERSION in $(elapsed "$start")"
fi

if [[ $etcd_wanted -eq 1 ]]; then
	start=$(date +%s)
	echo "building etcd $ETCD_VERSION from go.etcd.io/etcd/server/v3..."
	mod="$WORK/etcd"
	mkdir -p "$mod"
	(
		cd "$mod"
		"$GO" mod init vgw-build/etcd >/dev/null 2>&1
		quiet "$GO" get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
		"$GO" build -trimpath -ldflags "-s -w" -o "$WORK/out/etcd" go.etcd.io/etcd/server/v3
	)
	mv -f "$WORK/out/etcd" "$OUT/etcd"
	stamp etcd "$ETCD_VERSION"
	echo "built etcd $ETCD_VERSION in $(elapsed "$start")"
fi

if [[ $helm_wanted -eq 1 ]]; then
	start=$(date +%s)
	echo "building helm $HELM_VERSION from helm.sh/helm/v3..."
	mod="$WORK/helm"
	mkdir -p "$mod"
	(
		cd "$mod"
		"$GO" mod init vgw-build/helm >/dev/null 2>&1
		quiet "$GO" get "helm.sh/helm/v3@$HELM_VERSION"
		# As helm's own Makefile: the Kubernetes version that `helm template`
		# and `helm lint` assume follows the client-go helm is built with
		# (v0.X.Y -> 1.X); unset, it is 1.20 and a chart's kubeVersion fails.
		client_go="$("$GO" list -m -f '{{.Version}}' k8s.io/client-go)"
		if [[ ! "$client_go" =~ ^v0\.([0-9]+)\. ]]; then
			echo "unexpected k8s.io/client-go version in helm $HELM_VERSION: $client_go" >&2
			exit 1
		fi
		kube_minor="${BASH_REMATCH[1]}"
		ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.metadata="
		for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
			ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$kube_minor"
		done
		"$GO" build -trimpath -ldflags "$ldflags" -o "$WORK/out/helm" helm.sh/helm/v3/cmd/helm
	)
	mv -f "$WORK/out/helm" "$OUT/helm"
	stamp helm "$(stamp_of helm)"
	echo "built helm $HELM_VERSION in $(elapsed "$start")"
fi

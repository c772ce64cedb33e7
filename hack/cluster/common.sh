# Shared settings of hack/cluster-up, hack/cluster-down and hack/e2e.sh.
# Sourced, not run.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
K8S_BIN="$ROOT/bin/k8s"
# Everything the cluster writes that is not at a fixed place of the kubelet,
# CNI or containerd's shims lives here; cluster-down removes it.
CLUSTER_DIR="${VGW_CLUSTER_DIR:-/var/lib/vgw-cluster}"
PIDS="$CLUSTER_DIR/pids"
LOGS="$CLUSTER_DIR/logs"
export KUBECONFIG="$CLUSTER_DIR/admin.kubeconfig"

BRIDGE=cni0
NODE_IP=10.244.0.1
POD_SUBNET=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/24
NODE_NAME=vgw-node
ETCD_PORT=23790
ETCD_PEER_PORT=23800
API_PORT=6443
CONTAINERD_SOCK="$CLUSTER_DIR/containerd/containerd.sock"
# The image of both binaries, named as the chart names it (appVersion), and a
# second tag of the same binaries for the rollout of the end-to-end test.
IMAGE_REPO=ghcr.io/voicegateway/voicegateway
IMAGE_TAG="$(awk '$1 == "appVersion:" { print $2; exit }' "$ROOT/charts/voicegateway-operator/Chart.yaml")"
IMAGE_TAG_ROLLOUT="${IMAGE_TAG}-rollout"
PAUSE_IMAGE=localhost/vgw-pause:local

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

kctl() { "$K8S_BIN/kubectl" "$@"; }

ctr_k8s() { ctr --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }

# running PID: the process runs (a zombie that nobody reaped does not).
running() {
	local state
	state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
	[[ -n "$state" && "$state" != Z && "$state" != X ]]
}

# alive NAME: the process recorded as NAME still runs.
alive() {
	local f="$PIDS/$1.pid"
	[[ -f "$f" ]] && running "$(cat "$f")"
}

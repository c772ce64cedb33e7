#!/usr/bin/env bash
# Builds the local cluster's images without Docker, with the project's image
# builder (hack/image, go-containerregistry), and imports them into the
# cluster's containerd (k8s.io namespace):
#   - the project's image, the Dockerfile's final stage on a minimal base
#     (nothing can be pulled here), tagged $IMAGE_TAG (the chart's
#     appVersion) and $IMAGE_TAG_ROLLOUT, for this machine's architecture;
#   - the pod sandbox image (hack/cluster/pause).
# Each goes to containerd as a tar of an OCI image layout.
#   hack/cluster/images.sh          # needs the cluster's containerd running
set -euo pipefail
source "$(dirname "$0")/common.sh"

WORK="$CLUSTER_DIR/images"
rm -rf "$WORK"
mkdir -p "$WORK"
VERSION="${VERSION:-$IMAGE_TAG}"
PLATFORM="linux/$(go env GOARCH)"

# It builds from the checkout it runs in.
cd "$ROOT"
go build -o "$WORK/image" ./hack/image
"$WORK/image" --pause --base scratch --platform "$PLATFORM" --tag "$PAUSE_IMAGE" --oci-archive "$WORK/pause.oci.tar" >&2
"$WORK/image" --base scratch --platform "$PLATFORM" --version "$VERSION" \
	--tag "$IMAGE_REPO:$IMAGE_TAG" --tag "$IMAGE_REPO:$IMAGE_TAG_ROLLOUT" --oci-archive "$WORK/vgw.oci.tar" >&2
for name in pause vgw; do
	ctr_k8s images import --all-platforms "$WORK/$name.oci.tar" >/dev/null
done
log "images imported: $PAUSE_IMAGE, $IMAGE_REPO:$IMAGE_TAG, $IMAGE_REPO:$IMAGE_TAG_ROLLOUT"

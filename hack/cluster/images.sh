#!/usr/bin/env bash
# Builds the local cluster's images without Docker and imports them into its
# containerd (k8s.io namespace):
#   - the project's image: /manager and /voice-server (static, -trimpath, the
#     version stamped as the Dockerfile does), /licenses/voicegateway/LICENSE,
#     an /etc/passwd with the nonroot user, /tmp; USER 65532:65532,
#     ENTRYPOINT ["/manager"] -- the layout of the Dockerfile's final stage;
#     tagged $IMAGE_TAG (the chart's appVersion) and $IMAGE_TAG_ROLLOUT;
#   - the pod sandbox image (hack/cluster/pause).
# Each is an OCI image layout tarball made with tar and sha256sum alone.
#   hack/cluster/images.sh          # needs the cluster's containerd running
set -euo pipefail
source "$(dirname "$0")/common.sh"

WORK="$CLUSTER_DIR/images"
rm -rf "$WORK"
mkdir -p "$WORK"

blob() { # file -> prints sha256 hex; copies into layout blobs
	local layout="$1" file="$2" hex
	hex="$(sha256sum "$file" | cut -d' ' -f1)"
	mkdir -p "$layout/blobs/sha256"
	cp "$file" "$layout/blobs/sha256/$hex"
	echo "$hex"
}

# oci_image NAME ROOTFS_DIR ENTRYPOINT_JSON USER TAGS...
oci_image() {
	local name="$1" rootfs="$2" entrypoint="$3" user="$4"
	shift 4
	local layout="$WORK/$name-layout"
	mkdir -p "$layout"
	tar --sort=name --numeric-owner --mtime=@0 -C "$rootfs" -cf "$WORK/$name-layer.tar" .
	local layer_hex layer_size
	layer_hex="$(blob "$layout" "$WORK/$name-layer.tar")"
	layer_size="$(stat -c %s "$WORK/$name-layer.tar")"
	jq -cn --arg diff "sha256:$layer_hex" --argjson ep "$entrypoint" --arg user "$user" '{
		architecture: "amd64", os: "linux",
		config: {User: $user, Entrypoint: $ep, WorkingDir: "/",
			Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
		rootfs: {type: "layers", diff_ids: [$diff]}}' >"$WORK/$name-config.json"
	local cfg_hex cfg_size
	cfg_hex="$(blob "$layout" "$WORK/$name-config.json")"
	cfg_size="$(stat -c %s "$WORK/$name-config.json")"
	jq -cn --arg c "sha256:$cfg_hex" --argjson cs "$cfg_size" --arg l "sha256:$layer_hex" --argjson ls "$layer_size" '{
		schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
		config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs},
		layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $l, size: $ls}]}' >"$WORK/$name-manifest.json"
	local man_hex man_size
	man_hex="$(blob "$layout" "$WORK/$name-manifest.json")"
	man_size="$(stat -c %s "$WORK/$name-manifest.json")"
	local entries="[]" ref
	for ref in "$@"; do
		entries="$(jq -c --arg m "sha256:$man_hex" --argjson ms "$man_size" --arg ref "$ref" '. + [{
			mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $m, size: $ms,
			platform: {architecture: "amd64", os: "linux"},
			annotations: {"io.containerd.image.name": $ref, "org.opencontainers.image.ref.name": ($ref | split(":") | last)}}]' <<<"$entries")"
	done
	jq -cn --argjson m "$entries" '{schemaVersion: 2, manifests: $m}' >"$layout/index.json"
	echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
	tar -C "$layout" -cf "$WORK/$name.oci.tar" .
	ctr_k8s images import --all-platforms "$WORK/$name.oci.tar" >/dev/null
	log "image $name: imported as $* (manifest sha256:${man_hex:0:12})"
}

export CGO_ENABLED=0
VERSION="${VERSION:-$IMAGE_TAG}"

# The pause image.
mkdir -p "$WORK/pause-root"
(cd "$ROOT" && go build -trimpath -ldflags "-s -w" -o "$WORK/pause-root/pause" ./hack/cluster/pause)
oci_image pause "$WORK/pause-root" '["/pause"]' "65535:65535" "$PAUSE_IMAGE"

# The project's image.
R="$WORK/vgw-root"
mkdir -p "$R/licenses/voicegateway" "$R/etc" "$R/tmp" "$R/home/nonroot"
chmod 1777 "$R/tmp"
(cd "$ROOT" && go build -trimpath -ldflags "-s -w -X github.com/voicegateway/voicegateway/server/version.Version=$VERSION" \
	-o "$R/" ./cmd/manager ./cmd/voice-server)
cp "$ROOT/LICENSE" "$R/licenses/voicegateway/LICENSE"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$R/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$R/etc/group"
chown 65532:65532 "$R/home/nonroot"
oci_image vgw "$R" '["/manager"]' "65532:65532" "$IMAGE_REPO:$IMAGE_TAG" "$IMAGE_REPO:$IMAGE_TAG_ROLLOUT"

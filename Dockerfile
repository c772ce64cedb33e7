# syntax=docker/dockerfile:1
# One image holds both binaries: /manager, the operator (the entrypoint), and
# /voice-server, the data plane, which the operator's pods run by command. The
# operator's default voice server image is this image at the same version.
#
#   make image VERSION=v0.1.0     # docker buildx build --build-arg VERSION=v0.1.0 ...
#
# Without Docker, hack/image (go-containerregistry) builds the same files into
# the same base, reproducibly, for linux/amd64 and linux/arm64: `make
# image-oci` writes an OCI image layout, `make image-publish` pushes
# (test/packaging compares what the two put in the image).
#
# Static binaries (CGO_ENABLED=0, -trimpath, the version stamped by the
# linker) on distroless/static, run as the nonroot user 65532.

# GO_VERSION follows the go directive of go.mod (a test checks).
ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
ARG COMMIT=unknown
WORKDIR /src
# The module cache is a layer of its own, rebuilt only when go.mod or go.sum
# change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "-s -w -X github.com/voicegateway/voicegateway/server/version.Version=${VERSION} -X github.com/voicegateway/voicegateway/server/version.Commit=${COMMIT}" \
      -o /out/ ./cmd/manager ./cmd/voice-server

# The base is named by tag, not digest: the tag follows distroless' rebuilds
# with security fixes, and a digest is only worth pinning once resolved
# against the registry (crane digest gcr.io/distroless/static:nonroot). To
# pin, write the same gcr.io/distroless/static:nonroot@sha256:... here and
# in hack/image's DefaultBase (test/packaging keeps the two equal) and
# refresh it with each base update.
FROM gcr.io/distroless/static:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="voicegateway" \
      org.opencontainers.image.description="Kubernetes-native gateway for realtime voice AI sessions: the operator (/manager) and the voice server (/voice-server)" \
      org.opencontainers.image.source="https://github.com/voicegateway/voicegateway" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY LICENSE /licenses/voicegateway/LICENSE
COPY --from=build /out/manager /manager
COPY --from=build /out/voice-server /voice-server
USER 65532:65532
ENTRYPOINT ["/manager"]

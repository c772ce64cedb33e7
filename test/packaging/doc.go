// Package packaging holds the tests of the ways the operator is installed:
// the Helm chart (charts/voicegateway-operator), the kustomize tree
// (config/default) and the Dockerfile. They drive helm and kubectl, built
// from source into bin/k8s by hack/build-k8s-binaries.sh, against a real
// kube-apiserver (envtest), and run the operator binary, built as the
// Dockerfile builds it, with the chart's ServiceAccount token.
package packaging

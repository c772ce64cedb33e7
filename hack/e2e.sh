#!/usr/bin/env bash
# The user's day on a real single-node cluster (make e2e):
#   cluster up (hack/cluster-up) -> the Prometheus Operator's CRDs -> helm
#   install of the chart (the operator as a pod, the observability pack) -> kubectl apply of the echo sample -> sessions held open through
#   the Service while the VoiceGateway rolls to a new image tag, with the
#   assertions of test/e2e (go test -tags e2e) -> a session-aware scale-in and
#   autoscaling on sessions (test/e2e) -> a block that survives kubectl
#   rollout restart on every pod (test/e2e) -> kubectl delete vgw (garbage
#   collection) -> helm uninstall -> teardown (hack/cluster-down).
# The teardown runs on failure too; E2E_KEEP=1 leaves the cluster up.
# Captured output and the phase times: bin/e2e/ (phases.md, rollout-report.json,
# kubectl-get-vgw-w.txt, scale-in-report.json, kubectl-get-vgw-w-scale-in.txt,
# autoscaling-report.json, fleet-block-report.json, the component logs of the run).
set -euo pipefail
source "$(dirname "$0")/cluster/common.sh"

OUT="$ROOT/bin/e2e"
rm -rf "$OUT"
mkdir -p "$OUT"
NS=voicegateway-system
RELEASE=voicegateway
HELM="$K8S_BIN/helm"

declare -a PHASES=()
T0=$(date +%s.%N)
T=$T0
phase() { # name: the time since the previous phase
	local now
	now=$(date +%s.%N)
	PHASES+=("$1|$(printf '%.1f' "$(echo "$now - $T" | bc)")")
	log "phase $1: $(printf '%.1f' "$(echo "$now - $T" | bc)")s"
	T=$now
}

finish() {
	local rc=$?
	set +e
	if [[ $rc -ne 0 ]]; then
		log "FAILED (exit $rc); state at the failure:"
		kctl get vgw,deploy,pods -A -o wide 2>&1 | tail -n 30 >&2
		kctl -n "$NS" logs deploy/voicegateway-operator --tail 30 >"$OUT/operator.log" 2>&1
	fi
	if [[ "${E2E_KEEP:-0}" != 1 ]]; then
		T=$(date +%s.%N)
		"$ROOT/hack/cluster-down"
		phase teardown
		cp -r "$CLUSTER_DIR.last-logs" "$OUT/cluster-logs" 2>/dev/null
	fi
	{
		echo "| phase | seconds |"
		echo "|---|---|"
		for p in "${PHASES[@]}"; do echo "| ${p%%|*} | ${p##*|} |"; done
		printf '| **total** | **%.1f** |\n' "$(echo "$(date +%s.%N) - $T0" | bc)"
	} >"$OUT/phases.md"
	cat "$OUT/phases.md" >&2
	if [[ $rc -eq 0 ]]; then log "e2e PASSED"; else log "e2e FAILED"; fi
	exit $rc
}
trap finish EXIT

# The test driver, compiled before the clock of the cluster phases matters.
(cd "$ROOT" && go test -c -tags e2e -o "$OUT/e2e.test" ./test/e2e)
phase "build (images' binaries and the e2e driver)"

"$ROOT/hack/cluster-up"
phase "cluster up (node Ready, images imported)"

# The Prometheus Operator's CRDs, and nothing else of it (no Prometheus):
# with them the chart installs its observability pack. From the operator's
# Go module (hack/build-tools.sh), as nothing is downloaded from elsewhere.
GO="${GO:-go}" "$ROOT/hack/build-tools.sh" >/dev/null
kctl apply --server-side -f "$ROOT/bin/tools/prometheus-operator-crds/" >/dev/null
kctl wait --for condition=established --timeout 60s \
	crd/servicemonitors.monitoring.coreos.com crd/podmonitors.monitoring.coreos.com crd/prometheusrules.monitoring.coreos.com >/dev/null
phase "Prometheus Operator CRDs (no Prometheus)"

# A new client-token key signs 30 s after a rotation (the operator's default
# is 2m, for the kubelet's default 1m Secret refresh; cluster-up sets 10s).
"$HELM" install "$RELEASE" "$ROOT/charts/voicegateway-operator" --namespace "$NS" --create-namespace \
	--set 'extraArgs={--key-activation-delay=30s}' --wait --timeout 3m >"$OUT/helm-install.txt"
kctl -n "$NS" rollout status deployment/voicegateway-operator --timeout 2m >/dev/null
# The observability pack: the monitors and the alerts because their CRDs
# exist, the dashboard for Grafana's sidecar.
for obj in podmonitor/voicegateway-operator-voice-servers servicemonitor/voicegateway-operator \
	prometheusrule/voicegateway-operator configmap/voicegateway-operator-dashboard; do
	kctl -n "$NS" get "$obj" -o name >>"$OUT/monitoring.txt" 2>&1 || { log "helm install did not create $obj"; exit 1; }
done
[[ "$(kctl -n "$NS" get configmap -l grafana_dashboard=1 -o name)" == configmap/voicegateway-operator-dashboard ]] ||
	{ log "the dashboard ConfigMap lacks the grafana_dashboard label"; exit 1; }
rules="$(kctl -n "$NS" get prometheusrule voicegateway-operator -o jsonpath='{range .spec.groups[*].rules[*]}{.alert}{"\n"}{end}')"
echo "$rules" >>"$OUT/monitoring.txt"
[[ "$(grep -c '^VoiceGateway' <<<"$rules")" -ge 8 ]] || { log "the PrometheusRule holds too few alerts: $rules"; exit 1; }
phase "helm install (operator pod Ready, PodMonitor, ServiceMonitor, PrometheusRule, dashboard)"

kctl apply -f "$ROOT/config/samples/voicegateway_v1alpha1_demo.yaml" >/dev/null
for ((i = 0; i < 600; i++)); do
	[[ "$(kctl get vgw demo -o jsonpath='{.status.ready}' 2>/dev/null)" == 2/2 ]] && break
	sleep 0.2
done
kctl get vgw demo | tee "$OUT/vgw-ready.txt" >&2
[[ "$(kctl get vgw demo -o jsonpath='{.status.ready}')" == 2/2 ]] || { log "VoiceGateway demo not READY 2/2"; exit 1; }
[[ "$(kctl -n "$NS" get pods -l app.kubernetes.io/name=voicegateway-operator -o jsonpath='{.items[*].status.containerStatuses[0].ready}')" == true ]] ||
	{ log "operator pod not Ready"; exit 1; }
phase "kubectl apply sample (2 gateway pods Ready, READY 2/2)"

# The sample names no API key Secret: the operator generated one into the
# fleet Secret, as a newcomer reads it.
API_KEY=$(kctl get secret demo-fleet -o jsonpath='{.data.api-keys}' | base64 -d)
[[ -n "$API_KEY" ]] || { log "no generated API key in Secret demo-fleet"; exit 1; }
E2E_KUBECTL="$K8S_BIN/kubectl" E2E_API_KEY="$API_KEY" E2E_SESSIONS="${E2E_SESSIONS:-40}" \
	E2E_ROLLOUT_IMAGE="$IMAGE_REPO:$IMAGE_TAG_ROLLOUT" E2E_OUT="$OUT" \
	"$OUT/e2e.test" -test.v -test.count=1 -test.timeout 9m -test.run '^TestRollout$' 2>&1 | tee "$OUT/rollout-test.txt"
[[ ${PIPESTATUS[0]} -eq 0 ]]
phase "sessions + rollout + assertions (test/e2e)"

# Scaling on sessions: a scale-in keeps the busiest pod (deletion costs),
# then spec.autoscaling follows a ramp of sessions up and, after its window,
# down; no session is cut (test/e2e/scaling_test.go; the timelines and the
# `kubectl get vgw -w` of the scale-in are in the output and in $OUT).
E2E_KUBECTL="$K8S_BIN/kubectl" E2E_API_KEY="$API_KEY" E2E_OUT="$OUT" \
	"$OUT/e2e.test" -test.v -test.count=1 -test.timeout 15m -test.run '^(TestScaleIn|TestAutoscaling)$' 2>&1 | tee "$OUT/scaling-test.txt"
[[ ${PIPESTATUS[0]} -eq 0 ]]
phase "scale-in + autoscaling on sessions (test/e2e)"

# The fleet's rate limiter: an address blocked through the Service of a
# VoiceGateway of its own is blocked on every pod, before and after
# `kubectl rollout restart` (test/e2e/fleet_test.go; fleet-block-report.json).
E2E_KUBECTL="$K8S_BIN/kubectl" E2E_OUT="$OUT" \
	"$OUT/e2e.test" -test.v -test.count=1 -test.timeout 9m -test.run '^TestBlockSurvivesRolloutRestart$' 2>&1 | tee "$OUT/fleet-test.txt"
[[ ${PIPESTATUS[0]} -eq 0 ]]
phase "a block through the Service survives kubectl rollout restart on every pod (test/e2e)"

# Garbage collection: every object the operator made is owned by the
# VoiceGateway and goes with it.
kctl delete vgw demo --wait=true --timeout 2m >/dev/null
for ((i = 0; i < 600; i++)); do
	left="$(kctl get deploy,rs,pods,svc,cm,pdb,sa,endpointslices,secrets,networkpolicies -l app.kubernetes.io/instance=demo -o name 2>/dev/null)"
	[[ -z "$left" ]] && break
	sleep 0.2
done
[[ -z "$left" ]] || { log "left after kubectl delete vgw demo: $left"; exit 1; }
kctl delete -f "$ROOT/config/samples/voicegateway_v1alpha1_demo.yaml" --ignore-not-found >/dev/null
phase "kubectl delete vgw (garbage collected)"

"$HELM" uninstall "$RELEASE" --namespace "$NS" --wait --timeout 2m >/dev/null
# The operator's pod goes by garbage collection after its ReplicaSet.
for ((i = 0; i < 300; i++)); do
	left="$(kctl get deploy,rs,pods,svc,sa,cm,role,rolebinding,podmonitor,servicemonitor,prometheusrule -n "$NS" -l app.kubernetes.io/instance=$RELEASE -o name 2>/dev/null)"
	left+="$(kctl get clusterrole,clusterrolebinding -l app.kubernetes.io/instance=$RELEASE -o name 2>/dev/null)"
	[[ -z "$left" ]] && break
	sleep 0.2
done
[[ -z "$left" ]] || { log "left after helm uninstall: $left"; exit 1; }
phase "helm uninstall (no operator objects left)"

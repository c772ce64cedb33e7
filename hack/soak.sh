#!/usr/bin/env bash
# Soak: session churn against the real voice server for a given duration —
# sessions connect, talk and close, some with invalid events, oversized
# messages, abrupt hang-ups, slow readers, idle waits or wrong API keys —
# while `vgload soak` samples the server's heap, goroutines and open files
# every 10 s after a forced GC (/debug/memstats), fits a drift after the
# warm-up and prints MB/day and goroutines/day.
#
#   hack/soak.sh 3m      # make soak-short: fails only if goroutines or open files grew
#   hack/soak.sh 2h      # make soak SOAK_DURATION=2h: the figure for docs/benchmarks.md
#
# The gate is exact, not a timing: after the churn, with no session left,
# the server must hold no more goroutines and open files than before it
# (tolerance SOAK_TOLERANCE, default 2). Heap drift is reported, not gated.
# Knobs: SOAK_SESSIONS (concurrent sessions, default 50), SOAK_WARMUP
# (default: a sixth of the duration, at least 30 s), SOAK_OUT (default bin/soak),
# SOAK_GATE=0 to report without failing.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib/listening.sh

DURATION=${1:-${SOAK_DURATION:-3m}}
SESSIONS=${SOAK_SESSIONS:-50}
TOLERANCE=${SOAK_TOLERANCE:-2}
GATE=${SOAK_GATE:-1}
OUT=${SOAK_OUT:-bin/soak}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

echo "== building"
go build -o bin/voice-server ./cmd/voice-server
go build -o bin/vgload ./cmd/vgload

keyfile=$OUT/api-keys
key="vgload-soak-key-$(date +%s%N)"
echo "$key" >"$keyfile"
log=$OUT/server.log
# A fleet Secret of its own: /debug/memstats answers only its admin token.
rm -rf "$OUT/fleet"
bin/voice-server fleet-secret init --dir "$OUT/fleet" >/dev/null

# Wrong keys come with X-Forwarded-For addresses from documentation ranges,
# so the limiter tracks them and the load client itself is never blocked.
bin/voice-server --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --api-keys-file "$keyfile" \
	--fleet-secret-dir "$OUT/fleet" --debug-endpoints \
	--trusted-proxies 127.0.0.1 --session-limit $((SESSIONS * 4 + 100)) --idle-timeout 30s \
	--propagation-delay 0s --drain-timeout 7s --notify-window 1s --exit-margin 3s 2>"$log" &
PID=$!
trap 'kill -KILL $PID 2>/dev/null || true' EXIT
wait_listening voice-server "$PID" "$log"

gate=()
[ "$GATE" = 1 ] && gate=(--gate)
status=0
VGLOAD_API_KEY=$key VGLOAD_ADMIN_TOKEN_FILE=$OUT/fleet/admin-token bin/vgload soak --url "ws://$PUBLIC/v1/realtime" --admin "$ADMIN" \
	--sessions "$SESSIONS" --duration "$DURATION" --warmup "${SOAK_WARMUP:-0s}" --tolerance "$TOLERANCE" \
	--json "$OUT/soak.json" --markdown "$OUT/soak.md" "${gate[@]}" || status=$?

# The server must still stop cleanly: drain, exit 0.
kill -TERM "$PID"
exit_code=0
wait "$PID" || exit_code=$?
trap - EXIT
if [ "$exit_code" -ne 0 ]; then
	echo "voice server exited $exit_code after the soak" >&2
	tail -20 "$log" >&2
	exit 1
fi
echo "voice server drained and exited 0; table row in $OUT/soak.md"
exit "$status"

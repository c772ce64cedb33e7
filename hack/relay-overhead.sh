#!/usr/bin/env bash
# The latency the openai backend adds: the same vgload load runs once
# directly against a local OpenAI-protocol upstream (test/openaiupstream,
# the openaitest stand-in answering every input_audio_buffer.append at once
# with a response.output_audio.delta of the same audio) and once through a
# voice server's openai backend to that same upstream. Each 20 ms frame
# makes one round trip, so the difference of the two round-trip
# percentiles is what the relay adds per frame.
#
#   hack/relay-overhead.sh                     # 100 sessions, binary and base64 clients, 20 s each, 3 rounds
#   RELAY_SESSIONS="50 100" RELAY_AUDIO=binary RELAY_DURATION=30s RELAY_ROUNDS=5 hack/relay-overhead.sh
#
# A round is one vgload run: the direct phase, then the gateway phase right
# after it. A shared machine's load moves between phases, so one round's
# p99 difference is noisy; rounds repeat the pair and every round is a row.
#
# The upstream and the voice server share the server core, vgload has the
# other (taskset, on a machine of 2 or more cores). Heavy runs on a shared
# machine are serialized with the lock other measurements take. The
# summary lines ("added by the gateway …") and one markdown row per run
# are printed; the JSON reports and the gateway's CPU profiles stay in
# $RELAY_OUT (default bin/relay-overhead).
set -euo pipefail
command -v jq >/dev/null || { echo "hack/relay-overhead.sh needs jq" >&2; exit 1; }
cd "$(dirname "$0")/.."

SESSIONS=${RELAY_SESSIONS:-100}
AUDIO=${RELAY_AUDIO:-binary base64}
DURATION=${RELAY_DURATION:-20s}
ROUNDS=${RELAY_ROUNDS:-3}
OUT=${RELAY_OUT:-bin/relay-overhead}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

SERVER_PIN=() CLIENT_PIN=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
	SERVER_PIN=(taskset -c "${SERVER_CPUS:-1}")
	CLIENT_PIN=(taskset -c "${CLIENT_CPUS:-0}")
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "== building" >&2
go build -o "$OUT/voice-server" ./cmd/voice-server
go build -o "$OUT/vgload" ./cmd/vgload
go build -o "$OUT/openaiupstream" ./test/openaiupstream

PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
}
trap cleanup EXIT

"${SERVER_PIN[@]}" "$OUT/openaiupstream" >"$OUT/upstream.url" 2>"$OUT/upstream.log" &
UP_PID=$!
PIDS+=("$UP_PID")
for _ in $(seq 100); do
	[ -s "$OUT/upstream.url" ] && break
	sleep 0.05
done
UPSTREAM=$(head -1 "$OUT/upstream.url")
[ -n "$UPSTREAM" ] || { echo "the upstream did not start" >&2; cat "$OUT/upstream.log" >&2; exit 1; }

echo "sk-relay-overhead" >"$OUT/openai-key"
"$OUT/voice-server" fleet-secret init --dir "$OUT/fleet" >/dev/null 2>&1 || true
export VGLOAD_ADMIN_TOKEN_FILE=$OUT/fleet/admin-token
"${SERVER_PIN[@]}" "$OUT/voice-server" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
	--fleet-secret-dir "$OUT/fleet" --debug-endpoints --log-level info --insecure-no-auth \
	--session-limit 5000 --propagation-delay 0s \
	--backend openai --openai-url "$UPSTREAM" --openai-api-key-file "$OUT/openai-key" 2>"$OUT/voice-server.log" &
PID=$!
PIDS+=("$PID")
for _ in $(seq 200); do
	grep -q '"msg":"listening"' "$OUT/voice-server.log" && break
	kill -0 "$PID" 2>/dev/null || { echo "the voice server did not start:" >&2; cat "$OUT/voice-server.log" >&2; exit 1; }
	sleep 0.05
done
line=$(grep -m1 '"msg":"listening"' "$OUT/voice-server.log")
PUBLIC=$(sed -E 's/.*"public":"([^"]+)".*/\1/' <<<"$line")
ADMIN=$(sed -nE 's/.*"admin":"([^"]+)".*/\1/p' <<<"$line")

echo "Machine: $(nproc) cores, $(sed -nE 's/^model name\s*:\s*//p' /proc/cpuinfo | head -1), $(go env GOVERSION); load average $(cut -d' ' -f1-3 /proc/loadavg) at the start"
echo "| sessions | client audio | frames sent | lost | direct p50 / p99 (ms) | through the gateway p50 / p99 (ms) | added p50 / p99 (ms) | gateway CPU (cores) |"
echo "|---|---|---|---|---|---|---|---|"
for round in $(seq "$ROUNDS"); do
	for n in $SESSIONS; do
		for audio in $AUDIO; do
			json=$OUT/relay-$n-$audio-$round.json
			flock /tmp/vgw-measure.lock "${CLIENT_PIN[@]}" "$OUT/vgload" relay --sessions "$n" --ramp "$((n / 200 + 2))s" \
				--duration "$DURATION" --audio "$audio" --commit-every 0 \
				--baseline-url "$UPSTREAM" --baseline-protocol realtime --baseline-pid "$UP_PID" \
				--url "ws://$PUBLIC/v1/realtime" --admin "$ADMIN" --server-pid "$PID" \
				--cpu-profile "$OUT/relay-$n-$audio-$round.cpu.pprof" --json "$json" --quiet >/dev/null
			jq -r --arg n "$n" --arg audio "$audio" '
				def ms: . * 100 | round / 100 | tostring;
				def signed: if . >= 0 then "+" + (. | ms) else (. | ms) end;
				"| \($n) | \($audio) | \(.gateway.frames.sent) | \(.gateway.frames.lost) | " +
				"\(.baseline.rtt.p50_ms | ms) / \(.baseline.rtt.p99_ms | ms) | " +
				"\(.gateway.rtt.p50_ms | ms) / \(.gateway.rtt.p99_ms | ms) | " +
				"\(.added_latency.p50_ms | signed) / \(.added_latency.p99_ms | signed) | \(.gateway.server_cpu_cores * 100 | round / 100) |"' "$json"
		done
	done
done

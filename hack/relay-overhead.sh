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
#   RELAY_BASE_SERVER=/tmp/old/voice-server hack/relay-overhead.sh   # before/after in one run
#
# By default (RELAY_MODE=concurrent) the two loads run at the same time, from
# two vgload processes: N sessions straight to the upstream (base64 audio,
# which is all it speaks) and N through the gateway, so that both meet the
# same moment of a shared machine. RELAY_MODE=sequential runs one vgload
# with the direct load as its baseline phase, then the gateway phase: the
# machine's load moves between the phases, so its p99 difference is the
# noisier. Rounds repeat the measurement; every round is a row.
# With RELAY_BASE_SERVER (a voice-server binary built from another
# revision) every round also runs the same load through that binary, on
# the same core, so before and after are measured side by side; even
# rounds run them in the other order.
#
# The voice server has a core of its own (taskset, on a machine of 2 or
# more cores); the upstream and vgload, the world outside the gateway,
# share the other, in both phases alike. The whole run holds
# /tmp/vgw-measure.lock, which other measurements on a shared machine take
# too. One markdown row per run is printed; the JSON reports and the
# gateway's CPU profiles stay in $RELAY_OUT (default bin/relay-overhead).
set -euo pipefail
command -v jq >/dev/null || { echo "hack/relay-overhead.sh needs jq" >&2; exit 1; }
cd "$(dirname "$0")/.."
source hack/lib/listening.sh

SESSIONS=${RELAY_SESSIONS:-100}
AUDIO=${RELAY_AUDIO:-binary base64}
DURATION=${RELAY_DURATION:-20s}
ROUNDS=${RELAY_ROUNDS:-3}
BASE_SERVER=${RELAY_BASE_SERVER:-}
MODE=${RELAY_MODE:-concurrent}
OUT=${RELAY_OUT:-bin/relay-overhead}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

if [ -z "${RELAY_LOCKED:-}" ]; then
	RELAY_LOCKED=1 exec flock /tmp/vgw-measure.lock "$0" "$@"
fi

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

"${CLIENT_PIN[@]}" "$OUT/openaiupstream" >"$OUT/upstream.url" 2>"$OUT/upstream.log" &
UP_PID=$!
PIDS+=("$UP_PID")
for _ in $(seq 100); do
	[ -s "$OUT/upstream.url" ] && break
	sleep 0.05
done
UPSTREAM=$(head -1 "$OUT/upstream.url")
[ -n "$UPSTREAM" ] || { echo "the upstream did not start" >&2; cat "$OUT/upstream.log" >&2; exit 1; }

echo "sk-relay-overhead" >"$OUT/openai-key"
rm -rf "$OUT/fleet"
"$OUT/voice-server" fleet-secret init --dir "$OUT/fleet" >/dev/null
export VGLOAD_ADMIN_TOKEN_FILE=$OUT/fleet/admin-token

# start_gateway NAME BINARY: sets PID, PUBLIC and ADMIN.
start_gateway() {
	local name=$1 bin=$2 log=$OUT/$1.log
	"${SERVER_PIN[@]}" "$bin" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
		--fleet-secret-dir "$OUT/fleet" --debug-endpoints --log-level info --insecure-no-auth \
		--session-limit 5000 --propagation-delay 0s \
		--backend openai --openai-url "$UPSTREAM" --openai-api-key-file "$OUT/openai-key" 2>"$log" &
	PID=$!
	PIDS+=("$PID")
	wait_listening "$name" "$PID" "$log"
}

GATEWAYS=(this)
start_gateway this "$OUT/voice-server"
declare -A GW_PID GW_PUBLIC GW_ADMIN
GW_PID[this]=$PID GW_PUBLIC[this]=$PUBLIC GW_ADMIN[this]=$ADMIN
if [ -n "$BASE_SERVER" ]; then
	GATEWAYS=(base this)
	start_gateway base "$BASE_SERVER"
	GW_PID[base]=$PID GW_PUBLIC[base]=$PUBLIC GW_ADMIN[base]=$ADMIN
fi

echo "Machine: $(nproc) cores, $(sed -nE 's/^model name\s*:\s*//p' /proc/cpuinfo | head -1), $(go env GOVERSION); load average $(cut -d' ' -f1-3 /proc/loadavg) at the start"
echo "| round | gateway | sessions | client audio | frames sent | lost | direct p50 / p99 (ms) | through the gateway p50 / p99 (ms) | added p50 / p99 (ms) | gateway CPU (cores) | load average |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for round in $(seq "$ROUNDS"); do
	for n in $SESSIONS; do
		for audio in $AUDIO; do
			order=("${GATEWAYS[@]}")
			if ((round % 2 == 0)) && ((${#GATEWAYS[@]} == 2)); then
				order=("${GATEWAYS[1]}" "${GATEWAYS[0]}") # the second of a pair runs warmer or colder: alternate
			fi
			for gw in "${order[@]}"; do
				json=$OUT/relay-$gw-$n-$audio-$round.json
				direct=$OUT/relay-direct-$n-$audio-$round.json
				load=$(cut -d' ' -f1 /proc/loadavg)
				gateway_args=(--url "ws://${GW_PUBLIC[$gw]}/v1/realtime" --admin "${GW_ADMIN[$gw]}" --server-pid "${GW_PID[$gw]}"
					--cpu-profile "$OUT/relay-$gw-$n-$audio-$round.cpu.pprof" --json "$json" --quiet)
				common=(--sessions "$n" --ramp "$((n / 200 + 2))s" --duration "$DURATION" --commit-every 0)
				if [ "$MODE" = sequential ]; then
					"${CLIENT_PIN[@]}" "$OUT/vgload" relay "${common[@]}" --audio "$audio" \
						--baseline-url "$UPSTREAM" --baseline-protocol realtime --baseline-pid "$UP_PID" \
						"${gateway_args[@]}" >/dev/null
					result=$(jq '{direct: .baseline, gateway: .gateway}' "$json")
				else
					"${CLIENT_PIN[@]}" "$OUT/vgload" relay "${common[@]}" --audio base64 \
						--url "$UPSTREAM" --server-pid "$UP_PID" --json "$direct" --quiet >/dev/null &
					direct_pid=$!
					"${CLIENT_PIN[@]}" "$OUT/vgload" relay "${common[@]}" --audio "$audio" "${gateway_args[@]}" >/dev/null
					wait "$direct_pid"
					result=$(jq -s '{direct: .[0].gateway, gateway: .[1].gateway}' "$direct" "$json")
				fi
				jq -r --arg round "$round" --arg gw "$gw" --arg n "$n" --arg audio "$audio" --arg load "$load" '
					def ms: . * 100 | round / 100 | tostring;
					def signed: if . >= 0 then "+" + (. | ms) else (. | ms) end;
					"| \($round) | \($gw) | \($n) | \($audio) | \(.gateway.frames.sent) | \(.gateway.frames.lost) | " +
					"\(.direct.rtt.p50_ms | ms) / \(.direct.rtt.p99_ms | ms) | " +
					"\(.gateway.rtt.p50_ms | ms) / \(.gateway.rtt.p99_ms | ms) | " +
					"\(.gateway.rtt.p50_ms - .direct.rtt.p50_ms | signed) / \(.gateway.rtt.p99_ms - .direct.rtt.p99_ms | signed) | " +
					"\(.gateway.server_cpu_cores * 100 | round / 100) | \($load) |"' <<<"$result"
			done
		done
	done
done

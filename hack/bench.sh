#!/usr/bin/env bash
# Load benchmarks of the voice server on loopback: idle density, active
# relay against a plain echo baseline, drain under load, and the auth rate
# limiter under a flood. The server and the load client (cmd/vgload) run as
# separate processes pinned to separate cores with taskset. Every run ends by
# itself; the report is printed and written to $BENCH_OUT/report.md, in the
# table layout of docs/benchmarks.md.
#
#   hack/bench.sh                      # everything (about 10 minutes on 2 cores)
#   BENCH_SCENARIOS="idle relay" hack/bench.sh
#
# Knobs (environment):
#   BENCH_SCENARIOS   idle relay drain flood capacity  (default: idle relay drain flood)
#   BENCH_IDLE        idle session counts              (default: 1000 10000)
#   BENCH_RELAY       active session counts            (default: 100 300 500 1000)
#   BENCH_RELAY_FRAME_TURNS  counts for the worst case, a commit per frame (default: 100 300)
#   BENCH_CAPACITY    talking session counts stepped through by the capacity scenario,
#                     sessions per core where p99 passes 20 ms (default: 300 500 750 1000 1500)
#   BENCH_DURATION    steady state of each relay run   (default: 20s)
#   BENCH_AUDIO       binary or base64                 (default: binary)
#   BENCH_DRAIN       sessions in the drain run        (default: 1000)
#   BENCH_FLOOD_IPS   addresses in the flood           (default: 1000000)
#   BENCH_OUT         output folder                    (default: bin/bench)
#   SERVER_CPUS, CLIENT_CPUS  taskset core lists (default: 1 and 0 on a machine with 2+ cores)
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib/listening.sh

SCENARIOS=${BENCH_SCENARIOS:-idle relay drain flood}
IDLE_SIZES=${BENCH_IDLE:-1000 10000}
RELAY_SIZES=${BENCH_RELAY:-100 300 500 1000}
FRAME_TURN_SIZES=${BENCH_RELAY_FRAME_TURNS:-100 300}
CAPACITY_SIZES=${BENCH_CAPACITY:-300 500 750 1000 1500}
DURATION=${BENCH_DURATION:-20s}
AUDIO=${BENCH_AUDIO:-binary}
DRAIN_SESSIONS=${BENCH_DRAIN:-1000}
FLOOD_IPS=${BENCH_FLOOD_IPS:-1000000}
OUT=${BENCH_OUT:-bin/bench}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
REPORT=$OUT/report.md
: >"$REPORT"

if [ "$(nproc)" -ge 2 ]; then
	SERVER_CPUS=${SERVER_CPUS:-1}
	CLIENT_CPUS=${CLIENT_CPUS:-0}
else
	SERVER_CPUS=${SERVER_CPUS:-}
	CLIENT_CPUS=${CLIENT_CPUS:-}
fi
# Arrays, not a function: a backgrounded function runs in a subshell, and $!
# must be the server's own process id (taskset execs the command).
SERVER_PIN=() CLIENT_PIN=()
if [ -n "$SERVER_CPUS" ] && command -v taskset >/dev/null; then SERVER_PIN=(taskset -c "$SERVER_CPUS"); fi
if [ -n "$CLIENT_CPUS" ] && command -v taskset >/dev/null; then CLIENT_PIN=(taskset -c "$CLIENT_CPUS"); fi

# Ten thousand sessions need a descriptor each on both sides.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FD_LIMIT=$(ulimit -n)

echo "== building"
go build -o bin/voice-server ./cmd/voice-server
go build -o bin/vgload ./cmd/vgload
VGLOAD=$PWD/bin/vgload
# One fleet Secret for every server of the run: /debug/memstats and the
# profiles answer only its admin token, which vgload reads from the file.
rm -rf "$OUT/fleet"
bin/voice-server fleet-secret init --dir "$OUT/fleet" >/dev/null
export VGLOAD_ADMIN_TOKEN_FILE=$OUT/fleet/admin-token

PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do
		kill -KILL "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
}
trap cleanup EXIT

# start_server NAME [flags...]: runs bin/voice-server (or, for NAME
# baseline*, vgload baseline-server) on the server cores and sets PID,
# PUBLIC and ADMIN from its "listening" log line.
start_server() {
	local name=$1
	shift
	local log=$OUT/$name.log
	if [[ $name == baseline* ]]; then
		"${SERVER_PIN[@]}" "$VGLOAD" baseline-server --listen 127.0.0.1:0 2>"$log" &
	else
		"${SERVER_PIN[@]}" bin/voice-server --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
			--fleet-secret-dir "$OUT/fleet" --debug-endpoints --log-level info "$@" 2>"$log" &
	fi
	PID=$!
	PIDS+=("$PID")
	wait_listening "$name" "$PID" "$log"
}

# stop_server PID: the first SIGTERM drains, the second stops at once.
stop_server() {
	kill -TERM "$1" 2>/dev/null || true
	sleep 0.2
	kill -TERM "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

vgload() { "${CLIENT_PIN[@]}" "$VGLOAD" "$@"; }
commas() { sed -E ':a;s/([0-9])([0-9]{3})($|[^0-9])/\1,\2\3/;ta' <<<"$1"; }

CPU_MODEL=$(sed -nE 's/^model name\s*:\s*//p' /proc/cpuinfo | head -1)
{
	echo "## Load benchmarks ($(date -u +%Y-%m-%d))"
	echo
	echo "Machine: $(nproc) cores, ${CPU_MODEL:-unknown CPU}, $(free -g | awk '/^Mem:/ {print $2}') GiB, $(go env GOVERSION), Linux $(uname -r)."
	echo "Server on cores \`${SERVER_CPUS:-any}\`, load client on cores \`${CLIENT_CPUS:-any}\` (taskset)."
	echo "Load average at the start: $(cut -d' ' -f1-3 /proc/loadavg) — a figure taken with a load average above"
	echo "about 0.5 per core shares the machine with other work and is *(loaded)*."
	echo
	echo "Command: \`hack/bench.sh\` (BENCH_SCENARIOS=\"$SCENARIOS\", BENCH_DURATION=$DURATION, BENCH_AUDIO=$AUDIO)."
	echo
} >>"$REPORT"

if [[ " $SCENARIOS " == *" idle "* ]]; then
	echo "== idle density: $IDLE_SIZES"
	{
		echo "### Memory per idle session"
		echo
		echo "Each row: a fresh server, N sessions connected (binary audio, nothing sent) and held 5 s,"
		echo "then the server's RSS and its live heap and goroutine stacks after forced GCs"
		echo "(\`/debug/memstats\`), compared with before. Aim: ≤ 8 KiB (8,192 bytes) per session."
		echo
		echo "| sessions | held | RSS / session | heap+stacks / session | heap | stacks | goroutines / session |"
		echo "|---|---|---|---|---|---|---|"
	} >>"$REPORT"
	for n in $IDLE_SIZES; do
		if [ $((n + 200)) -gt "$FD_LIMIT" ]; then
			echo "| $n | — | skipped: open-file limit $FD_LIMIT | | | | |" >>"$REPORT"
			continue
		fi
		start_server idle-$n --insecure-no-auth --session-limit $((n + 100)) --idle-timeout 10m --propagation-delay 0s
		ramp=$((n / 1000 * 2 + 2))s
		vgload idle --sessions "$n" --ramp "$ramp" --duration 5s \
			--url "ws://$PUBLIC/v1/realtime" --admin "$ADMIN" --server-pid "$PID" \
			--heap-profile "$OUT/idle-$n.heap.pprof" --json "$OUT/idle-$n.json" --markdown "$REPORT"
		stop_server "$PID"
	done
	echo >>"$REPORT"
fi

if [[ " $SCENARIOS " == *" relay "* ]]; then
	echo "== active relay: $RELAY_SIZES"
	start_server baseline
	BASE_PID=$PID BASE_PUBLIC=$PUBLIC
	start_server relay --insecure-no-auth --session-limit 5000 --propagation-delay 0s
	{
		echo "### Active relay"
		echo
		echo "N sessions, each sending a 20 ms PCM16 frame at 24 kHz every 20 ms ($AUDIO) and committing"
		echo "every 50 frames (1 s turns), which the echo backend streams back 20 ms at a time: 50 frames/s"
		echo "each way per session, as in a call. Rows marked *20 ms turns* commit every frame, so each"
		echo "frame is a whole response (7 server events per frame): the worst case. Each frame carries"
		echo "its sequence number, send time, turn and place in the turn, so losses are exact and the round"
		echo "trip runs from the moment the echo could first play the frame (its turn's commit, or the end"
		echo "of the previous turn, plus 20 ms per place). The same load first runs against a plain"
		echo "WebSocket echo (\`vgload baseline-server\`, same core, same library); *added* is the gateway's"
		echo "round-trip percentile less the baseline's. Steady state $DURATION after the ramp. Late = more"
		echo "than 40 ms. CPU is the server process's CPU time over wall time; sessions/core = N ÷ that."
		echo "Aims: ≥ 500 sessions per core with 0 dropped frames, added p99 ≤ 1 ms. A send lag p99 over"
		echo "20 ms (⚠) means vgload itself could not keep real time: that row measured a starved client."
		echo "CPU profiles of the server: \`$OUT/relay-N-COMMITS.cpu.pprof\`."
		echo
		echo "| sessions | audio | server CPU (cores) | sessions / core | frames sent | lost / late | server dropped | gateway RTT p50 / p99 / p99.9 / max (ms) | baseline p50 / p99 | added p50 / p99 | vgload CPU | send lag p99 |"
		echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
	} >>"$REPORT"
	relay() { # sessions commit-every label
		local n=$1 every=$2 label=$3
		vgload relay --sessions "$n" --ramp "$((n / 200 + 2))s" --duration "$DURATION" --audio "$AUDIO" \
			--commit-every "$every" --label "$label" \
			--baseline-url "ws://$BASE_PUBLIC/" --baseline-pid "$BASE_PID" \
			--url "ws://$PUBLIC/v1/realtime" --admin "$ADMIN" --server-pid "$PID" \
			--cpu-profile "$OUT/relay-$n-$every.cpu.pprof" --json "$OUT/relay-$n-$every.json" --markdown "$REPORT"
	}
	for n in $RELAY_SIZES; do
		relay "$n" 50 "$(commas "$n")"
	done
	for n in $FRAME_TURN_SIZES; do
		relay "$n" 1 "$(commas "$n"), 20 ms turns"
	done
	stop_server "$PID"
	stop_server "$BASE_PID"
	echo >>"$REPORT"
fi

if [[ " $SCENARIOS " == *" capacity "* ]]; then
	echo "== sessions per core: $CAPACITY_SIZES"
	{
		echo "### Sessions per core"
		echo
		echo "Talking sessions stepped up, each row against a fresh server (echo backend, $AUDIO audio, no"
		echo "auth), 1 s turns, steady state $DURATION: the server's CPU (its core's share, from /proc), vgload's"
		echo "own CPU beside it (the driver must stay the cheaper of the two, or the table measures vgload),"
		echo "p99 echo lateness (the round trip from when the echo could first play) and lost frames."
		echo "Sessions per core = N ÷ server CPU. The server's capacity is read where p99 passes 20 ms."
		echo
		echo "| sessions | audio | server CPU (cores) | sessions / core | frames sent | lost / late | server dropped | RTT p50 / p99 / p99.9 / max (ms) | baseline p50 / p99 | added p50 / p99 | vgload CPU | send lag p99 |"
		echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
	} >>"$REPORT"
	crossed=""
	prev=""
	for n in $CAPACITY_SIZES; do
		start_server capacity-$n --insecure-no-auth --session-limit $((n + 100)) --propagation-delay 0s
		vgload relay --sessions "$n" --ramp "$((n / 200 + 2))s" --duration "$DURATION" --audio "$AUDIO" \
			--url "ws://$PUBLIC/v1/realtime" --admin "$ADMIN" --server-pid "$PID" \
			--self-cpu-profile "$OUT/capacity-$n.vgload.pprof" \
			--json "$OUT/capacity-$n.json" --markdown "$REPORT" --quiet
		stop_server "$PID"
		if [ -z "$crossed" ] && command -v jq >/dev/null; then
			read -r p99 cpu <<<"$(jq -r '.gateway | "\(.rtt.p99_ms) \(.server_cpu_cores)"' "$OUT/capacity-$n.json")"
			step=$(awk -v n="$n" -v p="$p99" -v c="$cpu" 'BEGIN { printf "%d sessions (p99 %.1f ms, %.2f server cores, %.0f sessions per core)", n, p, c, n / c }')
			if awk -v p="$p99" 'BEGIN { exit !(p > 20) }'; then
				crossed="p99 passed 20 ms between ${prev:-no step} and $step"
			fi
			prev=$step
		fi
	done
	{
		echo
		echo "Capacity: ${crossed:-p99 stayed under 20 ms up to the last step, $prev}."
		echo "vgload's own CPU profiles: \`$OUT/capacity-N.vgload.pprof\`."
	} >>"$REPORT"
	echo >>"$REPORT"
fi

if [[ " $SCENARIOS " == *" drain "* ]]; then
	echo "== drain: $DRAIN_SESSIONS sessions"
	drain_flags=(--insecure-no-auth --session-limit 5000 --drain-timeout 25s --propagation-delay 2s
		--notify-window 5s --exit-margin 3s --reconnect-after 1s)
	start_server drain-b "${drain_flags[@]}"
	B_PID=$PID B_PUBLIC=$PUBLIC
	start_server drain-a "${drain_flags[@]}"
	{
		echo "### Drain under load"
		echo
		echo "$DRAIN_SESSIONS sessions talking (50 frames/s each way, 1 s turns) on server A;"
		echo "10 s into the steady state vgload sends A SIGTERM. A runs with \`${drain_flags[*]:1}\`."
		echo "Each client finishes its turn on \`gateway.draining\`, hangs up, and reconnects after the"
		echo "hinted delay (plus jitter) to server B, as a Service would route it. Times are from the"
		echo "SIGTERM; the gap is from a caller's last echoed frame on A to its first on B. Aim: 0"
		echo "sessions closed abnormally."
		echo
		echo "| sessions at SIGTERM | readiness failed | all notified | notified | closed abnormally | closes on A | last session left A | exit after last session | exit | reconnect gap p50 / p99 / p99.9 / max (ms) | frames lost |"
		echo "|---|---|---|---|---|---|---|---|---|---|---|"
	} >>"$REPORT"
	vgload drain --sessions "$DRAIN_SESSIONS" --ramp 5s --duration 15s --settle 3s --audio "$AUDIO" \
		--url "ws://$PUBLIC/v1/realtime" --url "ws://$B_PUBLIC/v1/realtime" \
		--admin "$ADMIN" --server-pid "$PID" --sigterm-after 10s --drain-wait 60s \
		--json "$OUT/drain.json" --markdown "$REPORT"
	wait "$PID" && echo "server A exited 0" || echo "server A exited $?"
	stop_server "$B_PID"
	echo >>"$REPORT"
fi

if [[ " $SCENARIOS " == *" flood "* ]]; then
	echo "== limiter flood: $FLOOD_IPS addresses"
	keyfile=$OUT/api-keys
	key="vgload-bench-key-$(date +%s%N)"
	echo "$key" >"$keyfile"
	start_server flood --api-keys-file "$keyfile" --trusted-proxies 127.0.0.1 --propagation-delay 0s
	{
		echo "### Auth rate limiter under a flood"
		echo
		echo "$FLOOD_IPS distinct client addresses (X-Forwarded-For through a trusted loopback proxy) each"
		echo "fail authentication once (\`POST /v1/client_tokens\` with a wrong key, 32 keep-alive"
		echo "connections), while a legitimate client (valid key, its own address) mints a token every"
		echo "10 ms. Default limiter settings (\`--auth-max-tracked 100000\`). Heap after forced GCs."
		echo
		echo "| addresses failed | time | requests / s | tracked entries | evictions | server heap before → after | legit p50 / p99 quiet (ms) | legit p50 / p99 / max under flood (ms) | legit responses |"
		echo "|---|---|---|---|---|---|---|---|---|"
	} >>"$REPORT"
	vgload flood --url "http://$PUBLIC" --admin "$ADMIN" --api-key "$key" --ips "$FLOOD_IPS" \
		--concurrency 32 --max-time 5m --server-pid "$PID" \
		--json "$OUT/flood.json" --markdown "$REPORT"
	stop_server "$PID"
	echo >>"$REPORT"
fi

echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)." >>"$REPORT"
echo
echo "== report ($REPORT)"
cat "$REPORT"

#!/usr/bin/env bash
# Abuse suite: a real voice server under GOMEMLIMIT=256MiB and, one after
# another and then all together, every attack a client with one valid
# credential (or none) can make on it — memory stuffing, token replay,
# sessions past a key's or a /64's cap, failed authentication from more
# addresses than the rate limiter tracks, idle keep-alives, huge headers,
# slowloris, a handshake flood, frame floods, oversized frames, output
# nobody reads, inbound bursts, a hostile rate limiter state file — with
# 20 honest callers talking beside each. `vgload abuse` starts and stops
# the server itself; it prints peak RSS against GOMEMLIMIT, what each
# attacker got and what the honest callers saw, and exits 1 if an honest
# caller lost a frame or was cut, or an attacker passed its documented
# limit (docs/operations.md, "What keeps a pod standing").
#
#   hack/abuse.sh                 # make abuse; the table in bin/abuse/abuse.md
#
# Knobs: ABUSE_ATTACKS (comma-separated, default all), ABUSE_DURATION (each
# attack, default 12s), ABUSE_OUT (default bin/abuse).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${ABUSE_OUT:-bin/abuse}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

echo "== building"
go build -o bin/voice-server ./cmd/voice-server
go build -o bin/vgload ./cmd/vgload

rm -f "$OUT/abuse.md"
bin/vgload abuse --server bin/voice-server --gomemlimit 256MiB \
	--attacks "${ABUSE_ATTACKS:-all}" --duration "${ABUSE_DURATION:-12s}" \
	--dir "$OUT/run" --json "$OUT/abuse.json" --markdown "$OUT/abuse.md"

# Sourced by the hack/ scripts that start a voice server (or another
# process that logs the same "listening" line) in the background.

# wait_listening NAME PID LOG: waits up to 10 s for the "listening" line in
# LOG, the log of process PID, and sets PUBLIC and ADMIN (empty when the
# process has no admin port) from it; when the process exits first, prints
# its log and exits 1.
wait_listening() {
	local name=$1 pid=$2 log=$3 line
	for _ in $(seq 200); do
		grep -q '"msg":"listening"' "$log" && break
		kill -0 "$pid" 2>/dev/null || {
			echo "$name did not start:" >&2
			cat "$log" >&2
			exit 1
		}
		sleep 0.05
	done
	line=$(grep -m1 '"msg":"listening"' "$log")
	PUBLIC=$(sed -E 's/.*"public":"([^"]+)".*/\1/' <<<"$line")
	ADMIN=$(sed -nE 's/.*"admin":"([^"]+)".*/\1/p' <<<"$line")
}

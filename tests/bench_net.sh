#!/usr/bin/env bash
# bench_net.sh - `make bench-net`: libcellar transfers and Stat latency
# against an optimised cellard on a 64 MiB temp flash, on loopback.
#
# Measures in the same run, on the same 16 MiB random file: sha256sum, a
# plain TCP copy, cellar upload and download (SHA-256 verified), Stat round
# trips with 1 and 32 clients and cellard's peak RSS during the 32-client run
# (see tests/bench_net.c). Prints a table; writes $BUILD/bench-net.json.
. "$(dirname "$0")/support/cellard.sh"
set -euo pipefail
BUILD=${BUILD:-build}
CELLARD=${CELLARD:-$BUILD/cellard}
HELPER=${BENCH_NET:-$BUILD/rel/tests/bench_net}
for p in "$CELLARD" "$HELPER"; do
  [ -x "$p" ] || { echo "bench_net.sh: $p not built (run make bench-net)" >&2; exit 1; }
done

T=$(mktemp -d "${TMPDIR:-/tmp}/bench-net.XXXXXX")
PID=
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$T"
}
trap cleanup EXIT INT TERM

"$CELLARD" --flash "$T/flash.img" --flash-size 64M --listen tcp://127.0.0.1:0 \
  --idle-timeout 0 >"$T/cellard.log" 2>&1 &
PID=$!
URL=$(cellard_url "$T/cellard.log" "$PID")
[ -n "$URL" ] || { echo "bench_net.sh: cellard did not start" >&2; cat "$T/cellard.log" >&2; exit 1; }

FILE="$T/data16.bin"
head -c $((16 * 1024 * 1024)) /dev/urandom >"$FILE"

# sha256sum of the same file: median of 3 (page cache warm).
sha_times=()
for _ in 1 2 3; do
  t0=$(date +%s.%N)
  sha256sum "$FILE" >/dev/null
  t1=$(date +%s.%N)
  sha_times+=("$(echo "$t1 - $t0" | awk '{print $1 - $3}')")
done
SHA_S=$(printf '%s\n' "${sha_times[@]}" | sort -g | sed -n 2p)

"$HELPER" --url "$URL" --pid "$PID" --file "$FILE" --sha256sum-s "$SHA_S" \
  --tmp "$T" --json "$BUILD/bench-net.json"

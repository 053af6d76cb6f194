#!/usr/bin/env bash
# bench_link.sh - `make bench-link` (issue 11): the issue's commands over the
# link emulator (tests/support/linkrelay.c) at 300 ms / 1 Mbit/s and at
# 600 ms / 256 kbit/s round trips: seconds, link-bound seconds (the payload
# at the link's rate), utilisation (link-bound / seconds) and the rounds the
# relay counted, with the issue's target per row (met / missed). Writes
# build/bench-link.json. Wall time is measured here only: a benchmark, not
# a test. About 5 minutes.
#
# Targets (issue 11): utilisation >= 0.9 for cp, cat, cp -r both ways and
# push, i.e. seconds <= 1.11 x link-bound + 2 round trips; unchanged cp -r
# and push of 50 files, rm -r of 50, ls, tree and df within 3 rounds; a
# re-push with 10% changed within 1.1 x the link-bound time of the changed
# bytes + 3 round trips.
. "$(dirname "$0")/support/cellard.sh"
set -u
BUILD=${BUILD:-build}
abs() { printf '%s/%s' "$(cd "$(dirname "$1")" && pwd)" "$(basename "$1")"; }
CELLARD=$(abs "${CELLARD:-$BUILD/cellard}")
CELLAR=$(abs "${CELLAR:-$BUILD/cellar}")
RELAY=$(abs "${RELAY:-$BUILD/linkrelay}")
OUT=$(abs "$BUILD")/bench-link.json
PY=$(command -v /usr/bin/python3 || command -v python3)
SETTINGS=${BENCH_LINK_SETTINGS:-"150:1000000 300:256000"}   # one-way ms : bit/s

T=$(mktemp -d "${TMPDIR:-/tmp}/bench_link.XXXXXX")
PID=
RPID=
cleanup() {
  [ -n "$RPID" ] && kill "$RPID" 2>/dev/null && wait "$RPID" 2>/dev/null
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; fi
  rm -rf "$T"
}
trap cleanup EXIT INT TERM

cd "$T" || exit 1
head -c 1048576 /dev/urandom > big.bin
mkdir -p d50 p50
for i in $(seq -w 1 50); do head -c 20000 /dev/urandom > "d50/f$i"; done
# push's own files: a device finds content it has already and copies it
# locally, which would hide the link
for i in $(seq -w 1 50); do head -c 20000 /dev/urandom > "p50/f$i"; done
ROWS="$T/rows.jsonl"
: > "$ROWS"

NCONN=0
# measure NAME KIND BYTES CMD...: KIND data (utilisation target), rounds
# (<= 3 rounds), delta (10% re-push); BYTES = payload one way.
measure() {
  local name=$1 kind=$2 bytes=$3; shift 3
  local t0 t1 rc
  t0=$(date +%s.%N)
  "$CELLAR" "$@" >"$T/out" 2>"$T/err"; rc=$?
  t1=$(date +%s.%N)
  NCONN=$((NCONN + 1))
  for _ in $(seq 1 500); do
    [ "$(awk 'NR==1{print $2}' "$T/stats")" = "$NCONN" ] && break; sleep 0.02; done
  local rounds
  rounds=$(awk 'NR==2{print $3}' "$T/stats")
  "$PY" - "$name" "$kind" "$bytes" "$t0" "$t1" "$rounds" "$rc" "$DELAY" "$RATE" <<'EOF' >>"$ROWS"
import json, sys
name, kind, nbytes, t0, t1, rounds, rc, delay, rate = sys.argv[1:]
secs = float(t1) - float(t0); nbytes = int(nbytes); rtt = 2 * int(delay) / 1000.0
rate = int(rate); bound = nbytes * 8 / rate
if kind == "data":
    limit = 1.11 * bound + 2 * rtt
    met = secs <= limit and rc == "0"
elif kind == "delta":
    limit = 1.1 * bound + 3 * rtt
    met = secs <= limit and rc == "0"
else:
    limit = None
    met = int(rounds) <= 3 and rc == "0"
print(json.dumps({"link": f"{2*int(delay)} ms / {rate // 1000} kbit/s", "command": name,
                  "kind": kind, "seconds": round(secs, 3), "link_bound_s": round(bound, 3),
                  "limit_s": None if limit is None else round(limit, 3),
                  "utilisation": round(bound / secs, 3) if bound else None,
                  "rounds": int(rounds), "exit": int(rc), "met": met}))
EOF
  if [ "$rc" != 0 ]; then echo "  $name: exit $rc: $(head -c 200 "$T/err")" >&2; fi
}

for s in $SETTINGS; do
  DELAY=${s%%:*}; RATE=${s##*:}
  rm -f "$T/flash.img"
  cellard_start bench_link 8M
  DEV=${CELLAR_DEVICE#tcp://}
  "$RELAY" --listen 0 --to "$DEV" --delay "$DELAY" --rate "$RATE" --stats "$T/stats" \
    >"$T/relay.out" 2>"$T/relay.err" &
  RPID=$!
  for _ in $(seq 1 200); do grep -q '^port' "$T/relay.out" && break; sleep 0.02; done
  export CELLAR_DEVICE=tcp://127.0.0.1:$(sed -n 's/^port //p' "$T/relay.out")
  NCONN=0
  echo "link: $((2 * DELAY)) ms round trip, $((RATE / 1000)) kbit/s each way" >&2
  measure "cp 1 MiB" data 1048576 cp big.bin :big.bin
  measure "cat 1 MiB" data 1048576 cat :big.bin
  measure "cp -r 50 x 20 KB" data 1000000 cp -r d50 :d50
  measure "cp -r again (unchanged)" rounds 0 cp -r d50 :/usr/
  rm -rf back
  measure "cp -r 50 x 20 KB from the device" data 1000000 cp -r :d50 back
  measure "push 50 x 20 KB" data 1000000 push p50 :/usr/p50
  measure "push again (unchanged)" rounds 0 push p50 :/usr/p50
  for i in 01 11 21 31 41; do head -c 20000 /dev/urandom > "p50/f$i"; done
  measure "push, 10% changed" delta 100000 push p50 :/usr/p50
  measure "rm -r of 50 files" rounds 0 rm -r :d50
  measure "ls" rounds 0 ls
  measure "tree" rounds 0 tree
  measure "df" rounds 0 df
  kill "$RPID"; wait "$RPID" 2>/dev/null; RPID=
  kill "$PID"; wait "$PID" 2>/dev/null; PID=
done

"$PY" - "$ROWS" "$OUT" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'link':<20} {'command':<34} {'s':>7} {'bound s':>8} {'limit s':>8} {'util':>5} {'rounds':>6}  target")
for r in rows:
    lim = "" if r["limit_s"] is None else f"{r['limit_s']:.2f}"
    ut = "" if r["utilisation"] is None else f"{r['utilisation']:.2f}"
    tgt = ("<= 3 rounds" if r["kind"] == "rounds" else "time <= limit")
    print(f"{r['link']:<20} {r['command']:<34} {r['seconds']:>7.2f} {r['link_bound_s']:>8.2f} "
          f"{lim:>8} {ut:>5} {r['rounds']:>6}  {tgt}: {'met' if r['met'] else 'MISSED'}")
met = sum(r["met"] for r in rows)
print(f"bench-link: {met} of {len(rows)} targets met")
json.dump({"rows": rows, "met": met, "total": len(rows)}, open(sys.argv[2], "w"), indent=1)
print(f"wrote {sys.argv[2]}")
EOF

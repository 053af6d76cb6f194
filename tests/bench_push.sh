#!/usr/bin/env bash
# bench_push.sh - `make bench-push`: `cellar push` of a 2 MiB, 200-file
# bundle into a fresh device, the same push again (nothing changed), and a
# push with 10% of the files changed, against an optimised cellard on a
# 16 MiB temp flash over loopback.
#
# For each: the bundle size, the file data sent, the bytes on the wire in
# both directions (counted by a relay between the CLI and cellard) and the
# wall time (median of 3 runs without the relay, each on a fresh device
# state). Prints a table; writes $BUILD/bench-push.json.
. "$(dirname "$0")/support/cellard.sh"
set -euo pipefail
BUILD=${BUILD:-build}
CELLARD=${CELLARD:-$BUILD/cellard}
CELLAR=${CELLAR:-$BUILD/cellar}
for p in "$CELLARD" "$CELLAR"; do
  [ -x "$p" ] || { echo "bench_push.sh: $p not built (run make bench-push)" >&2; exit 1; }
done

T=$(mktemp -d "${TMPDIR:-/tmp}/bench-push.XXXXXX")
PID=
RELAY=
cleanup() {
  for p in $PID $RELAY; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT INT TERM

start_cellard() {
  "$CELLARD" --flash "$T/flash.img" --flash-size 16M --listen tcp://127.0.0.1:0 \
    --idle-timeout 0 >"$T/cellard.log" 2>&1 &
  PID=$!
  URL=$(cellard_url "$T/cellard.log" "$PID")
  [ -n "$URL" ] || { echo "bench_push.sh: cellard did not start" >&2; exit 1; }
}
stop_cellard() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; }

# The bundle: 200 files, 2 MiB in all, sizes from 1 KiB to ~19 KiB, in 10
# directories. v2 changes 20 of them (10%).
python3 - "$T" <<'EOF'
import os, random, sys
root = sys.argv[1]
random.seed(42)
sizes = [random.randint(1024, 19 * 1024) for _ in range(200)]
scale = (2 * 1024 * 1024) / sum(sizes)
sizes = [max(1, int(s * scale)) for s in sizes]
sizes[-1] += 2 * 1024 * 1024 - sum(sizes)
for v in ("v1", "v2"):
    for i, s in enumerate(sizes):
        d = os.path.join(root, v, "pkg%d" % (i % 10))
        os.makedirs(d, exist_ok=True)
        rnd = random.Random(i * 7 + (1000 if v == "v2" and i % 10 == 3 else 0))
        with open(os.path.join(d, "m%03d.py" % i), "wb") as f:
            f.write(bytes(rnd.getrandbits(8) for _ in range(s)))
EOF

# A relay that counts the bytes each way, for the wire figures.
cat >"$T/relay.py" <<'EOF'
import selectors, socket, sys, time
up_host, up_port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
deadline = time.monotonic() + 300  # bounded: gone after 5 minutes at most
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 0)); ls.listen(8)
print(ls.getsockname()[1], flush=True)
sel = selectors.DefaultSelector(); sel.register(ls, selectors.EVENT_READ)
peer = {}; count = {"up": 0, "down": 0}
while time.monotonic() < deadline:
    for key, _ in sel.select(timeout=1):
        s = key.fileobj
        if s is ls:
            c, _ = ls.accept(); u = socket.create_connection((up_host, up_port))
            peer[c] = (u, "up"); peer[u] = (c, "down")
            sel.register(c, selectors.EVENT_READ); sel.register(u, selectors.EVENT_READ)
            continue
        data = s.recv(65536)
        other, way = peer[s]
        if not data:
            for x in (s, other):
                sel.unregister(x); x.close(); peer.pop(x, None)
            with open(out, "w") as f:
                f.write("%d %d\n" % (count["up"], count["down"]))
            continue
        count[way] += len(data)
        other.sendall(data)
EOF

# One measured push: prints "seconds bytes_sent bundle_bytes".
push_once() { # DIR URL
  local t0 t1
  t0=$(date +%s.%N)
  "$CELLAR" -d "$2" --json push "$1" :/usr/app >"$T/push.json"
  t1=$(date +%s.%N)
  python3 -c "import json,sys; d=json.load(open('$T/push.json')); print($t1-$t0, d['bytes_sent'], d['bundle_bytes'], len(d['new']), len(d['changed']), len(d['unchanged']))"
}

# Each step runs on a fresh flash: (empty) v1; v1 then v1 again; v1 then v2.
declare -A TIME SENT BUNDLE WIRE_UP WIRE_DOWN FILES
measure() { # name: the steps' pushes, the last one measured
  local name=$1; shift
  local times=()
  for run in 1 2 3 4; do
    rm -f "$T/flash.img"
    start_cellard
    local url=$URL
    if [ "$run" = 4 ]; then # the wire run, through the relay
      coproc RL { exec python3 "$T/relay.py" 127.0.0.1 "${URL##*:}" "$T/wire"; }
      RELAY=$RL_PID
      read -r port <&"${RL[0]}"
      url="tcp://127.0.0.1:$port"
    fi
    local n=$#
    local i=0
    for dir in "$@"; do
      i=$((i + 1))
      if [ $i -lt $n ]; then
        "$CELLAR" -d "$URL" push "$dir" :/usr/app >/dev/null
      else
        rm -f "$T/wire"
        read -r secs sent bundle nnew nchanged nunchanged < <(push_once "$dir" "$url")
      fi
    done
    if [ "$run" = 4 ]; then
      for _ in $(seq 1 100); do [ -s "$T/wire" ] && break; sleep 0.05; done
      read -r up down <"$T/wire"
      kill "$RELAY" 2>/dev/null || true; wait "$RELAY" 2>/dev/null || true; RELAY=
      WIRE_UP[$name]=$up; WIRE_DOWN[$name]=$down
    else
      times+=("$secs")
    fi
    stop_cellard
  done
  TIME[$name]=$(printf '%s\n' "${times[@]}" | sort -g | sed -n 2p)
  SENT[$name]=$sent; BUNDLE[$name]=$bundle
  FILES[$name]="$nnew/$nchanged/$nunchanged"
}

measure first "$T/v1"
measure again "$T/v1" "$T/v1"
measure ten_percent "$T/v1" "$T/v2"

printf '%-14s %12s %12s %12s %12s %10s %14s\n' push bundle_B data_sent_B wire_up_B wire_down_B time_s new/chg/same
for k in first again ten_percent; do
  printf '%-14s %12d %12d %12d %12d %10.3f %14s\n' "$k" "${BUNDLE[$k]}" "${SENT[$k]}" \
    "${WIRE_UP[$k]}" "${WIRE_DOWN[$k]}" "${TIME[$k]}" "${FILES[$k]}"
done
python3 - "$BUILD/bench-push.json" <<EOF
import json, sys
rows = {}
for k, b, s, u, d, t, f in [
  ("first", ${BUNDLE[first]}, ${SENT[first]}, ${WIRE_UP[first]}, ${WIRE_DOWN[first]}, ${TIME[first]}, "${FILES[first]}"),
  ("again", ${BUNDLE[again]}, ${SENT[again]}, ${WIRE_UP[again]}, ${WIRE_DOWN[again]}, ${TIME[again]}, "${FILES[again]}"),
  ("ten_percent", ${BUNDLE[ten_percent]}, ${SENT[ten_percent]}, ${WIRE_UP[ten_percent]}, ${WIRE_DOWN[ten_percent]}, ${TIME[ten_percent]}, "${FILES[ten_percent]}")]:
    n, c, same = (int(x) for x in f.split("/"))
    rows[k] = {"bundle_bytes": b, "data_sent_bytes": s, "wire_up_bytes": u,
               "wire_down_bytes": d, "seconds": t, "new": n, "changed": c,
               "unchanged": same, "files": 200}
json.dump({"bench": "push", "flash": "16 MiB simulated NOR, loopback",
           "runs": rows}, open(sys.argv[1], "w"), indent=2)
print("wrote", sys.argv[1])
EOF

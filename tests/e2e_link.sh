#!/usr/bin/env bash
# e2e_link.sh - issue 11: the README tour through the link emulator
# (tests/support/linkrelay.c, a relay with a one-way delay on loopback), and
# the round-trip counts that are the contract (docs/PIPELINING.md): with
# Hello pipelined, an unchanged `cp -r` of 50 files, an unchanged `push`,
# `rm -r` of 50 files, `ls`, `tree` and `df` each take at most 3
# request/answer rounds on the connection (Hello included; the relay
# accepts locally, so the TCP handshake is not counted). Counts, never wall
# time. The relay's own rule is checked first against known patterns.
#
# Env (set by `make test`): CELLARD, CELLAR (ASan builds), BUILD.
. "$(dirname "$0")/support/cellard.sh"
set -u
BUILD=${BUILD:-build}
CELLARD=${CELLARD:-$BUILD/san/cellard}
CELLAR=${CELLAR:-$BUILD/san/cellar}
RELAY=${RELAY:-$BUILD/linkrelay}
PY=$(command -v /usr/bin/python3 || command -v python3)
DELAY=${LINK_DELAY_MS:-20}   # one way, ms
abs() { printf '%s/%s' "$(cd "$(dirname "$1")" && pwd)" "$(basename "$1")"; }
CELLAR=$(abs "$CELLAR"); CELLARD=$(abs "$CELLARD"); RELAY=$(abs "$RELAY")

T=$(mktemp -d "${TMPDIR:-/tmp}/e2e_link.XXXXXX")
PID=
RPID=
cleanup() {
  [ -n "$RPID" ] && kill "$RPID" 2>/dev/null && wait "$RPID" 2>/dev/null
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; fi
  rm -rf "$T"
}
trap cleanup EXIT INT TERM

. "$(dirname "$0")/support/e2e.sh"

[ -x "$RELAY" ] || { echo "e2e_link: $RELAY missing (make $RELAY)"; exit 1; }
cellard_start e2e_link 8M
DEV=$CELLAR_DEVICE

# relay_start: a relay in front of the daemon; sets RPORT and CELLAR_DEVICE.
relay_start() {
  "$RELAY" --listen 0 --to "${DEV#tcp://}" --delay "$DELAY" --stats "$T/stats" "$@" \
    >"$T/relay.out" 2>"$T/relay.err" &
  RPID=$!
  RPORT=
  for _ in $(seq 1 200); do
    RPORT=$(sed -n 's/^port //p' "$T/relay.out")
    [ -n "$RPORT" ] && break
    sleep 0.02
  done
  [ -n "$RPORT" ] || { bad "linkrelay did not start: $(cat "$T/relay.err")"; exit 1; }
  export CELLAR_DEVICE=tcp://127.0.0.1:$RPORT
}
relay_stop() { kill "$RPID" 2>/dev/null; wait "$RPID" 2>/dev/null; RPID=; }

conns() { awk 'NR==1{print $2}' "$T/stats" 2>/dev/null; }
# wait_conn N: until the relay has finished N connections (bounded: 10 s)
wait_conn() {
  for _ in $(seq 1 500); do [ "$(conns)" = "$1" ] && return 0; sleep 0.02; done
  bad "relay: connection $1 not finished"; return 1
}
# rounds CODE MAX ARGS...: run cellar through the relay (exit CODE) and
# check the connection took at most MAX rounds; ROUNDS = the count.
NCONN=0
rounds() {
  local code=$1 max=$2; shift 2
  run "$code" "$@"
  NCONN=$((NCONN + 1))
  ROUNDS=999
  wait_conn "$NCONN" || return
  ROUNDS=$(awk 'NR==2{print $3}' "$T/stats")
  if [ "$ROUNDS" -le "$max" ]; then ok; else bad "cellar $*: $ROUNDS rounds, want <= $max"; fi
}

# ---- the relay's round counting -----------------------------------------------------------
relay_start
# A probe client: SEQ requests one after the other (waiting for each answer),
# then PIPE requests sent at once: SEQ + 1 rounds (the batch is one round).
probe() {
  "$PY" - "$RPORT" "$1" "$2" <<'EOF'
import socket, struct, sys
port, seq, pipe = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def ping(i):  # Request{id=i, ping{payload=b"x"}}: field 1 varint, field 11 message
    body = bytes([0x08, i, 0x5a, 0x03, 0x0a, 0x01, 0x78])
    return struct.pack("<I", len(body)) + body
def frame():
    n = b""
    while len(n) < 4: n += s.recv(4 - len(n))
    k = struct.unpack("<I", n)[0]; d = b""
    while len(d) < k: d += s.recv(k - len(d))
for i in range(1, seq + 1):
    s.sendall(ping(i)); frame()
s.sendall(b"".join(ping(100 + i) for i in range(pipe)))
for _ in range(pipe): frame()
s.close()
EOF
}
probe 3 20; NCONN=$((NCONN + 1)); wait_conn $NCONN
eq "$(awk 'NR==2{print $3}' "$T/stats")" 4 "rounds of 3 sequential pings + 20 pipelined"
probe 0 40; NCONN=$((NCONN + 1)); wait_conn $NCONN
eq "$(awk 'NR==2{print $3}' "$T/stats")" 1 "rounds of 40 pipelined pings"

# ---- the README tour through the link, with the counts -------------------------------------
cd "$T" || exit 1
mkdir -p app/lib && echo 'print("hello")' > app/main.py && echo 'X = 1' > app/lib/util.py
rounds 0 3 ls
rounds 0 3 df
rounds 0 12 cp -r app/* :   # a first copy: data, not a contract
rounds 0 3 ls -l; has "main.py" "$T/out"
rounds 0 3 tree; has "util.py" "$T/out"
rounds 0 3 sha256sum :main.py app/main.py
rounds 0 3 cp -r app/* :; has "skipped" "$T/out"
rounds 0 4 cat :main.py; has "hello" "$T/out"
rounds 0 4 mv :main.py :boot.py
rounds 0 4 rm :lib/util.py
rounds 0 4 info
rounds 0 6 push app :/usr/app
echo 'X = 2' > app/lib/util.py
rounds 0 4 push app :/usr/app --dry-run; has "1 changed" "$T/out"
rounds 0 6 push app :/usr/app
rounds 0 3 push app :/usr/app
rounds 0 8 push app :/usr/app --delete
rounds 0 4 manifest
rounds 0 6 verify

# ---- the contract: 50 files --------------------------------------------------------------
mkdir -p d50
for i in $(seq -w 1 50); do head -c 2000 /dev/urandom > "d50/f$i"; done
rounds 0 8 cp -r d50 :d50
rounds 0 3 cp -r d50 :/usr/; has "50 skipped" "$T/out"
echo "unchanged cp -r of 50 files: $ROUNDS rounds"
rounds 0 3 ls -r :d50
rounds 0 3 tree :d50
rounds 0 3 sha256sum :d50/f01 :d50/f02 :d50/f03 :d50/f04 :d50/f05 :d50/f06 :d50/f07 :d50/f08
rounds 0 3 rm -r :d50
rounds 1 3 ls :d50
rounds 0 8 push d50 :/usr/p50
rounds 0 3 push d50 :/usr/p50; has "50 unchanged" "$T/out"
rounds 0 3 df
# several operands: one batch each (mv: the Stat of DIR, then the renames;
# rm: the Stats, then the removals; touch: two per max_handles - 1 paths)
M20=""; G20=""; R19=""
for i in $(seq -w 1 20); do M20="$M20 :m/d$i"; G20="$G20 :m/g$i"; done
for i in $(seq -w 2 20); do R19="$R19 :m/d$i"; done
rounds 0 2 mkdir -p $M20
rounds 0 8 touch $G20
rounds 0 3 mv $G20 :m/d01
rounds 0 2 ls -r :m; has "d01/g07" "$T/out"
rounds 1 3 rm :m/d01/g05 :m/d02; has "is a directory" "$T/err"
rounds 0 2 rmdir $R19
rounds 0 2 ls -r :m; has "d01/g20" "$T/out"; hasnt "d01/g05" "$T/out"; hasnt "d02" "$T/out"

# ---- faults: the link closes or stalls in the middle ---------------------------------------
relay_stop
relay_start --close-after 20000
head -c 200000 /dev/urandom > big.bin
run 1 cp big.bin :big.bin
relay_stop
relay_start
NCONN=0
run 1 cat :big.bin   # never renamed into place: no such file
run 0 cp big.bin :big.bin
run 0 cat :big.bin
cmp -s "$T/out" big.bin && ok || bad "big.bin differs after the cut"
relay_stop
relay_start --stall-after 20000
"$CELLAR" -d "$CELLAR_DEVICE" cp big.bin :stall.bin >/dev/null 2>&1 &
CP=$!
sleep 1
kill "$CP" 2>/dev/null; wait "$CP" 2>/dev/null
relay_stop
export CELLAR_DEVICE=$DEV
run 1 cat :stall.bin
run 0 ls

echo "e2e_link: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

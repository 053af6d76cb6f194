#!/usr/bin/env bash
# e2e_uart.sh - cellar over a serial link (issue 12): cellard listens on
# uart:PTY, the CLI talks to uart:PTY, and tests/support/uart_relay carries
# the bytes between two pty pairs at the baud rate, clean or noisy.
#   1. the README tour (cp, ls, tree, sha256sum, cat, mv, rm, df, info,
#      push / --dry-run / --delete, manifest, verify, backup, restore,
#      verify --repair) at 921600 baud;
#   2. payload/wire on a clean line (an upload and a download, >= 0.95);
#   3. a push killed part-way (the client, SIGKILL) resumes over the link;
#   4. cellard killed part-way and restarted: the push resumes;
#   5. a noisy line (bit errors, dropped and duplicated bytes, dropped
#      bursts, stalls), a relay restart the daemon reopens its port after:
#      a push and copies both ways, every file verified.
# Every wait is bounded; the relay stops by itself after 600 s.
. "$(dirname "$0")/support/cellard.sh"
set -u
BUILD=${BUILD:-build}
CELLARD=${CELLARD:-$BUILD/san/cellard}
CELLAR=${CELLAR:-$BUILD/san/cellar}
for p in "$CELLARD" "$CELLAR" "$BUILD/uart_relay"; do
  [ -x "$p" ] || { echo "e2e_uart: $p not built (make $p)" >&2; exit 1; }
done
abs() { (cd "$(dirname "$1")" && printf '%s/%s' "$(pwd -P)" "$(basename "$1")"); }
CELLARD=$(abs "$CELLARD"); CELLAR=$(abs "$CELLAR"); BUILD=$(cd "$BUILD" && pwd -P)
T=$(mktemp -d "${TMPDIR:-/tmp}/e2e_uart.XXXXXX")
T=$(cd "$T" && pwd -P)
PID=
BG=
. "$(dirname "$0")/support/uart.sh"
cleanup() {
  for p in $BG $PID; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  relay_stop
  [ -n "${E2E_UART_KEEP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT INT TERM
PY=python3
. "$(dirname "$0")/support/e2e.sh"
sha() { sha256sum "$1" | cut -d' ' -f1; }
dsha() { "$CELLAR" sha256sum "$1" 2>/dev/null | cut -d' ' -f1; }
BAUD=921600

relay_start $BAUD || exit 1
cellard_uart_start e2e_uart 8M $BAUD

# ---- 1. the README tour ----------------------------------------------------------
A="$T/app"; mkdir -p "$A/lib"
printf 'print("hello")\n' >"$A/main.py"
printf 'x = 1\n' >"$A/lib/util.py"
(cd "$A" && run 0 cp -r main.py lib :)
run 0 ls -l; has "main.py" "$T/out"
run 0 tree; has "util.py" "$T/out"
run 0 sha256sum :main.py "$A/main.py"
eq "$(cut -d' ' -f1 "$T/out" | sort -u | wc -l)" 1 "device and local SHA-256 agree"
(cd "$A" && run 0 cp -r main.py lib :); has "unchanged" "$T/out"
run 0 cat :main.py; eq "$(cat "$T/out")" 'print("hello")' "cat over uart"
run 0 mv :main.py :boot.py
run 0 rm :lib/util.py
run 0 df; has "/usr" "$T/out"
run 0 info; has "uart:" "$T/out"
json 0 ls
run 0 push "$A" :/usr/app; has "manifest" "$T/out"
printf 'x = 2\n' >"$A/lib/util.py"
run 0 push "$A" :/usr/app --dry-run
run 0 push "$A" :/usr/app
run 0 cat :app/lib/util.py; eq "$(cat "$T/out")" "x = 2" "push landed"
rm "$A/main.py"
run 0 push "$A" :/usr/app --delete
run 1 cat :app/main.py
run 0 manifest
run 0 verify; has "all match" "$T/out"
run 0 backup
run 0 rm :/usr/app/lib/util.py
run 0 restore :/usr/app/lib/util.py
run 0 cat :app/lib/util.py; eq "$(cat "$T/out")" "x = 2" "restored from /bak"
run 0 verify --repair

# ---- 2. payload / wire on a clean line ----------------------------------------------
N=$((192 * 1024))
head -c "$N" /dev/urandom >"$T/f.bin"
w0=$(relay_wire)
run 0 cp "$T/f.bin" :f.bin
w1=$(relay_wire)
run 0 cp :f.bin "$T/back.bin"
w2=$(relay_wire)
same "$T/f.bin" "$T/back.bin"
up=$($PY -c "print('%.3f' % ($N / ($w1 - $w0)))")
down=$($PY -c "print('%.3f' % ($N / ($w2 - $w1)))")
echo "e2e_uart: clean $BAUD: upload payload/wire $up, download $down"
# 0.95 is the target with the host profile's 16 KiB chunks; a small-RAM
# device (make test-device: 768-byte chunks, docs/DEVICE.md) pays each
# chunk's request header on the wire too: there the link's own share is
# what holds, and 0.85 of the wire is file data
want=0.95
run 0 --json info
[ "$($PY -c "import json; print(json.load(open('$T/out')).get('max_chunk', 16384))")" -ge 16384 ] || want=0.85
eq "$($PY -c "print($up >= $want and $down >= $want)")" True "payload/wire >= $want (up $up, down $down)"

# ---- 3. the client killed part-way; the push resumes ------------------------------------
BIGD="$T/big"; mkdir -p "$BIGD"
BIGN=$((640 * 1024))
head -c "$BIGN" /dev/urandom >"$BIGD/big.bin"
printf 'small\n' >"$BIGD/small.txt"
w0=$(relay_dir b_to_a)
"$CELLAR" push "$BIGD" :/usr/big >"$T/bg.out" 2>"$T/bg.err" &
BG=$!
for _ in $(seq 1 200); do
  [ $(( $(relay_dir b_to_a) - w0 )) -gt $((256 * 1024)) ] && break
  sleep 0.05
done
kill -9 "$BG" 2>/dev/null; wait "$BG" 2>/dev/null; BG=
run 1 ls :big/big.bin                      # nothing visible before the commit
json 0 push "$BIGD" :/usr/big
eq "$(jget 'd["resumed"]')" True "push resumed after the client was killed"
eq "$(jget 'd["staged"] > 0 and d["bytes_sent"] < '$BIGN)" True \
  "resume sends only the rest ($(jget 'd["staged"], d["bytes_sent"]' 2>/dev/null))"
eq "$(dsha :big/big.bin)" "$(sha "$BIGD/big.bin")" "resumed file intact"

# ---- 4. cellard killed part-way and restarted; the push resumes ----------------------------
head -c "$BIGN" /dev/urandom >"$BIGD/big.bin"
w0=$(relay_dir b_to_a)
"$CELLAR" push "$BIGD" :/usr/big >"$T/bg.out" 2>"$T/bg.err" &
BG=$!
for _ in $(seq 1 200); do
  [ $(( $(relay_dir b_to_a) - w0 )) -gt $((256 * 1024)) ] && break
  sleep 0.05
done
kill -9 "$PID"; wait "$PID" 2>/dev/null; PID=
cellard_uart_start e2e_uart 8M $BAUD
wait "$BG"; rc=$?; BG=
eq "$rc" 1 "the push fails when the device restarts under it"
hasnt "Sanitizer" "$T/bg.err"
json 0 push "$BIGD" :/usr/big
eq "$(jget 'd["resumed"]')" True "push resumed after a cellard restart"
eq "$(jget 'd["staged"] > 0 and d["bytes_sent"] < '$BIGN)" True \
  "after the restart only the rest is sent ($(jget 'd["staged"], d["bytes_sent"]' 2>/dev/null))"
eq "$(dsha :big/big.bin)" "$(sha "$BIGD/big.bin")" "file intact after the restart"
run 0 verify; has "all match" "$T/out"

# ---- 5. a noisy line; the daemon reopens its port after the relay restarts ---------------------
relay_stop
relay_start $BAUD --ber 1e-5 --drop 2e-5 --dup 2e-5 --burst 1e-3 --burst-len 64 \
  --stall-every 700 --stall-ms 30 --seed 7 || exit 1
NZ="$T/noisy"; mkdir -p "$NZ/d"
for i in $(seq 1 12); do head -c $((i * 9000)) /dev/urandom >"$NZ/d/f$i.bin"; done
ok_conn=0
for _ in $(seq 1 50); do   # the daemon reopens the port within ~100 ms
  if "$CELLAR" info >/dev/null 2>&1; then ok_conn=1; break; fi
  sleep 0.1
done
eq $ok_conn 1 "cellard reopened its port after the line came back"
json 0 push "$NZ" :/usr/noisy
run 0 verify; has "all match" "$T/out"
for i in 1 6 12; do
  eq "$(dsha ":noisy/d/f$i.bin")" "$(sha "$NZ/d/f$i.bin")" "noisy f$i.bin"
done
run 0 cp ":noisy/d/f12.bin" "$T/n12.bin"; same "$NZ/d/f12.bin" "$T/n12.bin"
relay_dump; echo "e2e_uart: noisy line: $(cat "$T/relay.json")"

# the device's log has no sanitizer report
hasnt "Sanitizer\|runtime error" "$LOG"
echo "e2e_uart: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

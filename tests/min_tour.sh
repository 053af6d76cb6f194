#!/usr/bin/env bash
# min_tour.sh - issue 14 (code size): the minimal device build works.
# CELLARD is a daemon built with every feature switch of cellar_config.h
# off (CELLAR_WITH_SD/RAW/ACL/LOG 0: `make test-device` builds build/min/cellard,
# device profile, ASan+UBSan). It runs the README tour, answers what it is
# built without with ENOTSUP "... is not built into this device" (an /sd
# path, the raw requests and a "raw:NAME" bundle entry on a flash whose
# layout has raw partitions), refuses --sd, --raw and --acl before touching
# the flash, and keeps serving after each refusal. Not an e2e_*.sh: against
# a full daemon its refusals would be successes. Loopback only; bounded.
. "$(dirname "$0")/support/cellard.sh"
set -u
BUILD=${BUILD:-build}
CELLARD=${CELLARD:-$BUILD/min/cellard}
CELLAR=${CELLAR:-$BUILD/san/cellar}
for p in "$CELLARD" "$CELLAR"; do
  [ -x "$p" ] || { echo "min_tour: $p not built" >&2; exit 1; }
done
CELLARD=$(realpath "$CELLARD"); CELLAR=$(realpath "$CELLAR")
T=$(mktemp -d "${TMPDIR:-/tmp}/min_tour.XXXXXX")
PID=
cleanup() {
  [ -n "$PID" ] && { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; }
  rm -rf "$T"
}
trap cleanup EXIT INT TERM
PY=python3
. "$(dirname "$0")/support/e2e.sh"
# notbuilt WHAT: the reply names WHAT and says it is not built into this
# device (ENOTSUP: the CLI's --json shows the code)
notbuilt() { has "$1" "$T/err"; has "not built into this device" "$T/err"; }

# ---- the flags of what is not built: refused, the flash untouched ----------------
for a in "--sd $T/card.img" "--raw cfg:4K" "--acl $T/acl"; do
  # shellcheck disable=SC2086
  timeout 20 "$CELLARD" --flash "$T/none.img" --flash-size 4M \
    --listen tcp://127.0.0.1:0 $a >"$T/out" 2>"$T/err" # bounded if not refused
  eq "$?" 2 "cellard $a"
  has "not built into this daemon" "$T/err"
  [ -e "$T/none.img" ] && bad "cellard $a created the flash" || ok
done

# ---- a flash whose layout has a raw partition (the offline image tool) -------------
mkdir -p "$T/src"
head -c 3000 /dev/urandom >"$T/cfg.bin"
run 0 image build "$T/src" -o "$T/flash.img" --size 4M --raw cfg:8K
cellard_start min_tour 4M

# ---- the README tour -------------------------------------------------------------
W=$T/tour
run 0 info;             has "role: admin" "$T/out"; has "frame 1024 B" "$T/out"
readme_tour "$W"

# ---- what this build is without: ENOTSUP, clearly named -----------------------------
json 1 ls :/sd;         has ENOTSUP "$T/out"; notbuilt "the SD card (/sd)"
run 1 cp app/main.py :/sd/main.py; notbuilt "the SD card (/sd)"
run 1 cat :/sd/x;       notbuilt "the SD card (/sd)"
run 0 ls /;             hasnt sd "$T/out"
run 0 raw ls;           has cfg "$T/out"     # listed from the layout ...
json 1 raw read :cfg "$T/back"; has ENOTSUP "$T/out"; notbuilt "raw partitions"
run 1 raw write :cfg "$T/cfg.bin"; notbuilt "raw partitions"
run 1 raw erase :cfg;   notbuilt "raw partitions"
run 1 raw sha256sum :cfg; notbuilt "raw partitions"
run 1 raw update :cfg "$T/cfg.bin"; notbuilt "raw partitions"  # a raw:cfg bundle entry
# ... and everything else still served, nothing changed by the refusals
run 0 cat :/usr/app/lib/util.py; has 'X = 2' "$T/out"
run 0 verify
run 0 manifest;         hasnt cfg "$T/out"

# ---- a restart keeps it all ------------------------------------------------------------
kill "$PID"; wait "$PID" 2>/dev/null; PID=
cellard_start min_tour 4M
run 0 cat :boot.py;     has 'print("hello")' "$T/out"
run 0 verify

echo "min_tour: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

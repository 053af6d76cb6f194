#!/usr/bin/env bash
# e2e_raw.sh - raw partitions end to end (issue 15, docs/RAW.md): cellard
# --raw on a new flash, `cellar info` and `cellar raw ls`, every `cellar raw`
# command with its bad input (unknown names, ranges past the end, unaligned
# erases, writes over programmed bytes, an image too large), verified raw
# updates (alone, and with files: push --raw) with verify, backup and
# repair, a --raw that disagrees with the
# flash (refused, nothing changed), a factory image with `image build
# --raw`, and cellard killed (SIGKILL) during raw updates (RAW_KILLS rounds,
# default 12): after every restart the partition holds exactly the image its
# manifest entry names. Loopback only; every wait is bounded.
. "$(dirname "$0")/support/cellard.sh"
set -u
BUILD=${BUILD:-build}
CELLARD=${CELLARD:-$BUILD/san/cellard}
CELLAR=${CELLAR:-$BUILD/san/cellar}
KILLS=${RAW_KILLS:-12}
for p in "$CELLARD" "$CELLAR"; do
  [ -x "$p" ] || { echo "e2e_raw: $p not built" >&2; exit 1; }
done
T=$(mktemp -d "${TMPDIR:-/tmp}/e2e_raw.XXXXXX")
PID=
BG=
cleanup() {
  for p in $BG $PID; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  [ -n "${RAW_KEEP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT INT TERM
PY=python3
. "$(dirname "$0")/support/e2e.sh"

# start IMG ARGS...: cellard on IMG (4 MiB when new) with ARGS; sets PID,
# CELLAR_DEVICE. Returns 1 (with the log in $T/last.log) if it does not
# come up.
NS=0
start() {
  local img=$1; shift
  NS=$((NS + 1))
  LOG="$T/cellard.$NS.log"
  "$CELLARD" --flash "$img" --flash-size 4M --listen tcp://127.0.0.1:0 \
    --idle-timeout 0 "$@" >"$LOG" 2>&1 &
  PID=$!
  local url
  url=$(cellard_url "$LOG" "$PID")
  cp "$LOG" "$T/last.log"
  if [ -z "$url" ]; then wait "$PID" 2>/dev/null; PID=; return 1; fi
  export CELLAR_DEVICE=$url
}
stop() { [ -n "$PID" ] && { kill "$PID"; wait "$PID" 2>/dev/null; PID=; }; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
head -c 200000 /dev/urandom >"$T/model.a"
head -c 150000 /dev/urandom >"$T/model.b"
head -c 3000 /dev/urandom >"$T/cfg.bin"
head -c 300000 /dev/urandom >"$T/huge"

# ---- provisioning, info, ls
start "$T/flash.img" --raw model:256K --raw cfg:4K || { bad "cellard --raw did not start"; tail "$T/last.log" >&2; }
run 0 info
has "model  blocks 1-64" "$T/out"
has "cfg    blocks 65-65" "$T/out"
json 0 info
eq "$(jget "[p['kind'] for p in d['partitions'] if p['path']=='model'][0]")" raw "info kind"
# a new flash starts clean: RAW_DIR is made on /usr and /bak once each has
# its manifest (it was tried on /bak before its /.cellar existed)
eq "$(jget "d.get('problems', [])")" "[]" "no start-up problems on a new flash with --raw"
json 0 raw ls
eq "$(jget "[(p['name'], p['bytes'], p['address']) for p in d['raw']]")" \
  "[('model', 262144, 4096), ('cfg', 4096, 266240)]" "raw ls"
run 0 df
hasnt "model" "$T/out"

# ---- write, read, sha256sum, erase, and their bad input
run 0 raw write :cfg "$T/cfg.bin"
run 0 raw read -n 3000 :cfg "$T/back"
same "$T/cfg.bin" "$T/back"
run 0 raw sha256sum -n 3000 :cfg
eq "$(cut -d' ' -f1 "$T/out")" "$(sha "$T/cfg.bin")" "raw sha256sum"
run 1 raw write :cfg "$T/cfg.bin"
has "already programmed" "$T/err"
run 0 raw read -n 3000 :cfg "$T/back"
same "$T/cfg.bin" "$T/back"        # nothing changed
run 1 raw write -o 4000 :cfg "$T/cfg.bin"
has "larger than the raw partition" "$T/err"
run 1 raw read -o 5000 :cfg "$T/back"
has "past the end" "$T/err"
run 1 raw erase -o 100 :cfg
has "multiples of the block size" "$T/err"
run 1 raw erase -n 8K :cfg
has "past the end" "$T/err"
run 1 raw read :nope
has "no raw partition" "$T/err"
run 1 raw sha256sum :usr
run 2 raw frobnicate :cfg
run 2 raw write :cfg
run 0 raw erase :cfg
run 0 raw read :cfg "$T/back"
eq "$(tr -d '\377' <"$T/back" | wc -c)" 0 "erased cfg reads 0xff"
eq "$(stat -c %s "$T/back")" 4096 "whole cfg read"

# ---- verified updates, verify, backup, repair
run 0 raw update :model "$T/model.a"
has "updated :model" "$T/out"
run 0 raw sha256sum -n 200000 :model
eq "$(cut -d' ' -f1 "$T/out")" "$(sha "$T/model.a")" "model after update"
run 0 manifest
has "$(sha "$T/model.a")  200000  /usr/.cellar/raw/model" "$T/out"
run 1 raw update :cfg "$T/huge"
run 1 raw update :nope "$T/cfg.bin"
run 0 verify
run 0 backup
run 0 raw erase -n 4K :model
run 1 verify
has "mismatch /usr/.cellar/raw/model" "$T/out"
run 0 verify --repair
has "repaired from /bak" "$T/out"
run 0 raw sha256sum -n 200000 :model
eq "$(cut -d' ' -f1 "$T/out")" "$(sha "$T/model.a")" "model after repair"

# ---- files and a raw image in one bundle: cellar push --raw
mkdir -p "$T/app"; echo 'import kpu' >"$T/app/main.py"
run 0 push "$T/app" :/usr/app --raw model="$T/model.b" --dry-run
has "new raw:model" "$T/out"
run 0 raw sha256sum -n 200000 :model
eq "$(cut -d' ' -f1 "$T/out")" "$(sha "$T/model.a")" "dry run changed nothing"
json 0 push "$T/app" :/usr/app --raw model="$T/model.b"
eq "$(jget "sorted(d['new'] + d['changed'])")" "['/usr/app/main.py', 'raw:model']" "push --raw entries"
run 0 raw sha256sum -n 150000 :model
eq "$(cut -d' ' -f1 "$T/out")" "$(sha "$T/model.b")" "model after push --raw"
run 0 cat :/usr/app/main.py
has "import kpu" "$T/out"
run 1 push "$T/app" :/usr/app --raw nope="$T/model.b"
has "no raw partition" "$T/err"
run 1 push "$T/app" :/usr/app --raw cfg="$T/huge"
run 2 push "$T/app" :/usr/app --raw model
run 0 verify
run 0 raw update :model "$T/model.a"

# ---- a --raw that disagrees with the flash: refused, nothing changed
stop
cp "$T/flash.img" "$T/flash.before"
if start "$T/flash.img" --raw model:128K; then bad "cellard started with another --raw"; stop; else ok; fi
has "does not match this flash's layout" "$T/last.log"
same "$T/flash.img" "$T/flash.before"
start "$T/flash.img" || bad "cellard without --raw did not start"
run 0 raw sha256sum -n 200000 :model
eq "$(cut -d' ' -f1 "$T/out")" "$(sha "$T/model.a")" "model after restart"
stop
run 2 "--json" raw   # no raw command: usage

# ---- a factory image
mkdir -p "$T/src"; echo "print(1)" >"$T/src/main.py"
run 0 image build "$T/src" -o "$T/fac.img" --size 4M --raw model:512K="$T/model.b" --raw cfg="$T/cfg.bin" --raw spare:8K
run 0 image check "$T/fac.img"
run 0 image info "$T/fac.img"
has "raw partition at 0x1000" "$T/out"
run 1 image build "$T/src" -o "$T/x.img" --size 4M --raw model:4K="$T/model.b"
run 2 image build "$T/src" -o "$T/x.img" --size 4M --raw Model="$T/cfg.bin"
start "$T/fac.img" || bad "cellard on the factory image did not start"
run 0 raw sha256sum -n 150000 :model
eq "$(cut -d' ' -f1 "$T/out")" "$(sha "$T/model.b")" "factory model"
run 0 verify
stop

# ---- SIGKILL during raw updates: the area always matches its entry
start "$T/flash.img" || bad "restart for the kills"
kills=0
for i in $(seq 1 "$KILLS"); do
  f=$([ $((i % 2)) = 1 ] && echo "$T/model.b" || echo "$T/model.a")
  "$CELLAR" raw update :model "$f" >/dev/null 2>&1 &
  BG=$!
  sleep "0.$(printf '%03d' $((RANDOM % 60)))"
  kill -9 "$PID" 2>/dev/null && kills=$((kills + 1))
  wait "$PID" 2>/dev/null; PID=
  wait "$BG" 2>/dev/null; BG=
  start "$T/flash.img" || { bad "no restart after kill $i"; tail "$T/last.log" >&2; break; }
  "$CELLAR" manifest >"$T/man" 2>/dev/null
  line=$(grep ' /usr/.cellar/raw/model$' "$T/man")
  want=${line%% *}
  size=$(echo "$line" | awk '{print $2}')
  "$CELLAR" raw sha256sum -n "$size" :model >"$T/got" 2>/dev/null
  eq "$(cut -d' ' -f1 "$T/got")" "$want" "kill $i: model matches its entry"
  case "$want" in "$(sha "$T/model.a")"|"$(sha "$T/model.b")") ok ;; *) bad "kill $i: unknown image" ;; esac
done
run 0 verify
stop
run 0 image check "$T/flash.img"
[ "$kills" -gt 0 ] && ok || bad "no kills"

echo "e2e_raw: $pass passed, $fail failed ($kills kills)"
[ "$fail" = 0 ]

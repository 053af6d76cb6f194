#!/usr/bin/env bash
# e2e_sd.sh - the SD card at /sd end to end (issue 15): cards made by
# mkfs.fat (FAT16 and FAT32), `cellard --sd FILE`, files written, copied,
# moved and removed through the `cellar` CLI, then the card checked with
# `fsck.fat -n` and read back with mtools (mdir, mcopy) byte for byte; files
# made by mcopy read through cellar; a card that is not FAT (and a missing
# one) leave /sd unmounted with a problem line while /usr is served.
#
# Env (set by `make test`): CELLARD, CELLAR (ASan builds), BUILD.
. "$(dirname "$0")/support/cellard.sh"
set -u
BUILD=${BUILD:-build}
CELLARD=${CELLARD:-$BUILD/san/cellard}
CELLAR=${CELLAR:-$BUILD/san/cellar}
PY=$(command -v /usr/bin/python3 || command -v python3)
export MTOOLS_SKIP_CHECK=1

T=$(mktemp -d "${TMPDIR:-/tmp}/e2e_sd.XXXXXX")
PID=
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; fi
  rm -rf "$T"
}
trap cleanup EXIT INT TERM

. "$(dirname "$0")/support/e2e.sh"

for tool in mkfs.fat fsck.fat mdir mcopy mmd; do
  command -v "$tool" >/dev/null || { echo "e2e_sd: $tool missing (make deps: dosfstools mtools)" >&2; exit 1; }
done

# sd_start CARD: cellard on $T/flash.img with --sd CARD (sets PID, URL).
sd_start() {
  NSTART=$((NSTART + 1))
  LOG="$T/cellard.$NSTART.log"
  "$CELLARD" --flash "$T/flash.img" --flash-size 4M --listen tcp://127.0.0.1:0 \
    --idle-timeout 0 --sd "$1" >"$LOG" 2>&1 &
  PID=$!
  URL=$(cellard_url "$LOG" "$PID")
  if [ -z "$URL" ]; then
    echo "e2e_sd: cellard did not start:" >&2; tail -20 "$LOG" >&2
    echo "e2e_sd: $pass passed, $((fail + 1)) failed"; exit 1
  fi
  export CELLAR_DEVICE=$URL
}
sd_stop() {
  kill -INT "$PID" 2>/dev/null; wait "$PID"; local rc=$?
  eq "$rc" 0 "cellard exit status"
  if grep -q "Sanitizer\|runtime error" "$LOG"; then bad "cellard: sanitizer report"; fi
  PID=
}

# local files: small, binary across many clusters, odd names
L=$T/local
mkdir -p "$L/tree/sub dir/deeper"
echo "hello sd" >"$L/hello.txt"
head -c 1234567 /dev/urandom >"$L/big.bin"
head -c 70001 /dev/urandom >"$L/tree/sub dir/deeper/Mixed Case Name.DAT"
echo one >"$L/tree/a.txt"
printf 'unicode\n' >"$L/$(printf 'd\xc3\xa9j\xc3\xa0 vu \xe2\x9c\x93.txt')"
UNI=$(printf 'd\xc3\xa9j\xc3\xa0 vu \xe2\x9c\x93.txt')
head -c 300000 /dev/urandom >"$L/from-mtools.bin"
mkdir -p "$T/many"
for i in $(seq 1 40); do head -c $((i * 300)) /dev/urandom >"$T/many/file number $i.bin"; done

for bits in 16 32; do
  CARD=$T/card$bits.img
  if [ $bits = 16 ]; then mkfs.fat -F 16 -n SD16 -C "$CARD" 32768 >/dev/null
  else mkfs.fat -F 32 -s 1 -n SD32 -C "$CARD" 70000 >/dev/null; fi
  # a file and a directory made by mtools before cellard sees the card
  mmd -i "$CARD" "::/Made By Mtools" && mcopy -i "$CARD" "$L/from-mtools.bin" "::/Made By Mtools/From mtools.bin" || bad "mtools setup"
  rm -f "$T/flash.img"
  sd_start "$CARD"
  has "mounted /sd (FAT$bits" "$LOG"

  run 0 info; has "/sd *SD card, FAT" "$T/out"
  json 0 info
  eq "$(jget '[p["path"] for p in d["partitions"] if p.get("kind") == "fat"]')" "['/sd']" "info lists /sd as FAT"
  run 0 ls :/; has "sd/" "$T/out"
  run 0 ls :/sd; has "Made By Mtools/" "$T/out"; hasnt ".cellar" "$T/out"

  # files made by mcopy read through cellar
  run 0 cp ":/sd/Made By Mtools/From mtools.bin" "$T/back-mtools.bin"
  same "$L/from-mtools.bin" "$T/back-mtools.bin"
  run 0 cat ":/sd/made by mtools/FROM MTOOLS.BIN" # names fold ASCII case

  # writes through cellar
  run 0 cp "$L/hello.txt" ":/sd/hello.txt"
  run 0 cp "$L/big.bin" ":/sd/Big Binary File.bin"
  run 0 cp "$L/$UNI" ":/sd/$UNI"
  run 0 cp -r "$L/tree" ":/sd/"
  run 0 mkdir ":/sd/logs"
  run 0 cp "$L/hello.txt" ":/sd/logs/2026-12-07 night.log"
  run 0 sha256sum ":/sd/Big Binary File.bin"
  has "$(sha256sum "$L/big.bin" | cut -d' ' -f1)" "$T/out"
  run 0 ls -l ":/sd/tree/sub dir/deeper"; has "Mixed Case Name.DAT" "$T/out"; has "70001" "$T/out"
  # overwrite (shadow, then rename over the name at close)
  echo "second version" >"$T/v2.txt"
  run 0 cp -f "$T/v2.txt" ":/sd/hello.txt"
  run 0 cat ":/sd/hello.txt"; has "second version" "$T/out"
  # move, remove, rmdir
  run 0 mv ":/sd/logs/2026-12-07 night.log" ":/sd/tree/moved.log"
  run 0 rmdir ":/sd/logs"
  run 0 cp "$L/hello.txt" ":/sd/gone.txt"
  run 0 rm ":/sd/gone.txt"
  # forty files both ways (handles are taken and given back in turn)
  run 0 cp -r "$T/many" ":/sd/"
  mkdir -p "$T/back$bits"
  run 0 cp -r ":/sd/many" "$T/back$bits/"
  if diff -r "$T/many" "$T/back$bits/many" >/dev/null; then ok; else bad "cp -r :/sd/many back differs"; fi
  run 0 touch ":/sd/empty.txt"
  run 0 ls -l :/sd; has "empty.txt" "$T/out"
  run 0 tree :/sd; has "Mixed Case Name.DAT" "$T/out"
  run 0 cp -r "$L/tree" ":/sd/scratch"
  run 0 rm -r ":/sd/scratch"
  run 1 ls ":/sd/scratch"
  run 0 df :/sd; has "/sd" "$T/out"
  json 0 df :/sd
  # bad input: each a clear error, nothing changed
  run 1 rm ":/sd/no such file"; has "no such" "$T/err"
  run 1 rmdir ":/sd/tree"; has "not empty" "$T/err"
  run 1 mv ":/sd/hello.txt" ":/usr/hello.txt"; has "copy" "$T/err"
  run 1 ls ":/sd/.cellar"; has "reserved" "$T/err"
  run 1 cp "$L/hello.txt" ":/sd/bad:name.txt"
  run 1 mkdir ":/sd/tree"; has "exists" "$T/err"
  run 1 cat ":/sd/tree"
  # /usr is served beside /sd
  run 0 cp "$L/hello.txt" ":/usr/hello.txt"
  run 0 cat ":/usr/hello.txt"; has "hello sd" "$T/out"
  sd_stop

  # the card as fsck.fat and mtools see it
  if fsck.fat -n "$CARD" >"$T/fsck.out" 2>&1; then ok; else bad "fsck.fat -n FAT$bits: $(cat "$T/fsck.out")"; fi
  mdir -i "$CARD" ::/ >"$T/mdir.out" 2>&1
  has "Big Binary File.bin" "$T/mdir.out"; has "hello.txt" "$T/mdir.out"
  check_m() { # CARD-PATH LOCAL-FILE
    rm -f "$T/m.out"
    if mcopy -n -i "$CARD" "::$1" "$T/m.out" 2>/dev/null && cmp -s "$T/m.out" "$2"; then ok
    else bad "mcopy ::$1 (FAT$bits) differs from $2"; fi
  }
  check_m "/Big Binary File.bin" "$L/big.bin"
  check_m "/hello.txt" "$T/v2.txt"
  check_m "/$UNI" "$L/$UNI"
  check_m "/tree/sub dir/deeper/Mixed Case Name.DAT" "$L/tree/sub dir/deeper/Mixed Case Name.DAT"
  check_m "/tree/a.txt" "$L/tree/a.txt"
  check_m "/tree/moved.log" "$L/hello.txt"
  if mdir -i "$CARD" ::/logs >/dev/null 2>&1; then bad "::/logs still there"; else ok; fi
  if mdir -i "$CARD" ::/gone.txt >/dev/null 2>&1; then bad "::/gone.txt still there"; else ok; fi
  if mdir -i "$CARD" ::/scratch >/dev/null 2>&1; then bad "::/scratch still there"; else ok; fi
  check_m "/empty.txt" /dev/null
  check_m "/many/file number 40.bin" "$T/many/file number 40.bin"
done

# a card that is not FAT, and no card: /sd unmounted, the rest served
head -c 4194304 /dev/zero >"$T/zeros.img"
for card in "$T/zeros.img" "$T/missing.img"; do
  rm -f "$T/flash.img"
  sd_start "$card"
  run 0 info; has "/sd *SD card, FAT.*not mounted" "$T/out"
  json 0 info
  eq "$(jget 'len([p for p in d["problems"] if p.startswith("/sd")])')" 1 "one /sd problem line"
  run 1 ls :/sd; has "not mounted" "$T/err"
  run 1 cp "$L/hello.txt" ":/sd/x.txt"
  run 0 cp "$L/hello.txt" ":/usr/hello.txt"
  run 0 cat ":/usr/hello.txt"; has "hello sd" "$T/out"
  sd_stop
done
cmp -s "$T/zeros.img" <(head -c 4194304 /dev/zero) && ok || bad "a non-FAT card was written to"

echo "e2e_sd: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

#!/usr/bin/env bash
# e2e_cli.sh - the `cellar` CLI end to end against a cellard on loopback:
# every command and option, --json validity, exit codes 0/1/2, cp -r both
# ways, skip-unchanged, and the offline image commands (build/ls/cat/
# extract/check/info round trip, corruption detected by check).
#
# Env (set by `make test`): CELLARD, CELLAR (ASan builds), BUILD.
. "$(dirname "$0")/support/cellard.sh"
set -u
BUILD=${BUILD:-build}
CELLARD=${CELLARD:-$BUILD/san/cellard}
CELLAR=${CELLAR:-$BUILD/san/cellar}
PY=$(command -v /usr/bin/python3 || command -v python3)

T=$(mktemp -d "${TMPDIR:-/tmp}/e2e_cli.XXXXXX")
PID=
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; fi
  rm -rf "$T"
}
trap cleanup EXIT INT TERM

. "$(dirname "$0")/support/e2e.sh"

# ---- without a device ---------------------------------------------------------------
run 0 --help; has "usage: cellar" "$T/out"; has "image build" "$T/out"
run 0 --version; has "cellar 0" "$T/out"
json 0 --version
run 2; has "no command" "$T/err"
run 2 frobnicate; has "unknown command" "$T/err"
json 2 frobnicate
for c in ls cat cp rm mkdir rmdir mv touch sha256sum tree df info format; do
  run 0 "$c" --help; has "usage: cellar" "$T/out"
done
for c in build ls cat extract check info; do
  run 0 image "$c" --help; has "image $c" "$T/out"
done
run 2 image; run 2 image frob
run 2 ls --bogus; has "unknown option" "$T/err"
run 2 ls -z
run 2 cp onlyone
run 2 cp a b; has "device path" "$T/err"
run 2 cp :a :b
run 2 format; has "yes" "$T/err"
json 2 format
run 2 mv :a
run 2 info extra
run 2 -d
# connection failures are operation failures (1)
run 1 -d tcp://127.0.0.1:1 ls; has "cannot connect" "$T/err"
json 1 -d tcp://127.0.0.1:1 info
CELLAR_CA= CELLAR_PSK= run 1 -d tls://127.0.0.1:7443 ls; has "needs the device CA" "$T/err"   # issue 13: no --ca/--psk
run 1 -d "uart:/dev/cellar-no-such-tty?baud=115200" info; has "cannot connect" "$T/err"   # issue 12
run 1 -d nonsense://x ls; has "invalid device URL" "$T/err"

# ---- start cellard ------------------------------------------------------------------------
"$CELLARD" --flash "$T/flash.img" --flash-size 16M --listen tcp://127.0.0.1:0 \
  --idle-timeout 0 >"$T/cellard.log" 2>&1 &
PID=$!
URL=$(cellard_url "$T/cellard.log" "$PID")
if [ -z "$URL" ]; then
  echo "e2e_cli: cellard did not start:" >&2; cat "$T/cellard.log" >&2
  echo "e2e_cli: $pass passed, $((fail + 1)) failed"; exit 1
fi
export CELLAR_DEVICE=$URL

# ---- info, df -----------------------------------------------------------------------------
run 0 info; has "firmware:" "$T/out"; has "/usr" "$T/out"; has "/bak" "$T/out"
json 0 info
eq "$(jget 'len(d["partitions"])')" 2 "info partitions"
eq "$(jget 'd["max_chunk"] > 0')" True "info max_chunk"
run 0 -d "$URL" info                       # -d wins over the default
run 0 info -d "$URL"                       # global options anywhere
run 0 df; has "erase max" "$T/out"; has "/usr" "$T/out"
json 0 df
eq "$(jget '"erase_max" in d["partitions"][0] and "bad_blocks" in d["partitions"][0]')" True "df wear"
run 0 df :/bak

# ---- a local tree to copy -------------------------------------------------------------------
L="$T/local"
mkdir -p "$L/app/lib/deep" "$L/app/empty"
printf 'print("hello")\n' >"$L/app/main.py"
printf 'x = 1\n' >"$L/app/lib/util.py"
head -c 100000 /dev/urandom >"$L/app/lib/deep/blob.bin"
head -c 40000 /dev/urandom >"$L/single.bin"
: >"$L/zero.txt"

# ---- mkdir, touch, ls ----------------------------------------------------------------------
run 0 mkdir :d1
run 1 mkdir :d1; has "cellar: mkdir: :/usr/d1: " "$T/err"
json 1 mkdir :d1
eq "$(jget 'd["errors"][0]["path"]')" ":/usr/d1" "json error path"
run 0 mkdir -p :d1/a/b :d2
json 0 mkdir -p :d3/x
run 1 mkdir :nodir/x
run 0 touch :d1/t.txt :/usr/d2/u.txt
json 0 touch :d1/t2.txt
run 0 ls; has "d1/" "$T/out"; has "d2/" "$T/out"
run 0 ls :d1; has "t.txt" "$T/out"; has "a/" "$T/out"
run 0 ls -l :d1; has "t.txt" "$T/out"; grep -q '^d ' "$T/out" && ok || bad "ls -l shows dirs with d"
run 0 ls -r :d1; has "a/b/" "$T/out"
run 0 ls -lr :d1; has "a/b/" "$T/out"
run 0 ls :/; has "usr/" "$T/out"; has "bak/" "$T/out"
run 0 ls d1                                # device-only commands take bare paths
run 0 ls :d1/t.txt; has "t.txt" "$T/out"
run 1 ls :nope; has "cellar: ls: :/usr/nope: no such file or directory" "$T/err"
json 1 ls :nope
json 0 ls -r :d1
eq "$(jget 'sorted(e["name"] for e in d["entries"])')" "['a', 'a/b', 't.txt', 't2.txt']" "ls --json -r"
run 2 ls :a :b

# ---- cp up, skip-unchanged, -f ----------------------------------------------------------------
run 0 cp "$L/single.bin" :; has "copied" "$T/out"
run 0 cp "$L/single.bin" :; has "skipped :/usr/single.bin (unchanged)" "$T/out"
run 0 cp -f "$L/single.bin" :; has "copied" "$T/out"
json 0 cp "$L/single.bin" :
eq "$(jget 'len(d["skipped"]), len(d["copied"])')" "1 0" "cp --json skipped"
run 0 cp "$L/single.bin" :renamed.bin
run 0 cp "$L/zero.txt" "$L/app/main.py" :d2/; has "main.py" "$T/out"
run 1 cp "$L/app" :; has "use -r" "$T/err"
run 1 cp "$L/nothere" :; has "nothere" "$T/err"
run 1 cp "$L/single.bin" "$L/zero.txt" :single.bin   # several sources need a dir
run 0 cp -r "$L/app" :; has "copied" "$T/out"
run 0 ls -r :app; has "lib/deep/blob.bin" "$T/out"; has "empty/" "$T/out"
run 0 cp -r "$L/app" :; has "3 skipped" "$T/out"; hasnt "^copied" "$T/out"
json 0 cp -r "$L/app" :
eq "$(jget 'd["ncopied"], d["nskipped"]')" "0 3" "cp -r --json skip"
printf 'x = 2\n' >"$L/app/lib/util.py"
run 0 cp -r "$L/app" :; has "1 copied, 2 skipped" "$T/out"
run 0 cp -r -f "$L/app" :; has "3 copied" "$T/out"
run 0 cp -r "$L/app" :/usr/app2          # new name: app2 is a copy of app
run 0 ls :app2/lib; has "util.py" "$T/out"
run 1 cp "$L/single.bin" :/bak/x.bin      # /bak is read-only
hasnt "cellar-tmp" "$T/err"
run 0 ls -a :; hasnt "cellar-tmp" "$T/out"  # no temporaries left behind

# ---- cat, sha256sum ------------------------------------------------------------------------
run 0 cat :app/main.py; same "$T/out" "$L/app/main.py"
run 0 cat :/usr/app/lib/deep/blob.bin; same "$T/out" "$L/app/lib/deep/blob.bin"
run 1 cat :/usr/x.py; has "cellar: cat: :/usr/x.py: no such file or directory" "$T/err"
run 1 cat :app; has ":/usr/app" "$T/err"
json 0 cat :app/main.py
eq "$(jget 'd["files"][0]["content"]')" 'print("hello")' "cat --json content"
json 0 cat :app/lib/deep/blob.bin
eq "$(jget '"content_base64" in d["files"][0]')" True "cat --json binary"
run 0 sha256sum :app/lib/deep/blob.bin "$L/app/lib/deep/blob.bin"
want=$(sha256sum "$L/app/lib/deep/blob.bin" | cut -d' ' -f1)
eq "$(cut -d' ' -f1 "$T/out" | sort -u)" "$want" "sha256sum device == local"
has ":/usr/app/lib/deep/blob.bin" "$T/out"
json 0 sha256sum :app/main.py
eq "$(jget 'd["files"][0]["sha256"]')" "$(sha256sum "$L/app/main.py" | cut -d' ' -f1)" "sha256sum --json"
run 1 sha256sum :nope
run 2 sha256sum

# ---- tree -------------------------------------------------------------------------------------
run 0 tree :app; has "deep/" "$T/out"; has "blob.bin" "$T/out"; has "3 directories, 3 files" "$T/out"
json 0 tree :app
eq "$(jget 'd["files"], d["dirs"]')" "3 3" "tree --json"
run 1 tree :app/main.py

# ---- cp down ------------------------------------------------------------------------------------
D="$T/down"
mkdir -p "$D"
run 0 cp :app/main.py "$D/"; same "$D/main.py" "$L/app/main.py"
run 0 cp :app/main.py "$D/"; has "skipped" "$T/out"
run 0 cp -f :app/main.py "$D/m.py"; same "$D/m.py" "$L/app/main.py"
run 0 cp -r :app "$D/"
if diff -r "$L/app" "$D/app" >/dev/null; then ok; else bad "cp -r down differs"; fi
run 0 cp -r :app "$D/"; has "3 skipped" "$T/out"
json 0 cp -r :app "$D/app-json"
eq "$(jget 'd["ncopied"]')" 3 "cp -r down --json"
run 1 cp :nope.py "$D/"; has "cellar: cp: :/usr/nope.py: no such file or directory" "$T/err"
[ ! -e "$D/nope.py" ] && ok || bad "failed download left a file"
run 1 cp :app "$D/x"; has "use -r" "$T/err"
run 0 cp :app/main.py :app/lib/util.py "$D/"
ls -a "$D" | grep -q cellar-tmp && bad "temporary left in $D" || ok

# ---- mv, rm, rmdir ------------------------------------------------------------------------------
run 0 mv :renamed.bin :moved.bin
run 0 ls :moved.bin
run 1 ls :renamed.bin
run 0 mv :moved.bin :d1                   # into a directory
run 0 ls :d1/moved.bin
json 0 mv :d1/moved.bin :d1/m2.bin
eq "$(jget 'd["to"]')" ":/usr/d1/m2.bin" "mv --json"
run 1 mv :nope :x; has "cellar: mv: :/usr/nope" "$T/err"
run 0 rm :d1/m2.bin
run 1 rm :d1/m2.bin; has "no such file or directory" "$T/err"
run 1 rm :d1; has "is a directory" "$T/err"
run 1 rmdir :d1; has "not empty" "$T/err"
run 0 rmdir :d3/x
json 0 rmdir :d3
run 0 rm -r :d1
run 1 ls :d1
json 0 rm -r :app2
run 1 rm -r :/usr; has "partition root" "$T/err"
run 0 rm :d2/u.txt :d2/zero.txt
json 1 rm :d2/nope

# ---- format -------------------------------------------------------------------------------------
run 2 format :/usr
run 0 format --yes; has "formatted" "$T/out"
run 0 ls; [ ! -s "$T/out" ] && ok || bad "ls after format not empty"
json 0 format --yes :/usr
run 0 ls -a :/; has "usr/" "$T/out"

# ---- progress bar: never in pipes or --json ------------------------------------------------------
head -c $((4 * 1024 * 1024)) /dev/urandom >"$L/big.bin"
run 0 cp "$L/big.bin" :big.bin
if grep -q $'\r' "$T/out"; then bad "progress bar written to a pipe"; else ok; fi
json 0 cp -f "$L/big.bin" :big.bin
if command -v script >/dev/null 2>&1; then
  # On a terminal a bar appears only if the transfer takes over a second.
  script -qec "'$CELLAR' cp -f '$L/big.bin' :big.bin" /dev/null >"$T/tty" 2>&1 && ok || bad "cp on a pty"
  has "copied" "$T/tty"
fi
run 0 rm :big.bin

# ---- offline images -------------------------------------------------------------------------------
IMG="$T/img.bin"
B="$T/bak"
mkdir -p "$B/conf"
printf 'backup\n' >"$B/conf/settings.json"
run 2 image build "$L/app" --size 1M            # no -o
run 2 image build "$L/app" -o "$IMG"            # no --size
run 2 image build "$L/app" -o "$IMG" --size 1000
run 1 image build "$L/app" -o "$IMG" --size 64K # too small for the layout
run 0 image build "$L/app" -o "$IMG" --size 1M --bak-dir "$B" --bak-size 256K
has "wrote" "$T/out"
json 0 image build "$L/app" -o "$IMG" --size 1M --bak-dir "$B" --bak-size 256K
eq "$(jget 'd["partitions"][0]["files"]')" 3 "image build --json files"
run 0 image ls "$IMG"; has "main.py" "$T/out"; has "lib/" "$T/out"
run 0 image ls -l -r "$IMG" /usr; has "lib/deep/blob.bin" "$T/out"
run 0 image ls "$IMG" lib; has "util.py" "$T/out"
run 0 image ls "$IMG" /; has "usr/" "$T/out"; has "bak/" "$T/out"
run 0 image ls -r "$IMG" /bak; has "conf/settings.json" "$T/out"
json 0 image ls -r "$IMG"
eq "$(jget 'len(d["entries"])')" 6 "image ls --json -r"
run 1 image ls "$IMG" /usr/nope
run 1 image ls "$IMG" /nopart
run 0 image cat "$IMG" main.py; same "$T/out" "$L/app/main.py"
run 0 image cat "$IMG" /usr/lib/deep/blob.bin; same "$T/out" "$L/app/lib/deep/blob.bin"
run 0 image cat "$IMG" /bak/conf/settings.json; same "$T/out" "$B/conf/settings.json"
json 0 image cat "$IMG" /usr/main.py
run 1 image cat "$IMG" /usr/nope.py; has "no such file or directory" "$T/err"
run 0 image extract "$IMG" "$T/ex" --bak-dir "$T/exbak"
if diff -r "$L/app" "$T/ex" >/dev/null; then ok; else bad "image extract differs"; fi
if diff -r "$B" "$T/exbak" >/dev/null; then ok; else bad "image extract /bak differs"; fi
# times survive the round trip
eq "$(stat -c %Y "$T/ex/lib/deep/blob.bin")" "$(stat -c %Y "$L/app/lib/deep/blob.bin")" "mtime kept"
json 0 image extract "$IMG" "$T/ex2"
run 0 image check "$IMG"; has "clean" "$T/out"
json 0 image check "$IMG"
eq "$(jget 'd["clean"]')" True "image check --json"
run 0 image info "$IMG"; has "wear" "$T/out"; has "/usr" "$T/out"
json 0 image info "$IMG"
eq "$(jget 'd["block_count"]')" 256 "image info blocks"
eq "$(jget 'd["partitions"][0]["files"]')" 3 "image info files"
run 1 image info "$T/nope.img"
printf 'not an image' >"$T/junk.img"
run 1 image check "$T/junk.img"
head -c 65536 /dev/zero >"$T/zero.img"
run 1 image check "$T/zero.img"; has "partition table" "$T/err"
# corrupt the data of /usr: check must fail and say what is wrong
cp "$IMG" "$T/bad.img"
"$PY" - "$T/bad.img" <<'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
# /usr starts at block 1; its first blocks hold the anchors, then the log
# with the files. Flip bits all over blocks 3..8 where the data lives.
for off in range(3 * 4096, 9 * 4096, 97):
    b[off] ^= 0x10
open(p, 'wb').write(b)
EOF
run 1 image check "$T/bad.img"; has "corrupt" "$T/err"
json 1 image check "$T/bad.img"
eq "$(jget 'd["clean"]')" False "image check --json corrupt"
eq "$(jget 'len(d["partitions"][0]["problems"]) > 0')" True "image check lists problems"
# a device image served by cellard is readable offline too
run 0 image info "$T/flash.img"

echo "e2e_cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

#!/usr/bin/env bash
# e2e_sffs.sh - SPIFlashFileSystem's controls through the `cellar` CLI
# (issue 15, item 3): a file list with ids, ordered by modification or
# creation time (ls -i, -t, --sort, --reverse); df with freeable space and
# page statistics; gc on request (and --blocks); the automatic GC threshold
# (gc --threshold, cellard --gc-threshold); erase-all with rm -r ':/usr/*'.
#
# Env (set by `make test`): CELLARD, CELLAR (ASan builds), BUILD.
. "$(dirname "$0")/support/cellard.sh"
set -u
BUILD=${BUILD:-build}
CELLARD=${CELLARD:-$BUILD/san/cellard}
CELLAR=${CELLAR:-$BUILD/san/cellar}
PY=$(command -v /usr/bin/python3 || command -v python3)

T=$(mktemp -d "${TMPDIR:-/tmp}/e2e_sffs.XXXXXX")
PID=
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; fi
  rm -rf "$T"
}
trap cleanup EXIT INT TERM

. "$(dirname "$0")/support/e2e.sh"

# ---- bad options, no device needed ------------------------------------------------
"$CELLARD" --flash "$T/x.img" --gc-threshold 3 >"$T/out" 2>"$T/err"
eq "$?" 2 "cellard --gc-threshold 3 exit"; has "at least 6" "$T/err"
"$CELLARD" --flash "$T/x.img" --gc-threshold lots >"$T/out" 2>"$T/err"
eq "$?" 2 "cellard --gc-threshold lots exit"
[ ! -e "$T/x.img" ] && ok || bad "a refused option created the flash image"
run 2 ls --sort=colour; has "name, time, ctime, size, id or none" "$T/err"
run 2 gc --blocks many; has "number of blocks" "$T/err"
run 2 gc --blocks 1 --threshold 8; has "do not go together" "$T/err"
run 0 gc --help; has "threshold" "$T/out"

# ---- a device with its GC threshold set at start ------------------------------------
"$CELLARD" --flash "$T/flash.img" --flash-size 4M --gc-threshold 9 \
  --listen tcp://127.0.0.1:0 --idle-timeout 0 >"$T/cellard.log" 2>&1 &
PID=$!
URL=$(cellard_url "$T/cellard.log" "$PID")
D=(-d "$URL")
json 0 "${D[@]}" df
eq "$(jget 'd["partitions"][0]["gc_threshold"]')" 9 "gc threshold from cellard --gc-threshold"

# ---- a file list ordered by date (three files a second apart; c1 copied again last)
for n in 1 2 3; do
  head -c $((n * 5000)) /dev/urandom >"$T/c$n"
  run 0 "${D[@]}" cp "$T/c$n" ":/usr/c$n"
  sleep 1.1
done
head -c 7000 /dev/urandom >"$T/c1"
run 0 "${D[@]}" cp "$T/c1" :/usr/c1
run 0 "${D[@]}" ls -t;          eq "$(tr '\n' ' ' <"$T/out")" "c1 c3 c2 " "ls -t (newest first)"
# (cp replaces a file through a shadow copy: c1's creation time is the
# second copy's too)
run 0 "${D[@]}" ls --sort=ctime; eq "$(tr '\n' ' ' <"$T/out")" "c1 c3 c2 " "ls --sort=ctime"
run 0 "${D[@]}" ls --sort=size; eq "$(tr '\n' ' ' <"$T/out")" "c3 c2 c1 " "ls --sort=size"
run 0 "${D[@]}" ls -t --reverse; eq "$(tr '\n' ' ' <"$T/out")" "c2 c3 c1 " "ls -t --reverse"
run 0 "${D[@]}" ls;             eq "$(tr '\n' ' ' <"$T/out")" "c1 c2 c3 " "ls (by name)"
# ids: present, distinct, kept by a rename; -l with ctime shows creation times
json 0 "${D[@]}" ls
ids=$(jget '" ".join(str(e["id"]) for e in d["entries"])')
eq "$(echo "$ids" | tr ' ' '\n' | sort -u | grep -c .)" 3 "three distinct ids"
id2=$(jget '[e["id"] for e in d["entries"] if e["name"]=="c2"][0]')
run 0 "${D[@]}" mv :/usr/c2 :/usr/c2b
json 0 "${D[@]}" ls
eq "$(jget '[e["id"] for e in d["entries"] if e["name"]=="c2b"][0]')" "$id2" "id kept by mv"
run 0 "${D[@]}" ls -i -l --sort=id; has "c2b" "$T/out"
eq "$(awk '{print $1}' "$T/out" | sort -n -c 2>&1 && echo sorted)" sorted "ls --sort=id order"

# ---- df: freeable space and pages by state --------------------------------------------
run 0 "${D[@]}" rm :/usr/c3
run 0 "${D[@]}" df; has "freeable" "$T/out"; has "erased" "$T/out"; has "gc below" "$T/out"
json 0 "${D[@]}" df
eq "$(jget 'all(p["pages_free"]+p["pages_used"]+p["pages_erased"]==p["total"]//p["page_size"] for p in d["partitions"])')" True "pages add up"
stale=$(jget 'd["partitions"][0]["reclaimable"]')
[ "$stale" -ge 15000 ] && ok || bad "a removed 15 KB file is freeable: $stale"

# ---- gc on request, and the threshold -------------------------------------------------
run 0 "${D[@]}" gc; has "reclaimed" "$T/out"
json 0 "${D[@]}" gc :/usr
json 0 "${D[@]}" df
after=$(jget 'd["partitions"][0]["reclaimable"]')
[ "$after" -lt "$stale" ] && ok || bad "gc left $after of $stale freeable"
json 0 "${D[@]}" gc --blocks 1 :/bak
run 1 "${D[@]}" gc :/nope; has "no such partition" "$T/err"
run 1 "${D[@]}" gc --threshold 2; has "from 6 blocks" "$T/err"
json 0 "${D[@]}" gc --threshold 12
eq "$(jget 'd["previous"]')" 9 "gc --threshold: previous"
json 0 "${D[@]}" df
eq "$(jget 'd["partitions"][0]["gc_threshold"]')" 12 "gc --threshold in df"
for n in 1 2 3; do run 0 "${D[@]}" sha256sum :/usr/c1; done  # still served

# ---- erase all: rm -r ':/usr/*' keeps the manifest; a pattern with no match ----------
run 0 "${D[@]}" mkdir -p :/usr/lib/deep
run 0 "${D[@]}" cp "$T/c2" :/usr/lib/deep/x.py
run 0 "${D[@]}" cp "$T/c2" :/usr/keep.txt
run 0 "${D[@]}" rm ':/usr/k*.txt'
run 1 "${D[@]}" ls :/usr/keep.txt
run 1 "${D[@]}" rm ':/usr/nomatch*'; has "no such file" "$T/err"
run 0 "${D[@]}" rm -r ':/usr/*'
run 0 "${D[@]}" ls; eq "$(wc -c <"$T/out")" 0 "rm -r ':/usr/*' empties /usr"
run 0 "${D[@]}" ls -a; hasnt "c1" "$T/out"
run 0 "${D[@]}" verify; has "all match" "$T/out"
run 0 "${D[@]}" cp "$T/c1" :/usr/again   # and /usr takes files again

echo "e2e_sffs: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

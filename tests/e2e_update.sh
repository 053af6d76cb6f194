#!/usr/bin/env bash
# e2e_update.sh - `cellar push/manifest/verify/backup/restore` end to end
# against a cellard on loopback: atomic pushes of nested trees, only changed
# bytes sent, --delete, --dry-run, --json, the manifest digest, checksum.json
# import, verify (and --repair from /bak), backup and restore, resume of an
# interrupted push (client killed, cellard killed and restarted), two
# concurrent updates (one gets EBUSY), and exit codes 0/1/2.
#
# Interrupted pushes go through a small throttling TCP proxy (python3), so
# the test can stop them part-way by the bytes the proxy has forwarded
# instead of by time. Every wait is a bounded poll; nothing asserts on time.
#
# Env (set by `make test`): CELLARD, CELLAR (ASan builds), BUILD.
. "$(dirname "$0")/support/cellard.sh"
set -u
BUILD=${BUILD:-build}
CELLARD=${CELLARD:-$BUILD/san/cellard}
CELLAR=${CELLAR:-$BUILD/san/cellar}
PY=$(command -v /usr/bin/python3 || command -v python3)

T=$(mktemp -d "${TMPDIR:-/tmp}/e2e_update.XXXXXX")
PID=
PROXY=
BG=
cleanup() {
  for p in $BG $PROXY $PID; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  rm -rf "$T"
}
trap cleanup EXIT INT TERM

. "$(dirname "$0")/support/e2e.sh"
sha() { sha256sum "$1" | cut -d' ' -f1; }
# dsha :PATH: SHA-256 of a device file (computed on the device)
dsha() { "$CELLAR" sha256sum "$1" 2>/dev/null | cut -d' ' -f1; }

start_cellard() { cellard_start e2e_update 32M; }

# ---- the throttling proxy -------------------------------------------------------------
# proxy.py PORT RATE STATEFILE: listen on a free loopback port (printed on
# stdout), forward each connection to 127.0.0.1:PORT, client->device at RATE
# bytes/s; STATEFILE holds "forwarded_bytes closed_connections".
cat >"$T/proxy.py" <<'EOF'
import os, signal, socket, sys, threading, time
port, rate, state = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
signal.alarm(600)                      # never outlive the test
lock = threading.Lock()
fwd = [0, 0]
def save():
    tmp = state + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d %d\n" % (fwd[0], fwd[1]))
    os.replace(tmp, state)
def pump(src, dst, throttle):
    try:
        while True:
            data = src.recv(4096 if throttle else 65536)
            if not data:
                break
            dst.sendall(data)
            if throttle:
                with lock:
                    fwd[0] += len(data)
                    save()
                time.sleep(len(data) / rate)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
def conn(c):
    try:
        u = socket.create_connection(("127.0.0.1", port))
    except OSError:
        c.close()
        return
    t = threading.Thread(target=pump, args=(u, c, False), daemon=True)
    t.start()
    pump(c, u, True)
    t.join(30)
    c.close()
    u.close()
    with lock:
        fwd[1] += 1
        save()
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 0))
ls.listen(8)
save()
print(ls.getsockname()[1], flush=True)
for _ in range(64):
    c, _ = ls.accept()
    threading.Thread(target=conn, args=(c,), daemon=True).start()
EOF

# start_proxy RATE: proxy to the current cellard; sets PROXY, PURL.
start_proxy() {
  local port=${URL##*:}
  rm -f "$T/proxy.state" "$T/proxy.port"
  "$PY" "$T/proxy.py" "$port" "$1" "$T/proxy.state" >"$T/proxy.port" 2>"$T/proxy.err" &
  PROXY=$!
  PURL=
  for _ in $(seq 1 600); do
    [ -s "$T/proxy.port" ] && { PURL="tcp://127.0.0.1:$(head -n1 "$T/proxy.port")"; break; }
    sleep 0.05
  done
  [ -n "$PURL" ] || { bad "proxy did not start: $(cat "$T/proxy.err")"; PURL=$URL; }
}
stop_proxy() { [ -n "$PROXY" ] && { kill -9 "$PROXY" 2>/dev/null; wait "$PROXY" 2>/dev/null; PROXY=; }; }
proxy_field() { local v; v=$(cut -d' ' -f"$1" "$T/proxy.state" 2>/dev/null); echo "${v:-0}"; }
# wait_forwarded BYTES: until the proxy has forwarded that much (bounded)
wait_forwarded() {
  for _ in $(seq 1 400); do
    [ "$(proxy_field 1)" -ge "$1" ] && return 0
    sleep 0.05
  done
  return 1
}
# wait_closed N: until the proxy has seen N connections end (bounded)
wait_closed() {
  for _ in $(seq 1 400); do
    [ "$(proxy_field 2)" -ge "$1" ] && return 0
    sleep 0.05
  done
  return 1
}
# push_retry ARGS...: `cellar --json push ARGS` into $T/out, retried while
# the device still holds the update of a client that just died (EBUSY).
push_retry() {
  local got
  for _ in $(seq 1 50); do
    "$CELLAR" --json push "$@" >"$T/out" 2>"$T/err"
    got=$?
    [ "$got" = 1 ] && grep -q '"EBUSY"' "$T/out" && { sleep 0.1; continue; }
    break
  done
  if [ "$got" = 0 ]; then ok; else
    bad "cellar push $* -> exit $got"; sed 's/^/  stderr: /' "$T/err" | head -5 >&2; fi
  if grep -q "Sanitizer\|runtime error" "$T/err"; then bad "cellar push $*: sanitizer report"; fi
}

# ---- without a device --------------------------------------------------------------------
run 0 --help
for c in push manifest verify backup restore; do
  has "$c" "$T/out"
done
for c in push manifest verify backup restore; do
  run 0 "$c" --help; has "usage: cellar" "$T/out"
done
run 0 help push; has "--delete" "$T/out"
run 2 push
run 2 push --bogus "$T"
run 2 push :/usr/x                       # the source must be local
run 2 push "$T" "$T"                     # the destination must be a device path
run 2 push "$T" :/bak/x                  # only /usr takes updates
run 2 push "$T" :/
run 2 push "$T" :a :b
run 1 push "$T/nothere" :; has "nothere" "$T/err"
json 1 push "$T/nothere" :
: >"$T/afile"
run 1 push "$T/afile" :; has "not a directory" "$T/err"
run 2 manifest :/nope
run 2 manifest :/usr :/bak
run 2 manifest --import "$T/x.json" :/usr
run 2 verify :/bak --repair
run 2 verify :/nope
run 2 backup :a :b :c :d :e :f :g :h :i :j :k :l :m :n :o :p :q
run 1 manifest --import "$T/nothere.json"; has "nothere.json" "$T/err"
run 1 -d tcp://127.0.0.1:1 verify; has "cannot connect" "$T/err"

# ---- start cellard -------------------------------------------------------------------------
start_cellard

# ---- a local tree ------------------------------------------------------------------------------
L="$T/app"
mkdir -p "$L/lib/deep" "$L/data" "$L/emptydir"
printf 'print("hello")\n' >"$L/main.py"
printf 'x = 1\n' >"$L/lib/util.py"
: >"$L/lib/empty.txt"
head -c 200000 /dev/urandom >"$L/lib/deep/blob.bin"
for i in 0 1 2 3 4 5 6 7 8 9; do head -c 10000 /dev/urandom >"$L/data/f$i.bin"; done
ln -s main.py "$L/link.py"                  # skipped with a warning
TOTAL=$(( 15 + 6 + 0 + 200000 + 100000 ))

# ---- push: first time -------------------------------------------------------------------------
run 0 push "$L" :/usr/app
has "new /usr/app/main.py" "$T/out"; has "new /usr/app/lib/deep/blob.bin" "$T/out"
has "14 new, 0 changed, 0 deleted, 0 unchanged" "$T/out"
has "sent $TOTAL of $TOTAL bundle bytes" "$T/out"
has "link.py: symbolic link" "$T/err"
DIGEST=$(sed -n 's/^manifest \([0-9a-f]\{64\}\)$/\1/p' "$T/out")
eq "${#DIGEST}" 64 "push prints the manifest digest"
run 0 ls -r :app; has "lib/deep/blob.bin" "$T/out"; has "data/f9.bin" "$T/out"; hasnt "link.py" "$T/out"
run 0 cat :app/main.py; eq "$(cat "$T/out")" 'print("hello")' "cat after push"
eq "$(dsha :app/lib/deep/blob.bin)" "$(sha "$L/lib/deep/blob.bin")" "sha256sum after push"
eq "$(dsha :app/lib/empty.txt)" "$(sha "$L/lib/empty.txt")" "empty file pushed"
run 0 manifest
has "$(sha "$L/lib/deep/blob.bin")  200000  /usr/app/lib/deep/blob.bin" "$T/out"
has "  0  /usr/app/lib/empty.txt" "$T/out"
eq "$(wc -l <"$T/out")" 14 "manifest lines"
eq "$(LC_ALL=C sort -k3,3 "$T/out" | cmp -s - "$T/out" && echo sorted)" sorted "manifest sorted by path"
eq "$(sha256sum <"$T/out" | cut -d' ' -f1)" "$DIGEST" "digest == sha256 of the manifest lines"
run 0 --json manifest     # QuecPython's checksum.json shape: a bare list
eq "$(jget 'type(d).__name__')" list "manifest --json is a list"
eq "$(jget 'len(d)')" 14 "manifest --json files"
eq "$(jget '[f for f in d if f["name"] == "/usr/app/main.py"][0]["size"]')" 15 "manifest --json size"
eq "$(jget 'all(len(f["sha256"]) == 64 and f["mtime"] > 0 for f in d)')" True "manifest --json shape"
json 2 manifest :/nope     # a failure keeps the usual object"
run 0 verify; has "all match" "$T/out"
json 0 verify
eq "$(jget 'd["clean"], d["checked"], d["untracked"]')" "True 14 0" "verify --json clean"

# ---- re-push unchanged: nothing sent ----------------------------------------------------------
json 0 push "$L" :/usr/app
eq "$(jget 'd["bytes_sent"], len(d["unchanged"]), len(d["new"]), len(d["changed"])')" "0 14 0 0" "re-push sends nothing"
eq "$(jget 'd["bundle_bytes"]')" "$TOTAL" "bundle bytes"
eq "$(jget 'd["digest"]')" "$DIGEST" "digest unchanged"
eq "$(jget 'd["resumed"]')" False "not resumed"
run 0 push "$L" :/usr/app; has "0 new, 0 changed, 0 deleted, 14 unchanged (skipped)" "$T/out"
has "sent 0 of" "$T/out"

# ---- change 10%: only that is sent ------------------------------------------------------------
head -c 10000 /dev/urandom >"$L/data/f3.bin"
json 0 push "$L" :/usr/app
eq "$(jget 'd["bytes_sent"]')" 10000 "only the changed file is sent"
eq "$(jget 'd["changed"]')" "['/usr/app/data/f3.bin']" "changed list"
eq "$(jget 'len(d["unchanged"])')" 13 "unchanged count"
eq "$(dsha :app/data/f3.bin)" "$(sha "$L/data/f3.bin")" "changed file on the device"
DIGEST2=$(jget 'd["digest"]')
[ "$DIGEST2" != "$DIGEST" ] && ok || bad "digest did not change"
run 0 manifest; eq "$(sha256sum <"$T/out" | cut -d' ' -f1)" "$DIGEST2" "digest after change"

# ---- --dry-run changes nothing ----------------------------------------------------------------
printf 'x = 2\n' >"$L/lib/util.py"
printf 'new\n' >"$L/data/new.txt"
json 0 push "$L" :/usr/app --dry-run
eq "$(jget 'd["dry_run"], d["bytes_sent"], d["to_send"]')" "True 0 10" "dry run counts"
eq "$(jget 'd["changed"], d["new"]')" "['/usr/app/lib/util.py'] ['/usr/app/data/new.txt']" "dry run lists"
eq "$(jget 'd["digest"]')" "$DIGEST2" "dry run: the current digest"
run 0 push "$L" :/usr/app --dry-run; has "dry run: 1 new, 1 changed" "$T/out"; has "would send 10 of" "$T/out"
run 0 cat :app/lib/util.py; eq "$(cat "$T/out")" "x = 1" "dry run changed nothing"
run 1 ls :app/data/new.txt
run 0 manifest; eq "$(sha256sum <"$T/out" | cut -d' ' -f1)" "$DIGEST2" "dry run: manifest unchanged"
run 0 push "$L" :/usr/app; has "changed /usr/app/lib/util.py" "$T/out"; has "new /usr/app/data/new.txt" "$T/out"

# ---- --delete ---------------------------------------------------------------------------------
rm -rf "$L/lib/deep" "$L/data/f0.bin"
run 0 cp "$L/main.py" :app/extra.py          # a device file the tree lacks
json 0 push "$L" :/usr/app --delete --dry-run
eq "$(jget 'sorted(d["deleted"])')" "['/usr/app/data/f0.bin', '/usr/app/extra.py', '/usr/app/lib/deep/', '/usr/app/lib/deep/blob.bin']" "dry run deletions"
run 0 ls :app/lib/deep/blob.bin
json 0 push "$L" :/usr/app --delete
eq "$(jget 'sorted(d["deleted"])')" "['/usr/app/data/f0.bin', '/usr/app/extra.py', '/usr/app/lib/deep/', '/usr/app/lib/deep/blob.bin']" "deletions"
eq "$(jget 'd["bytes_sent"]')" 0 "delete sends nothing"
run 1 ls :app/lib/deep
run 1 ls :app/extra.py
run 1 ls :app/data/f0.bin
run 0 ls :app/lib; has "util.py" "$T/out"
run 0 manifest; hasnt "blob.bin" "$T/out"; hasnt "extra.py" "$T/out"
run 0 push "$L" :/usr/app --delete; has "0 deleted, 13 unchanged" "$T/out"
# a push without --delete keeps what the tree lacks
run 0 cp "$L/main.py" :app/keep.py
run 0 push "$L" :/usr/app; run 0 ls :app/keep.py
run 0 rm :app/keep.py

# ---- the reserved directory, long paths ---------------------------------------------------------
R="$T/res"; mkdir -p "$R/.cellar"; printf 'x' >"$R/.cellar/manifest"
run 1 push "$R" :; has "reserved" "$T/err"
run 0 manifest; eq "$(grep -c '\.cellar' "$T/out")" 0 "nothing pushed into .cellar"
LONG="$T/long"; mkdir -p "$LONG"; printf 'x' >"$LONG/$(printf 'n%.0s' $(seq 1 250))"
run 1 push "$LONG" :/usr/app; has "longer than" "$T/err"

# ---- manifest --json / --import round trip ------------------------------------------------------
run 0 manifest
D0=$(sha256sum <"$T/out" | cut -d' ' -f1)
run 0 --json manifest
cp "$T/out" "$T/manifest.json"
run 0 manifest --import "$T/manifest.json"; has "imported 13 entries" "$T/out"
run 0 manifest
eq "$(sha256sum <"$T/out" | cut -d' ' -f1)" "$D0" "import round trip keeps the manifest"
# a QuecPython checksum.json: a bare list, upper-case hex, no size
"$PY" - "$T/manifest.json" "$T/checksum.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
json.dump([{"name": f["name"], "sha256": f["sha256"].upper()} for f in d],
          open(sys.argv[2], "w"))
EOF
json 0 manifest --import "$T/checksum.json"
eq "$(jget 'd["imported"]')" 13 "checksum.json imported"
run 0 manifest; has "  -  /usr/app/main.py" "$T/out"    # size now unknown
run 0 verify; has "all match" "$T/out"
run 0 manifest --import "$T/manifest.json"                # sizes back
run 0 manifest; has "  15  /usr/app/main.py" "$T/out"
# bad checksum files: clear errors, exit 1, nothing imported
printf '[{"name": "/usr/a.py", "sha256": "abc"}]' >"$T/bad1.json"
run 1 manifest --import "$T/bad1.json"; has "64 hex" "$T/err"
printf '[{"name": "/bak/a.py", "sha256": "%s"}]' "$(sha "$L/main.py")" >"$T/bad2.json"
run 1 manifest --import "$T/bad2.json"; has "under /usr" "$T/err"
printf '[{"name": "/usr/../etc", "sha256": "%s"}]' "$(sha "$L/main.py")" >"$T/bad3.json"
run 1 manifest --import "$T/bad3.json"; has "under /usr" "$T/err"
printf '[{"name": "/usr/a.py", "sha256": ' >"$T/bad4.json"
run 1 manifest --import "$T/bad4.json"; has "invalid JSON" "$T/err"
printf '{"x": 1}' >"$T/bad5.json"
json 1 manifest --import "$T/bad5.json"
printf '[{"name": "/usr/a.py", "sha256": "%s", "size": -5}]' "$(sha "$L/main.py")" >"$T/bad6.json"
run 1 manifest --import "$T/bad6.json"; has "size" "$T/err"
printf '[{"name": "/usr/a.py", "sha256": "%s"}, {"name": "/usr/a.py", "sha256": "%s"}]' \
  "$(sha "$L/main.py")" "$(sha "$L/main.py")" >"$T/bad7.json"
run 1 manifest --import "$T/bad7.json"; has "more than once" "$T/err"
run 0 manifest; hasnt "/usr/a.py" "$T/out"
printf '[]' >"$T/empty.json"
run 0 manifest --import "$T/empty.json"; has "imported 0" "$T/out"

# ---- verify finds what is wrong; --repair from /bak ----------------------------------------------
# An imported entry for a file that is not there: missing.
printf '[{"name": "/usr/ghost.py", "sha256": "%s", "size": 15}]' "$(sha "$L/main.py")" >"$T/ghost.json"
run 0 manifest --import "$T/ghost.json"
run 1 verify; has "missing /usr/ghost.py" "$T/out"
json 1 verify
eq "$(jget 'd["missing"], d["clean"]')" "1 False" "verify --json missing"
eq "$(jget 'd["problems"][0]["path"], d["problems"][0]["kind"]')" "/usr/ghost.py missing" "verify --json problem"
run 1 verify --repair; has "missing /usr/ghost.py" "$T/out"; hasnt "repaired from" "$T/out"  # no copy in /bak
# An imported entry that does not match the file: mismatch, repaired from a backup.
run 0 backup :app; has "backup: 13 files copied" "$T/out"
run 0 manifest :/bak; has "/app/main.py" "$T/out"
printf '[{"name": "/usr/app/main.py", "sha256": "%s", "size": 6}]' "$(sha "$L/lib/util.py")" >"$T/wrong.json"
run 0 manifest --import "$T/wrong.json"
run 1 verify; has "mismatch /usr/app/main.py" "$T/out"
run 1 verify --repair; has "mismatch /usr/app/main.py (repaired from /bak)" "$T/out"   # ghost is still missing
run 0 cat :app/main.py; eq "$(cat "$T/out")" 'print("hello")' "repaired content"
run 0 manifest; has "  15  /usr/app/main.py" "$T/out"
# file RPCs keep the manifest in step: touch + rm drop the ghost entry
run 0 touch :ghost.py
run 0 rm :ghost.py
run 0 verify; has "all match" "$T/out"
run 0 rm :app/data/f1.bin
run 0 verify
run 0 manifest; hasnt "f1.bin" "$T/out"
run 0 verify :/bak; has "all match" "$T/out"

# ---- backup and restore ----------------------------------------------------------------------------
json 0 backup
eq "$(jget 'd["skipped"]')" "[]" "backup all: nothing skipped"
eq "$(jget 'd["removed"] >= 1')" True "backup all drops copies of removed files"
run 0 backup; has "0 files copied" "$T/out"
run 0 manifest :/bak; hasnt "f1.bin" "$T/out"
run 1 backup :nope.py; has "skipped /usr/nope.py" "$T/out"
json 1 backup :nope.py
eq "$(jget 'd["skipped"][0]["kind"]')" "missing" "backup --json skipped"
# change a file on the device (cp keeps the manifest right), restore it
printf 'print("changed")\n' >"$T/changed.py"
run 0 cp -f "$T/changed.py" :app/main.py
run 0 verify
run 0 restore :app/main.py; has "restore: 1 file copied" "$T/out"
run 0 cat :app/main.py; eq "$(cat "$T/out")" 'print("hello")' "restored content"
run 0 rm -r :app/lib
run 1 ls :app/lib
json 0 restore
eq "$(jget 'd["files"] >= 2')" True "restore all copies the removed files back"
run 0 cat :app/lib/util.py; eq "$(cat "$T/out")" "x = 2" "restored tree"
run 0 verify; has "all match" "$T/out"
run 1 restore :app/never.py; has "skipped" "$T/out"
run 0 push "$L" :/usr/app --delete                # back to the local tree
D=$(sed -n 's/^manifest //p' "$T/out")
run 0 manifest; eq "$(sha256sum <"$T/out" | cut -d' ' -f1)" "$D" "push digest == manifest digest"

# ---- resume: the client killed part-way -------------------------------------------------------------
BIGD="$T/big"; mkdir -p "$BIGD"
BIGN=$((8 * 1024 * 1024))
head -c "$BIGN" /dev/urandom >"$BIGD/big.bin"
printf 'small\n' >"$BIGD/small.txt"
start_proxy $((2 * 1024 * 1024))
"$CELLAR" -d "$PURL" push "$BIGD" :/usr/big >"$T/bg.out" 2>"$T/bg.err" &
BG=$!
if wait_forwarded $((1024 * 1024)); then ok; else bad "proxy forwarded nothing: $(cat "$T/bg.err" "$T/proxy.err" "$T/proxy.state" 2>/dev/null | head -5)"; fi
kill -9 "$BG" 2>/dev/null; wait "$BG" 2>/dev/null; BG=
wait_closed 1 || bad "proxy connection did not close"
run 1 ls :big/big.bin                      # nothing visible before the commit
push_retry "$BIGD" :/usr/big
eq "$(jget 'd["resumed"]')" True "push resumed after the client was killed"
eq "$(jget 'd["staged"] > 0 and d["bytes_sent"] < '$BIGN' and d["bytes_sent"] + d["staged"] >= '$BIGN)" True \
  "resume sends only what was not staged ($(jget 'd["staged"], d["bytes_sent"]' 2>/dev/null))"
eq "$(dsha :big/big.bin)" "$(sha "$BIGD/big.bin")" "resumed file intact"
run 0 verify
stop_proxy

# ---- resume: cellard killed and restarted part-way ---------------------------------------------------
head -c "$BIGN" /dev/urandom >"$BIGD/big.bin"
start_proxy $((2 * 1024 * 1024))
"$CELLAR" -d "$PURL" push "$BIGD" :/usr/big >"$T/bg.out" 2>"$T/bg.err" &
BG=$!
if wait_forwarded $((2 * 1024 * 1024)); then ok; else bad "proxy forwarded nothing: $(cat "$T/bg.err" "$T/proxy.err" "$T/proxy.state" 2>/dev/null | head -5)"; fi
kill -9 "$PID"; wait "$PID" 2>/dev/null; PID=
wait "$BG"; rc=$?; BG=
eq "$rc" 1 "push fails when cellard dies"
hasnt "Sanitizer" "$T/bg.err"
stop_proxy
start_cellard
run 0 cat :big/small.txt                   # the old version is intact
push_retry "$BIGD" :/usr/big
eq "$(jget 'd["resumed"]')" True "push resumed after a cellard restart"
eq "$(jget 'd["staged"] > 0 and d["bytes_sent"] < '$BIGN)" True \
  "after a restart only the rest is sent ($(jget 'd["staged"], d["bytes_sent"]' 2>/dev/null))"
eq "$(dsha :big/big.bin)" "$(sha "$BIGD/big.bin")" "file intact after a restart"
run 0 verify; has "all match" "$T/out"

# ---- a stale staged bundle is dropped by a push of other content ------------------------------------
head -c "$BIGN" /dev/urandom >"$BIGD/big.bin"
OLD=$(dsha :big/big.bin)
start_proxy $((2 * 1024 * 1024))
"$CELLAR" -d "$PURL" push "$BIGD" :/usr/big >"$T/bg.out" 2>"$T/bg.err" &
BG=$!
if wait_forwarded $((1024 * 1024)); then ok; else bad "proxy forwarded nothing: $(cat "$T/bg.err" "$T/proxy.err" "$T/proxy.state" 2>/dev/null | head -5)"; fi
kill -9 "$BG" 2>/dev/null; wait "$BG" 2>/dev/null; BG=
wait_closed 1 || bad "proxy connection did not close"
stop_proxy
eq "$(dsha :big/big.bin)" "$OLD" "an interrupted push changes nothing"
run 0 verify
head -c "$BIGN" /dev/urandom >"$BIGD/big.bin"   # another bundle now
push_retry "$BIGD" :/usr/big
eq "$(jget 'd["resumed"], d["bytes_sent"]')" "False $BIGN" "other content: a new bundle, sent whole"
eq "$(dsha :big/big.bin)" "$(sha "$BIGD/big.bin")" "new bundle's file"

# ---- two updates at once: one gets EBUSY --------------------------------------------------------------
head -c "$BIGN" /dev/urandom >"$BIGD/big.bin"
OTHER="$T/other"; mkdir -p "$OTHER"; printf 'other\n' >"$OTHER/o.txt"
start_proxy $((2 * 1024 * 1024))
"$CELLAR" -d "$PURL" push "$BIGD" :/usr/big >"$T/bg.out" 2>"$T/bg.err" &
BG=$!
if wait_forwarded $((512 * 1024)); then ok; else bad "proxy forwarded nothing: $(cat "$T/bg.err" "$T/proxy.err" "$T/proxy.state" 2>/dev/null | head -5)"; fi
kill -STOP "$BG"                           # still connected, still mid-update
run 1 push "$OTHER" :/usr/other; has "in progress" "$T/err"
json 1 push "$OTHER" :/usr/other
eq "$(jget 'd["errors"][0]["error"]')" EBUSY "EBUSY in --json"
kill -CONT "$BG"
wait "$BG"; rc=$?; BG=
eq "$rc" 0 "the first push succeeds"
hasnt "Sanitizer" "$T/bg.err"
has "changed /usr/big/big.bin" "$T/bg.out"
stop_proxy
eq "$(dsha :big/big.bin)" "$(sha "$BIGD/big.bin")" "first push's file"
run 1 ls :other/o.txt
run 0 push "$OTHER" :/usr/other; has "new /usr/other/o.txt" "$T/out"
run 0 verify; has "all match" "$T/out"

# ---- a bundle that does not fit -----------------------------------------------------------------------
HUGE="$T/huge"; mkdir -p "$HUGE"
head -c $((40 * 1024 * 1024)) /dev/zero >"$HUGE/huge.bin"
json 1 push "$HUGE" :/usr/huge
eq "$(jget 'd["errors"][0]["error"]')" ENOSPC "a bundle too big: ENOSPC"
run 1 ls :huge
run 0 push "$OTHER" :/usr/other      # the device still takes updates

# stop cellard cleanly (SIGTERM: sync, unmount; LeakSanitizer runs at exit)
kill -TERM "$PID"
for _ in $(seq 1 200); do kill -0 "$PID" 2>/dev/null || break; sleep 0.05; done
if kill -0 "$PID" 2>/dev/null; then bad "cellard did not stop on SIGTERM"; kill -9 "$PID"; fi
wait "$PID"; rc=$?; PID=
eq "$rc" 0 "cellard exit status"
# the daemons' logs: no sanitizer report
cat "$T"/cellard.*.log >"$T/all.log"
hasnt "Sanitizer\|runtime error" "$T/all.log"

echo "e2e_update: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

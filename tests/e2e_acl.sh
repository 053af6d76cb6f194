#!/usr/bin/env bash
# e2e_acl.sh - issue 13, access control with the real daemon and CLI, on
# loopback only (docs/SECURITY.md):
#   1. no ACL on loopback: full access as before; `cellar info` says
#      "identity: anonymous, role: admin";
#   2. --acl with "anonymous reader": reads work, every write is refused
#      with EACCES naming anonymous, its role and the ACL line, nothing
#      changes (manifests and listings compared), the daemon's log names
#      the identity;
#   3. an ACL without a rule for anonymous: not even `cellar info`;
#   4. bad ACL files: cellard refuses to start, naming the line;
#   5. plain tcp:// on 0.0.0.0 without --acl or --insecure: refused before
#      anything is bound or the flash touched (no traffic leaves loopback:
#      the refusal comes first).
# Every wait is a bounded poll; nothing asserts on time.
#
# Env (set by `make test`): CELLARD, CELLAR (ASan builds), BUILD.
. "$(dirname "$0")/support/cellard.sh"
set -u
BUILD=${BUILD:-build}
CELLARD=${CELLARD:-$BUILD/san/cellard}
CELLAR=${CELLAR:-$BUILD/san/cellar}
PY=$(command -v /usr/bin/python3 || command -v python3)

T=$(mktemp -d "${TMPDIR:-/tmp}/e2e_acl.XXXXXX")
PID=
cleanup() {
  [ -n "$PID" ] && { kill -9 "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; }
  rm -rf "$T"
}
trap cleanup EXIT INT TERM

. "$(dirname "$0")/support/e2e.sh"

NSTART=0
# start ARGS...: cellard on $T/flash.img, a free loopback port, extra ARGS.
start() {
  NSTART=$((NSTART + 1))
  LOG="$T/cellard.$NSTART.log"
  : >"$LOG"        # exists before cellard_url reads it
  "$CELLARD" --flash "$T/flash.img" --flash-size 4M --listen tcp://127.0.0.1:0 \
    --idle-timeout 0 "$@" >"$LOG" 2>&1 &
  PID=$!
  URL=$(cellard_url "$LOG" "$PID")
  if [ -z "$URL" ]; then
    echo "e2e_acl: cellard did not start:" >&2; tail -20 "$LOG" >&2
    echo "e2e_acl: $pass passed, $((fail + 1)) failed"; exit 1
  fi
  export CELLAR_DEVICE=$URL
}
stop() {
  kill -TERM "$PID" 2>/dev/null
  for _ in $(seq 1 600); do kill -0 "$PID" 2>/dev/null || break; sleep 0.05; done
  wait "$PID" 2>/dev/null; PID=
}
# refused CODE TEXT ARGS...: cellard exits with CODE at start-up, saying TEXT.
refused() {
  local want=$1 text=$2; shift 2
  "$CELLARD" "$@" >"$T/refused.log" 2>&1 &
  local p=$!
  for _ in $(seq 1 600); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
  if kill -0 "$p" 2>/dev/null; then bad "cellard $* did not refuse"; kill -9 "$p"; fi
  wait "$p" 2>/dev/null; local rc=$?
  eq "$rc" "$want" "cellard $* exit status"
  has "$text" "$T/refused.log"
  hasnt "listening on" "$T/refused.log"
}

L="$T/local"
mkdir -p "$L"
printf 'hello\n' >"$L/a.txt"

# ---- 1. no ACL, loopback: admin, as before ----------------------------------------------
start
run 0 info; has "identity: anonymous, role: admin" "$T/out"
json 0 info
eq "$(jget 'd["identity"] + "/" + d["role"]')" "anonymous/admin" "info --json access"
run 0 mkdir :app
run 0 cp "$L/a.txt" :app/a.txt
run 0 cp "$L/a.txt" :keep.txt
run 0 backup
run 0 manifest; cp "$T/out" "$T/man.before"
run 0 ls -lr :/; cp "$T/out" "$T/ls.before"
stop

# ---- 2. anonymous reader -------------------------------------------------------------------
cat >"$T/acl" <<'EOF'
# e2e ACL: certificates come with TLS; plain tcp:// is anonymous
ops     admin
ci      writer /usr/app
anonymous reader
EOF
start --acl "$T/acl"
run 0 info; has "identity: anonymous, role: reader" "$T/out"
run 0 ls :app; has "a.txt" "$T/out"
run 0 cat :app/a.txt; has "hello" "$T/out"
run 0 sha256sum :keep.txt
run 0 verify
run 1 mkdir :x
has "anonymous (reader, ACL line 4) may not write" "$T/err"
run 1 cp "$L/a.txt" :app/b.txt
has "anonymous (reader, ACL line 4) may not write" "$T/err"
run 1 rm :keep.txt
run 1 mv :keep.txt :app/keep.txt
run 1 backup
run 1 restore
run 1 verify --repair
run 1 format --yes
has "may not format (admin only)" "$T/err"
run 0 ls; has "keep.txt" "$T/out"; hasnt "x/" "$T/out"
run 1 cat :app/b.txt
has "anonymous (reader, ACL line 4) may not write" "$LOG"
has "identity anonymous (reader, ACL line 4)" "$LOG"
stop

# ---- 3. no rule for anonymous: nothing at all ----------------------------------------------
printf 'ops admin\n* reader\n' >"$T/acl2"
start --acl "$T/acl2"
run 1 info; has "anonymous (no ACL rule) may not read" "$T/err"
run 1 ls
stop
start                                   # without the ACL: as before
run 0 manifest; same "$T/man.before" "$T/out" # the refused requests changed
run 0 ls -lr :/; same "$T/ls.before" "$T/out" # nothing
run 0 cat :app/a.txt; has "hello" "$T/out"
stop

# ---- 4. bad ACL files: no start ---------------------------------------------------------------
printf 'ops admin\nbob raeder\n' >"$T/bad1"
refused 2 "line 2: unknown role \"raeder\"" --flash "$T/flash.img" \
  --listen tcp://127.0.0.1:0 --acl "$T/bad1"
printf 'ci writer /usr/app\nci reader\n' >"$T/bad2"
refused 2 "line 2: a second rule for \"ci\"" --flash "$T/flash.img" \
  --listen tcp://127.0.0.1:0 --acl "$T/bad2"
refused 2 "$T/nope" --flash "$T/flash.img" --listen tcp://127.0.0.1:0 \
  --acl "$T/nope"

# ---- 5. plain TCP off loopback: refused unless --insecure or --acl ----------------------
# (the refusal comes before any bind and before the flash is opened)
refused 2 "non-loopback address" --flash "$T/new.img" --listen tcp://0.0.0.0:0
[ -e "$T/new.img" ] && bad "the refused start created a flash image" || ok
refused 2 "--insecure" --flash "$T/new.img" --listen tcp://127.0.0.1:0 \
  --listen "tcp://[::]:0"
# loopback names and addresses are fine without an ACL
start --listen "tcp://localhost:0"
stop

echo "e2e_acl: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

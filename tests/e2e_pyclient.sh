#!/usr/bin/env bash
# e2e_pyclient.sh - the protocol as documented, checked by an independent
# client: tests/pyclient/cellar_client.py, written in Python from
# docs/PROTOCOL.md, TLS.md, SECURITY.md and FAT.md alone (messages from
# proto/cellar.proto through protoc --python_out and Debian's
# python3-protobuf; TLS through Python's ssl, i.e. OpenSSL, not mbedTLS).
# Four cellards on loopback, each checked by a section of
# tests/pyclient/checks.py:
#   gc        Gc, GcConfig, StatFs page statistics, FileInfo.id
#   pipeline  16 requests before any answer, ids; framing errors
#   acl       --acl with tcp:// (anonymous reader) and tls:// (client
#             certificates made by `cellar pki`: CN = identity; admin,
#             writers with and without prefixes, no rule, another CA;
#             a PSK client through `openssl s_client`, since Python's ssl
#             has PSK only from 3.13)
#   sd        --sd on a FAT16 card made by mkfs.fat, read back by mtools
#
# Env (set by `make test`): CELLARD, CELLAR (ASan builds), BUILD.
. "$(dirname "$0")/support/cellard.sh"
set -u
BUILD=${BUILD:-build}
CELLARD=${CELLARD:-$BUILD/san/cellard}
CELLAR=${CELLAR:-$BUILD/san/cellar}
# Debian's python3 (python3-protobuf lives there, not in a pyenv one)
PY=$(command -v /usr/bin/python3 || command -v python3)
HERE=$(cd "$(dirname "$0")" && pwd)
export MTOOLS_SKIP_CHECK=1 PYTHONDONTWRITEBYTECODE=1

T=$(mktemp -d "${TMPDIR:-/tmp}/e2e_pyclient.XXXXXX")
PID=
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; fi
  rm -rf "$T"
}
trap cleanup EXIT INT TERM

pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }

for tool in protoc mkfs.fat mtype; do
  command -v "$tool" >/dev/null || { echo "e2e_pyclient: $tool missing (make deps)" >&2; exit 1; }
done
"$PY" -c 'import google.protobuf' 2>/dev/null ||
  { echo "e2e_pyclient: python3-protobuf missing (make deps)" >&2; exit 1; }

mkdir -p "$T/py"
protoc -I"$HERE/../proto" --python_out="$T/py" "$HERE/../proto/cellar.proto" || exit 1
export PYTHONPATH=$T/py

# start NAME ARGS...: cellard on $T/NAME.img with ARGS; sets PID and URL
# (the first tcp:// listener) and TURL (the first tls:// one, if any).
start() {
  local name=$1 log="$T/$1.log"; shift
  "$CELLARD" --flash "$T/$name.img" --flash-size 4M --idle-timeout 0 "$@" >"$log" 2>&1 &
  PID=$!
  URL=$(cellard_url "$log" "$PID")
  TURL=
  for _ in $(seq 1 600); do
    TURL=$(sed -n 's/^cellard: listening on \(tls:\/\/127\.0\.0\.1:[0-9]*\).*/\1/p' "$log" | head -n1)
    [ -n "$TURL" ] && break
    case " $* " in *" tls://"*) ;; *) break ;; esac
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.05
  done
  if [ -z "$URL" ]; then
    echo "e2e_pyclient: cellard ($name) did not start:" >&2; tail -20 "$log" >&2
    echo "e2e_pyclient: $pass passed, $((fail + 1)) failed"; exit 1
  fi
}
# stop NAME: SIGINT, a clean exit, no sanitizer report
stop() {
  kill -INT "$PID" 2>/dev/null; wait "$PID"; local rc=$?
  if [ "$rc" = 0 ]; then ok; else bad "cellard ($1) exit status $rc"; fi
  if grep -q "Sanitizer\|runtime error" "$T/$1.log"; then
    bad "cellard ($1): sanitizer report"; grep -m5 "Sanitizer\|runtime error\|#[0-3] " "$T/$1.log" >&2
  else ok; fi
  PID=
}
# section NAME ARGS...: run a section of checks.py
section() {
  if "$PY" "$HERE/pyclient/checks.py" "$@"; then ok; else bad "checks.py $1"; fi
}

# ---- Gc, GcConfig, StatFs, FileInfo.id; pipelining -------------------------
start plain --listen tcp://127.0.0.1:0
section gc "$URL"
section pipeline "$URL"
stop plain

# ---- ACL and TLS -----------------------------------------------------------
P=$T/pki
{ "$CELLAR" pki init "$P" && "$CELLAR" pki device "$P" dev1 &&
  for n in ops alice field wide rootw mallory; do "$CELLAR" pki client "$P" "$n" || exit 1; done &&
  "$CELLAR" pki init "$P/other" && "$CELLAR" pki client "$P/other" eve &&
  "$CELLAR" pki psk bob >"$T/psk.txt"; } >"$T/pki.log" 2>&1 ||
  { bad "cellar pki"; cat "$T/pki.log" >&2; }
cat >"$T/acl.txt" <<'EOF'
# e2e_pyclient: the line numbers are checked (ACL line N)
ops        admin
alice      writer  /usr/app
anonymous  reader
field      writer
wide       writer  /usr
bob        writer  /usr/psk
rootw      writer  /
EOF
start acl --listen tcp://127.0.0.1:0 --listen tls://127.0.0.1:0 --acl "$T/acl.txt" \
  --tls-cert "$P/dev1.crt" --tls-key "$P/dev1.key" --tls-ca "$P/ca.crt" --psk-file "$T/psk.txt"
if [ -n "$TURL" ]; then ok; else bad "no tls:// listener in $T/acl.log"; fi
section acl "$URL" "$TURL" "$P" "$T/psk.txt"
stop acl

# ---- the SD card -----------------------------------------------------------
mkfs.fat -C -F 16 -n PYCARD "$T/card.img" 32768 >/dev/null || bad "mkfs.fat"
start sd --listen tcp://127.0.0.1:0 --sd "$T/card.img"
section sd "$URL" "$T/card.img"
stop sd

echo "e2e_pyclient: $pass passed, $fail failed"
[ "$fail" = 0 ]

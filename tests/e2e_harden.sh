#!/usr/bin/env bash
# e2e_harden.sh - issue 9 with the real daemon and CLI: every failure leaves
# a device that starts, serves and is repaired without a format.
#   1. the sparse-file reproduction, sent by a small Python client written
#      from docs/PROTOCOL.md (Open, Write 1 byte at 8 MiB, Close, Open again,
#      Truncate by path to 8 MiB): refused up front, nothing changes, and a
#      restart, rm, cp and verify all work;
#   2. /usr filled with cp until ENOSPC: rm always works, restart, verify;
#   3. the /bak partition overwritten with garbage: cellard starts, serves
#      /usr, `cellar info` reports it, `cellar format :/bak` + backup +
#      `verify --repair` bring it back;
#   4. a flash that is not cellar's: refused, and left as it was.
# Every wait is a bounded poll; nothing asserts on time.
#
# Env (set by `make test`): CELLARD, CELLAR (ASan builds), BUILD.
. "$(dirname "$0")/support/cellard.sh"
set -u
BUILD=${BUILD:-build}
CELLARD=${CELLARD:-$BUILD/san/cellard}
CELLAR=${CELLAR:-$BUILD/san/cellar}
PY=$(command -v /usr/bin/python3 || command -v python3)

T=$(mktemp -d "${TMPDIR:-/tmp}/e2e_harden.XXXXXX")
PID=
cleanup() {
  [ -n "$PID" ] && { kill -9 "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; }
  rm -rf "$T"
}
trap cleanup EXIT INT TERM

. "$(dirname "$0")/support/e2e.sh"

start() { cellard_start e2e_harden 4M; }
stop() {
  kill -TERM "$PID" 2>/dev/null
  for _ in $(seq 1 600); do kill -0 "$PID" 2>/dev/null || break; sleep 0.05; done
  wait "$PID" 2>/dev/null; PID=
}

# raw.py URL CMD...: a minimal protocol client (hand-encoded protobuf).
# Commands: open PATH FLAGS | write HANDLE OFFSET BYTES | close HANDLE |
# truncate PATH SIZE. Prints one line per request: "ok [handle]" or
# "err CODE message". Handles are referred to as "%" (the last opened).
cat >"$T/raw.py" <<'EOF'
import socket, struct, sys
def varint(v):
    out = b""
    while True:
        b = v & 0x7f; v >>= 7
        if v: out += bytes([b | 0x80])
        else: return out + bytes([b])
def fv(n, v): return varint(n << 3) + varint(v)
def fb(n, b): return varint(n << 3 | 2) + varint(len(b)) + b
def parse(buf):
    f, i = {}, 0
    while i < len(buf):
        key = 0; s = 0
        while True:
            c = buf[i]; i += 1; key |= (c & 0x7f) << s; s += 7
            if not c & 0x80: break
        n, t = key >> 3, key & 7
        if t == 0:
            v = 0; s = 0
            while True:
                c = buf[i]; i += 1; v |= (c & 0x7f) << s; s += 7
                if not c & 0x80: break
            f[n] = v
        elif t == 2:
            l = 0; s = 0
            while True:
                c = buf[i]; i += 1; l |= (c & 0x7f) << s; s += 7
                if not c & 0x80: break
            f[n] = buf[i:i + l]; i += l
        else: raise SystemExit("unexpected wire type")
    return f
host, port = sys.argv[1][len("tcp://"):].rsplit(":", 1)
sk = socket.create_connection((host, int(port)), timeout=60)
def call(rid, body_field, body):
    msg = fv(1, rid) + fb(body_field, body)
    sk.sendall(struct.pack("<I", len(msg)) + msg)
    hdr = b""
    while len(hdr) < 4: hdr += sk.recv(4 - len(hdr))
    n = struct.unpack("<I", hdr)[0]; data = b""
    while len(data) < n: data += sk.recv(n - len(data))
    return parse(data)
args, rid, last = sys.argv[2:], 0, 0
while args:
    cmd = args.pop(0); rid += 1
    if cmd == "open":
        p, fl = args.pop(0), int(args.pop(0)); r = call(rid, 14, fb(1, p.encode()) + fv(2, fl))
    elif cmd == "write":
        h, off, n = args.pop(0), int(args.pop(0)), int(args.pop(0))
        h = last if h == "%" else int(h)
        r = call(rid, 16, fv(1, h) + fv(2, off) + fb(3, b"x" * n))
    elif cmd == "close":
        h = args.pop(0); h = last if h == "%" else int(h); r = call(rid, 19, fv(1, h))
    elif cmd == "truncate":
        p, sz = args.pop(0), int(args.pop(0)); r = call(rid, 18, fb(2, p.encode()) + fv(3, sz))
    elif cmd == "ping":
        r = call(rid, 11, fb(1, b"p" * int(args.pop(0))))
    elif cmd == "stat":
        r = call(rid, 12, fb(1, args.pop(0).encode()))
    elif cmd == "begin":
        r = call(rid, 43, fb(1, b"\x01" * int(args.pop(0))) + fv(2, 1) + fv(3, 1))
    else: raise SystemExit("unknown command " + cmd)
    if 2 in r:
        e = parse(r[2]); print("err", e.get(1, 0), e.get(2, b"").decode(errors="replace"))
    else:
        if cmd == "open": last = parse(r[14]).get(1, 0); print("ok", last)
        else: print("ok")
EOF
raw() { "$PY" "$T/raw.py" "$URL" "$@" >"$T/raw" 2>&1; }
ENOSPC=28

start
L="$T/local"; mkdir -p "$L"
printf 'print("hello")\n' >"$L/app.py"
run 0 cp "$L/app.py" :app.py
run 0 backup
run 0 verify

# ---- 1. the sparse-file reproduction ----------------------------------------------------------
run 0 --json df; before=$(jget 'd["partitions"][0]["free"]')
raw open /usr/s.bin 6 write % 8388608 1 close %
eq "$(sed -n 2p "$T/raw" | cut -d' ' -f1-2)" "err $ENOSPC" "write 1 byte at 8 MiB"
has "holes included" "$T/raw"
eq "$(sed -n 3p "$T/raw")" "ok" "close after the refused write"
raw open /usr/s.bin 2 close %
eq "$(head -n1 "$T/raw" | cut -d' ' -f1)" "ok" "open O_WRITE of the file"
raw truncate /usr/s.bin 8388608
eq "$(cut -d' ' -f1-2 "$T/raw")" "err $ENOSPC" "truncate by path to 8 MiB"
run 0 --json df; after=$(jget 'd["partitions"][0]["free"]')
if [ $((before - after)) -lt 65536 ]; then ok; else bad "free fell from $before to $after"; fi
run 0 rm :s.bin
run 0 cp "$L/app.py" :new.py
stop; start
run 0 info; hasnt "problems:" "$T/out"
run 0 rm :new.py
run 0 verify

# ---- 1b. field caps and the path-length rule, as docs/PROTOCOL.md states them ---------------
rel254=$(printf 'a%.0s' $(seq 1 254)); rel255=${rel254}a
raw ping 64 ping 65 stat "$rel254" stat "$rel255" stat "/usr/$rel254" begin 33
eq "$(sed -n 1p "$T/raw")" "ok" "ping of 64 bytes"
eq "$(sed -n 2p "$T/raw" | cut -d' ' -f1-2)" "err 90" "ping of 65 bytes: EMSGSIZE"
has "payload is 65 bytes, the limit is 64" "$T/raw"
eq "$(sed -n 3p "$T/raw" | cut -d' ' -f1-2)" "err 2" "relative path of 254 bytes is looked up (ENOENT)"
eq "$(sed -n 4p "$T/raw" | cut -d' ' -f1-2)" "err 36" "relative path of 255 bytes: ENAMETOOLONG"
has "inside its partition" "$T/raw"
eq "$(sed -n 5p "$T/raw" | cut -d' ' -f1-2)" "err 36" "a 259-byte path as sent: ENAMETOOLONG"
eq "$(sed -n 6p "$T/raw" | cut -d' ' -f1-2)" "err 22" "a 33-byte bundle id: EINVAL"
has "bundle id is 33 bytes, it must be 32 bytes" "$T/raw"

# ---- 2. /usr full: removals always work -------------------------------------------------------
head -c 262144 /dev/urandom >"$L/big.bin"
n=0
while [ $n -lt 40 ]; do
  "$CELLAR" cp "$L/big.bin" ":big$n.bin" >"$T/out" 2>"$T/err" || break
  n=$((n + 1))
done
if [ $n -gt 4 ] && [ $n -lt 40 ]; then ok; else bad "filled /usr with $n files"; fi
has "no space" "$T/err"
run 0 mkdir -p :after
stop; start
run 0 info; hasnt "problems:" "$T/out"
i=0
while [ $i -lt $n ]; do run 0 rm ":big$i.bin"; i=$((i + 1)); done
"$CELLAR" rm ":big$n.bin" >/dev/null 2>&1 # the one refused, if it was created
run 0 rmdir :after
run 0 verify

# ---- 3. /bak overwritten: reported, /usr served, repaired ---------------------------------
run 0 --json info
first=$(jget '[p for p in d["partitions"] if p["path"] == "/bak"][0]["first_block"]')
count=$(jget '[p for p in d["partitions"] if p["path"] == "/bak"][0]["block_count"]')
stop
"$PY" - "$T/flash.img" "$first" "$count" <<'EOF'
import sys
path, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "r+b") as f:
    f.seek(first * 4096)
    f.write(bytes((i * 7 + 3) & 0xff for i in range(count * 4096)))
EOF
start
has "/bak: cannot mount" "$LOG"
run 0 info; has "not mounted" "$T/out"; has "/bak: cannot mount" "$T/out"
json 0 info
eq "$(jget '[p["state"] for p in d["partitions"]]')" "['ok', 'not mounted (format it)']" "info states"
run 0 cat :app.py
run 0 verify
run 1 verify :/bak; has "format it" "$T/err"
run 0 format --yes :/bak
run 0 backup
run 0 verify --repair
run 0 info; hasnt "problems:" "$T/out"
stop; start
run 0 info; hasnt "problems:" "$T/out"
run 0 verify :/bak
stop

# ---- 4. not a cellar flash: refused and left alone ------------------------------------------
printf 'NOT-CELLAR-BOOT' | dd of="$T/flash.img" bs=1 seek=0 conv=notrunc 2>/dev/null
"$CELLARD" --flash "$T/flash.img" --listen tcp://127.0.0.1:0 >"$T/foreign.log" 2>&1 &
fpid=$!
for _ in $(seq 1 600); do kill -0 "$fpid" 2>/dev/null || break; sleep 0.05; done
if kill -0 "$fpid" 2>/dev/null; then bad "cellard serves a foreign flash"; kill -9 "$fpid"; fi
wait "$fpid" 2>/dev/null; rc=$?
[ "$rc" != 0 ] && ok || bad "cellard exit status $rc on a foreign flash"
has "not a cellar flash image" "$T/foreign.log"
eq "$(head -c 15 "$T/flash.img")" "NOT-CELLAR-BOOT" "foreign block 0 left alone"

echo "e2e_harden: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

#!/usr/bin/env bash
# e2e_tls.sh - the tour over tls:// (issue 13): `cellar pki` makes a CA, a
# device and a client; cellard serves tls:// with mutual authentication; the
# CLI copies, lists, hashes, removes over it (options and CELLAR_* env); no
# certificate, a foreign CA and a wrong PSK are refused; the same with a PSK
# file; identities mapped to roles by an ACL (reader, a writer inside its
# prefix, admin); certificates made with the openssl command line work as
# well.
#
# Env (set by `make test`): CELLARD, CELLAR (ASan builds), BUILD.
set -u
BUILD=${BUILD:-build}
CELLARD=${CELLARD:-$BUILD/san/cellard}
CELLAR=${CELLAR:-$BUILD/san/cellar}
PY=$(command -v /usr/bin/python3 || command -v python3)

T=$(mktemp -d "${TMPDIR:-/tmp}/e2e_tls.XXXXXX")
PID=
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; fi
  rm -rf "$T"
}
trap cleanup EXIT INT TERM
. "$(dirname "$0")/support/e2e.sh"

# tls_start ARGS...: cellard on tls://127.0.0.1:0 with ARGS; sets PID, URL.
tls_start() {
  if [ -n "$PID" ]; then kill "$PID"; wait "$PID" 2>/dev/null; PID=; fi
  # a log of its own per start: the old one could still show the last
  # daemon's port before the shell truncated it for the new one
  NSTART=$((${NSTART:-0} + 1)); LOG="$T/cellard.$NSTART.log"
  "$CELLARD" --flash "$T/flash.img" --flash-size 4M --listen tls://127.0.0.1:0 \
    --idle-timeout 0 "$@" >"$LOG" 2>&1 &
  PID=$!
  URL=
  for _ in $(seq 1 600); do
    URL=$(sed -n 's/^cellard: listening on \(tls:\/\/127\.0\.0\.1:[0-9]*\).*/\1/p' "$LOG" | head -n1)
    [ -n "$URL" ] && break
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.05
  done
  if [ -z "$URL" ]; then echo "cellard did not start:" >&2; tail "$LOG" >&2
    echo "e2e_tls: $pass passed, $((fail + 1)) failed"; exit 1; fi
}

P=$T/pki
run 0 pki --help; has "pki init" "$T/out"
run 0 pki init "$P"; has "ca.crt" "$T/out"
run 0 pki device "$P" dev1
run 0 pki client "$P" alice
run 1 pki client "$P" alice; has "already exists" "$T/err"     # never overwritten
run 1 pki client "$T/nothing" bob; has "pki init" "$T/err"
run 2 pki frob
run 0 pki init "$T/other"; run 0 pki client "$T/other" mallory
run 0 pki psk bob; PSKLINE=$(cat "$T/out")
eq "$(echo "$PSKLINE" | awk '{print $1, length($2)}')" "bob 64" "pki psk line"
echo "$PSKLINE" > "$T/psk.txt"
eq "$(stat -c %a "$P/alice.key")" 600 "key file mode"

# cellard refuses bad TLS options before touching the flash
"$CELLARD" --flash "$T/x.img" --listen tls://127.0.0.1:0 >"$T/out" 2>"$T/err"
eq $? 2 "tls:// without a certificate"; has "certificate" "$T/err"
"$CELLARD" --flash "$T/x.img" --listen tls://127.0.0.1:0 --tls-cert "$P/dev1.crt" \
  --tls-key "$P/alice.key" >"$T/out" 2>"$T/err"
eq $? 2 "key of another certificate"; has "does not match" "$T/err"
"$CELLARD" --flash "$T/x.img" --tls-cert "$P/dev1.crt" >"$T/out" 2>"$T/err"
eq $? 2 "--tls-cert without tls://"
# tls:// that authenticates no client, off loopback, without an ACL: every
# client would be admin, so it is refused (issue 13, secure by default)
"$CELLARD" --flash "$T/x.img" --listen tls://0.0.0.0:0 --tls-cert "$P/dev1.crt" \
  --tls-key "$P/dev1.key" >"$T/out" 2>"$T/err"
eq $? 2 "anonymous tls:// off loopback"; has "without client authentication" "$T/err"
[ -e "$T/x.img" ] && bad "flash image made despite bad options" || ok

tls_start --tls-cert "$P/dev1.crt" --tls-key "$P/dev1.key" --tls-ca "$P/ca.crt" \
  --psk-file "$T/psk.txt"
C=(-d "$URL" --ca "$P/ca.crt" --cert "$P/alice.crt" --key "$P/alice.key")
mkdir -p "$T/app/lib"; echo 'print("hello")' > "$T/app/main.py"; echo 'X = 1' > "$T/app/lib/util.py"
head -c 200000 /dev/urandom > "$T/app/blob.bin"
run 0 "${C[@]}" cp -r "$T/app/main.py" "$T/app/lib" "$T/app/blob.bin" :
run 0 "${C[@]}" ls -l; has "main.py" "$T/out"
run 0 "${C[@]}" sha256sum :blob.bin; has "$(sha256sum "$T/app/blob.bin" | cut -c1-64)" "$T/out"
run 0 "${C[@]}" cp :blob.bin "$T/back.bin"; same "$T/app/blob.bin" "$T/back.bin"
run 0 "${C[@]}" cat :main.py; has 'print("hello")' "$T/out"
run 0 "${C[@]}" mv :main.py :boot.py
run 0 "${C[@]}" rm :lib/util.py
run 0 "${C[@]}" df
run 0 "${C[@]}" info; has "tls://" "$T/out"
json 0 "${C[@]}" ls
# the environment instead of options
CELLAR_DEVICE=$URL CELLAR_CA=$P/ca.crt CELLAR_CERT=$P/alice.crt CELLAR_KEY=$P/alice.key \
  run 0 cat :boot.py
# refusals: no client certificate, a foreign CA's, a device checked
# against the wrong CA, a wrong PSK, no CA at all
run 1 -d "$URL" --ca "$P/ca.crt" ls; has "handshake" "$T/err"
run 1 -d "$URL" --ca "$P/ca.crt" --cert "$T/other/mallory.crt" --key "$T/other/mallory.key" ls
run 1 -d "$URL" --ca "$T/other/ca.crt" --cert "$P/alice.crt" --key "$P/alice.key" ls
has "not signed by the trusted CA" "$T/err"
run 1 -d "$URL" --psk "bob:00112233" ls
run 1 -d "$URL" ls; has "CA" "$T/err"
run 2 -d "$URL" --psk; has "need a value" "$T/err"
# PSK: the line of `cellar pki psk` as IDENTITY:HEXKEY
run 0 -d "$URL" --psk "$(echo "$PSKLINE" | tr ' ' ':')" cat :boot.py; has "hello" "$T/out"
# the device is still serving everyone
run 0 "${C[@]}" ls
grep -q "Sanitizer\|runtime error" "$LOG" && bad "cellard sanitizer report" || ok

# ---- roles over tls:// (issue 13 item 2): certificate CN / PSK identity -> ACL ----
run 0 pki client "$P" ops; run 0 pki client "$P" deployer
cat > "$T/acl" <<ACL
# identity  role    prefixes
ops         admin
deployer    writer  /usr/app
alice       reader
bob         reader
ACL
tls_start --tls-cert "$P/dev1.crt" --tls-key "$P/dev1.key" --tls-ca "$P/ca.crt" \
  --psk-file "$T/psk.txt" --acl "$T/acl"
A=(-d "$URL" --ca "$P/ca.crt" --cert "$P/alice.crt" --key "$P/alice.key")
W=(-d "$URL" --ca "$P/ca.crt" --cert "$P/deployer.crt" --key "$P/deployer.key")
O2=(-d "$URL" --ca "$P/ca.crt" --cert "$P/ops.crt" --key "$P/ops.key")
run 0 "${A[@]}" info; has "identity: alice" "$T/out"; has "role: reader" "$T/out"
run 0 "${W[@]}" info; has "identity: deployer" "$T/out"; has "writer" "$T/out"
run 0 "${A[@]}" cat :boot.py; has "hello" "$T/out"                  # readers read
run 1 "${A[@]}" cp "$T/app/main.py" :x.py; has "alice (reader" "$T/err"
run 1 "${A[@]}" rm :boot.py
run 0 "${W[@]}" mkdir -p :/usr/app
run 0 "${W[@]}" cp "$T/app/main.py" :/usr/app/main.py             # inside its prefix
run 1 "${W[@]}" cp "$T/app/main.py" :/usr/elsewhere.py; has "deployer (writer" "$T/err"
run 1 "${W[@]}" mv :/usr/app/main.py :/usr/out.py                  # a rename out of it
run 1 "${W[@]}" format --yes; has "EACCES\|permission\|may not" "$T/err"
run 0 "${W[@]}" push "$T/app" :/usr/app                            # a bundle inside it
run 1 "${W[@]}" push "$T/app" :/usr/other
run 0 -d "$URL" --psk "$(echo "$PSKLINE" | tr ' ' ':')" info; has "identity: bob" "$T/out"
run 1 -d "$URL" --psk "$(echo "$PSKLINE" | tr ' ' ':')" rm :boot.py
run 0 "${O2[@]}" ls :/usr/app; has "main.py" "$T/out"
run 0 "${O2[@]}" cp "$T/app/main.py" :/usr/ops.py                 # admin does anything
run 0 "${O2[@]}" rm :/usr/ops.py
run 1 "${A[@]}" cat :ops.py                                        # (gone)
has "alice" "$LOG"                                                 # denials name who
grep -q "Sanitizer\|runtime error" "$LOG" && bad "cellard sanitizer report" || ok

# ---- certificates made with the openssl command line -----------------------------
O=$T/ossl; mkdir -p "$O"
if openssl ecparam -name prime256v1 -genkey -noout -out "$O/ca.key" 2>/dev/null &&
   openssl req -x509 -new -key "$O/ca.key" -subj "/CN=ossl-ca" -days 30 -sha256 \
     -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
     -out "$O/ca.crt" 2>/dev/null; then
  for n in dev2 carol; do
    openssl ecparam -name prime256v1 -genkey -noout -out "$O/$n.key" 2>/dev/null
    openssl req -new -key "$O/$n.key" -subj "/CN=$n" -out "$O/$n.csr" 2>/dev/null
    openssl x509 -req -in "$O/$n.csr" -CA "$O/ca.crt" -CAkey "$O/ca.key" -CAcreateserial \
      -days 30 -sha256 -out "$O/$n.crt" 2>/dev/null
  done
  # RSA too (ECDHE-RSA suites)
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$O/rsa.key" -subj "/CN=rsa-dev" \
    -days 30 -out "$O/rsa.crt" 2>/dev/null
  tls_start --tls-cert "$O/dev2.crt" --tls-key "$O/dev2.key" --tls-ca "$O/ca.crt"
  run 0 -d "$URL" --ca "$O/ca.crt" --cert "$O/carol.crt" --key "$O/carol.key" cat :boot.py
  has "hello" "$T/out"
  run 1 -d "$URL" --ca "$O/ca.crt" --cert "$P/alice.crt" --key "$P/alice.key" ls
  tls_start --tls-cert "$O/rsa.crt" --tls-key "$O/rsa.key"
  run 0 -d "$URL" --ca "$O/rsa.crt" ls
else
  bad "openssl could not make certificates"
fi

echo "e2e_tls: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

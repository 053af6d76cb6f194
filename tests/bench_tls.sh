#!/usr/bin/env bash
# bench_tls.sh - `make bench-tls` (issue 13): a 16 MiB random file up and
# down over tls:// (and plain tcp://) to an optimised cellard on loopback
# with the `cellar` CLI, beside scp of the same file to a private sshd on
# 127.0.0.1 (its own host key, key authentication, a free port) in the same
# run; each figure the median of 3. Then bench_tls's handshake bytes, round
# trips and device-side RAM. Prints a table; writes $BUILD/bench-tls.json.
set -euo pipefail
BUILD=${BUILD:-build}
CELLARD=${CELLARD:-$BUILD/cellard}
CELLAR=${CELLAR:-$BUILD/cellar}
HELPER=$BUILD/rel/tests/bench_tls
SSHD=/usr/sbin/sshd
for p in "$CELLARD" "$CELLAR" "$HELPER" "$SSHD"; do
  [ -x "$p" ] || { echo "bench_tls.sh: $p missing (run make bench-tls)" >&2; exit 1; }
done
T=$(mktemp -d "${TMPDIR:-/tmp}/bench-tls.XXXXXX")
PID= SPID=
cleanup() {
  for p in $PID $SPID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
median3() { printf '%s\n' "$@" | sort -g | sed -n 2p; }

# ---- the private sshd --------------------------------------------------------------
ssh-keygen -q -t ed25519 -N '' -f "$T/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$T/user_key"
cp "$T/user_key.pub" "$T/authorized_keys"; chmod 600 "$T/authorized_keys"
SPORT=$(free_port)
cat >"$T/sshd_config" <<CFG
Port $SPORT
ListenAddress 127.0.0.1
HostKey $T/host_key
AuthorizedKeysFile $T/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PidFile $T/sshd.pid
Subsystem sftp internal-sftp
CFG
mkdir -p /run/sshd
"$SSHD" -D -e -f "$T/sshd_config" 2>"$T/sshd.log" &
SPID=$!
SSHO=(-q -P "$SPORT" -i "$T/user_key" -o BatchMode=yes -o StrictHostKeyChecking=no
      -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR)
WHO=$(id -un)
for _ in $(seq 1 100); do
  scp "${SSHO[@]}" "$T/authorized_keys" "$WHO@127.0.0.1:$T/probe" 2>/dev/null && break
  sleep 0.1
done
[ -f "$T/probe" ] || { echo "bench_tls.sh: sshd did not come up" >&2; cat "$T/sshd.log" >&2; exit 1; }

# ---- cellard on tls:// and tcp:// ----------------------------------------------------------
P=$T/pki
"$CELLAR" pki init "$P" >/dev/null
"$CELLAR" pki device "$P" dev1 >/dev/null
"$CELLAR" pki client "$P" alice >/dev/null
"$CELLARD" --flash "$T/flash.img" --flash-size 64M --listen tls://127.0.0.1:0 \
  --listen tcp://127.0.0.1:0 --tls-cert "$P/dev1.crt" --tls-key "$P/dev1.key" \
  --tls-ca "$P/ca.crt" --idle-timeout 0 >"$T/cellard.log" 2>&1 &
PID=$!
for _ in $(seq 1 200); do
  [ "$(grep -c 'listening on' "$T/cellard.log")" = 2 ] && break; sleep 0.05
done
TLS=$(sed -n 's/^cellard: listening on \(tls:.*\)/\1/p' "$T/cellard.log")
TCP=$(sed -n 's/^cellard: listening on \(tcp:.*\)/\1/p' "$T/cellard.log")
[ -n "$TLS" ] && [ -n "$TCP" ] || { echo "bench_tls.sh: cellard did not start" >&2; cat "$T/cellard.log" >&2; exit 1; }
C=(--ca "$P/ca.crt" --cert "$P/alice.crt" --key "$P/alice.key")

FILE=$T/data16.bin
head -c $((16 * 1024 * 1024)) /dev/urandom >"$FILE"
SUM=$(sha256sum "$FILE" | cut -c1-64)
check() { [ "$(sha256sum "$1" | cut -c1-64)" = "$SUM" ] || { echo "bench_tls.sh: $1 differs" >&2; exit 1; }; }

declare -A R
for round in 1 2 3; do
  t0=$(now); scp "${SSHO[@]}" "$FILE" "$WHO@127.0.0.1:$T/scp_up.bin"; t1=$(now)
  check "$T/scp_up.bin"; rm -f "$T/scp_down.bin"
  t2=$(now); scp "${SSHO[@]}" "$WHO@127.0.0.1:$T/scp_up.bin" "$T/scp_down.bin"; t3=$(now)
  check "$T/scp_down.bin"; rm -f "$T/scp_up.bin"
  R[scp_up]+="$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}') "
  R[scp_down]+="$(awk -v a="$t2" -v b="$t3" 'BEGIN{print b-a}') "
  for kind in tls tcp; do
    url=$TLS; [ "$kind" = tcp ] && url=$TCP
    "$CELLAR" -d "$url" "${C[@]}" rm ":b_$kind.bin" >/dev/null 2>&1 || true
    rm -f "$T/back_$kind.bin"
    t0=$(now); "$CELLAR" -d "$url" "${C[@]}" cp "$FILE" ":b_$kind.bin" >/dev/null; t1=$(now)
    t2=$(now); "$CELLAR" -d "$url" "${C[@]}" cp ":b_$kind.bin" "$T/back_$kind.bin" >/dev/null; t3=$(now)
    check "$T/back_$kind.bin"
    "$CELLAR" -d "$url" "${C[@]}" rm ":b_$kind.bin" >/dev/null
    R[${kind}_up]+="$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}') "
    R[${kind}_down]+="$(awk -v a="$t2" -v b="$t3" 'BEGIN{print b-a}') "
  done
done
declare -A M
for k in scp_up scp_down tls_up tls_down tcp_up tcp_down; do
  # shellcheck disable=SC2086
  M[$k]=$(median3 ${R[$k]})
done
mib() { awk -v s="$1" 'BEGIN{printf "%.1f", 16 / s}'; }

HS=$("$HELPER" "$P")
printf '%s\n' "$HS" >"$T/hs.json"

printf '%-26s %10s %10s\n' "16 MiB, median of 3" "seconds" "MiB/s"
for k in scp_up tls_up tcp_up scp_down tls_down tcp_down; do
  printf '%-26s %10.3f %10s\n' "$k" "${M[$k]}" "$(mib "${M[$k]}")"
done
python3 - "$T/hs.json" "$BUILD/bench-tls.json" "${M[scp_up]}" "${M[scp_down]}" \
  "${M[tls_up]}" "${M[tls_down]}" "${M[tcp_up]}" "${M[tcp_down]}" <<'PY'
import json, sys
hs = json.load(open(sys.argv[1]))
su, sd, tu, td, cu, cd = map(float, sys.argv[3:9])
mb = 16.0
out = {
  "file_bytes": 16 * 1024 * 1024, "runs": 3, "statistic": "median",
  "scp": {"up_s": su, "down_s": sd, "up_mib_s": mb / su, "down_mib_s": mb / sd},
  "tls": {"up_s": tu, "down_s": td, "up_mib_s": mb / tu, "down_mib_s": mb / td},
  "tcp": {"up_s": cu, "down_s": cd, "up_mib_s": mb / cu, "down_mib_s": mb / cd},
  "tls_at_least_scp": {"up": tu <= su, "down": td <= sd},
  "handshake": hs,
}
json.dump(out, open(sys.argv[2], "w"), indent=2)
print()
print("%-12s %10s %10s %12s %16s %16s" % ("handshake", "bytes out", "bytes in", "round trips", "device RAM held", "device RAM peak"))
for k in ("full", "resumed", "psk"):
    h = hs[k]
    print("%-12s %10d %10d %12d %16d %16d" % (k, h["bytes_out"], h["bytes_in"], h["round_trips"], h["device_ram_held"], h["device_ram_peak"]))
print("mbedTLS record buffers: in %d + out %d bytes of content; ssl context %d bytes"
      % (hs["mbedtls_in_content_len"], hs["mbedtls_out_content_len"], hs["sizeof_ssl_context"]))
print("TLS >= scp: up %s, down %s" % (out["tls_at_least_scp"]["up"], out["tls_at_least_scp"]["down"]))
print("wrote", sys.argv[2])
PY

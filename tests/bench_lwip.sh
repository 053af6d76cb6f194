#!/usr/bin/env bash
# bench_lwip.sh - `make bench-lwip` (issue 14): upload and download
# throughput of cellard on lwIP beside cellard on the host's TCP stack over
# the same TAP path, and the RAM lwIP holds per connection.
#
# Network (as root; namespaces, TAP devices and addresses are the bench's
# own and are deleted at the end):
#   lwip:      [ns C: CLI, kernel TCP, tapc 10.77.0.1] --TAP fd-- [cellard: lwIP 10.77.0.2]
#   host-tap:  [ns C: CLI, kernel TCP, tape 10.77.1.1] --TAP fd-- socat --TAP fd--
#              [ns D: tapd 10.77.1.2, kernel TCP, cellard on host sockets]
#   host-lo:   [ns D: CLI and cellard on 127.0.0.1] (no TAP: the host stack's ceiling)
# In both TAP runs every Ethernet frame leaves the client's kernel through a
# TAP device and is read by one user-space process (lwIP's tapif thread in
# cellard, or socat, which writes it into a second TAP on the host stack's
# side). Each figure is the median of BENCH_LWIP_RUNS (default 5) `cellar
# cp` of a BENCH_LWIP_MB MiB random file (default 16), SHA-256 verified;
# the three daemons run side by side and the runs alternate between them,
# so a busy machine slows them alike. Flash images of 128 MiB: the runs
# never wait for the filesystem's garbage collection.
# Prints a table; writes $BUILD/bench-lwip.json. Target: lwip upload >= 50%
# of host-tap upload.
set -euo pipefail
BUILD=${BUILD:-build}
CELLARD=$(realpath "${CELLARD:-$BUILD/cellard}")
CELLAR=$(realpath "${CELLAR:-$BUILD/cellar}")
RUNS=${BENCH_LWIP_RUNS:-5}
MB=${BENCH_LWIP_MB:-16}
[ "$(id -u)" = 0 ] || { echo "bench_lwip.sh: needs root (network namespaces, TAP devices)" >&2; exit 1; }
command -v socat >/dev/null || { echo "bench_lwip.sh: socat is missing (make bench-lwip installs it)" >&2; exit 1; }

C=cellar-blc-$$
D=cellar-bld-$$
T=$(mktemp -d "${TMPDIR:-/tmp}/bench-lwip.XXXXXX")
PIDS=
cleanup() {
  for p in $PIDS; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  ip netns del "$C" 2>/dev/null || true
  ip netns del "$D" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT INT TERM

ip netns add "$C"; ip netns add "$D"
ip -n "$C" link set lo up; ip -n "$D" link set lo up
ip -n "$C" tuntap add dev tapc mode tap
ip -n "$C" addr add 10.77.0.1/24 dev tapc
ip -n "$C" link set tapc up

FILE=$T/data.bin
head -c $((MB * 1024 * 1024)) /dev/urandom >"$FILE"

# wait_up NS URL PID: the daemon answers (bounded, 10 s)
wait_up() {
  for _ in $(seq 1 100); do
    kill -0 "$3" 2>/dev/null || break
    ip netns exec "$1" "$CELLAR" -d "$2" info >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "bench_lwip.sh: cellard at $2 did not come up" >&2; cat "$T"/cellard.*.log >&2; exit 1
}
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
# one_run NS URL: one upload and one download; appends MB/s to UP_<tag>,
# DOWN_<tag> (tag = $3)
one_run() {
  local ns=$1 url=$2 tag=$3 t0 t1
  ip netns exec "$ns" "$CELLAR" -d "$url" rm :bench.bin >/dev/null 2>&1 || true
  t0=$(date +%s.%N)
  ip netns exec "$ns" "$CELLAR" -d "$url" cp "$FILE" :bench.bin >/dev/null
  t1=$(date +%s.%N)
  eval "UP_$tag+=($(awk -v s="$(secs "$t0" "$t1")" -v mb="$MB" 'BEGIN { printf "%.2f", mb * 1.048576 / s }'))"
  rm -f "$T/back.bin"
  t0=$(date +%s.%N)
  ip netns exec "$ns" "$CELLAR" -d "$url" cp :bench.bin "$T/back.bin" >/dev/null
  t1=$(date +%s.%N)
  eval "DOWN_$tag+=($(awk -v s="$(secs "$t0" "$t1")" -v mb="$MB" 'BEGIN { printf "%.2f", mb * 1.048576 / s }'))"
  cmp -s "$FILE" "$T/back.bin" || { echo "bench_lwip.sh: downloaded copy differs" >&2; exit 1; }
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

# ---- the three daemons ---------------------------------------------------------------
ip netns exec "$C" "$CELLARD" --flash "$T/lwip.img" --flash-size 128M --idle-timeout 0 \
  --insecure --stack lwip --tap tapc --ip 10.77.0.2/24 >"$T/cellard.lwip.log" 2>&1 &
LP=$!; PIDS="$LP"
# host-tap: socat attaches to both TAP devices in C, then tapd moves to D
# (its open descriptor stays attached).
ip -n "$C" tuntap add dev tape mode tap
ip -n "$C" tuntap add dev tapd mode tap
ip netns exec "$C" socat -b 65536 TUN,tun-type=tap,tun-name=tape,iff-no-pi \
  TUN,tun-type=tap,tun-name=tapd,iff-no-pi 2>"$T/socat.log" &
SP=$!; PIDS="$LP $SP"
for _ in $(seq 1 100); do # both TAP devices open (bounded, 5 s)
  [ "$(ls -l "/proc/$SP/fd" 2>/dev/null | grep -c /dev/net/tun)" -ge 2 ] && break
  sleep 0.05
done
ip -n "$C" link set tapd netns "$D"
ip -n "$C" addr add 10.77.1.1/24 dev tape
ip -n "$C" link set tape up
ip -n "$D" addr add 10.77.1.2/24 dev tapd
ip -n "$D" link set tapd up
ip netns exec "$D" "$CELLARD" --flash "$T/host.img" --flash-size 128M --idle-timeout 0 \
  --insecure --listen tcp://10.77.1.2:7070 >"$T/cellard.host.log" 2>&1 &
HP=$!
ip netns exec "$C" "$CELLARD" --flash "$T/lo.img" --flash-size 128M --idle-timeout 0 \
  --listen tcp://127.0.0.1:7070 >"$T/cellard.lo.log" 2>&1 &
OP=$!; PIDS="$LP $SP $HP $OP"
wait_up "$C" tcp://10.77.0.2:7070 "$LP"
wait_up "$C" tcp://10.77.1.2:7070 "$HP"
wait_up "$C" tcp://127.0.0.1:7070 "$OP"
UP_lw=(); DOWN_lw=(); UP_ht=(); DOWN_ht=(); UP_lo=(); DOWN_lo=()
for _ in $(seq 1 "$RUNS"); do
  one_run "$C" tcp://10.77.0.2:7070 lw
  one_run "$C" tcp://10.77.1.2:7070 ht
  one_run "$C" tcp://127.0.0.1:7070 lo
done
LW_UP=$(median "${UP_lw[@]}"); LW_DOWN=$(median "${DOWN_lw[@]}")
HT_UP=$(median "${UP_ht[@]}"); HT_DOWN=$(median "${DOWN_ht[@]}")
LO_UP=$(median "${UP_lo[@]}"); LO_DOWN=$(median "${DOWN_lo[@]}")
for p in $LP $HP $OP $SP; do stop "$p"; done; PIDS=
grep 'lwip:' "$T/cellard.lwip.log" >"$T/lwip.report" || true

# ---- RAM per connection, from cellard's lwIP report ------------------------------------
num() { sed -n "s/.*$1 \([0-9][0-9]*\).*/\1/p" "$T/lwip.report" | head -n1; }
RAM=$(num ram_per_conn)
PCB=$(num "tcp_pcb")
POOL=$(num "pbuf_pool")
SEG=$(num "tcp_seg")
SLOT=$(num "slot")
WND=$(num TCP_WND)
SNDBUF=$(num TCP_SND_BUF)
RXB=$(sed -n 's/.*peak: rx \([0-9]*\) bytes in \([0-9]*\) pbufs (\([0-9]*\) B).*/\1 \2 \3/p' "$T/lwip.report")
TXB=$(sed -n 's/.*tx \([0-9]*\) bytes unacked in \([0-9]*\) pbufs (\([0-9]*\) B).*/\1 \2 \3/p' "$T/lwip.report")
read -r RX_BYTES RX_PBUFS RX_RAM <<<"$RXB"
read -r TX_BYTES TX_PBUFS TX_RAM <<<"$TXB"
RATIO_UP=$(awk -v a="$LW_UP" -v b="$HT_UP" 'BEGIN { printf "%.0f", 100 * a / b }')
RATIO_DOWN=$(awk -v a="$LW_DOWN" -v b="$HT_DOWN" 'BEGIN { printf "%.0f", 100 * a / b }')

printf '\nbench-lwip: %d MiB file, median of %d, MB/s (10^6 bytes)\n' "$MB" "$RUNS"
printf '%-34s %10s %10s\n' path upload download
printf '%-34s %10s %10s\n' "lwip (cellard on lwIP, TAP)" "$LW_UP" "$LW_DOWN"
printf '%-34s %10s %10s\n' "host stack over TAP+socat+TAP" "$HT_UP" "$HT_DOWN"
printf '%-34s %10s %10s\n' "host stack, loopback (no TAP)" "$LO_UP" "$LO_DOWN"
printf '%-34s %s / %s\n' "  runs lwip up / down" "${UP_lw[*]}" "${DOWN_lw[*]}"
printf '%-34s %s / %s\n' "  runs host-tap up / down" "${UP_ht[*]}" "${DOWN_ht[*]}"
printf '%-34s %9s%% %9s%%   (target: upload >= 50%%)\n' "lwip / host over TAP" "$RATIO_UP" "$RATIO_DOWN"
printf '\nlwIP RAM per connection (Debian liblwip: TCP_WND %s, TCP_SND_BUF %s; MEMP_MEM_MALLOC)\n' "$WND" "$SNDBUF"
printf '  tcp_pcb                        %7s B\n' "$PCB"
printf '  received, not yet taken (peak) %7s B  (%s bytes in %s pbufs of %s B)\n' "$RX_RAM" "$RX_BYTES" "$RX_PBUFS" "$POOL"
printf '  send buffer (peak)             %7s B  (%s bytes unacked, %s pbufs + tcp_seg %s B)\n' "$TX_RAM" "$TX_BYTES" "$TX_PBUFS" "$SEG"
printf '  tp_lwip slot                   %7s B\n' "$SLOT"
printf '  total                          %7s B\n' "$RAM"

mkdir -p "$BUILD"
cat >"$BUILD/bench-lwip.json" <<EOF
{
  "file_mib": $MB,
  "runs": $RUNS,
  "lwip": { "upload_MBps": $LW_UP, "download_MBps": $LW_DOWN },
  "host_tap": { "upload_MBps": $HT_UP, "download_MBps": $HT_DOWN },
  "host_loopback": { "upload_MBps": $LO_UP, "download_MBps": $LO_DOWN },
  "lwip_vs_host_tap_pct": { "upload": $RATIO_UP, "download": $RATIO_DOWN },
  "upload_target_met": $([ "$RATIO_UP" -ge 50 ] && echo true || echo false),
  "lwip_ram_per_conn": {
    "tcp_wnd": $WND, "tcp_snd_buf": $SNDBUF,
    "tcp_pcb_bytes": $PCB, "pbuf_pool_elem_bytes": $POOL, "tcp_seg_bytes": $SEG,
    "rx_held_peak_bytes": $RX_BYTES, "rx_held_peak_pbufs": $RX_PBUFS, "rx_ram_bytes": $RX_RAM,
    "tx_unacked_peak_bytes": $TX_BYTES, "tx_queue_peak_pbufs": $TX_PBUFS, "tx_ram_bytes": $TX_RAM,
    "tp_lwip_slot_bytes": $SLOT, "total_bytes": $RAM
  }
}
EOF
echo "bench-lwip: wrote $BUILD/bench-lwip.json"

# cellard.sh - sourced by the shell tests and benchmarks.
#
# cellard_url LOG PID: wait (bounded: 30 s) for "cellard: listening on URL"
# in LOG and print the URL; prints nothing if cellard exits or never
# listens.
cellard_url() {
  local log=$1 pid=$2 url=
  for _ in $(seq 1 600); do
    url=$(sed -n 's/^cellard: listening on \(tcp:\/\/127\.0\.0\.1:[0-9]*\).*/\1/p' "$log" | head -n1)
    [ -n "$url" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  printf '%s' "$url"
}

# cellard_start NAME SIZE: start $CELLARD on $T/flash.img (created with SIZE
# if new) on a free loopback port, logging to $T/cellard.N.log (N counts the
# starts); sets PID, URL, LOG and CELLAR_DEVICE. Exits the test if it does
# not come up.
NSTART=0
cellard_start() {
  NSTART=$((NSTART + 1))
  LOG="$T/cellard.$NSTART.log"
  "$CELLARD" --flash "$T/flash.img" --flash-size "$2" --listen tcp://127.0.0.1:0 \
    --idle-timeout 0 >"$LOG" 2>&1 &
  PID=$!
  URL=$(cellard_url "$LOG" "$PID")
  if [ -z "$URL" ]; then
    echo "$1: cellard did not start:" >&2; tail -20 "$LOG" >&2
    echo "$1: ${pass:-0} passed, $((${fail:-0} + 1)) failed"; exit 1
  fi
  export CELLAR_DEVICE=$URL
}

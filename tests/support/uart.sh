# uart.sh - the serial line emulator for the shell tests and benchmarks
# (issue 12); source after setting T (a temp dir) and BUILD.
#
# relay_start BAUD [uart_relay options...]: start $BUILD/uart_relay with
#   two pty pairs at $T/dev (the device's end) and $T/host (the client's);
#   sets RELAY (pid). Bounded: the relay stops by itself after 600 s.
# relay_stop: stop it (it writes its counters first).
# relay_wire: the bytes it has paced so far, both directions added.
# relay_dir a_to_b|b_to_a: one direction's paced bytes.
RELAY=
relay_start() {
  local baud=$1; shift
  rm -f "$T/relay.json" "$T/relay.out"
  "$BUILD/uart_relay" --a "$T/dev" --b "$T/host" --baud "$baud" \
    --stats "$T/relay.json" --seconds 600 "$@" >"$T/relay.out" 2>&1 &
  RELAY=$!
  for _ in $(seq 1 100); do
    grep -q ready "$T/relay.out" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "uart_relay did not start: $(cat "$T/relay.out")" >&2
  return 1
}
relay_stop() {
  [ -n "$RELAY" ] || return 0
  kill "$RELAY" 2>/dev/null; wait "$RELAY" 2>/dev/null; RELAY=
}
relay_dump() {
  rm -f "$T/relay.json"
  kill -USR1 "$RELAY" 2>/dev/null
  for _ in $(seq 1 100); do [ -s "$T/relay.json" ] && return 0; sleep 0.02; done
  return 1
}
relay_dir() {
  relay_dump && python3 -c "import json; print(json.load(open('$T/relay.json'))['$1'])"
}
relay_wire() {
  relay_dump && python3 -c "import json; d=json.load(open('$T/relay.json')); print(d['a_to_b'] + d['b_to_a'])"
}

# cellard_uart_start NAME SIZE BAUD: start $CELLARD on $T/flash.img listening
# on uart:$T/dev; sets PID, LOG and CELLAR_DEVICE (uart:$T/host). Exits the
# test if it does not come up.
NSTART=${NSTART:-0}
cellard_uart_start() {
  NSTART=$((NSTART + 1))
  LOG="$T/cellard.$NSTART.log"
  "$CELLARD" --flash "$T/flash.img" --flash-size "$2" \
    --listen "uart:$T/dev?baud=$3" --idle-timeout 0 >"$LOG" 2>&1 &
  PID=$!
  for _ in $(seq 1 600); do
    grep -q "^cellard: listening on uart:" "$LOG" && break
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.05
  done
  if ! grep -q "^cellard: listening on uart:" "$LOG"; then
    echo "$1: cellard did not start:" >&2; tail -20 "$LOG" >&2
    echo "$1: ${pass:-0} passed, $((${fail:-0} + 1)) failed"; exit 1
  fi
  export CELLAR_DEVICE="uart:$T/host?baud=$3"
}

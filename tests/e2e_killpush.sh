#!/usr/bin/env bash
# e2e_killpush.sh - cellard killed with SIGKILL at random moments during
# pushes of two alternating bundles (KILLPUSH_ROUNDS, default 200). After
# every kill cellard restarts on the same flash image (recovery, then the
# startup check) and the device must hold exactly bundle A, exactly bundle
# B, or (before the first push lands) nothing: its /usr/app manifest is one
# of those, `cellar verify` finds every file matching it and nothing
# untracked. At the end the image must pass `cellar image check`.
# Loopback only; every wait is bounded.
. "$(dirname "$0")/support/cellard.sh"
set -u
BUILD=${BUILD:-build}
CELLARD=${CELLARD:-$BUILD/san/cellard}
CELLAR=${CELLAR:-$BUILD/san/cellar}
ROUNDS=${KILLPUSH_ROUNDS:-200}
for p in "$CELLARD" "$CELLAR"; do
  [ -x "$p" ] || { echo "e2e_killpush: $p not built" >&2; exit 1; }
done

T=$(mktemp -d "${TMPDIR:-/tmp}/e2e_killpush.XXXXXX")
PID=
BG=
cleanup() {
  for p in $BG $PID; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  [ -n "${KILLPUSH_KEEP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT INT TERM

PY=python3
. "$(dirname "$0")/support/e2e.sh"

start_cellard() { cellard_start e2e_killpush 8M; }

# Two bundles over the same paths, each with files the other lacks.
python3 - "$T" <<'EOF'
import os, random, sys
root = sys.argv[1]
for name, seed in (("A", 1), ("B", 2)):
    rnd = random.Random(seed)
    for i in range(24):
        if (name == "A" and i % 6 == 5) or (name == "B" and i % 6 == 4):
            continue  # a file only the other bundle has
        d = os.path.join(root, name, "lib" if i % 3 else "", "sub" if i % 4 == 0 else "")
        os.makedirs(d, exist_ok=True)
        size = rnd.choice([0, 100, 3000, 20000, 70000])
        with open(os.path.join(d, "f%02d.py" % i), "wb") as f:
            f.write(bytes(rnd.getrandbits(8) for _ in range(size)))
EOF
# The manifest lines each bundle gives (as `cellar manifest` prints them).
expect() {
  (cd "$T/$1" && find . -type f | sort | while read -r f; do
    printf '%s  %s  /usr/app/%s\n' "$(sha256sum "$f" | cut -d' ' -f1)" \
      "$(stat -c %s "$f")" "${f#./}"
  done) | sort -k3
}
expect A >"$T/want.A"
expect B >"$T/want.B"
: >"$T/want.none"

state() { # prints A, B, none or ?
  "$CELLAR" manifest >"$T/man" 2>"$T/man.err" || { echo "?"; return; }
  grep '  /usr/app/' "$T/man" | sort -k3 >"$T/got"
  for s in A B none; do
    if cmp -s "$T/got" "$T/want.$s"; then echo "$s"; return; fi
  done
  echo "?"
}

start_cellard
declare -A seen
kills=0
for i in $(seq 1 "$ROUNDS"); do
  b=$([ $((i % 2)) = 1 ] && echo A || echo B)
  "$CELLAR" push "$T/$b" :/usr/app --delete >"$T/push.out" 2>&1 &
  BG=$!
  # a random moment between 0 and 45 ms: a push here takes about 30 ms
  # (the CLI starting, staging, the commit), so the kills land all over it
  sleep "0.$(printf '%03d' $((RANDOM % 45)))"
  kill -9 "$PID" 2>/dev/null
  wait "$PID" 2>/dev/null
  kills=$((kills + 1))
  # the CLI ends on its own: done, or failed on the dead connection
  for _ in $(seq 1 200); do kill -0 "$BG" 2>/dev/null || break; sleep 0.05; done
  kill -9 "$BG" 2>/dev/null
  wait "$BG" 2>/dev/null
  BG=
  start_cellard
  s=$(state)
  seen[$s]=$(( ${seen[$s]:-0} + 1 ))
  if [ "$s" = "?" ]; then
    bad "round $i (bundle $b): /usr/app is neither A nor B nor empty"
    diff "$T/got" "$T/want.$b" | head -10 >&2
  else
    ok
  fi
  if "$CELLAR" verify >"$T/verify.out" 2>&1; then ok; else
    bad "round $i: verify after the restart"; head -5 "$T/verify.out" >&2
  fi
done

# Finally a push to the end: exactly A.
if "$CELLAR" push "$T/A" :/usr/app --delete >"$T/push.out" 2>&1; then ok; else
  bad "final push"; cat "$T/push.out" >&2; fi
[ "$(state)" = A ] && ok || bad "final state is not A"
kill "$PID"; wait "$PID" 2>/dev/null; PID=
if "$CELLAR" image check "$T/flash.img" >"$T/check.out" 2>&1; then ok; else
  bad "image check"; cat "$T/check.out" >&2; fi
echo "e2e_killpush: cellard logs: $(cat "$T"/cellard.*.log | grep -c 'finished the committed update') updates rolled forward at startup, $(cat "$T"/cellard.*.log | grep -c 'kept for a resume') staged updates kept, $(cat "$T"/cellard.*.log | grep -c 'check: restored') files restored by the check"
echo "e2e_killpush: $kills kills; states after restart: A ${seen[A]:-0}, B ${seen[B]:-0}, empty ${seen[none]:-0}, other ${seen[?]:-0}"
echo "e2e_killpush: $pass passed, $fail failed"
[ "$fail" = 0 ]

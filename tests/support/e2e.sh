# e2e.sh - checks for the shell tests; source after setting T (a temp dir),
# CELLAR and PY.
#   ok / bad MSG          count a pass / a failure (printed)
#   run CODE ARGS...      run cellar, stdout in $T/out, stderr in $T/err;
#                         the exit status must be CODE, and stderr must hold
#                         no sanitizer report (a leak also exits 1)
#   json CODE ARGS...     run with --json: one valid JSON object whose "ok"
#                         matches the exit status
#   jget EXPR             python EXPR on the JSON in $T/out (as d)
#   has / hasnt TEXT FILE, same FILE1 FILE2, eq GOT WANT WHAT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }

run() {
  local want=$1; shift
  "$CELLAR" "$@" >"$T/out" 2>"$T/err"
  local got=$?
  if [ "$got" = "$want" ]; then ok; else
    bad "cellar $* -> exit $got, want $want"; sed 's/^/  stderr: /' "$T/err" | head -5 >&2
  fi
  if grep -q "Sanitizer\|runtime error" "$T/err"; then
    bad "cellar $*: sanitizer report"; grep -m3 "Sanitizer\|runtime error\|#[0-3] " "$T/err" >&2; fi
}
json() {
  local want=$1; shift
  run "$want" --json "$@"
  if "$PY" -m json.tool <"$T/out" >/dev/null 2>&1; then ok; else
    bad "cellar --json $*: invalid JSON"; head -c 300 "$T/out" >&2; fi
  local okv
  okv=$("$PY" -c 'import json,sys; print(json.load(sys.stdin)["ok"])' <"$T/out" 2>/dev/null)
  if { [ "$want" = 0 ] && [ "$okv" = True ]; } || { [ "$want" != 0 ] && [ "$okv" = False ]; }; then
    ok; else bad "cellar --json $*: ok=$okv for exit $want"; fi
}
jget() { "$PY" -c "import json,sys; d=json.load(open('$T/out')); print($1)"; }
has() { if grep -qi -- "$1" "$2"; then ok; else bad "'$1' not in $2: $(head -c 300 "$2")"; fi; }
hasnt() { if grep -qi -- "$1" "$2"; then bad "'$1' unexpectedly in $2"; else ok; fi; }
same() { if cmp -s "$1" "$2"; then ok; else bad "$1 and $2 differ"; fi; }
eq() { if [ "$1" = "$2" ]; then ok; else bad "$3: got '$1', want '$2'"; fi; }

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

# readme_tour DIR: the README's tour in DIR (made), against $CELLAR_DEVICE:
# a first copy, ls, tree, sha256sum, unchanged files skipped, cat, mv, rm,
# df, ls --json, push with a change, --dry-run and --delete, manifest,
# verify, backup, rm + restore, verify --repair. Leaves the shell in DIR.
readme_tour() {
  mkdir -p "$1/app/lib" && cd "$1" || { bad "readme_tour: cannot make $1"; return 1; }
  echo 'print("hello")' >app/main.py
  echo 'X = 1' >app/lib/util.py
  run 0 cp -r app/main.py app/lib :
  run 0 ls -l;            has main.py "$T/out"
  run 0 tree;             has util.py "$T/out"
  run 0 sha256sum :main.py app/main.py
  eq "$(awk '{print $1}' "$T/out" | sort -u | wc -l)" 1 "sha256 device = local"
  run 0 cp -r app/main.py app/lib :
  run 0 cat :main.py;     has 'print("hello")' "$T/out"
  run 0 mv :main.py :boot.py
  run 0 rm :lib/util.py
  run 0 df;               has /usr "$T/out"
  json 0 ls
  run 0 push app :/usr/app
  echo 'X = 2' >app/lib/util.py
  run 0 push app :/usr/app --dry-run; has "1 changed" "$T/out"
  run 0 push app :/usr/app
  run 0 push app :/usr/app --delete
  run 0 manifest;         has /usr/app/lib/util.py "$T/out"
  run 0 verify
  run 0 backup
  run 0 rm :/usr/app/main.py
  run 0 restore :/usr/app/main.py
  run 0 cat :/usr/app/main.py; has 'print("hello")' "$T/out"
  run 0 verify --repair
}

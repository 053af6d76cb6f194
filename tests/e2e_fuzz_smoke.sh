#!/usr/bin/env bash
# e2e_fuzz_smoke.sh - build each libFuzzer target and run it briefly
# (FUZZ_SMOKE_SECONDS, default 15 s each). Passes if nothing crashes.
# Skipped (passes) when clang or libFuzzer is not available.
# fuzz_svc_seq (request sequences against the protocol model) skips
# "overlap" by default, as test_svc_model; SVC_MODEL_SKIP=LIST
# (test_svc_model's --skip-known names, "none" = check everything) sets it.
set -u
BUILD=${BUILD:-build}
SECS=${FUZZ_SMOKE_SECONDS:-15}
cd "$(dirname "$0")/.."

if ! command -v clang >/dev/null 2>&1; then
    echo "fuzz smoke: clang not found, skipped"
    exit 0
fi
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n){(void)d;(void)n;return 0;}\n' > "$probe/p.c"
if ! clang -fsanitize=fuzzer "$probe/p.c" -o "$probe/p" 2>/dev/null; then
    echo "fuzz smoke: clang has no libFuzzer (libclang-rt-dev), skipped"
    exit 0
fi

status=0
for src in tests/fuzz_*.c; do
    name=$(basename "$src" .c)
    bin="$BUILD/fuzz/$name"
    if ! make -s BUILD="$BUILD" "$bin" >"$probe/$name.build" 2>&1; then
        echo "fuzz smoke: $name does not build:"
        tail -30 "$probe/$name.build"
        status=1
        continue
    fi
    corpus="$probe/corpus-$name"
    mkdir -p "$corpus"
    echo "fuzz smoke: $name for ${SECS}s"
    if ! "$bin" -max_total_time="$SECS" -max_len=20000 -rss_limit_mb=2048 \
            -artifact_prefix="$BUILD/fuzz/$name-" \
            "$corpus" >"$probe/$name.log" 2>&1; then
        echo "fuzz smoke: $name FAILED (input saved as $BUILD/fuzz/$name-*):"
        tail -60 "$probe/$name.log"
        status=1
    else
        grep -E "^#[0-9]+ *DONE" "$probe/$name.log" | tail -1 || true
    fi
done
exit $status

#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 30), one after another.
# Fails on the first crash, timeout or leak libFuzzer reports; prints the executions per
# target. Usage: fuzz/smoke.sh [SECONDS]
#
# Uses the nightly toolchain when it can build the targets; otherwise stable with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz needs -Z flags). Extra libFuzzer flags can be passed in
# FUZZ_ARGS, e.g. FUZZ_ARGS="-jobs=1".
set -euo pipefail

seconds="${1:-30}"
case "$seconds" in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

cd "$(dirname "$0")"

if cargo +nightly fuzz build --debug-assertions >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
    echo "toolchain: nightly"
else
    echo "toolchain: stable with RUSTC_BOOTSTRAP=1 (nightly unavailable or failing)"
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
    "${fuzz[@]}" build --debug-assertions
fi

targets=$("${fuzz[@]}" list)
logdir=$(mktemp -d)
trap 'rm -rf "$logdir"' EXIT
summary=()

for target in $targets; do
    corpus="corpus/$target"
    mkdir -p "$corpus"
    dirs=("$corpus")
    if [ -d "seeds/$target" ]; then
        dirs+=("seeds/$target")
    fi
    log="$logdir/$target.log"
    echo "== $target: ${seconds}s"
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    if ! "${fuzz[@]}" run --debug-assertions "$target" "${dirs[@]}" -- \
        -max_total_time="$seconds" -print_final_stats=1 ${FUZZ_ARGS:-} >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "FAIL: $target crashed (artifacts in fuzz/artifacts/$target)" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    if [ -z "$runs" ]; then
        runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
    fi
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
    summary+=("$target: ${runs:-?} executions in ${seconds}s${cov:+ ($cov)}")
done

echo "== summary"
printf '%s\n' "${summary[@]}"

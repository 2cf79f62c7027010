#!/usr/bin/env bash
# Coverage-guided fuzzing (AFL++ through cargo-afl, stable toolchain) of every decoder that takes
# bytes from a file or the network: the topology loader, peer records, the message codec, the
# event-line parser, the probe's lines and the router's STUN answer (fuzz/targets/).
#   ci/fuzz.sh [SECONDS] [TARGET...]     (default 60 s each, every target)
#   ci/fuzz.sh --build                   (the tools and the instrumented targets only: .ci/run
#                                         builds them early, in the background)
# FUZZ_EXECS=N stops a target after N executions instead, if that comes first (the full campaign:
# FUZZ_EXECS=10000000 ci/fuzz.sh 1800). AFL_OPT_LEVEL (cargo-afl's, default 3) sets the targets'
# optimisation: .ci/run's short run uses 1, for a build about a minute quicker.
# Installs cargo-afl and builds AFL++ when missing, builds the targets instrumented, seeds each
# from the repository (topologies, node/EVENTS.md, fuzz/seeds/), then runs each for SECONDS and
# prints one line per target:
#   fuzz TARGET: EXECS execs in S s (E/s), paths P, crashes C, hangs H
# Findings stay in target/fuzz/TARGET/default/{crashes,hangs}; each crash found becomes a file in
# fuzz/regressions/TARGET/, replayed by the crate's unit tests. Exit 0 only with no crash.
set -euo pipefail
cd "$(dirname "$0")/.."
build_only=
if [ "${1:-}" = --build ]; then
    build_only=1
    shift
fi
secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(topology peer_record message event_line probe stun)
fi

if ! cargo afl --version >/dev/null 2>&1; then
    echo "== cargo install cargo-afl"
    cargo install --quiet cargo-afl
fi
# AFL++ itself, built once per toolchain (cargo-afl's install builds it; this refuses, harmlessly,
# when it is there)
cargo afl config --build >/dev/null 2>&1 || true
echo "== cargo afl build --release (fuzz/)"
(cd fuzz && cargo afl build --release --quiet)
[ -z "$build_only" ] || exit 0

out=${CARGO_TARGET_DIR:-target}/fuzz
mkdir -p "$out"
seeds() { # TARGET DIR: the seed inputs
    local t=$1 d=$2
    rm -rf "$d"
    mkdir -p "$d"
    case $t in
    topology) cp topologies/*.yaml "$d"/ ;;
    event_line)
        # every example line of the events' documentation
        grep -o '^{"[^`]*}' node/EVENTS.md | head -200 | split -l 1 - "$d/line-" ;;
    *) ;;
    esac
    if [ -d "fuzz/seeds/$t" ]; then cp "fuzz/seeds/$t"/* "$d"/; fi
    if [ -d "fuzz/regressions/$t" ]; then cp "fuzz/regressions/$t"/* "$d"/ 2>/dev/null || true; fi
    [ -n "$(ls -A "$d")" ] || printf 'x' >"$d/empty"
}

status=0
for t in "${targets[@]}"; do
    seeds "$t" "$out/$t-seeds"
    rm -rf "${out:?}/$t"
    AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_QUIET=1 \
        cargo afl fuzz -V "$secs" ${FUZZ_EXECS:+-E "$FUZZ_EXECS"} -i "$out/$t-seeds" -o "$out/$t" \
        "fuzz/target/release/$t" >"$out/$t.log" 2>&1 || {
        echo "fuzz $t: afl-fuzz failed (see $out/$t.log)"
        tail -5 "$out/$t.log"
        status=1
        continue
    }
    stats="$out/$t/default/fuzzer_stats"
    get() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$stats"; }
    execs=$(get execs_done)
    run=$(get run_time)
    crashes=$(get saved_crashes)
    hangs=$(get saved_hangs)
    paths=$(get corpus_count)
    echo "fuzz $t: $execs execs in ${run} s ($(get execs_per_sec)/s), paths $paths, crashes $crashes, hangs $hangs"
    if [ "${crashes:-0}" != 0 ]; then
        status=1
        ls "$out/$t/default/crashes"
    fi
done
exit $status

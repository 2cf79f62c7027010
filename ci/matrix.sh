#!/usr/bin/env bash
# The full NAT matrix (topologies/matrix/, written by `p2plab matrix` from the rule in
# harness/src/plan/matrix.rs): every kind of router a listener sits behind against every kind a
# dialer sits behind, TCP and QUIC, each pair's outcome asserted; and peers behind one router with
# and without hairpinning. Each lab runs REPEAT times with `p2plab run --repeat`; reports go to
# target/ci/matrix-<lab>/ (events.jsonl, results.json, junit.xml, summary.md, index.html).
#   ci/matrix.sh [REPEAT] [LAB...]      (default 1, every lab; e.g. ci/matrix.sh 3 home cgnat)
# Prints each lab's time and verdict; exit 0 only if every run of every lab held. With
# MATRIX_RETRY=1 (.ci/run) a failed lab runs once more and passes as "flaky" if that run holds:
# the first failure stays in the log and in the summary. Needs a Docker
# engine; builds the node image when it is missing or stale (offline, see docker/build-image.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
repeat=${1:-1}
shift || true
labs=("$@")
if [ ${#labs[@]} -eq 0 ]; then
    labs=()
    for f in topologies/matrix/*.yaml; do labs+=("$(basename "$f" .yaml)"); done
fi

# the image from the dev-profile node binaries `cargo test` has built (a release build would
# cost a cold compile here); P2PLAB_CARGO_PROFILE=release to test release builds
export P2PLAB_CARGO_PROFILE=${P2PLAB_CARGO_PROFILE:-dev}
cargo build -q -p p2plab --bin p2plab
bin=${CARGO_TARGET_DIR:-target}/debug/p2plab
status=0
summary=()
for lab in "${labs[@]}"; do
    t=topologies/matrix/$lab.yaml
    [ -f "$t" ] || { echo "ci/matrix.sh: no lab $t" >&2; exit 2; }
    echo "== p2plab run $t --repeat $repeat"
    start=$(date +%s)
    report=${CARGO_TARGET_DIR:-target}/ci/matrix-$lab
    if "$bin" run "$t" --repeat "$repeat" --report "$report"; then
        verdict=pass
    elif [ "${MATRIX_RETRY:-0}" = 1 ] && { echo "== $lab failed: once more"; "$bin" run "$t" --report "$report-retry"; }; then
        verdict="flaky (failed, then held)"
    else
        verdict=FAIL
        status=1
    fi
    summary+=("$lab: $verdict in $(( $(date +%s) - start )) s")
done
echo "== NAT matrix, $repeat run(s) per lab"
printf '%s\n' "${summary[@]}"
exit $status

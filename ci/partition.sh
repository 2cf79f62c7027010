#!/usr/bin/env bash
# The partition scenarios, each run REPEAT times with `p2plab run --repeat`: how often they hold,
# with a 95% interval per expectation (results.json, summary.md). Reports go to
# target/ci/<scenario>/ (events.jsonl, results.json, junit.xml, summary.md, index.html).
#   ci/partition.sh [REPEAT] [SCENARIO...]   (default 3, partition.yaml and partition-bridge.yaml)
# Exit 0 only if every run of every scenario held. Needs a Docker engine; builds the node image
# when it is missing or stale (offline, see docker/build-image.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
repeat=${1:-3}
shift || true
scenarios=("$@")
if [ ${#scenarios[@]} -eq 0 ]; then
    scenarios=(topologies/partition.yaml topologies/partition-bridge.yaml)
fi

# the image from the dev-profile node binaries `cargo test` has built (a release build would
# cost a cold compile here); P2PLAB_CARGO_PROFILE=release to test release builds
export P2PLAB_CARGO_PROFILE=${P2PLAB_CARGO_PROFILE:-dev}
cargo build -q -p p2plab --bin p2plab
bin=${CARGO_TARGET_DIR:-target}/debug/p2plab
status=0
for t in "${scenarios[@]}"; do
    name=$(basename "$t" .yaml)
    echo "== p2plab run $t --repeat $repeat"
    if ! "$bin" run "$t" --repeat "$repeat" --report "${CARGO_TARGET_DIR:-target}/ci/$name"; then
        status=1
    fi
done
exit $status

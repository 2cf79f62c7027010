#!/usr/bin/env bash
# The flood (topologies/flood.yaml): one host with 1,000 made-up identities against the bootstrap
# node, honest peers beside it and elsewhere. Prints what the flood got (`bench flood`'s
# flood_result: connections refused, reservations and circuits denied, streams the node closed),
# the bootstrap node's largest RSS, and whether the honest peers were served (the expectations).
# The report goes to target/ci/flood/.
#   ci/flood.sh [REPEAT]        (default 1)
# Exit 0 only if every expectation of every run held. Needs a Docker engine; builds the node
# image when it is missing or stale.
set -euo pipefail
cd "$(dirname "$0")/.."
repeat=${1:-1}
export P2PLAB_CARGO_PROFILE=${P2PLAB_CARGO_PROFILE:-dev}
cargo build -q -p p2plab --bin p2plab
bin=${CARGO_TARGET_DIR:-target}/debug/p2plab
out=${CARGO_TARGET_DIR:-target}/ci/flood
status=0
"$bin" run topologies/flood.yaml --repeat "$repeat" --report "$out" || status=$?
if [ -f "$out/events.jsonl" ]; then
    echo "== what the flood got"
    grep 'flood_result' "$out/events.jsonl" | sed -e 's/.*"line":"//' -e 's/"}$//' -e 's/\\"/"/g' \
        || echo "(no flood_result: the flood did not finish)"
    echo "== the bootstrap node's largest RSS (KiB) and most connections"
    grep '"node":"boot"' "$out/events.jsonl" | grep '"event":"resources"' \
        | sed -E 's/.*"rss_kb":([0-9]+).*"connections":([0-9]+).*/\1 \2/' \
        | sort -n | tail -1 | awk '{print "rss_kb " $1 ", connections then " $2}'
fi
exit $status

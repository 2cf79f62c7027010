#!/usr/bin/env bash
# The soak (topologies/soak.yaml): the production picture churning for MINUTES minutes, then
# its figures: messages delivered, lost and delivered twice, and how much RSS and open file
# descriptors grew on the long-lived nodes (the `flat` expectations). The report, with each
# node's resources curve, goes to target/ci/soak/ (summary.md, results.json, events.jsonl).
#   ci/soak.sh [MINUTES]        (default 60; 5 in .ci/run)
# Below 20 minutes the `flat` windows start after 3 minutes instead of 10 (the hour's curve: the
# bootstrap nodes' RSS settles in its first 3 minutes, docs/reliability.md section 6).
# Exit 0 only if every expectation held. Needs a Docker engine; builds the node image when it is
# missing or stale.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-60}
if ! [[ "$minutes" =~ ^[0-9]+$ ]] || (( minutes < 5 || minutes > 1440 )); then
    echo "ci/soak.sh: MINUTES must be a whole number from 5 to 1440, got '$minutes'" >&2
    exit 2
fi
export P2PLAB_CARGO_PROFILE=${P2PLAB_CARGO_PROFILE:-dev}
cargo build -q -p p2plab --bin p2plab
bin=${CARGO_TARGET_DIR:-target}/debug/p2plab
out=${CARGO_TARGET_DIR:-target}/ci/soak
mkdir -p "$out"
topo="$out/soak-${minutes}m.yaml"
count=$(( (minutes - 2) * 60 ))
after=10m
(( minutes < 20 )) && after=3m
# the values marked "scaled" in topologies/soak.yaml, and nothing else
sed -e "s/^timeout: 65m /timeout: $((minutes + 5))m /" \
    -e "s/count: 3480/count: $count/g" \
    -e "s/until: 57m/until: $((minutes - 3))m/g" \
    -e "s/after: 10m/after: $after/g" \
    topologies/soak.yaml > "$topo"
"$bin" validate "$topo" >/dev/null
echo "== p2plab run soak ($minutes min: $count messages to each of 3 listeners, flat after $after)"
start=$(date +%s)
status=0
"$bin" run "$topo" --report "$out" || status=$?
echo "== soak: $(( $(date +%s) - start )) s, exit $status"
if command -v jq >/dev/null 2>&1 && [ -f "$out/results.json" ]; then
    jq -r '.. | objects | select(has("name") and has("measured") and has("held"))
           | "\(if .held then "ok  " else "FAIL" end) \(.name): \(.measured | tostring) \(.detail // "")"' \
        "$out/results.json" || true
fi
exit $status

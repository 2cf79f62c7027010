#!/usr/bin/env bash
# The 64 B round trip over loopback, three ways in alternating rounds (issue 10's "≤ 2× raw TCP",
# without Docker, to try a change to the peer quickly; docs/benchmark-findings.md has the
# figures of 2026-12-06):
#   raw TCP                 bench rtt to `bench serve`'s TCP port
#   one libp2p stream       bench rtt to `bench serve`'s libp2p port (noise, yamux, nothing else)
#   the node's messages     bench p2p-rtt (a dialer node in that process) to a `listener` node,
#                           both joined through a `monitor`, direct
#   ci/rtt-loopback.sh [ROUNDS] [COUNT] [INTERVAL_MS]     (default 3 rounds of 1000, one every 1 ms)
# Prints each round's median per way and, at the end, the medians' ranges and each way's ratio
# over raw TCP in the same round. Release builds (P2PLAB_CARGO_PROFILE=dev for debug ones). The
# machine should be otherwise idle: the figures are CPU-bound.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
count=${2:-1000}
interval=${3:-1}
for v in "$rounds" "$count" "$interval"; do
    [[ "$v" =~ ^[0-9]+$ ]] && (( v > 0 )) || { echo "ci/rtt-loopback.sh: ROUNDS, COUNT and INTERVAL_MS are whole numbers above 0, got '$v'" >&2; exit 2; }
done
profile=${P2PLAB_CARGO_PROFILE:-release}
case "$profile" in
    release) args=(--release); dir=release ;;
    dev) args=(); dir=debug ;;
    *) echo "ci/rtt-loopback.sh: P2PLAB_CARGO_PROFILE=$profile: use release or dev" >&2; exit 2 ;;
esac
cargo build -q "${args[@]}" -p p2plab-node -p p2plab-tools --bins
bin=${CARGO_TARGET_DIR:-target}/$dir
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# wait_line FILE PATTERN: up to 20 s for a line of FILE to match
wait_line() {
    for _ in $(seq 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "ci/rtt-loopback.sh: no '$2' in $1:" >&2; tail -5 "$1" >&2; exit 1
}

"$bin/monitor" --listen-addr 127.0.0.1 --port 7300 --seed 1 --metrics-addr off >"$work/monitor" 2>&1 &
pids+=($!)
wait_line "$work/monitor" '"event":"listening"'
boot="/ip4/127.0.0.1/tcp/7300/p2p/$(grep -o '"peer_id":"[^"]*"' "$work/monitor" | head -1 | cut -d'"' -f4)"
"$bin/listener" --listen-addr 127.0.0.1 --port 7303 --seed 3 --metrics-addr off --namespace rtt \
    --bootstrap "$boot" >"$work/listener" 2>&1 &
pids+=($!)
wait_line "$work/listener" '"event":"announced"'
"$bin/bench" serve --listen-addr 127.0.0.1 --tcp-port 7301 --p2p-port 7302 --seed 2 >"$work/serve" 2>&1 &
pids+=($!)
wait_line "$work/serve" '"event":"perf_ready"'
stream="/ip4/127.0.0.1/tcp/7302/p2p/$(grep -o '"peer_id":"[^"]*"' "$work/serve" | head -1 | cut -d'"' -f4)"

# median of the samples_ms of a perf_result / p2p result line, in ms
median() {
    python3 -c '
import json, statistics, sys
for line in sys.stdin:
    try: d = json.loads(line)
    except ValueError: continue
    s = d.get("samples_ms")
    if s: print(f"{statistics.median(s):.4f}"); break
else: sys.exit("no samples")'
}

echo "round raw_tcp_ms stream_ms node_ms stream/raw node/raw"
: >"$work/rounds"
for r in $(seq "$rounds"); do
    raw=$("$bin/bench" rtt --to 127.0.0.1:7301 --size 64 --count "$count" --interval-ms "$interval" 2>/dev/null | median)
    str=$("$bin/bench" rtt --to "$stream" --size 64 --count "$count" --interval-ms "$interval" 2>/dev/null | median)
    node=$("$bin/bench" p2p-rtt --bootstrap "$boot" --namespace rtt --size 64 --count "$count" \
        --interval-ms "$interval" --path direct --seed $((100 + r)) 2>/dev/null | median)
    line=$(python3 -c "r,s,n=$raw,$str,$node; print(f'$r {r} {s} {n} {s/r:.2f} {n/r:.2f}')")
    echo "$line" | tee -a "$work/rounds"
done
python3 - "$work/rounds" <<'EOF'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
for i, name in [(1, "raw TCP"), (2, "one libp2p stream"), (3, "the node's messages")]:
    v = sorted(float(r[i]) for r in rows)
    print(f"{name}: median {v[len(v)//2]:.4f} ms, range {v[0]:.4f}-{v[-1]:.4f} ms")
for i, name in [(4, "stream / raw"), (5, "node / raw")]:
    v = sorted(float(r[i]) for r in rows)
    print(f"{name}: {v[0]:.2f}-{v[-1]:.2f}x (same-round ratios)")
EOF

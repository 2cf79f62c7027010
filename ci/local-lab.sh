#!/usr/bin/env bash
# The seed's local lab on one machine, over loopback: a monitor (bootstrap, DHT, relay), two
# listeners and a dialer in one namespace. Prints the merged event stream, then a verdict:
# exit 0 only if the dialer got every ack from both listeners.
#   ci/local-lab.sh [COUNT]      (default 10 messages per listener)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-10}
cargo build --release -q -p p2plab-node --bins
bin=target/release
dir=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT INT TERM

# First line that matches $2 in file $1, within 30 s.
await() {
  for _ in $(seq 1 300); do
    grep -m1 -E "$2" "$1" && return 0
    sleep 0.1
  done
  echo "no '$2' in $1 within 30 s" >&2
  exit 1
}

"$bin/monitor" --name boot --listen-addr 127.0.0.1 --port 0 --metrics-addr 127.0.0.1:0 >"$dir/boot.jsonl" 2>"$dir/boot.log" &
line=$(await "$dir/boot.jsonl" '"event":"listening".*/tcp/')
peer=$(grep -m1 -o '"peer_id":"[^"]*"' "$dir/boot.jsonl" | cut -d'"' -f4)
addr=$(echo "$line" | grep -o '"addr":"[^"]*"' | cut -d'"' -f4)/p2p/$peer
echo "bootstrap node: $addr"
for l in alice carol; do
  "$bin/listener" --name "$l" --listen-addr 127.0.0.1 --bootstrap "$addr" --namespace my-app >"$dir/$l.jsonl" 2>"$dir/$l.log" &
done
"$bin/dialer" --name bob --listen-addr 127.0.0.1 --bootstrap "$addr" --namespace my-app \
  --count "$count" --interval 200 >"$dir/bob.jsonl" 2>"$dir/bob.log" &
tail -q -n +1 -f "$dir"/*.jsonl &
want=$((2 * count))
for _ in $(seq 1 120); do
  got=$(grep -c '"event":"message_acked"' "$dir/bob.jsonl" || true)
  [ "$got" -ge "$want" ] && break
  sleep 0.5
done
failed=$(grep -c '"event":"message_failed"' "$dir/bob.jsonl" || true)
echo "----"
echo "dialer acks: $got of $want, failed: $failed"
[ "$got" -ge "$want" ] && [ "$failed" -eq 0 ]

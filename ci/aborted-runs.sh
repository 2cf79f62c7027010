#!/usr/bin/env bash
# Aborted runs: `p2plab run TOPOLOGY` killed N times at random moments of bring-up, run and
# teardown (SIGKILL mostly, as CI's time limit and the OOM killer do; SIGABRT, as a crash or a
# panic under panic=abort; SIGTERM; SIGINT, as Ctrl-C). Then, 30 s after the last abort, counts
# the p2plab containers and networks left on the engine.
#   ci/aborted-runs.sh [N] [TOPOLOGY]     (default 50 topologies/home-nat.yaml)
# Every fifth run is killed within 300 ms of the start of its teardown (a short phase that random
# moments would seldom hit). Prints one line per run (signal, moment, phase) and the figure:
#   aborted runs: N (bring-up B, run R, teardown T) · left 30 s after the last: C containers, K networks
# Exit 0 only if nothing new is left. Needs a Docker engine and no other p2plab run on it at the
# same time.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-50}
topo=${2:-topologies/home-nat.yaml}

export P2PLAB_CARGO_PROFILE=${P2PLAB_CARGO_PROFILE:-dev}
cargo build -q -p p2plab --bin p2plab
bin=${CARGO_TARGET_DIR:-target}/debug/p2plab
"$bin" image build >/dev/null
logs=${CARGO_TARGET_DIR:-target}/ci/aborted-runs
rm -rf "$logs"
mkdir -p "$logs"

# what p2plab objects the engine holds already (a stale network an old engine refuses to remove,
# say) are not this script's: only new ones count
before_c=$(docker ps -aq --no-trunc --filter label=org.p2plab.managed=true | sort)
before_k=$(docker network ls -q --no-trunc --filter label=org.p2plab.managed=true | sort)
managed() { # containers networks, created since the start
    echo "$(docker ps -aq --no-trunc --filter label=org.p2plab.managed=true | sort | comm -13 <(echo "$before_c") - | grep -c . || true)" \
        "$(docker network ls -q --no-trunc --filter label=org.p2plab.managed=true | sort | comm -13 <(echo "$before_k") - | grep -c . || true)"
}
if [ -n "$before_c$before_k" ]; then
    echo "aborted-runs: the engine already holds p2plab objects ($(echo "$before_c" | grep -c . || true) containers, $(echo "$before_k" | grep -c . || true) networks): only new ones are counted"
fi

# one whole run first: how long a run takes, so the aborts spread over all of it
t0=$(date +%s%N)
"$bin" run "$topo" >"$logs/whole.log" 2>&1 || { echo "aborted-runs: a whole run of $topo failed (see $logs/whole.log)" >&2; exit 1; }
span_ms=$((($(date +%s%N) - t0) / 1000000))
echo "a whole run of $topo: $span_ms ms; aborts fall in [0, $span_ms] ms"

signals=(KILL KILL KILL KILL ABRT TERM INT)
declare -A phases=([bring-up]=0 [run]=0 [teardown]=0 [ended]=0)
for i in $(seq 1 "$n"); do
    sig=${signals[RANDOM % ${#signals[@]}]}
    log="$logs/run-$i.log"
    "$bin" run "$topo" >"$log" 2>&1 &
    pid=$!
    if ((i % 5 == 0)); then
        # every fifth run aims at teardown, which is a small part of the whole: up to 300 ms
        # after the harness says it starts
        t=$(date +%s%N)
        while kill -0 "$pid" 2>/dev/null && ! grep -q "teardown" "$log"; do sleep 0.05; done
        sleep "0.$(printf '%03d' $((RANDOM % 300)))"
        at=$((($(date +%s%N) - t) / 1000000))
    else
        at=$(((RANDOM * 32768 + RANDOM) % span_ms))
        sleep "$(printf '%d.%03d' $((at / 1000)) $((at % 1000)))"
    fi
    if kill -0 "$pid" 2>/dev/null; then
        # the phase the harness had reached, from its progress lines
        if grep -q "teardown" "$log"; then phase=teardown
        elif grep -q "lab up in" "$log"; then phase=run
        else phase=bring-up; fi
        kill "-$sig" "$pid" 2>/dev/null || phase=ended
    else
        phase=ended
    fi
    wait "$pid" 2>/dev/null || true
    phases[$phase]=$((phases[$phase] + 1))
    printf 'run %2d: SIG%-4s at %6d ms, %s\n' "$i" "$sig" "$at" "$phase"
done

# the reapers have 30 s from the last abort; count when they have finished or the time is up
last=$(date +%s%N)
deadline=$(($(date +%s) + 30))
while :; do
    read -r c k < <(managed)
    if { [ "$c" = 0 ] && [ "$k" = 0 ]; } || [ "$(date +%s)" -ge "$deadline" ]; then break; fi
    sleep 1
done
aborted=$((n - phases[ended]))
echo "aborted runs: $aborted (bring-up ${phases[bring-up]}, run ${phases[run]}, teardown ${phases[teardown]}; ${phases[ended]} ended before their signal) · left 30 s after the last: $c containers, $k networks (the engine was clean $((($(date +%s%N) - last) / 1000000)) ms after the last abort)"
if [ "$c" != 0 ] || [ "$k" != 0 ]; then
    docker ps -a --filter label=org.p2plab.managed=true
    docker network ls --filter label=org.p2plab.managed=true
    exit 1
fi

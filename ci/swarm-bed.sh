#!/usr/bin/env bash
# A test bed of three Docker engines on this machine, joined in one Docker Swarm (issue 14):
# each engine is a container of docker/engine/ (Debian's docker.io on the debootstrap base,
# built here: no registry), with the node image loaded into it by save/load.
#   ci/swarm-bed.sh up       build the engine image, start three engines, form the swarm
#   ci/swarm-bed.sh check    containers with static IPs on an attachable overlay, on different
#                            engines, reach each other (ARP, DNS, TCP); prints what it saw
#   ci/swarm-bed.sh run [TOPOLOGY...]
#                            `p2plab run --engines` of each (default: home-nat.yaml,
#                            nat-matrix.yaml and ipv6-firewall.yaml) across the three
#                            engines, report in
#                            target/ci/swarm/NAME/; then asserts from the report's placement
#                            that no LAN host shares an engine with its router (its traffic
#                            crosses the overlay) and that nothing is left on any engine
#   ci/swarm-bed.sh env      the DOCKER_HOST of each engine, one per line
#   ci/swarm-bed.sh down     removes the engines, their volumes and network (idempotent)
#   ci/swarm-bed.sh all [TOPOLOGY...]   (the default) up, check, run, down
# Exit 0 only if every check and run held.
# Engine N's API is the unix socket $BED_DIR/eN/docker.sock (BED_DIR: /tmp/p2plab-bed); the
# engines' own network is BED_SUBNET (10.254.77.0/24), managed by the outer engine.
# Why the engines run as they do (capabilities, cgroups, storage): docker/engine/engine.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
BED_DIR=${BED_DIR:-/tmp/p2plab-bed}
BED_SUBNET=${BED_SUBNET:-10.254.77.0/24}
ENGINE_IMAGE=p2plab-engine:latest
NODE_IMAGE=${P2PLAB_IMAGE:-p2plab-node:latest}
LABEL=org.p2plab.bed=1
NET=p2plab-bed
prefix=${BED_SUBNET%.*}
N=3

dk() { docker -H "unix://$BED_DIR/e$1/docker.sock" "${@:2}"; }

up() {
    export P2PLAB_CARGO_PROFILE=${P2PLAB_CARGO_PROFILE:-dev}
    echo "== node image (docker/build-image.sh)"
    docker/build-image.sh >/dev/null
    echo "== engine image ($ENGINE_IMAGE)"
    local out
    out=$(docker build -q -t "$ENGINE_IMAGE" --label "$LABEL" docker/engine 2>&1) \
        || { echo "$out" >&2; exit 1; }
    docker network inspect "$NET" >/dev/null 2>&1 \
        || docker network create --label "$LABEL" --subnet "$BED_SUBNET" \
            -o com.docker.network.bridge.enable_ip_masquerade=false "$NET" >/dev/null
    local t0=$SECONDS
    for i in $(seq 1 $N); do
        mkdir -p "$BED_DIR/e$i"
        docker rm -f -v "p2plab-bed-e$i" >/dev/null 2>&1 || true
        # --privileged fails here (the bounding set lacks CAP_SYS_RESOURCE): every other
        # capability, and no apparmor, seccomp or masked /proc and /sys paths
        docker run -d --name "p2plab-bed-e$i" --hostname "engine-$i" --label "$LABEL" \
            --network "$NET" --ip "$prefix.1$i" \
            --cap-add ALL --cap-drop SYS_RESOURCE \
            --security-opt apparmor=unconfined --security-opt seccomp=unconfined \
            --security-opt systempaths=unconfined \
            -v "$BED_DIR/e$i:/run/bed" -v /var/lib/docker "$ENGINE_IMAGE" >/dev/null
    done
    for i in $(seq 1 $N); do
        local deadline=$((SECONDS + 60))
        until dk "$i" version >/dev/null 2>&1; do
            if ((SECONDS > deadline)); then
                echo "engine $i did not answer within 60 s:" >&2
                docker logs --tail 20 "p2plab-bed-e$i" >&2
                exit 1
            fi
            sleep 0.5
        done
    done
    echo "== engines up in $((SECONDS - t0)) s; swarm"
    dk 1 swarm init --advertise-addr "$prefix.11" >/dev/null
    local token
    token=$(dk 1 swarm join-token -q manager)
    # three managers: the swarm keeps its quorum when one engine is stopped
    for i in $(seq 2 $N); do dk "$i" swarm join --token "$token" "$prefix.11:2377" >/dev/null; done
    dk 1 node ls
    echo "== $NODE_IMAGE into every engine"
    local t1=$SECONDS
    docker save "$NODE_IMAGE" | tee >(dk 1 load -q) >(dk 2 load -q) | dk 3 load -q
    sleep 1
    for i in $(seq 1 $N); do dk "$i" image inspect "$NODE_IMAGE" >/dev/null; done
    echo "   loaded in $((SECONDS - t1)) s"
}

check() {
    local net=bed-check ok=1
    dk 1 network rm "$net" >/dev/null 2>&1 || true
    dk 1 network create -d overlay --attachable --subnet 10.254.78.0/24 "$net" >/dev/null
    for i in $(seq 1 $N); do
        dk "$i" rm -f "check-$i" >/dev/null 2>&1 || true
        dk "$i" run -d --name "check-$i" --network "$net" --ip "10.254.78.1$i" \
            --entrypoint sleep "$NODE_IMAGE" 300 >/dev/null
    done
    for i in $(seq 1 $N); do
        local j=$(( i % N + 1 ))
        # a refused connection is an answer from the other engine's container
        local out
        out=$(dk "$i" exec "check-$i" bash -c "
            timeout 5 bash -c 'exec 3<>/dev/tcp/check-$j/9' 2>&1 | tail -1
            getent hosts check-$j
            cat /sys/class/net/eth0/mtu" 2>&1 || true)
        if grep -q "Connection refused" <<<"$out" && grep -q "10.254.78.1$j" <<<"$out"; then
            echo "ok   engine $i -> engine $j: check-$j is 10.254.78.1$j, TCP answered (refused), MTU $(tail -1 <<<"$out")"
        else
            echo "FAIL engine $i -> engine $j: $out"
            ok=0
        fi
    done
    for i in $(seq 1 $N); do dk "$i" rm -f "check-$i" >/dev/null 2>&1 || true; done
    dk 1 network rm "$net" >/dev/null 2>&1 || true
    ((ok))
}

run() {
    local topos=("$@") status=0
    [ ${#topos[@]} -gt 0 ] || topos=(topologies/home-nat.yaml topologies/nat-matrix.yaml topologies/ipv6-firewall.yaml)
    export P2PLAB_CARGO_PROFILE=${P2PLAB_CARGO_PROFILE:-dev}
    cargo build -q -p p2plab --bin p2plab
    local bin=${CARGO_TARGET_DIR:-target}/debug/p2plab engines
    engines=$(for i in $(seq 1 $N); do printf '%s,' "unix://$BED_DIR/e$i/docker.sock"; done)
    for t in "${topos[@]}"; do
        local name out
        name=$(basename "$t" .yaml)
        out=${CARGO_TARGET_DIR:-target}/ci/swarm/$name
        rm -rf "$out"
        echo "== p2plab run $t --engines (three engines)"
        local t0=$SECONDS
        "$bin" run "$t" --engines "${engines%,}" --report "$out" || status=1
        echo "== $name: $((SECONDS - t0)) s"
        python3 - "$out/results.json" <<'PY' || status=1
import json, sys
r = json.load(open(sys.argv[1]))
at, cs = r["placement"], r["containers"]
routers = {a["segment"]: c["name"] for c in cs if c["kind"] == "router" for a in c["addrs"] if a["ip"].endswith(".254")}
links = [(c["name"], routers[a["segment"]]) for c in cs for a in c["addrs"]
         if a["segment"] in routers and routers[a["segment"]] != c["name"]]
same = [f"{h} and {g}" for h, g in links if at.get(h) == at.get(g)]
engines = sorted(set(at.values()))
print(f"placement: {len(at)} containers on {len(engines)} engines ({', '.join(engines)}); "
      f"{len(links) - len(same)} of {len(links)} LAN links cross engines")
if same or len(engines) < 2 or len(at) != len(cs):
    print("FAIL placement: " + ("; ".join(same) or "not spread"))
    sys.exit(1)
PY
    done
    # a worker lists a removed overlay a moment longer: what is left 30 s after the last run
    local left deadline=$((SECONDS + 30))
    while :; do
        left=0
        for i in $(seq 1 $N); do
            left=$((left + $(dk "$i" ps -aq --filter label=org.p2plab.managed=true | wc -l)))
            left=$((left + $(dk "$i" network ls -q --filter label=org.p2plab.managed=true | wc -l)))
        done
        ((left == 0 || SECONDS >= deadline)) && break
        sleep 1
    done
    echo "== left on the engines: $left containers and networks"
    ((left == 0)) || status=1
    return $status
}

down() {
    for i in $(seq 1 $N); do docker rm -f -v "p2plab-bed-e$i" >/dev/null 2>&1 || true; done
    docker network rm "$NET" >/dev/null 2>&1 || true
    rm -rf "$BED_DIR"
    echo "== bed down: $(docker ps -aq --filter label=$LABEL | wc -l) containers, $(docker network ls -q --filter label=$LABEL | wc -l) networks left"
}

verb=${1:-all}
shift || true
case $verb in
up) up ;;
check) check ;;
run) run "$@" ;;
env) for i in $(seq 1 $N); do echo "unix://$BED_DIR/e$i/docker.sock"; done ;;
down) down ;;
all)
    trap down EXIT
    up
    check
    run "$@"
    ;;
*) echo "ci/swarm-bed.sh: unknown verb '$verb' (up, check, run, env, down, all)" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# p2plab NAT router: installed in the node image as /usr/local/bin/p2plab-router.
#
# Run as the command of a router container (through p2plab-entrypoint):
#
#   docker run -d --cap-add NET_ADMIN --sysctl net.ipv4.ip_forward=1 \
#       --network <wan-net> --ip 198.18.0.2 ...   (then `docker network connect
#       --ip 10.101.0.254 <lan-net>`, or create it on both networks)
#       -e P2PLAB_NAT=home -e P2PLAB_LAN_SUBNET=10.101.0.0/24 \
#       -e P2PLAB_WAN_IP=198.18.0.2 p2plab-node:latest p2plab-router
#
# Every decision is `router-rules`' (p2plab-tools: src/router.rs, src/nft.rs,
# unit-tested; the environment is typed once in p2plab-contract's router module):
# it checks the environment, finds the interfaces and the Docker host's
# addresses, renders the nftables ruleset and miniupnpd's configuration, answers
# miniupnpd's STUN self-test and writes the ready line. This script only applies
# them: it waits until both interfaces exist (up to P2PLAB_WAIT_IFACES seconds),
# removes every default route (Docker's route via the host), adds routes for the
# lab's ranges via P2PLAB_UPLINK_GW when that is set (never a default route),
# loads the ruleset with a single `nft -f` (one atomic transaction, tables
# `ip`/`ip6 p2plab_router`, plus `inet p2plab_upnp` for the upnp profile; other
# tables untouched), starts and supervises miniupnpd for the upnp profile,
# prints one JSON line on stdout
#   {"event":"router_ready","nat":"home","lan":"eth1","wan":"eth0",...}
# and then waits; SIGTERM/SIGINT make it exit 0 at once.
#
# Environment:
#   P2PLAB_NAT               open | home | strict | port-forward | upnp | routed (required)
#       open          endpoint-independent mapping, endpoint-independent filtering
#                     (full cone): any internet host may send to a mapping
#       home          endpoint-independent mapping, address-and-port-dependent
#                     filtering (conntrack replies only): hole punching works
#       strict        endpoint-dependent mapping (a random external port per
#                     connection) + address-and-port-dependent filtering
#       port-forward  home + the static DNATs of P2PLAB_FORWARD
#       upnp          home + a UPnP IGD (miniupnpd, also NAT-PMP/PCP) on the LAN:
#                     a LAN host may map its own ports (1024-65535 only, to
#                     itself only: secure_mode), and inbound connections to
#                     WAN_IP:mapped port reach it. Without a mapping: home.
#       routed        plain routing: no translation, no stateful firewall
#     Carrier-grade NAT is not a profile: stack a home/strict router whose WAN
#     is another router's LAN, with P2PLAB_UPLINK_GW=<outer router's LAN ip>.
#   P2PLAB_LAN_SUBNET        LAN prefix, e.g. 10.101.0.0/24 (required); the LAN
#                            interface is the one with an address in it
#   P2PLAB_WAN_IP            the router's address on its uplink segment
#                            (required); the WAN interface is the one holding it
#   P2PLAB_UPLINK_GW         optional (stacked NAT): route the lab's ranges via
#                            this on-link address of the WAN segment, e.g. the
#                            outer router's LAN address; unset: no such routes.
#                            Never a default route: no route out of the lab.
#   P2PLAB_LAB_RANGES        the lab's ranges routed via P2PLAB_UPLINK_GW,
#                            space-separated (as in p2plab-entrypoint); default
#                            "198.18.0.0/15 100.64.0.0/10 10.0.0.0/8"
#   P2PLAB_FORWARD           port-forward only (required there, refused
#                            elsewhere): comma-separated proto:ext_port:lan_ip:lan_port,
#                            e.g. "tcp:4001:10.101.0.10:4001,udp:4001:10.101.0.10:4001"
#   P2PLAB_TCP_PORTS         udp-blocked only: comma-separated TCP ports LAN
#                            hosts may reach beyond the router (e.g. "443,51820");
#                            TCP to any other port is dropped. Unset: every port
#   P2PLAB_MAPPING_TIMEOUT   seconds an idle mapping (and an idle UDP conntrack
#                            entry, i.e. the filtering state) lives; default 120
#   P2PLAB_IPV6              optional: the LAN has IPv6 and the router forwards
#                            it, never translated: firewall (inbound only for
#                            flows a LAN host opened: hole punching works) or
#                            routed (no filtering). Needs P2PLAB_LAN_SUBNET6
#                            (the LAN's /64 in fd70::/16), P2PLAB_WAN_IP6 (the
#                            router's uplink address) and
#                            --sysctl net.ipv6.conf.all.forwarding=1. Routes to
#                            other LANs' /64s come from P2PLAB_ROUTES (see
#                            p2plab-entrypoint). Unset: no IPv6 is forwarded.
#   P2PLAB_WAIT_IFACES       seconds to wait for the LAN/WAN interfaces; default
#                            10 (a container connected to its second network
#                            after start gets that interface a little later)
#   P2PLAB_DELAY_MS, P2PLAB_JITTER_MS, P2PLAB_LOSS_PCT, P2PLAB_RATE
#                            optional link impairments of the WAN interface
#                            (packets forwarded out of it, one direction), set
#                            with `p2plab-impair <wan> --from-env` just before
#                            router_ready; see docker/impair.sh
#
# Any bad setting prints one line on stderr naming the variable and its value,
# and the router exits 1. Needs CAP_NET_ADMIN and net.ipv4.ip_forward=1.
# See docker/README.md, section "Router".
set -u

PROG=p2plab-router
RULES=/run/p2plab-router.nft
UPNP_CONF=/run/p2plab-miniupnpd.conf
UPNP_LOG=/run/p2plab-miniupnpd.log
UPNP_WAIT=20

die() { echo "$PROG: $*" >&2; exit 1; }

# one line from a command's (possibly multi-line) error output
oneline() { printf '%s' "$1" | tr '\n\t' '  ' | sed 's/  */ /g; s/^ //; s/ $//'; }

cap_hint() {
    case "$1" in
        *"Operation not permitted"*) echo " (container lacks CAP_NET_ADMIN: run with --cap-add NET_ADMIN)" ;;
    esac
}

command -v router-rules >/dev/null 2>&1 || die "the 'router-rules' command (p2plab-tools) is missing"

# --------------------------------------------------------- configuration ---
# NAT LAN_SUBNET WAN_IP UPLINK_GW UPLINK_ROUTES WAIT_IFACES and the upnp ports,
# checked and quoted by router-rules.
settings=$(router-rules env 2>&1) || die "$(oneline "${settings#router-rules: }")"
eval "$settings"

command -v ip >/dev/null 2>&1 || die "the 'ip' command (iproute2) is missing"
command -v nft >/dev/null 2>&1 || die "the 'nft' command (nftables) is missing"

fwd=$(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null || echo "?")
[ "$fwd" = 1 ] || die "net.ipv4.ip_forward=$fwd: run the router container with --sysctl net.ipv4.ip_forward=1"
if [ -n "$IPV6" ]; then
    fwd6=$(cat /proc/sys/net/ipv6/conf/all/forwarding 2>/dev/null || echo "?")
    [ "$fwd6" = 1 ] || die "P2PLAB_IPV6=$IPV6 needs net.ipv6.conf.all.forwarding=1 (is $fwd6): run the router container with --sysctl net.ipv6.conf.all.forwarding=1"
fi

# ------------------------------------------------------------ interfaces ---
# LAN_IF LAN_IP WAN_IF WAN_SUBNET HOST_ADDRS. router-rules exits 3 while an
# interface is missing: a container connected to its second network after it
# started gets that interface a little later.
deadline=$((SECONDS + WAIT_IFACES))
while :; do
    found=$(router-rules ifaces --addrs "$(ip -o -4 addr show 2>/dev/null)" \
        --routes "$(ip -4 route show default 2>/dev/null)" 2>&1)
    rc=$?
    [ "$rc" -eq 0 ] && break
    if [ "$rc" -ne 3 ] || [ "$SECONDS" -ge "$deadline" ]; then
        die "$(oneline "${found#router-rules: }")"
    fi
    sleep 0.2
done
eval "$found"
read -r -a host_addrs <<<"$HOST_ADDRS"
read -r -a uplink_routes <<<"$UPLINK_ROUTES"
found_args=(--lan-if "$LAN_IF" --wan-if "$WAN_IF" --host-addr "${host_addrs[@]}")

# ---------------------------------------------------------------- routes ---
for fam in -4 -6; do
    n=0
    while [ -n "$(ip "$fam" route show default 2>/dev/null)" ]; do
        n=$((n + 1))
        [ "$n" -le 16 ] || die "ip $fam route del default: default route still present after 16 deletions"
        out=$(ip "$fam" route del default 2>&1) \
            || die "ip $fam route del default failed: $(oneline "$out")$(cap_hint "$out")"
    done
done
if [ -n "$UPLINK_GW" ]; then
    # The lab's ranges only, never a default route: no route out of the lab.
    for range in "${uplink_routes[@]}"; do
        out=$(ip -4 route replace "$range" via "$UPLINK_GW" dev "$WAN_IF" 2>&1) \
            || die "P2PLAB_UPLINK_GW=$UPLINK_GW: ip route replace $range via $UPLINK_GW dev $WAN_IF failed: $(oneline "$out")$(cap_hint "$out")"
    done
fi

# --------------------------------------------------------------- ruleset ---
t0=$(date +%s%N)
out=$(router-rules rules "${found_args[@]}" 2>&1 >"$RULES") \
    || die "P2PLAB_NAT=$NAT: router-rules failed: $(oneline "${out#router-rules: }")"
out=$(nft -f "$RULES" 2>&1) \
    || die "P2PLAB_NAT=$NAT: nft -f $RULES failed: $(oneline "$out")$(cap_hint "$out")"
t1=$(date +%s%N)

# ------------------------------------------------------------ impairments ---
if [ -n "${P2PLAB_DELAY_MS-}${P2PLAB_JITTER_MS-}${P2PLAB_LOSS_PCT-}${P2PLAB_RATE-}" ]; then
    out=$(p2plab-impair "$WAN_IF" --from-env 2>&1 >/dev/null) \
        || die "$(oneline "${out#p2plab-impair: }")"
fi

# ------------------------------------------------------------------ upnp ---
# miniupnpd takes its external address from a STUN answer (see src/router.rs in
# p2plab-tools for why): `router-rules stun` answers its self-test on 127.0.0.1
# only, with P2PLAB_WAN_IP and the asking port.
upnp_pid="" stun_pid=""
stop_upnp() {
    [ -z "$upnp_pid" ] || kill "$upnp_pid" 2>/dev/null
    [ -z "$stun_pid" ] || kill "$stun_pid" 2>/dev/null
    [ -z "$upnp_pid" ] || wait "$upnp_pid" 2>/dev/null
    upnp_pid="" stun_pid=""
}
upnp_fail() {   # $1 = what failed; the line names miniupnpd's last words
    local tail_
    tail_=$(grep -v -e 'debug' "$UPNP_LOG" 2>/dev/null | tail -n 3)
    stop_upnp
    die "P2PLAB_NAT=upnp: $1${tail_:+: $(oneline "$tail_")} (log: $UPNP_LOG)"
}
ready_upnp=()
if [ "$NAT" = upnp ]; then
    command -v miniupnpd >/dev/null 2>&1 || die "P2PLAB_NAT=upnp: miniupnpd is missing (the image lacks miniupnpd-nftables)"
    uuid=$(cat /proc/sys/kernel/random/uuid 2>/dev/null) || uuid=""
    out=$(router-rules upnp-conf "${found_args[@]}" ${uuid:+--uuid "$uuid"} 2>&1 >"$UPNP_CONF") \
        || die "P2PLAB_NAT=upnp: cannot write $UPNP_CONF: $(oneline "${out#router-rules: }")"
    : >"$UPNP_LOG"
    coproc STUN { exec router-rules stun --port "$STUN_PORT" 2>>"$UPNP_LOG"; }
    stun_pid=$STUN_PID
    IFS= read -r -t 5 stun_ready <&"${STUN[0]}" || stun_ready=""
    [ "$stun_ready" = ready ] || upnp_fail "the STUN self-test responder did not start on 127.0.0.1:$STUN_PORT"
    # -d: foreground, logs on stderr (to $UPNP_LOG); the router supervises it below
    miniupnpd -d -f "$UPNP_CONF" >>"$UPNP_LOG" 2>&1 &
    upnp_pid=$!
    deadline=$((SECONDS + UPNP_WAIT))
    while :; do
        kill -0 "$upnp_pid" 2>/dev/null || upnp_fail "miniupnpd exited"
        if grep -q "HTTP listening on port $UPNP_HTTP_PORT" "$UPNP_LOG" \
                && grep -q "Listening for NAT-PMP/PCP traffic on port $NATPMP_PORT" "$UPNP_LOG"; then
            break
        fi
        [ "$SECONDS" -lt "$deadline" ] || upnp_fail "miniupnpd not listening after ${UPNP_WAIT}s"
        sleep 0.05
    done
    # port forwarding must be on: the STUN test said the WAN address is usable
    if grep -q -e "Port forwarding is now disabled" -e "Port forwarding is impossible" "$UPNP_LOG"; then
        upnp_fail "miniupnpd disabled port forwarding"
    fi
    grep -q "STUN: .*public IP address $WAN_IP" "$UPNP_LOG" \
        || upnp_fail "miniupnpd did not take $WAN_IP as its external address"
    ready_upnp=(--upnp-pid "$upnp_pid" --upnp-start-ms $(( ($(date +%s%N) - t1) / 1000000 )))
fi

# ------------------------------------------------------------------ ready ---
out=$(router-rules ready "${found_args[@]}" --lan-ip "$LAN_IP" --wan-subnet "$WAN_SUBNET" \
    --ruleset "$RULES" --apply-ms $(( (t1 - t0) / 1000000 )) "${ready_upnp[@]}" 2>&1) \
    || { stop_upnp; die "router-rules ready failed: $(oneline "$out")"; }
printf '%s\n' "$out"

# ------------------------------------------------------------------- wait ---
# PID 1 in the container: SIGTERM must be handled explicitly.
# upnp: miniupnpd is supervised; if it dies, the router says so and exits 1
# (a upnp router that silently became a home router would mislead a test).
sleep_pid=""
on_term() { [ -z "$sleep_pid" ] || kill "$sleep_pid" 2>/dev/null; stop_upnp; exit 0; }
trap on_term TERM INT HUP
while :; do
    sleep infinity &
    sleep_pid=$!
    if [ -n "$upnp_pid" ]; then
        wait -n "$sleep_pid" "$upnp_pid"
        if ! kill -0 "$upnp_pid" 2>/dev/null; then
            kill "$sleep_pid" 2>/dev/null
            upnp_pid=""
            upnp_fail "miniupnpd exited"
        fi
    else
        wait "$sleep_pid"
    fi
done

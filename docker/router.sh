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
# The router waits until both its interfaces exist (up to P2PLAB_WAIT_IFACES
# seconds), removes every default route (Docker's route via the host), adds
# routes for the lab's ranges via P2PLAB_UPLINK_GW when that is set (never a
# default route), has `router-rules` render its nftables ruleset from the typed
# profile (p2plab-tools, src/nft.rs), loads it with a single `nft -f` (one atomic
# transaction, tables `ip`/`ip6 p2plab_router`, plus `inet p2plab_upnp` for the
# upnp profile; other tables untouched), starts miniupnpd for the upnp profile,
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
#   P2PLAB_MAPPING_TIMEOUT   seconds an idle mapping (and an idle UDP conntrack
#                            entry, i.e. the filtering state) lives; default 120
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
# upnp profile: miniupnpd's table, configuration, log and ports
UPNP_TABLE=p2plab_upnp
UPNP_CONF=/run/p2plab-miniupnpd.conf
UPNP_LOG=/run/p2plab-miniupnpd.log
UPNP_HTTP_PORT=5000
SSDP_PORT=1900
NATPMP_PORT=5351
STUN_PORT=3478
UPNP_WAIT=20

die() { echo "$PROG: $*" >&2; exit 1; }

# one line from a command's (possibly multi-line) error output
oneline() { printf '%s' "$1" | tr '\n\t' '  ' | sed 's/  */ /g; s/^ //; s/ $//'; }

cap_hint() {
    case "$1" in
        *"Operation not permitted"*) echo " (container lacks CAP_NET_ADMIN: run with --cap-add NET_ADMIN)" ;;
    esac
}

# ------------------------------------------------------------ IPv4 helpers ---
is_ipv4() {
    local IFS=. a b c d x
    [[ $1 =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || return 1
    read -r a b c d <<<"$1"
    for x in "$a" "$b" "$c" "$d"; do
        [ $((10#$x)) -le 255 ] || return 1
    done
}
ip2int() {
    local IFS=. a b c d
    read -r a b c d <<<"$1"
    echo $(( (10#$a << 24) | (10#$b << 16) | (10#$c << 8) | 10#$d ))
}
int2ip() { echo "$(( ($1 >> 24) & 255 )).$(( ($1 >> 16) & 255 )).$(( ($1 >> 8) & 255 )).$(( $1 & 255 ))"; }
mask_of() { echo $(( $1 == 0 ? 0 : (0xffffffff << (32 - $1)) & 0xffffffff )); }
# in_subnet IP NET PLEN
in_subnet() {
    local m
    m=$(mask_of "$3")
    [ $(( $(ip2int "$1") & m )) -eq $(( $(ip2int "$2") & m )) ]
}

# --------------------------------------------------------- configuration ---
NAT=${P2PLAB_NAT-}
LAN_SUBNET=${P2PLAB_LAN_SUBNET-}
WAN_IP=${P2PLAB_WAN_IP-}
UPLINK_GW=${P2PLAB_UPLINK_GW-}
FORWARD=${P2PLAB_FORWARD-}
TIMEOUT=${P2PLAB_MAPPING_TIMEOUT-120}
WAIT_IFACES=${P2PLAB_WAIT_IFACES-10}
LAB_RANGES=${P2PLAB_LAB_RANGES:-198.18.0.0/15 100.64.0.0/10 10.0.0.0/8}

case "$NAT" in
    open)         MAPPING=endpoint-independent; FILTERING=endpoint-independent ;;
    home|port-forward|upnp) MAPPING=endpoint-independent; FILTERING=address-and-port-dependent ;;
    strict)       MAPPING=endpoint-dependent;   FILTERING=address-and-port-dependent ;;
    routed)       MAPPING=none;                 FILTERING=none ;;
    "")           die "P2PLAB_NAT is not set (use open, home, strict, port-forward, upnp or routed)" ;;
    *)            die "P2PLAB_NAT=$NAT: unknown profile (use open, home, strict, port-forward, upnp or routed; cgnat = a home/strict router stacked behind another)" ;;
esac

[ -n "$LAN_SUBNET" ] || die "P2PLAB_LAN_SUBNET is not set (the LAN prefix, e.g. 10.101.0.0/24)"
LAN_NET=${LAN_SUBNET%/*} LAN_PLEN=${LAN_SUBNET##*/}
if [[ $LAN_SUBNET != */* ]] || ! is_ipv4 "$LAN_NET" || ! [[ $LAN_PLEN =~ ^[0-9]{1,2}$ ]] \
        || [ $((10#$LAN_PLEN)) -lt 1 ] || [ $((10#$LAN_PLEN)) -gt 30 ]; then
    die "P2PLAB_LAN_SUBNET=$LAN_SUBNET: not an IPv4 prefix like 10.101.0.0/24 (length 1-30)"
fi
LAN_PLEN=$((10#$LAN_PLEN))
net=$(int2ip $(( $(ip2int "$LAN_NET") & $(mask_of "$LAN_PLEN") )))
[ "$net" = "$LAN_NET" ] || die "P2PLAB_LAN_SUBNET=$LAN_SUBNET: host bits set (did you mean $net/$LAN_PLEN?)"

[ -n "$WAN_IP" ] || die "P2PLAB_WAN_IP is not set (the router's address on its uplink segment)"
is_ipv4 "$WAN_IP" || die "P2PLAB_WAN_IP=$WAN_IP: not an IPv4 address"
if in_subnet "$WAN_IP" "$LAN_NET" "$LAN_PLEN"; then
    die "P2PLAB_WAN_IP=$WAN_IP: lies inside P2PLAB_LAN_SUBNET=$LAN_SUBNET"
fi
UPLINK_ROUTES=()
if [ -n "$UPLINK_GW" ]; then
    is_ipv4 "$UPLINK_GW" || die "P2PLAB_UPLINK_GW=$UPLINK_GW: not an IPv4 address"
    read -r -a ranges <<<"$LAB_RANGES"    # split on whitespace, no globbing
    for range in "${ranges[@]}"; do
        r_net=${range%/*} r_len=${range##*/}
        if [[ $range != */* ]] || ! is_ipv4 "$r_net" || ! [[ $r_len =~ ^[0-9]{1,2}$ ]] \
                || [ $((10#$r_len)) -lt 1 ] || [ $((10#$r_len)) -gt 32 ]; then
            die "P2PLAB_LAB_RANGES=$LAB_RANGES: '$range' is not an IPv4 prefix of length 1-32 (a default route is not allowed)"
        fi
        UPLINK_ROUTES+=("$range")
    done
    [ "${#UPLINK_ROUTES[@]}" -gt 0 ] || die "P2PLAB_LAB_RANGES=$LAB_RANGES: no range to route via P2PLAB_UPLINK_GW=$UPLINK_GW"
fi
if ! [[ $TIMEOUT =~ ^[0-9]{1,5}$ ]] || [ $((10#$TIMEOUT)) -lt 1 ] || [ $((10#$TIMEOUT)) -gt 86400 ]; then
    die "P2PLAB_MAPPING_TIMEOUT=$TIMEOUT: not a number of seconds between 1 and 86400"
fi
TIMEOUT=$((10#$TIMEOUT))
[[ $WAIT_IFACES =~ ^[0-9]+$ ]] || die "P2PLAB_WAIT_IFACES=$WAIT_IFACES: not a number of seconds"

# P2PLAB_FORWARD: proto:ext_port:lan_ip:lan_port[,...]
FWD_PROTO=() FWD_EXT=() FWD_IP=() FWD_PORT=()
if [ "$NAT" = port-forward ]; then
    [ -n "$FORWARD" ] || die "P2PLAB_FORWARD is not set (P2PLAB_NAT=port-forward needs e.g. tcp:4001:10.101.0.10:4001,udp:4001:10.101.0.10:4001)"
    IFS=, read -r -a specs <<<"$FORWARD"
    for spec in "${specs[@]}"; do
        spec=${spec//[[:space:]]/}
        [ -n "$spec" ] || continue
        bad="P2PLAB_FORWARD=$FORWARD: bad entry '$spec' (want proto:ext_port:lan_ip:lan_port, proto tcp or udp, ports 1-65535)"
        [[ $spec =~ ^(tcp|udp):([0-9]{1,5}):([0-9.]+):([0-9]{1,5})$ ]] || die "$bad"
        # (copy the groups first: is_ipv4 runs its own =~ and resets BASH_REMATCH)
        p=${BASH_REMATCH[1]} e=$((10#${BASH_REMATCH[2]})) h=${BASH_REMATCH[3]} q=$((10#${BASH_REMATCH[4]}))
        if ! is_ipv4 "$h" || [ "$e" -lt 1 ] || [ "$e" -gt 65535 ] || [ "$q" -lt 1 ] || [ "$q" -gt 65535 ]; then
            die "$bad"
        fi
        in_subnet "$h" "$LAN_NET" "$LAN_PLEN" \
            || die "P2PLAB_FORWARD=$FORWARD: $h (in '$spec') is not in P2PLAB_LAN_SUBNET=$LAN_SUBNET"
        for i in "${!FWD_PROTO[@]}"; do
            if [ "${FWD_PROTO[$i]}" = "$p" ] && [ "${FWD_EXT[$i]}" = "$e" ]; then
                die "P2PLAB_FORWARD=$FORWARD: $p port $e is forwarded twice"
            fi
            if [ "${FWD_PROTO[$i]}" = "$p" ] && [ "${FWD_IP[$i]}:${FWD_PORT[$i]}" = "$h:$q" ]; then
                die "P2PLAB_FORWARD=$FORWARD: $p $h:$q is the target of two forwards (one external port per LAN endpoint)"
            fi
        done
        FWD_PROTO+=("$p") FWD_EXT+=("$e") FWD_IP+=("$h") FWD_PORT+=("$q")
    done
    [ "${#FWD_PROTO[@]}" -gt 0 ] || die "P2PLAB_FORWARD=$FORWARD: no forward given"
elif [ -n "$FORWARD" ]; then
    die "P2PLAB_FORWARD=$FORWARD: only used with P2PLAB_NAT=port-forward (P2PLAB_NAT=$NAT)"
fi

command -v ip >/dev/null 2>&1 || die "the 'ip' command (iproute2) is missing"
command -v nft >/dev/null 2>&1 || die "the 'nft' command (nftables) is missing"
command -v router-rules >/dev/null 2>&1 || die "the 'router-rules' command (p2plab-tools) is missing"

fwd=$(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null || echo "?")
[ "$fwd" = 1 ] || die "net.ipv4.ip_forward=$fwd: run the router container with --sysctl net.ipv4.ip_forward=1"

# ------------------------------------------------------------ interfaces ---
# Lines of `ip -o -4 addr`: "<n>: <ifname> inet <a.b.c.d>/<len> ...".
LAN_IF="" LAN_IP="" WAN_IF="" WAN_PLEN=""
find_ifaces() {
    local n name fam cidr rest addr plen lan_if="" lan_ip="" lan_count=0
    ADDRS=""
    LAN_IF="" LAN_IP="" WAN_IF="" WAN_PLEN=""
    IF_NETS=()
    while read -r n name fam cidr rest; do
        [ "$fam" = inet ] || continue
        name=${name%%@*}
        addr=${cidr%/*} plen=${cidr#*/}
        [ "$name" = lo ] && continue
        ADDRS="${ADDRS:+$ADDRS, }$name $cidr"
        IF_NETS+=("$addr/$plen")
        if in_subnet "$addr" "$LAN_NET" "$LAN_PLEN"; then
            lan_count=$((lan_count + 1)); lan_if=$name; lan_ip=$addr
        fi
        if [ "$addr" = "$WAN_IP" ]; then
            WAN_IF=$name WAN_PLEN=$plen
        fi
    done < <(ip -o -4 addr show 2>/dev/null)
    [ "$lan_count" -eq 1 ] && LAN_IF=$lan_if LAN_IP=$lan_ip
    LAN_COUNT=$lan_count
}
deadline=$((SECONDS + 10#$WAIT_IFACES))
while :; do
    find_ifaces
    [ -n "$LAN_IF" ] && [ -n "$WAN_IF" ] && break
    [ "$SECONDS" -lt "$deadline" ] || break
    sleep 0.2
done
[ "$LAN_COUNT" -le 1 ] \
    || die "P2PLAB_LAN_SUBNET=$LAN_SUBNET: $LAN_COUNT interfaces have an address in it (addresses: ${ADDRS:-none})"
[ -n "$LAN_IF" ] \
    || die "P2PLAB_LAN_SUBNET=$LAN_SUBNET: no interface has an address in this subnet (addresses: ${ADDRS:-none})"
[ -n "$WAN_IF" ] \
    || die "P2PLAB_WAN_IP=$WAN_IP: no interface has this address (addresses: ${ADDRS:-none})"
[ "$LAN_IF" != "$WAN_IF" ] \
    || die "P2PLAB_WAN_IP=$WAN_IP: on the LAN interface $LAN_IF (LAN and WAN must be different networks)"
[[ $LAN_IF =~ ^[A-Za-z0-9_.-]+$ && $WAN_IF =~ ^[A-Za-z0-9_.-]+$ ]] \
    || die "unexpected interface names: LAN '$LAN_IF', WAN '$WAN_IF'"
WAN_NET=$(int2ip $(( $(ip2int "$WAN_IP") & $(mask_of "$WAN_PLEN") )))

# The Docker host's addresses on the router's networks: Docker's gateway is the
# first address of each subnet (.1), and the default route Docker installed
# points at one of them. Nothing may be forwarded or sent to them.
declare -A seen=()
HOST_ADDRS=()
add_host_addr() { [ -n "${seen[$1]-}" ] || { seen[$1]=1; HOST_ADDRS+=("$1"); }; }
for c in "${IF_NETS[@]}"; do
    a=${c%/*} l=${c#*/}
    [ "$l" -le 30 ] && add_host_addr "$(int2ip $(( ($(ip2int "$a") & $(mask_of "$l")) + 1 )))"
done
while read -r _ _ gw _; do
    is_ipv4 "${gw:-}" && add_host_addr "$gw"
done < <(ip -4 route show default 2>/dev/null)

if [ -n "$UPLINK_GW" ]; then
    in_subnet "$UPLINK_GW" "$WAN_NET" "$WAN_PLEN" \
        || die "P2PLAB_UPLINK_GW=$UPLINK_GW: not on the WAN segment $WAN_NET/$WAN_PLEN ($WAN_IF)"
    [ "$UPLINK_GW" != "$WAN_IP" ] || die "P2PLAB_UPLINK_GW=$UPLINK_GW: is the router's own WAN address"
    for a in "${HOST_ADDRS[@]}"; do
        [ "$a" != "$UPLINK_GW" ] \
            || die "P2PLAB_UPLINK_GW=$UPLINK_GW: is the Docker host's address on $WAN_IF (refusing a route out of the lab; use the upstream router's LAN address)"
    done
fi

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
    for range in "${UPLINK_ROUTES[@]}"; do
        out=$(ip -4 route replace "$range" via "$UPLINK_GW" dev "$WAN_IF" 2>&1) \
            || die "P2PLAB_UPLINK_GW=$UPLINK_GW: ip route replace $range via $UPLINK_GW dev $WAN_IF failed: $(oneline "$out")$(cap_hint "$out")"
    done
fi

# --------------------------------------------------------------- ruleset ---
# The ruleset is rendered from the typed profile by `router-rules` (p2plab-tools' nft module,
# where unit tests pin what each profile's rules do); this script only gathers what it needs.
fwd_list=""
for i in "${!FWD_PROTO[@]}"; do
    fwd_list="${fwd_list:+$fwd_list,}${FWD_PROTO[$i]}:${FWD_EXT[$i]}:${FWD_IP[$i]}:${FWD_PORT[$i]}"
done
rules_args=(--nat "$NAT" --lan-if "$LAN_IF" --wan-if "$WAN_IF" --lan-subnet "$LAN_NET/$LAN_PLEN"
    --wan-ip "$WAN_IP" --timeout "$TIMEOUT")
for a in "${HOST_ADDRS[@]}"; do rules_args+=(--host-addr "$a"); done
[ -z "$fwd_list" ] || rules_args+=(--forward "$fwd_list")

t0=$(date +%s%N)
out=$(router-rules "${rules_args[@]}" 2>&1 >"$RULES") \
    || die "P2PLAB_NAT=$NAT: router-rules failed: $(oneline "$out")"
out=$(nft -f "$RULES" 2>&1) \
    || die "P2PLAB_NAT=$NAT: nft -f $RULES failed: $(oneline "$out")$(cap_hint "$out")"
t1=$(date +%s%N)

# ------------------------------------------------------------ impairments ---
if [ -n "${P2PLAB_DELAY_MS-}${P2PLAB_JITTER_MS-}${P2PLAB_LOSS_PCT-}${P2PLAB_RATE-}" ]; then
    out=$(p2plab-impair "$WAN_IF" --from-env 2>&1 >/dev/null) \
        || die "$(oneline "${out#p2plab-impair: }")"
fi

# ------------------------------------------------------------------ upnp ---
# miniupnpd 2.3.1 refuses to map anything when its external address is
# "reserved" (its addr_is_reserved(), which includes RFC 2544's 198.18.0.0/15,
# the lab's internet), and refuses ext_ip= in those ranges. Its STUN mode takes
# the external address from a STUN answer without that check, so the router
# answers miniupnpd's STUN test itself, on loopback only: a 30-line responder
# that reports P2PLAB_WAN_IP and the asking port, i.e. "this router's WAN is on
# the internet, unfiltered", which is true of the lab's internet. Nothing else
# can reach the responder (127.0.0.1).
STUN_RESPONDER='
import socket, struct, sys
wan = socket.inet_aton(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[2])))
print("ready", flush=True)
while True:
    data, (host, port) = s.recvfrom(2048)
    if len(data) < 20 or data[0:2] != b"\x00\x01":
        continue
    cookie = data[4:8]
    xport = port ^ ((cookie[0] << 8) | cookie[1])
    xaddr = bytes(a ^ b for a, b in zip(wan, cookie))
    body = struct.pack("!HHBBH", 0x0001, 8, 0, 1, port) + wan
    body += struct.pack("!HHBBH", 0x0020, 8, 0, 1, xport) + xaddr
    s.sendto(struct.pack("!HH", 0x0101, len(body)) + data[4:20] + body, (host, port))
'
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
if [ "$NAT" = upnp ]; then
    command -v miniupnpd >/dev/null 2>&1 || die "P2PLAB_NAT=upnp: miniupnpd is missing (the image lacks miniupnpd-nftables)"
    command -v python3 >/dev/null 2>&1 || die "P2PLAB_NAT=upnp: python3 is missing (the STUN self-test responder needs it)"
    uuid=$(cat /proc/sys/kernel/random/uuid 2>/dev/null) || uuid=""
    cat >"$UPNP_CONF" <<EOF || die "cannot write $UPNP_CONF"
# generated by $PROG (P2PLAB_NAT=upnp)
ext_ifname=$WAN_IF
listening_ip=$LAN_IF
http_port=$UPNP_HTTP_PORT
enable_upnp=yes
enable_natpmp=yes
ipv6_disable=yes
secure_mode=yes
system_uptime=yes
notify_interval=60
clean_ruleset_interval=600
min_lifetime=120
max_lifetime=86400
friendly_name=p2plab upnp router
${uuid:+uuid=$uuid}
ext_perform_stun=yes
ext_stun_host=127.0.0.1
ext_stun_port=$STUN_PORT
upnp_table_name=$UPNP_TABLE
upnp_nat_table_name=$UPNP_TABLE
upnp_forward_chain=forward_miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
allow 1024-65535 $LAN_NET/$LAN_PLEN 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
EOF
    : >"$UPNP_LOG"
    coproc STUN { exec python3 -c "$STUN_RESPONDER" "$WAN_IP" "$STUN_PORT" 2>>"$UPNP_LOG"; }
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
fi
t2=$(date +%s%N)

# ------------------------------------------------------------------ ready ---
fw_json=""
for i in "${!FWD_PROTO[@]}"; do
    fw_json="${fw_json:+$fw_json,}{\"proto\":\"${FWD_PROTO[$i]}\",\"port\":${FWD_EXT[$i]},\"to\":\"${FWD_IP[$i]}:${FWD_PORT[$i]}\"}"
done
host_json=$(printf '"%s",' "${HOST_ADDRS[@]}"); host_json=${host_json%,}
if [ -n "$UPLINK_GW" ]; then gw_json="\"$UPLINK_GW\""; else gw_json=null; fi
upnp_json=null
if [ "$NAT" = upnp ]; then
    upnp_json="{\"daemon\":\"miniupnpd\",\"pid\":$upnp_pid,\"ext_ip\":\"$WAN_IP\",\"http\":\"$LAN_IP:$UPNP_HTTP_PORT\",\"ssdp_port\":$SSDP_PORT,\"natpmp_port\":$NATPMP_PORT,\"allow\":\"1024-65535 $LAN_NET/$LAN_PLEN 1024-65535\",\"start_ms\":$(( (t2 - t1) / 1000000 ))}"
fi
routes_json=""
if [ "${#UPLINK_ROUTES[@]}" -gt 0 ]; then
    routes_json=$(printf '"%s",' "${UPLINK_ROUTES[@]}"); routes_json=${routes_json%,}
fi
printf '{"event":"router_ready","nat":"%s","mapping":"%s","filtering":"%s","lan":"%s","lan_ip":"%s","lan_subnet":"%s","wan":"%s","wan_ip":"%s","wan_subnet":"%s","uplink_gw":%s,"uplink_routes":[%s],"mapping_timeout_s":%s,"forwards":[%s],"upnp":%s,"blocked_host_addrs":[%s],"ruleset":"%s","apply_ms":%s}\n' \
    "$NAT" "$MAPPING" "$FILTERING" "$LAN_IF" "$LAN_IP" "$LAN_NET/$LAN_PLEN" "$WAN_IF" "$WAN_IP" \
    "$WAN_NET/$WAN_PLEN" "$gw_json" "$routes_json" "$TIMEOUT" "$fw_json" "$upnp_json" "$host_json" "$RULES" $(( (t1 - t0) / 1000000 ))

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

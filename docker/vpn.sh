#!/usr/bin/env bash
# p2plab-vpn: a WireGuard VPN for the lab, in userspace (wireguard-go on a TUN
# device; the host has no WireGuard kernel module). Installed in the node image
# as /usr/local/bin/p2plab-vpn.
#
# Needs: --cap-add NET_ADMIN and --device /dev/net/tun (never --privileged).
#
# Two roles, by P2PLAB_VPN_ROLE:
#
#   exit    On the lab's internet segment. Brings up wg0 with P2PLAB_VPN_ADDR,
#           accepts the one client P2PLAB_VPN_PEER, and masquerades the
#           tunnel's traffic to the internet segment behind its own address
#           (the "VPN exit that translates it"). Prints one JSON line
#           {"event":"vpn_ready",...} on stdout, then waits; SIGTERM/SIGINT
#           exit 0. Run it with P2PLAB_NO_DEFAULT_ROUTE=1 and
#           --sysctl net.ipv4.ip_forward=1.
#
#   client  Brings up wg0 with P2PLAB_VPN_ADDR, peer = the exit at
#           P2PLAB_VPN_ENDPOINT (ip:port), keepalive 5 s. Keeps a /32 route to
#           the endpoint via the route it has now (its LAN gateway: set
#           P2PLAB_GATEWAY), then routes the lab ranges (P2PLAB_VPN_ROUTES) via
#           wg0. Prints {"event":"vpn_ready",...} on stderr (stdout belongs to
#           the node it runs), then exec "$@" (e.g. `dialer ...`).
#
# Environment:
#   P2PLAB_VPN_ROLE      exit | client                          (required)
#   P2PLAB_VPN_KEY       this side's private key, base64 (`wg genkey`)   (required)
#   P2PLAB_VPN_PEER      the other side's public key, base64    (required)
#   P2PLAB_VPN_ADDR      tunnel address with prefix, e.g. 100.77.0.1/24 (required)
#   P2PLAB_VPN_PORT      exit: UDP listen port                  (51821)
#   P2PLAB_VPN_PEER_ADDR exit: the client's tunnel address(es), allowed-ips
#                        (default: the client is P2PLAB_VPN_ADDR's .2 /32)
#   P2PLAB_VPN_ENDPOINT  client: the exit's ip:port             (required for client)
#   P2PLAB_VPN_ROUTES    client: ranges sent through the tunnel
#                        (198.18.0.0/15 100.64.0.0/10 10.0.0.0/8)
#   P2PLAB_VPN_MTU       1420
#
# Keys in the lab's compose file are static lab-only keys, published in the
# repository: they protect nothing and must never be used outside the lab.
set -euo pipefail

PROG=p2plab-vpn
die() { echo "$PROG: $*" >&2; exit 1; }

ROLE=${P2PLAB_VPN_ROLE:-}
KEY=${P2PLAB_VPN_KEY:-}
PEER=${P2PLAB_VPN_PEER:-}
ADDR=${P2PLAB_VPN_ADDR:-}
PORT=${P2PLAB_VPN_PORT:-51821}
MTU=${P2PLAB_VPN_MTU:-1420}
ROUTES=${P2PLAB_VPN_ROUTES:-198.18.0.0/15 100.64.0.0/10 10.0.0.0/8}
IFACE=wg0

case "$ROLE" in
    exit|client) ;;
    *) die "P2PLAB_VPN_ROLE=$ROLE: must be exit or client" ;;
esac
[ -n "$KEY" ] || die "P2PLAB_VPN_KEY is required (a base64 private key from wg genkey)"
[ -n "$PEER" ] || die "P2PLAB_VPN_PEER is required (the other side's base64 public key)"
[[ "$ADDR" =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$ ]] || die "P2PLAB_VPN_ADDR=$ADDR: want an IPv4 address with prefix, e.g. 100.77.0.1/24"
[[ "$PORT" =~ ^[0-9]+$ ]] || die "P2PLAB_VPN_PORT=$PORT: not a port"
[[ "$MTU" =~ ^[0-9]+$ ]] || die "P2PLAB_VPN_MTU=$MTU: not a number"
[ -c /dev/net/tun ] || die "/dev/net/tun missing: run with --device /dev/net/tun (compose: devices: [/dev/net/tun])"

t0=$(date +%s%3N)

# The private key goes through a file only wg reads (not the command line).
umask 077
KEYFILE=/run/p2plab-vpn.key
printf '%s\n' "$KEY" >"$KEYFILE"
PUB=$(wg pubkey <"$KEYFILE" 2>/dev/null) || die "P2PLAB_VPN_KEY is not a WireGuard private key"

# wireguard-go forks into the background once wg0 exists (its UAPI socket is
# in /var/run/wireguard). Its big "use the kernel module" warning goes to stderr.
out=$(wireguard-go "$IFACE" 2>&1) || die "wireguard-go $IFACE failed: $(echo "$out" | tail -n 3 | tr '\n' ' ') (NET_ADMIN and /dev/net/tun are needed)"
for _ in $(seq 50); do
    [ -S "/var/run/wireguard/$IFACE.sock" ] && break
    sleep 0.1
done
[ -S "/var/run/wireguard/$IFACE.sock" ] || die "wireguard-go started but $IFACE's control socket never appeared"

ip_or_die() { ip "$@" 2>/tmp/p2plab-vpn.err || die "ip $*: $(cat /tmp/p2plab-vpn.err)"; }

ip_or_die address add "$ADDR" dev "$IFACE"
ip_or_die link set "$IFACE" mtu "$MTU" up
TUN_IP=${ADDR%/*}

json_list() { local s="" x; for x in "$@"; do s="$s${s:+,}\"$x\""; done; printf '[%s]' "$s"; }

if [ "$ROLE" = exit ]; then
    if [ -n "${P2PLAB_VPN_PEER_ADDR:-}" ]; then
        PEER_ADDR=$P2PLAB_VPN_PEER_ADDR
    else
        PEER_ADDR="${TUN_IP%.*}.2/32"
    fi
    wg set "$IFACE" listen-port "$PORT" private-key "$KEYFILE" \
        peer "$PEER" allowed-ips "$PEER_ADDR" \
        || die "wg set $IFACE (exit, port $PORT, peer allowed-ips $PEER_ADDR) failed"
    [ "$(cat /proc/sys/net/ipv4/ip_forward)" = 1 ] \
        || sysctl -qw net.ipv4.ip_forward=1 2>/dev/null \
        || die "net.ipv4.ip_forward is 0 and cannot be set: run with --sysctl net.ipv4.ip_forward=1"
    # The internet side: the interface of the first non-tunnel IPv4 address.
    read -r WAN WAN_CIDR < <(ip -o -4 addr show | awk -v t="$IFACE" '$2 != "lo" && $2 != t { print $2, $4; exit }') \
        || die "no internet-side interface found"
    WAN_IP=${WAN_CIDR%/*}
    cat >/run/p2plab-vpn.nft <<EOF
table ip p2plab_vpn
delete table ip p2plab_vpn
table ip p2plab_vpn {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        iifname "$IFACE" oifname "$WAN" snat to $WAN_IP
    }
    chain forward {
        type filter hook forward priority filter; policy drop;
        iifname "$IFACE" oifname "$WAN" accept
        iifname "$WAN" oifname "$IFACE" ct state established,related accept
    }
}
EOF
    nft -f /run/p2plab-vpn.nft 2>/tmp/p2plab-vpn.err || die "nft -f /run/p2plab-vpn.nft: $(cat /tmp/p2plab-vpn.err)"
    printf '{"event":"vpn_ready","role":"exit","iface":"%s","addr":"%s","public_key":"%s","listen_port":%s,"peer":"%s","peer_allowed_ips":"%s","wan":"%s","wan_ip":"%s","mtu":%s,"setup_ms":%s}\n' \
        "$IFACE" "$ADDR" "$PUB" "$PORT" "$PEER" "$PEER_ADDR" "$WAN" "$WAN_IP" "$MTU" "$(( $(date +%s%3N) - t0 ))"
    trap 'exit 0' TERM INT
    while :; do sleep 3600 & wait $! || true; done
fi

# ------------------------------------------------------------------ client ---
ENDPOINT=${P2PLAB_VPN_ENDPOINT:-}
[[ "$ENDPOINT" =~ ^(([0-9]{1,3}\.){3}[0-9]{1,3}):([0-9]+)$ ]] \
    || die "P2PLAB_VPN_ENDPOINT=$ENDPOINT: want ip:port of the exit"
EP_IP=${BASH_REMATCH[1]}
[ $# -gt 0 ] || die "client: no command to run after the tunnel is up (e.g. dialer ...)"

# Keep the way to the endpoint itself out of the tunnel: a /32 via the route
# the container has now (its LAN gateway).
via=$(ip -4 route get "$EP_IP" 2>/dev/null | head -n 1) \
    || die "no route to the endpoint $EP_IP (set P2PLAB_GATEWAY to the LAN gateway)"
GW=$(awk '{ for (i = 1; i < NF; i++) if ($i == "via") { print $(i + 1); exit } }' <<<"$via")
DEV=$(awk '{ for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit } }' <<<"$via")
if [ -n "$GW" ]; then
    ip_or_die route replace "$EP_IP/32" via "$GW" dev "$DEV"
else
    ip_or_die route replace "$EP_IP/32" dev "$DEV"
fi

# shellcheck disable=SC2086  # ROUTES is a list
allowed=$(echo $ROUTES | tr ' ' ',')
wg set "$IFACE" private-key "$KEYFILE" \
    peer "$PEER" endpoint "$ENDPOINT" allowed-ips "$allowed" persistent-keepalive 5 \
    || die "wg set $IFACE (client, endpoint $ENDPOINT, allowed-ips $allowed) failed"
for r in $ROUTES; do
    ip_or_die route replace "$r" dev "$IFACE"
done
# shellcheck disable=SC2086  # ROUTES is a list
printf '{"event":"vpn_ready","role":"client","iface":"%s","addr":"%s","public_key":"%s","peer":"%s","endpoint":"%s","endpoint_via":"%s","routes":%s,"mtu":%s,"setup_ms":%s}\n' \
    "$IFACE" "$ADDR" "$PUB" "$PEER" "$ENDPOINT" "${GW:-$DEV}" "$(json_list $ROUTES)" "$MTU" "$(( $(date +%s%3N) - t0 ))" >&2
exec "$@"

#!/bin/sh
# p2plab container entrypoint.
#
# Applies routing settings taken from the environment, then exec's the role
# command ("$@"), e.g. `monitor --help`, `listener ...`, `dialer ...`.
#
#   P2PLAB_GATEWAY=<ip>          delete every default route, then route the lab's
#                                address ranges (P2PLAB_LAB_RANGES, default
#                                "198.18.0.0/15 100.64.0.0/10 10.0.0.0/8") via <ip>:
#                                a LAN host reaches the whole lab through its
#                                router and still has no route out of the lab
#   P2PLAB_NO_DEFAULT_ROUTE=1    delete every default route (IPv4 and IPv6):
#                                lab isolation, no route out of the container
#   P2PLAB_NO_IPV4=1             IPv6 only: remove every IPv4 address but
#                                loopback's (a segment with `family: ipv6`)
#   P2PLAB_STATIC6="<ipv4> <ipv6>/64 [<v6>@<mac> ...];..."
#                                IPv6 set up here, on a swarm (Docker gives
#                                overlays none): on the interface holding
#                                <ipv4>, address <ipv6>/64 and a permanent
#                                neighbour entry per <v6>@<mac> (Neighbor
#                                Discovery does not cross the overlay); done
#                                before the IPv4 addresses go (P2PLAB_NO_IPV4)
#   P2PLAB_ROUTES="<route>;..."  extra routes, each an `ip route replace`
#                                argument list, separated by ';', e.g.
#                                "10.1.0.0/16 via 198.18.0.2;10.2.0.0/16 dev eth1"
#
# A key file on the command line (`--key-file PATH` or `--key-file=PATH`): its
# directory is made (mode 0700) when missing, so that the node can create the
# key there. When PATH.new-identity exists, PATH and PATH.new-identity are
# removed first, and one line on stderr says so: the node then makes a new key,
# a new identity. The p2plab harness leaves that file for a fault with
# `new_identity: true` (it can write into a stopped container); a plain
# stop/start/restart keeps the key, as an operator's key file does.
#
# P2PLAB_HOLD=1: everything above is done, then the command waits for SIGUSR1
# before it runs, on the container's first start only (a restarted container
# runs at once). The p2plab harness starts a lab's containers several at a
# time and then lets the peers go one by one, in its own order: the engine's
# work (filesystem, namespaces, network endpoints) is parallel, the peers'
# starts are not. The line `p2plab-hold: waiting for SIGUSR1` on stdout says
# the signal can be sent.
#
# Route changes need CAP_NET_ADMIN (`docker run --cap-add NET_ADMIN`). When one
# of the variables above is set and a change fails, one line naming the variable
# and its value is printed to stderr and the entrypoint exits 1. When none is
# set, no capability is needed and nothing is touched.
set -u

PROG=p2plab-entrypoint

# fail VAR VALUE ACTION IP_ERROR
fail() {
    _err=$(printf '%s' "$4" | tr '\n' ' ' | sed 's/[[:space:]]*$//')
    case "$_err" in
        *"Operation not permitted"*)
            _hint=" (container lacks CAP_NET_ADMIN: run with --cap-add NET_ADMIN)" ;;
        *) _hint="" ;;
    esac
    echo "$PROG: $1=$2: $3 failed: ${_err:-unknown error}$_hint" >&2
    exit 1
}

is_true() {
    case "$1" in
        1|true|TRUE|True|yes|YES|on|ON) return 0 ;;
        ""|0|false|FALSE|False|no|NO|off|OFF) return 1 ;;
        *) echo "$PROG: $2=$1: invalid value (use 1 or 0)" >&2; exit 1 ;;
    esac
}

gateway=${P2PLAB_GATEWAY:-}
no_default=${P2PLAB_NO_DEFAULT_ROUTE:-}
routes=${P2PLAB_ROUTES:-}
no_ipv4=${P2PLAB_NO_IPV4:-}
static6=${P2PLAB_STATIC6:-}

if [ -n "$gateway$no_default$routes$no_ipv4$static6" ] && ! command -v ip >/dev/null 2>&1; then
    echo "$PROG: routing variables are set but the 'ip' command (iproute2) is missing" >&2
    exit 1
fi

lab_ranges=${P2PLAB_LAB_RANGES:-198.18.0.0/15 100.64.0.0/10 10.0.0.0/8}

# A gateway carries the lab's ranges only: the default route goes in every case.
if [ -n "$gateway" ] || is_true "$no_default" P2PLAB_NO_DEFAULT_ROUTE; then
    # Delete every default route; a missing default route already satisfies
    # the request. The loop is bounded in case deletion silently does nothing.
    for fam in -4 -6; do
        n=0
        while [ -n "$(ip "$fam" route show default 2>/dev/null)" ]; do
            n=$((n + 1))
            if [ "$n" -gt 16 ]; then
                fail P2PLAB_NO_DEFAULT_ROUTE "$no_default" "ip $fam route del default" "default route still present after 16 deletions"
            fi
            out=$(ip "$fam" route del default 2>&1) ||
                fail P2PLAB_NO_DEFAULT_ROUTE "$no_default" "ip $fam route del default" "$out"
        done
    done
fi

# static6_iface IPV4 IPV6/64 [V6@MAC ...]: one interface of P2PLAB_STATIC6 (a function, so that
# its words never touch the command's "$@")
static6_iface() {
    [ $# -ge 2 ] || fail P2PLAB_STATIC6 "$static6" "reading '$*'" "want: IPV4 IPV6/64 [V6@MAC ...]"
    _v4=$1 _v6=$2
    shift 2
    # an interface may come a little after the start (as p2plab-router waits for its own)
    _tries=0
    while :; do
        _dev=$(ip -o -4 addr show | awk -v a="$_v4" 'index($4, a "/") == 1 {print $2; exit}')
        [ -n "$_dev" ] && break
        _tries=$((_tries + 1))
        [ "$_tries" -le 50 ] ||
            fail P2PLAB_STATIC6 "$static6" "finding the interface of $_v4" "no interface has it after 10 s"
        sleep 0.2
    done
    _out=$(ip -6 addr replace "$_v6" dev "$_dev" nodad 2>&1) ||
        fail P2PLAB_STATIC6 "$static6" "ip -6 addr replace $_v6 dev $_dev" "$_out"
    for _n in "$@"; do
        _out=$(ip -6 neigh replace "${_n%@*}" lladdr "${_n#*@}" dev "$_dev" nud permanent 2>&1) ||
            fail P2PLAB_STATIC6 "$static6" "ip -6 neigh replace ${_n%@*} lladdr ${_n#*@} dev $_dev" "$_out"
    done
}

if [ -n "$static6" ]; then
    set -f
    old_ifs=$IFS
    IFS=';'
    for iface in $static6; do
        IFS=$old_ifs
        # shellcheck disable=SC2086  # the words of one interface
        static6_iface $iface
        IFS=';'
    done
    IFS=$old_ifs
    set +f
fi

if is_true "$no_ipv4" P2PLAB_NO_IPV4; then
    for dev in $(ip -o -4 addr show scope global | awk '{print $2}' | sort -u); do
        out=$(ip -4 addr flush dev "$dev" scope global 2>&1) ||
            fail P2PLAB_NO_IPV4 "$no_ipv4" "ip -4 addr flush dev $dev" "$out"
    done
fi

if [ -n "$gateway" ]; then
    for range in $lab_ranges; do
        out=$(ip route replace "$range" via "$gateway" 2>&1) ||
            fail P2PLAB_GATEWAY "$gateway" "ip route replace $range via $gateway" "$out"
    done
fi

if [ -n "$routes" ]; then
    set -f            # a route spec is split into words, never globbed
    old_ifs=$IFS
    IFS=';'
    for spec in $routes; do
        IFS=$old_ifs
        # trim surrounding whitespace; skip empty entries (e.g. a trailing ';')
        spec=$(printf '%s' "$spec" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
        [ -n "$spec" ] || continue
        # shellcheck disable=SC2086  # word splitting of the spec is intended
        out=$(ip route replace $spec 2>&1) ||
            fail P2PLAB_ROUTES "$routes" "ip route replace $spec" "$out"
    done
    IFS=$old_ifs
    set +f
fi

if [ "$#" -eq 0 ]; then
    echo "$PROG: no command given; usage: docker run [options] IMAGE monitor|listener|dialer [args...]" >&2
    exit 2
fi

prev=
for arg in "$@"; do
    key=
    case "$arg" in
        --key-file=*) key=${arg#--key-file=} ;;
        *) if [ "$prev" = "--key-file" ]; then key=$arg; fi ;;
    esac
    prev=$arg
    [ -n "$key" ] || continue
    dir=$(dirname -- "$key")
    if [ ! -d "$dir" ]; then
        out=$(mkdir -p -m 0700 -- "$dir" 2>&1) || {
            echo "$PROG: --key-file $key: mkdir $dir failed: $out" >&2
            exit 1
        }
    fi
    if [ -e "$key.new-identity" ]; then
        out=$(rm -f -- "$key" "$key.new-identity" 2>&1) || {
            echo "$PROG: --key-file $key: removing it for a new identity failed: $out" >&2
            exit 1
        }
        echo "$PROG: --key-file $key: removed (new identity asked for)" >&2
    fi
done

# P2PLAB_HOLD (see above). The marker lives in the container's own filesystem,
# so it survives a restart of the container and nothing else.
released_marker=/tmp/.p2plab-released
if is_true "${P2PLAB_HOLD:-}" P2PLAB_HOLD && [ ! -e "$released_marker" ]; then
    released=
    sleeper=
    trap 'released=1' USR1
    echo "p2plab-hold: waiting for SIGUSR1"
    # A trapped signal ends `wait` at once. One that lands between the loop's
    # test and `wait` is only seen at the next test: hence short sleeps (a lost
    # race costs at most a second, never a hang).
    while [ -z "$released" ]; do
        sleep 1 &
        sleeper=$!
        wait "$sleeper" 2>/dev/null
    done
    [ -z "$sleeper" ] || kill "$sleeper" 2>/dev/null
    trap - USR1
    : >"$released_marker"
fi

exec "$@"

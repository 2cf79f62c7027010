#!/usr/bin/env bash
# p2plab link impairments: installed in the node image as /usr/local/bin/p2plab-impair.
#
#   p2plab-impair IFACE [--delay MS] [--jitter MS] [--loss PCT] [--rate RATE]
#                       [--queue N] [--from-env]
#   p2plab-impair IFACE --clear
#
# Run inside a router container (CAP_NET_ADMIN). Impairs the packets the router
# FORWARDS out of IFACE, i.e. ONE direction: on a router's WAN interface, the
# LAN -> internet direction. A round trip through the router therefore grows by
# the delay once, and loses PCT% of its requests (so PCT% of round trips).
# Packets arriving on IFACE and the router's own packets are not touched.
#
#   --delay MS    fixed delay, integer ms (0-60000)        } through NFQUEUE and
#   --jitter MS   uniform jitter +-MS around the delay,    } `delayline` (netem is
#                 total clamped at 0; reorders like netem } missing on this kernel)
#   --loss PCT    random loss, percent with up to 2 decimals (0-100), e.g. 0.5
#   --rate RATE   egress rate limit: <n>[bit|kbit|mbit|gbit] (8kbit-100gbit), a
#                 `tbf` root qdisc on IFACE (burst: 10 ms of the rate, at least
#                 two 1514-byte frames; latency 100 ms, then tail drop). Unlike
#                 the others, it also limits the router's own packets on IFACE.
#   --queue N     NFQUEUE number for the delay (default 7; one per interface)
#   --from-env    defaults from P2PLAB_DELAY_MS, P2PLAB_JITTER_MS,
#                 P2PLAB_LOSS_PCT, P2PLAB_RATE (used by p2plab-router); options
#                 given after it override them
#   --clear       remove every impairment of IFACE
#
# Each call REPLACES the interface's whole impairment set (idempotent): an
# option not given means "none" (`--delay 0 --loss 10` = loss only).
#
# Mechanics: nft table `inet p2plab_impair` (the router's `ip p2plab_router`
# is not touched), one base chain per interface, `fwd_<iface>`, on the forward
# hook at priority filter + 10, so after the router's own filter accepted the
# packet: `oifname != IFACE return`, `numgen random mod 10000 < PCT*100 drop`,
# then `xt target NFQUEUE --queue-num N --queue-bypass` (nft_compat: this
# kernel has no nft `queue` expression; added by a small python3 netlink batch,
# see add_queue_rule; `nft list` inside the image shows it as an empty line)
# to the `delayline` daemon (started in the
# background, pid in /run/p2plab-delayline.<iface>.pid, log in
# /run/p2plab-delayline.<iface>.log; `bypass`: packets pass undelayed when no
# delayline is bound). The delayline is started and bound before the queue
# rule is installed; the chain is replaced in one `nft -f` transaction, then
# the NFQUEUE rule is appended (a second transaction).
#
# Bad values: one line on stderr, exit 1. Success: one JSON line on stdout
#   {"event":"impair_applied","iface":"eth0","delay_ms":50,...}
set -u

PROG=p2plab-impair
TABLE=p2plab_impair

die() { echo "$PROG: $*" >&2; exit 1; }
oneline() { printf '%s' "$1" | tr '\n\t' '  ' | sed 's/  */ /g; s/^ //; s/ $//'; }

usage="usage: $PROG IFACE [--delay MS] [--jitter MS] [--loss PCT] [--rate RATE] [--queue N] [--from-env] | IFACE --clear"

[ $# -ge 1 ] || die "$usage"
case "$1" in -h|--help) echo "$usage"; exit 0 ;; esac
IFACE=$1; shift
[[ $IFACE =~ ^[A-Za-z0-9_.-]{1,15}$ ]] || die "IFACE=$IFACE: not an interface name"

DELAY="" JITTER="" LOSS="" RATE="" QUEUE=7 CLEAR=0
DELAY_SRC=--delay JITTER_SRC=--jitter LOSS_SRC=--loss RATE_SRC=--rate
need_val() { [ $# -ge 2 ] || die "$1: needs a value ($usage)"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --delay)  need_val "$@"; DELAY=$2;  DELAY_SRC=--delay;  shift 2 ;;
        --jitter) need_val "$@"; JITTER=$2; JITTER_SRC=--jitter; shift 2 ;;
        --loss)   need_val "$@"; LOSS=$2;   LOSS_SRC=--loss;   shift 2 ;;
        --rate)   need_val "$@"; RATE=$2;   RATE_SRC=--rate;   shift 2 ;;
        --queue)  need_val "$@"; QUEUE=$2; shift 2 ;;
        --clear)  CLEAR=1; shift ;;
        --from-env)
            [ -z "${P2PLAB_DELAY_MS-}" ]  || { DELAY=$P2PLAB_DELAY_MS;   DELAY_SRC=P2PLAB_DELAY_MS; }
            [ -z "${P2PLAB_JITTER_MS-}" ] || { JITTER=$P2PLAB_JITTER_MS; JITTER_SRC=P2PLAB_JITTER_MS; }
            [ -z "${P2PLAB_LOSS_PCT-}" ]  || { LOSS=$P2PLAB_LOSS_PCT;    LOSS_SRC=P2PLAB_LOSS_PCT; }
            [ -z "${P2PLAB_RATE-}" ]      || { RATE=$P2PLAB_RATE;        RATE_SRC=P2PLAB_RATE; }
            shift ;;
        *) die "unknown argument '$1' ($usage)" ;;
    esac
done
if [ "$CLEAR" = 1 ] && [ -n "$DELAY$JITTER$LOSS$RATE" ]; then
    die "--clear takes no other impairment"
fi

# ------------------------------------------------------------- validation ---
ms_val() {   # NAME VALUE -> prints integer ms
    [[ $2 =~ ^[0-9]{1,5}$ ]] && [ $((10#$2)) -le 60000 ] \
        || die "$1=$2: not a whole number of milliseconds between 0 and 60000"
    echo $((10#$2))
}
DELAY_MS=0 JITTER_MS=0 LOSS_N=0 RATE_BPS=0
[ -z "$DELAY" ]  || DELAY_MS=$(ms_val "$DELAY_SRC" "$DELAY") || exit 1
[ -z "$JITTER" ] || JITTER_MS=$(ms_val "$JITTER_SRC" "$JITTER") || exit 1
if [ -n "$LOSS" ]; then
    [[ $LOSS =~ ^([0-9]{1,3})(\.([0-9]{1,2}))?$ ]] \
        || die "$LOSS_SRC=$LOSS: not a percentage between 0 and 100 (up to 2 decimals, e.g. 0.5)"
    frac=${BASH_REMATCH[3]}
    frac=${frac}00; frac=${frac:0:2}
    LOSS_N=$(( 10#${BASH_REMATCH[1]} * 100 + 10#$frac ))   # in 1/10000
    [ "$LOSS_N" -le 10000 ] || die "$LOSS_SRC=$LOSS: not a percentage between 0 and 100"
fi
if [ -n "$RATE" ]; then
    [[ $RATE =~ ^([0-9]{1,12})(bit|kbit|mbit|gbit)?$ ]] \
        || die "$RATE_SRC=$RATE: not a rate like 1mbit, 500kbit or 1gbit"
    n=$((10#${BASH_REMATCH[1]}))
    case "${BASH_REMATCH[2]}" in
        ""|bit) RATE_BPS=$n ;;
        kbit) RATE_BPS=$((n * 1000)) ;;
        mbit) RATE_BPS=$((n * 1000000)) ;;
        gbit) RATE_BPS=$((n * 1000000000)) ;;
    esac
    { [ "$RATE_BPS" -ge 8000 ] && [ "$RATE_BPS" -le 100000000000 ]; } \
        || die "$RATE_SRC=$RATE: rate out of range (8kbit-100gbit)"
fi
[[ $QUEUE =~ ^[0-9]{1,5}$ ]] && [ $((10#$QUEUE)) -le 65535 ] || die "--queue=$QUEUE: not a queue number (0-65535)"
QUEUE=$((10#$QUEUE))

command -v nft >/dev/null 2>&1 || die "the 'nft' command (nftables) is missing"
command -v tc >/dev/null 2>&1 || die "the 'tc' command (iproute2) is missing"
ip link show dev "$IFACE" >/dev/null 2>&1 || die "IFACE=$IFACE: no such interface"

CHAIN=fwd_${IFACE//[^A-Za-z0-9_]/_}
SAFE=${IFACE//[^A-Za-z0-9_.-]/_}
PIDFILE=/run/p2plab-delayline.$SAFE.pid
LOGFILE=/run/p2plab-delayline.$SAFE.log
WANT_DELAY=0
[ "$DELAY_MS" -gt 0 ] || [ "$JITTER_MS" -gt 0 ] && WANT_DELAY=1

cap_hint() {
    case "$1" in *"Operation not permitted"*) echo " (needs CAP_NET_ADMIN: run the container with --cap-add NET_ADMIN)" ;; esac
}

# -------------------------------------------------------------- delayline ---
stop_delayline() {
    local pid i state
    [ -f "$PIDFILE" ] || return 0
    pid=$(cat "$PIDFILE" 2>/dev/null)
    rm -f "$PIDFILE"
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    # only our delayline (the pid may have been reused)
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q delayline || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 100); do   # up to 5 s; a zombie (not reaped yet) counts as gone
        state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 0
        [ -n "$state" ] && [ "$state" != Z ] || return 0
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
}

start_delayline() {
    command -v delayline >/dev/null 2>&1 || die "the 'delayline' binary is missing"
    : >"$LOGFILE"
    setsid delayline --queue "$QUEUE" --delay-ms "$DELAY_MS" --jitter-ms "$JITTER_MS" \
        </dev/null >>"$LOGFILE" 2>&1 &
    local pid=$! i
    echo "$pid" >"$PIDFILE"
    for i in $(seq 1 100); do   # up to 5 s
        grep -q '"delayline_ready"' "$LOGFILE" 2>/dev/null && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PIDFILE"
            die "delayline did not start: $(oneline "$(tail -n 3 "$LOGFILE" 2>/dev/null)")"
        fi
        sleep 0.05
    done
    stop_delayline
    die "delayline did not report ready within 5 s: $(oneline "$(tail -n 3 "$LOGFILE" 2>/dev/null)")"
}

# ------------------------------------------------------------------ rules ---
# Appends `xt target NFQUEUE --queue-num Q --queue-bypass` (nft_compat, what
# iptables-nft would add) to table inet $TABLE, chain $CHAIN. This kernel has
# no nft `queue` expression (CONFIG_NFT_QUEUE off) but has xt_NFQUEUE, nft
# 1.0.6 cannot add xt statements, and the image has no iptables: so the one
# netlink batch is sent from python3 (python3-minimal: socket, struct).
add_queue_rule() {
    python3 - "$TABLE" "$CHAIN" "$QUEUE" <<'PY'
import os, socket, struct, sys
table, chain, queue = sys.argv[1], sys.argv[2], int(sys.argv[3])
NFPROTO_INET, SUBSYS_NFTABLES, NFT_MSG_NEWRULE = 1, 10, 6
BATCH_BEGIN, BATCH_END, NLMSG_ERROR = 16, 17, 2
def attr(t, data):
    n = 4 + len(data)
    return struct.pack("=HH", n, t) + data + b"\0" * (-n % 4)
def nest(t, data):
    return attr(t | 0x8000, data)
def sz(s):
    return s.encode() + b"\0"
def msg(typ, flags, seq, family, res_id, payload):
    body = struct.pack("=BBH", family, 0, socket.htons(res_id)) + payload
    return struct.pack("=IHHII", 16 + len(body), typ, flags, seq, 0) + body
# struct xt_NFQ_info_v3 { u16 queuenum, queues_total, flags } (NFQ_FLAG_BYPASS = 1), XT_ALIGNed to 8
info = struct.pack("=HHHxx", queue, 1, 1)
target = nest(2, attr(1, sz("NFQUEUE")) + attr(2, struct.pack(">I", 3)) + attr(3, info))
rule = attr(1, sz(table)) + attr(2, sz(chain)) + nest(4, nest(1, attr(1, sz("target")) + target))
batch = (msg(BATCH_BEGIN, 1, 1, 0, SUBSYS_NFTABLES, b"")
         + msg(SUBSYS_NFTABLES << 8 | NFT_MSG_NEWRULE, 0x1 | 0x4 | 0x400 | 0x800, 2, NFPROTO_INET, 0, rule)
         + msg(BATCH_END, 1, 3, 0, SUBSYS_NFTABLES, b""))
try:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
    s.bind((0, 0))
    s.settimeout(5)
    s.send(batch)
    while True:
        data, off = s.recv(65536), 0
        while off + 20 <= len(data):
            n, typ, _, seq, _ = struct.unpack_from("=IHHII", data, off)
            if typ == NLMSG_ERROR:
                err = struct.unpack_from("=i", data, off + 16)[0]
                if err:
                    sys.exit(os.strerror(-err))
                if seq == 2:
                    sys.exit(0)
            if n < 16:
                break
            off += (n + 3) & ~3
except OSError as e:
    sys.exit(str(e))
PY
}

apply_nft() {   # replaces the interface's chain (removes it with nothing to do)
    local rules="" out
    [ "$LOSS_N" -gt 0 ] && rules+="        numgen random mod 10000 < $LOSS_N counter drop comment \"loss $LOSS%\""$'\n'
    [ "$WANT_DELAY" = 1 ] && rules+="        counter comment \"delay ${DELAY_MS}ms jitter ${JITTER_MS}ms: xt NFQUEUE $QUEUE bypass follows\""$'\n'
    [ -z "$rules" ] || rules="        oifname != \"$IFACE\" return"$'\n'"$rules"
    local hook="type filter hook forward priority filter + 10; policy accept;"
    local ruleset="table inet $TABLE {}
add chain inet $TABLE $CHAIN { $hook }
flush chain inet $TABLE $CHAIN
delete chain inet $TABLE $CHAIN
"
    if [ -n "$rules" ]; then
        ruleset+="table inet $TABLE {
    chain $CHAIN {
        $hook
$rules    }
}
"
    fi
    out=$(printf '%s' "$ruleset" | nft -f - 2>&1) \
        || die "nft failed to apply the impairment rules of $IFACE: $(oneline "$out")$(cap_hint "$out")"
    if [ "$WANT_DELAY" = 1 ]; then
        out=$(add_queue_rule 2>&1) \
            || die "cannot add the NFQUEUE rule for the delay on $IFACE: $(oneline "$out")$(cap_hint "$out")"
    fi
    # an empty table is left alone only if another interface still uses it
    if [ -z "$rules" ] && ! nft list chains inet "$TABLE" 2>/dev/null | grep -q 'chain '; then
        nft delete table inet "$TABLE" >/dev/null 2>&1 || true
    fi
}

apply_rate() {
    local out
    if [ "$RATE_BPS" -gt 0 ]; then
        local burst=$((RATE_BPS / 8 / 100))          # 10 ms of the rate, in bytes
        [ "$burst" -ge 3028 ] || burst=3028           # at least two full frames
        out=$(tc qdisc replace dev "$IFACE" root tbf rate "$RATE_BPS"bit burst "$burst" latency 100ms 2>&1) \
            || die "$RATE_SRC=$RATE: tc qdisc replace dev $IFACE root tbf failed: $(oneline "$out")$(cap_hint "$out")"
    elif tc qdisc show dev "$IFACE" root 2>/dev/null | grep -q '^qdisc tbf '; then
        out=$(tc qdisc del dev "$IFACE" root 2>&1) \
            || die "tc qdisc del dev $IFACE root failed: $(oneline "$out")$(cap_hint "$out")"
    fi
}

if [ "$WANT_DELAY" = 1 ]; then
    stop_delayline            # old settings: it lets its held packets through on exit
    start_delayline
    ( apply_nft ) || { stop_delayline; exit 1; }
else
    apply_nft                 # the queue rule goes first, then its daemon
    stop_delayline
fi
apply_rate

printf '{"event":"impair_applied","iface":"%s","delay_ms":%d,"jitter_ms":%d,"loss_pct":%d.%02d,"rate_bit":%d,"queue":%d}\n' \
    "$IFACE" "$DELAY_MS" "$JITTER_MS" $((LOSS_N / 100)) $((LOSS_N % 100)) "$RATE_BPS" "$QUEUE"

#!/bin/bash
# netns-cluster.sh - a throwaway multi-host dagq cluster on one Linux machine.
#
# Each "host" is a network namespace with its own address, joined to the
# others by a veth pair on one Linux bridge, so real dagq binaries talk over
# real TCP between real addresses, and links can be cut, blocked or slowed
# one host at a time. Needs root (or CAP_NET_ADMIN + CAP_SYS_ADMIN) and
# iproute2 (ip, bridge, tc).
#
# Hosts: broker, w1, w2, w3 (workers), client (CLI and gateway). The script
# picks a free private /24 inside 10.231.0.0/16 that collides with no route
# of this machine (nor with another cluster of this script) and uses only
# the addresses it creates:
#
#   10.231.X.1   the bridge, in the calling (root) namespace: the operator's
#                seat (tests talk to the broker from here)
#   10.231.X.10  broker      10.231.X.11-13  w1-w3      10.231.X.20  client
#
# It does not start any dagq process by itself: `start` runs whatever
# command you give in a host, records its pid, and `down` kills it. Nothing
# here is meant for production networks.
#
# Usage: netns-cluster.sh COMMAND NAME [ARGS]
#   up NAME                    create the cluster and check connectivity
#   down NAME                  kill its processes, remove namespaces, links,
#                              bridge and state; safe after any failure and
#                              when run twice
#   exec NAME HOST CMD...      run CMD in HOST's namespace (foreground)
#   start NAME HOST LABEL CMD...
#                              run CMD in HOST's namespace in the background,
#                              in its own session, output to LABEL.log in the
#                              state dir; prints the pid
#   stop NAME LABEL            SIGTERM (then SIGKILL) a started process
#   addr NAME HOST             print HOST's address
#   info NAME                  print key=value lines (addresses, names)
#   cut NAME HOST [link|drop]  cut HOST off: link = its veth down (default);
#                              drop = packets silently dropped, link up
#                              (nft or iptables in HOST when installed, else
#                              the bridge port set to "disabled")
#   heal NAME HOST             undo cut
#   slow NAME HOST [RATE]      rate-limit HOST both ways with tc tbf
#                              (default 256kbit, burst 32kbit, latency 400ms)
#   fast NAME HOST             remove the rate limit
#   list                       clusters with state on this machine
#
# NAME: 1 to 8 of [a-z0-9] (it ends up in interface names, 15 bytes max).
# State: $DAGQ_NETNS_STATE (default /run/dagq-netns)/NAME. With
# DAGQ_NETNS_OWNER=PID at `up`, the cluster belongs to that process: a later
# `up` of any cluster removes it once that process has gone (a test killed
# before it could run `down`).
# Exit status: 0 ok, 1 failure, 2 usage, 77 cannot run here (not root, no
# ip netns), the code of CMD for exec.

set -u
set -o pipefail

PROG=${0##*/}
STATE_ROOT=${DAGQ_NETNS_STATE:-/run/dagq-netns}
HOSTS="broker w1 w2 w3 client"
SLOW_RATE_DEFAULT=256kbit
SLOW_BURST=32kbit
SLOW_LATENCY=400ms
export LC_ALL=C

die() { echo "$PROG: $*" >&2; exit 1; }
usage() { sed -n '/^# Usage:/,/^# Exit status/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
log() { [ -n "${DAGQ_NETNS_QUIET:-}" ] || echo "$PROG: $*" >&2; }

check_name() {
    [[ "$1" =~ ^[a-z0-9]{1,8}$ ]] || { echo "$PROG: NAME must be 1 to 8 of [a-z0-9]: '$1'" >&2; exit 2; }
}

check_host() {
    case " $HOSTS " in *" $1 "*) ;; *) echo "$PROG: unknown host '$1' (one of: $HOSTS)" >&2; exit 2 ;; esac
}

# Short host tag for interface names.
host_tag() {
    case "$1" in broker) echo b ;; client) echo c ;; *) echo "$1" ;; esac
}

host_octet() {
    case "$1" in broker) echo 10 ;; w1) echo 11 ;; w2) echo 12 ;; w3) echo 13 ;; client) echo 20 ;; esac
}

ns_of() { echo "dq-$1-$2"; }                 # namespace of host $2 of cluster $1
veth_of() { echo "dq-$1-$(host_tag "$2")"; }  # host-side veth (root namespace)
bridge_of() { echo "dqb-$1"; }

need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "$PROG: needs root (network namespaces, veth, bridge)" >&2
        exit 77
    fi
    command -v ip >/dev/null 2>&1 || { echo "$PROG: iproute2 'ip' not found" >&2; exit 77; }
    if ! ip netns list >/dev/null 2>&1; then
        echo "$PROG: 'ip netns' does not work here" >&2
        exit 77
    fi
}

state_dir() { echo "$STATE_ROOT/$1"; }

# Serialise up/down of all clusters: subnet choice must not race.
take_lock() {
    mkdir -p "$STATE_ROOT" || die "cannot create $STATE_ROOT"
    exec 9>"$STATE_ROOT/.lock"
    flock -w 60 9 || die "cannot lock $STATE_ROOT/.lock"
}

# --- subnet choice ---------------------------------------------------------

ip2int() {
    local IFS=. a b c d
    read -r a b c d <<<"$1"
    echo $(( (a << 24) | (b << 16) | (c << 8) | d ))
}

# True if prefix $1 (a.b.c.d[/len]) overlaps 10.231.$2.0/24.
overlaps() {
    local pfx=$1 x=$2 addr len
    addr=${pfx%/*}
    if [ "$addr" = "$pfx" ]; then len=32; else len=${pfx#*/}; fi
    [[ "$addr" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || return 1
    [[ "$len" =~ ^[0-9]+$ ]] || return 1
    local n=$len
    [ "$n" -gt 24 ] && n=24
    [ "$n" -eq 0 ] && return 1          # a default route overlaps all: ignore it
    local mask=$(( (0xffffffff << (32 - n)) & 0xffffffff ))
    local a b
    a=$(ip2int "$addr")
    b=$(ip2int "10.231.$x.0")
    [ $(( a & mask )) -eq $(( b & mask )) ]
}

# Every IPv4 destination prefix and address known to this namespace.
known_prefixes() {
    ip -4 route show table all 2>/dev/null | awk '
        { t = $1
          if (t ~ /^(unicast|local|broadcast|multicast|throw|unreachable|prohibit|blackhole|nat|anycast)$/) t = $2
          if (t != "default") print t }'
    ip -4 -o addr show 2>/dev/null | awk '{ print $4 }'
}

pick_subnet() {
    local name=$1 prefixes x start i other used
    prefixes=$(known_prefixes)
    used=" "
    for other in "$STATE_ROOT"/*/subnet; do
        [ -f "$other" ] && used="$used$(cat "$other") "
    done
    # Start at a spot derived from the name so parallel clusters spread out.
    start=$(( $(printf '%s' "$name" | cksum | cut -d' ' -f1) % 250 + 1 ))
    for (( i = 0; i < 254; i++ )); do
        x=$(( (start - 1 + i) % 254 + 1 ))
        case "$used" in *" $x "*) continue ;; esac
        local clash=0 p
        for p in $prefixes; do
            if overlaps "$p" "$x"; then clash=1; break; fi
        done
        [ "$clash" = 0 ] && { echo "$x"; return 0; }
    done
    return 1
}

# --- processes -------------------------------------------------------------

# Start time of a pid (field 22 of /proc/PID/stat), to tell a reused pid apart.
start_time() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    # after "pid (comm) ": field 3 is state, field 22 is the 20th here
    set -- $stat
    echo "${20}"
}

# Kill a recorded process (and its session) if it is still the one we started.
kill_recorded() {
    local file=$1 sig=${2:-KILL} pid st now
    read -r pid st <"$file" 2>/dev/null || return 0
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    now=$(start_time "$pid") || return 0
    [ "$now" = "$st" ] || return 0
    # Started with setsid: its session id is its pid; take the whole session.
    local p
    for p in $(ps -eo pid=,sid= | awk -v s="$pid" '$2 == s { print $1 }'); do
        kill -s "$sig" "$p" 2>/dev/null
    done
    kill -s "$sig" "$pid" 2>/dev/null
    return 0
}

kill_ns_procs() {
    local ns=$1 p i
    for i in 1 2 3 4 5 6 7 8 9 10; do
        local pids
        pids=$(ip netns pids "$ns" 2>/dev/null) || return 0
        [ -z "$pids" ] && return 0
        for p in $pids; do kill -KILL "$p" 2>/dev/null; done
        sleep 0.1
    done
}

# --- commands --------------------------------------------------------------

cmd_up() {
    local name=$1 sd x br h ns veth addr
    need_root
    command -v bridge >/dev/null 2>&1 || { echo "$PROG: iproute2 'bridge' not found" >&2; exit 77; }
    take_lock
    sd=$(state_dir "$name")
    if [ -e "$sd/subnet" ] || ip link show "$(bridge_of "$name")" >/dev/null 2>&1; then
        die "cluster '$name' exists (run: $PROG down $name)"
    fi
    reap_stale
    mkdir -p "$sd/pids" "$sd/logs" || die "cannot create $sd"
    x=$(pick_subnet "$name") || die "no free /24 in 10.231.0.0/16"
    echo "$x" >"$sd/subnet"
    # A cluster owned by a process (a test) goes when that process is gone.
    if [[ "${DAGQ_NETNS_OWNER:-}" =~ ^[0-9]+$ ]]; then
        echo "$DAGQ_NETNS_OWNER $(start_time "$DAGQ_NETNS_OWNER" || echo 0)" >"$sd/owner"
    fi
    # From here on a failure tears down whatever exists.
    trap 'echo "$PROG: up $name failed, tearing down" >&2; cmd_down_locked "$name"; exit 1' ERR
    set -E
    br=$(bridge_of "$name")
    ip link add "$br" type bridge stp_state 0 forward_delay 0
    ip addr add "10.231.$x.1/24" dev "$br"
    ip link set "$br" up
    for h in $HOSTS; do
        ns=$(ns_of "$name" "$h")
        veth=$(veth_of "$name" "$h")
        addr="10.231.$x.$(host_octet "$h")"
        ip netns add "$ns"
        ip link add "$veth" type veth peer name eth0 netns "$ns"
        ip link set "$veth" master "$br"
        ip link set "$veth" up
        ip -n "$ns" link set lo up
        ip -n "$ns" addr add "$addr/24" dev eth0
        ip -n "$ns" link set eth0 up
        # Faster give-up on dead peers is the application's business; keep
        # kernel defaults so tests see what production would.
    done
    set +E
    trap - ERR
    if ! check_connectivity "$name" "$x"; then
        cmd_down_locked "$name"
        die "connectivity check failed"
    fi
    log "cluster $name up: 10.231.$x.0/24 (broker 10.231.$x.10, w1-w3 .11-.13, client .20, bridge .1)"
}

# Until every bridge port forwards (carrier up): a probe sent earlier would
# wait out an ARP timeout.
wait_links() {
    local name=$1 h i
    for (( i = 0; i < 100; i++ )); do
        local all=1
        for h in $HOSTS; do
            bridge link show dev "$(veth_of "$name" "$h")" 2>/dev/null | grep -q "state forwarding" ||
                { all=0; break; }
        done
        [ $all = 1 ] && return 0
        sleep 0.1
    done
    return 1
}

# Reachable when a TCP connect to a closed port is refused (RST) or accepted.
# Probes every address given, in one shell; prints the first unreachable one.
PROBE_SCRIPT='
for a in "$@"; do
    out=$(timeout 2 bash -c "exec 3<>/dev/tcp/$a/9" 2>&1) && continue
    case "$out" in *"Connection refused"*) continue ;; esac
    echo "$a"
    exit 1
done'

probe_from() {
    local ns=$1
    shift
    if [ -n "$ns" ]; then
        ip netns exec "$ns" bash -c "$PROBE_SCRIPT" probe "$@"
    else
        bash -c "$PROBE_SCRIPT" probe "$@"
    fi
}

check_connectivity() {
    local name=$1 x=$2 h g deadline bad all=()
    wait_links "$name" || { echo "$PROG: bridge ports not forwarding" >&2; return 1; }
    for g in $HOSTS; do all+=("10.231.$x.$(host_octet "$g")"); done
    deadline=$(( $(date +%s) + 20 ))
    # Retry the whole mesh until a deadline: a port may still be settling.
    while :; do
        bad=$(probe_from "" "${all[@]}") && {
            for h in $HOSTS; do
                bad=$(probe_from "$(ns_of "$name" "$h")" "10.231.$x.1" "${all[@]}") ||
                    { bad="$h -> $bad"; break; }
            done
        }
        [ -z "$bad" ] && return 0
        [ "$(date +%s)" -ge "$deadline" ] && { echo "$PROG: cannot reach $bad" >&2; return 1; }
        sleep 0.2
    done
}

# Tear down clusters whose owner process died without running `down` (a
# test runner's SIGKILL). Clusters without an owner are left alone.
reap_stale() {
    local d pid st
    for d in "$STATE_ROOT"/*/; do
        [ -f "$d/owner" ] || continue
        read -r pid st <"$d/owner" 2>/dev/null || continue
        [[ "$pid" =~ ^[0-9]+$ ]] || continue
        [ "$(start_time "$pid" 2>/dev/null)" = "$st" ] && continue
        log "cluster $(basename "$d"): its owner (pid $pid) is gone, removing it"
        cmd_down_locked "$(basename "$d")"
    done
}

cmd_down() {
    need_root
    take_lock
    cmd_down_locked "$1"
}

cmd_down_locked() {
    local name=$1 sd h ns f
    sd=$(state_dir "$name")
    # Recorded processes first (they may live outside the namespaces too).
    if [ -d "$sd/pids" ]; then
        for f in "$sd"/pids/*.pid; do
            [ -f "$f" ] && kill_recorded "$f" KILL
        done
    fi
    for h in $HOSTS; do
        ns=$(ns_of "$name" "$h")
        if ip netns list 2>/dev/null | awk '{print $1}' | grep -qx -- "$ns"; then
            kill_ns_procs "$ns"
            ip netns del "$ns" 2>/dev/null
        fi
        # Deleting the namespace deletes the pair; remove leftovers anyway.
        ip link del "$(veth_of "$name" "$h")" 2>/dev/null
    done
    ip link del "$(bridge_of "$name")" 2>/dev/null
    rm -rf "$sd"
    log "cluster $name down"
    return 0
}

require_up() {
    local sd
    sd=$(state_dir "$1")
    [ -f "$sd/subnet" ] || die "no cluster '$1' (run: $PROG up $1)"
    X=$(cat "$sd/subnet")
}

cmd_exec() {
    local name=$1 host=$2
    shift 2
    [ $# -gt 0 ] || usage
    check_host "$host"
    need_root
    require_up "$name"
    exec ip netns exec "$(ns_of "$name" "$host")" "$@"
}

cmd_start() {
    local name=$1 host=$2 label=$3 sd pid st
    shift 3
    [ $# -gt 0 ] || usage
    check_host "$host"
    [[ "$label" =~ ^[A-Za-z0-9_.-]{1,64}$ ]] || { echo "$PROG: LABEL must be 1 to 64 of [A-Za-z0-9_.-]" >&2; exit 2; }
    need_root
    require_up "$name"
    sd=$(state_dir "$name")
    [ -e "$sd/pids/$label.pid" ] && die "label '$label' is taken (stop it first)"
    setsid ip netns exec "$(ns_of "$name" "$host")" "$@" \
        </dev/null >>"$sd/logs/$label.log" 2>&1 &
    pid=$!
    st=$(start_time "$pid") || st=0
    echo "$pid $st" >"$sd/pids/$label.pid"
    echo "$pid"
}

cmd_stop() {
    local name=$1 label=$2 sd pid st i
    need_root
    sd=$(state_dir "$name")
    [ -f "$sd/pids/$label.pid" ] || die "no process '$label' in cluster '$name'"
    read -r pid st <"$sd/pids/$label.pid"
    kill_recorded "$sd/pids/$label.pid" TERM
    for (( i = 0; i < 100; i++ )); do
        [ "$(start_time "$pid" 2>/dev/null)" = "$st" ] || break
        sleep 0.1
    done
    kill_recorded "$sd/pids/$label.pid" KILL
    rm -f "$sd/pids/$label.pid"
}

cmd_addr() {
    check_host "$2"
    require_up "$1"
    echo "10.231.$X.$(host_octet "$2")"
}

cmd_info() {
    local name=$1 h
    require_up "$name"
    echo "name=$name"
    echo "subnet=10.231.$X.0/24"
    echo "state=$(state_dir "$name")"
    echo "bridge=$(bridge_of "$name")"
    echo "operator=10.231.$X.1"
    for h in $HOSTS; do
        echo "$h.addr=10.231.$X.$(host_octet "$h")"
        echo "$h.ns=$(ns_of "$name" "$h")"
        echo "$h.veth=$(veth_of "$name" "$h")"
    done
}

drop_method() {
    if command -v nft >/dev/null 2>&1; then echo nft
    elif command -v iptables >/dev/null 2>&1; then echo iptables
    else echo bridge
    fi
}

cmd_cut() {
    local name=$1 host=$2 mode=${3:-link} ns veth sd
    check_host "$host"
    need_root
    require_up "$name"
    ns=$(ns_of "$name" "$host")
    veth=$(veth_of "$name" "$host")
    sd=$(state_dir "$name")
    case "$mode" in
        link)
            ip link set dev "$veth" down || die "cannot set $veth down"
            echo link >"$sd/cut-$host"
            ;;
        drop)
            local m
            m=$(drop_method)
            case "$m" in
                nft)
                    ip netns exec "$ns" nft -f - <<EOF || die "nft failed"
table inet dagq_fault {
    chain in { type filter hook input priority 0; iifname "eth0" drop; }
    chain out { type filter hook output priority 0; oifname "eth0" drop; }
}
EOF
                    ;;
                iptables)
                    ip netns exec "$ns" iptables -I INPUT -i eth0 -j DROP &&
                    ip netns exec "$ns" iptables -I OUTPUT -o eth0 -j DROP || die "iptables failed"
                    ;;
                bridge)
                    # A disabled bridge port forwards nothing; both veth ends stay up.
                    bridge link set dev "$veth" state 0 || die "cannot disable bridge port $veth"
                    ;;
            esac
            echo "drop $m" >"$sd/cut-$host"
            ;;
        *) echo "$PROG: cut mode is link or drop, not '$mode'" >&2; exit 2 ;;
    esac
    log "$host cut ($mode)"
}

cmd_heal() {
    local name=$1 host=$2 ns veth sd how m
    check_host "$host"
    need_root
    require_up "$name"
    ns=$(ns_of "$name" "$host")
    veth=$(veth_of "$name" "$host")
    sd=$(state_dir "$name")
    read -r how m <"$sd/cut-$host" 2>/dev/null || { how=link; m=; }
    case "$how $m" in
        "drop nft") ip netns exec "$ns" nft delete table inet dagq_fault 2>/dev/null ;;
        "drop iptables")
            ip netns exec "$ns" iptables -D INPUT -i eth0 -j DROP 2>/dev/null
            ip netns exec "$ns" iptables -D OUTPUT -o eth0 -j DROP 2>/dev/null ;;
        "drop bridge") bridge link set dev "$veth" state 3 2>/dev/null ;;
    esac
    ip link set dev "$veth" up || die "cannot set $veth up"
    # A port re-enabled while its link was down comes back forwarding anyway.
    bridge link set dev "$veth" state 3 2>/dev/null
    rm -f "$sd/cut-$host"
    log "$host healed"
}

cmd_slow() {
    local name=$1 host=$2 rate=${3:-$SLOW_RATE_DEFAULT} ns veth
    check_host "$host"
    [[ "$rate" =~ ^[0-9]+(bit|kbit|mbit|gbit|bps|kbps|mbps)$ ]] || { echo "$PROG: RATE like 256kbit" >&2; exit 2; }
    need_root
    require_up "$name"
    command -v tc >/dev/null 2>&1 || { echo "$PROG: tc (iproute2) not found" >&2; exit 77; }
    ns=$(ns_of "$name" "$host")
    veth=$(veth_of "$name" "$host")
    # Towards the host (egress of the bridge side) and from it (its eth0).
    tc qdisc replace dev "$veth" root tbf rate "$rate" burst "$SLOW_BURST" latency "$SLOW_LATENCY" ||
        die "tc tbf on $veth failed"
    ip netns exec "$ns" tc qdisc replace dev eth0 root tbf rate "$rate" burst "$SLOW_BURST" \
        latency "$SLOW_LATENCY" || die "tc tbf on $host eth0 failed"
    log "$host slowed to $rate"
}

cmd_fast() {
    local name=$1 host=$2
    check_host "$host"
    need_root
    require_up "$name"
    tc qdisc del dev "$(veth_of "$name" "$host")" root 2>/dev/null
    ip netns exec "$(ns_of "$name" "$host")" tc qdisc del dev eth0 root 2>/dev/null
    log "$host rate limit removed"
}

cmd_list() {
    local d
    for d in "$STATE_ROOT"/*/; do
        [ -f "$d/subnet" ] && echo "$(basename "$d") 10.231.$(cat "$d/subnet").0/24"
    done
    return 0
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case "$cmd" in
    -h|--help|help) usage ;;
    list) cmd_list ;;
    up|down|info)
        [ $# -eq 1 ] || usage
        check_name "$1"
        "cmd_$cmd" "$1" ;;
    exec)
        [ $# -ge 3 ] || usage
        check_name "$1"
        cmd_exec "$@" ;;
    start)
        [ $# -ge 4 ] || usage
        check_name "$1"
        cmd_start "$@" ;;
    stop|addr|heal|fast)
        [ $# -eq 2 ] || usage
        check_name "$1"
        "cmd_$cmd" "$1" "$2" ;;
    cut|slow)
        [ $# -eq 2 ] || [ $# -eq 3 ] || usage
        check_name "$1"
        "cmd_$cmd" "$@" ;;
    *) usage ;;
esac

#!/usr/bin/env bash
# A cluster of "hosts" on one machine: network namespaces joined by one bridge (root only).
#
#   scripts/netns-cluster.sh up [--nodes N] [--rate RATE] [--burst SIZE]   N namespaces (default 3)
#   scripts/netns-cluster.sh down                                         remove them (idempotent)
#   scripts/netns-cluster.sh list                                         node  namespace  address
#   scripts/netns-cluster.sh addr NODE                                    a node's address
#   scripts/netns-cluster.sh exec NODE CMD [ARGS...]                      run CMD inside NODE
#   scripts/netns-cluster.sh redirect NODE PORT TO_PORT                   nft: incoming TCP PORT -> TO_PORT
#   scripts/netns-cluster.sh unredirect NODE                              remove NODE's redirects
# Common options (or the environment variables in brackets), given to every subcommand alike:
#   --prefix P   [TLLM_NETNS_PREFIX, default tllm]     names: namespaces P-m, P-w0, P-w1, ...,
#                                                      bridge P-br (at most 10 characters)
#   --subnet S   [TLLM_NETNS_SUBNET, default 10.213.0] a private /24: node i (0 = m, 1 = w0, ...)
#                                                      is S.(i+1), the bridge in the root namespace
#                                                      is S.254, so the root namespace reaches all
#
# Layout (N = 3):
#
#   root namespace: bridge P-br (S.254/24)
#      ├── veth P-m  ◀──▶ eth0 S.1 in namespace P-m   (the master)
#      ├── veth P-w0 ◀──▶ eth0 S.2 in namespace P-w0  (worker 0)
#      └── veth P-w1 ◀──▶ eth0 S.3 in namespace P-w1  (worker 1)
#
# Every namespace has lo up and its own port space, so each node may use the same ports.
# --rate (e.g. 100mbit, in tc's units) puts a `tc tbf` token bucket on both ends of every veth:
# each node sends and receives at most RATE. --burst is the bucket's size (default 64kb, which
# also lets the veth's large GSO packets through). Latency: the netem qdisc is missing from some
# kernels (the project's machines have none), so put scripts/tcp-delay-proxy.py in front of a
# port instead (`redirect`: an nftables prerouting rule in the node's namespace sends incoming
# TCP for PORT from other nodes to TO_PORT, where the proxy listens and forwards to
# 127.0.0.1:PORT; the proxy's own connection is local, so it is not redirected).
#
# Example (docs/multi-host-testing.md has more):
#   sudo scripts/netns-cluster.sh up --nodes 3 --rate 100mbit
#   sudo scripts/netns-cluster.sh exec w0 ip -br addr
#   sudo scripts/netns-cluster.sh down
#
# `up` refuses to run over an existing cluster of the same prefix and removes what it made when
# a step fails. `down` stops the processes still running in the namespaces (SIGTERM, then SIGKILL
# after 5 s), then removes namespaces, veths and the bridge; it succeeds when there is nothing to
# remove.
set -euo pipefail

prefix=${TLLM_NETNS_PREFIX:-tllm}
subnet=${TLLM_NETNS_SUBNET:-10.213.0}
nodes=3
rate=""
burst=64kb
nft_table=tllm_redirect

die() { echo "netns-cluster: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2; }

# Node names: index 0 is m, index i > 0 is w(i-1).
node_name() { if [ "$1" -eq 0 ]; then echo m; else echo "w$(($1 - 1))"; fi; }
node_index() {
    if [ "$1" = m ]; then
        echo 0
    elif [[ $1 =~ ^w([0-9]+)$ ]]; then
        echo $((10#${BASH_REMATCH[1]} + 1))
    else
        die "unknown node '$1' (m, w0, w1, ...)"
    fi
}
netns_of() { echo "$prefix-${1#"$prefix"-}"; }  # accepts w0 or P-w0
# A node's address: read from its namespace when it exists (it may have been made with another
# --subnet), else the one `up` gives it.
address_of() {
    local ns found
    ns=$(netns_of "$1")
    found=$(ip -n "$ns" -4 -o addr show dev eth0 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -1)
    echo "${found:-$subnet.$(($(node_index "${1#"$prefix"-}") + 1))}"
}
bridge() { echo "$prefix-br"; }
# The namespaces of this prefix that exist now.
existing_namespaces() { ip netns list | awk '{print $1}' | grep -E "^$prefix-(m|w[0-9]+)\$" || true; }

require_root() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces, veths, bridges)"
    command -v ip >/dev/null || die "'ip' is missing: apt-get install iproute2"
}

cmd_down() {
    require_root
    local ns pids
    for ns in $(existing_namespaces); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        if [ -n "$pids" ]; then
            # shellcheck disable=SC2086
            kill -TERM $pids 2>/dev/null || true
            for _ in $(seq 50); do
                [ -z "$(ip netns pids "$ns" 2>/dev/null || true)" ] && break
                sleep 0.1
            done
            pids=$(ip netns pids "$ns" 2>/dev/null || true)
            # shellcheck disable=SC2086
            [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
        fi
        ip netns delete "$ns" 2>/dev/null || true
    done
    # Deleting a namespace deletes its end of each veth, and with it the peer; delete the root ends
    # too, in case a namespace is still held open by something.
    local link
    for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' |
        grep -E "^$prefix-(m|w[0-9]+)\$" || true); do
        ip link delete "$link" 2>/dev/null || true
    done
    if ip link show "$(bridge)" >/dev/null 2>&1; then
        ip link delete "$(bridge)" type bridge
    fi
}

shape() {  # shape NETNS_OR_EMPTY DEVICE: the token bucket on one end of a veth
    local in_ns=()
    [ -z "$1" ] || in_ns=(ip netns exec "$1")
    "${in_ns[@]}" tc qdisc replace dev "$2" root tbf rate "$rate" burst "$burst" latency 50ms
}

up_failed() {
    local status=$?
    if [ "$status" -ne 0 ]; then
        echo "netns-cluster: up failed, removing what it made" >&2
        cmd_down
    fi
}

cmd_up() {
    require_root
    if ! [[ $nodes =~ ^[0-9]+$ ]] || ((nodes < 1 || nodes > 200)); then die "--nodes must be 1..200"; fi
    [[ $subnet =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "--subnet must be three octets, e.g. 10.213.0"
    ((${#prefix} <= 10)) || die "--prefix must be at most 10 characters (interface names)"
    [ -z "$rate" ] || command -v tc >/dev/null || die "'tc' is missing: apt-get install iproute2"
    if ip link show "$(bridge)" >/dev/null 2>&1 || [ -n "$(existing_namespaces)" ]; then
        die "a cluster with prefix '$prefix' is up already: run '$0 down${prefix:+ --prefix $prefix}' first"
    fi
    if [ -n "$(ip -o -4 addr show to "$subnet.0/24")" ]; then
        die "$subnet.0/24 is in use in the root namespace: choose another --subnet"
    fi

    # From here on, a failing step (set -e) removes everything made so far.
    trap up_failed EXIT

    local br i name ns
    br=$(bridge)
    ip link add "$br" type bridge
    ip addr add "$subnet.254/24" dev "$br"
    ip link set "$br" up
    for ((i = 0; i < nodes; i++)); do
        name=$(node_name "$i")
        ns=$(netns_of "$name")
        ip netns add "$ns"
        # The veth's namespace end is created inside the namespace under the name eth0.
        ip link add "$prefix-$name" type veth peer name eth0 netns "$ns"
        ip link set "$prefix-$name" master "$br" up
        ip -n "$ns" link set lo up
        ip -n "$ns" addr add "$subnet.$((i + 1))/24" dev eth0
        ip -n "$ns" link set eth0 up
        if [ -n "$rate" ]; then
            shape "" "$prefix-$name"
            shape "$ns" eth0
        fi
    done
    trap - EXIT
    cmd_list
}

cmd_list() {
    local ns name
    for ns in $(existing_namespaces | sort -V); do
        name=${ns#"$prefix"-}
        printf '%s\t%s\t%s\n' "$name" "$ns" "$(address_of "$name")"
    done
}

cmd_redirect() {
    require_root
    [ $# -eq 3 ] || die "usage: redirect NODE PORT TO_PORT"
    command -v nft >/dev/null || die "'nft' is missing: apt-get install nftables"
    local ns
    ns=$(netns_of "$1")
    # Only packets coming in from another interface (other nodes) go through prerouting's NAT;
    # the proxy's own connection to 127.0.0.1:PORT is local and keeps its destination.
    ip netns exec "$ns" nft -f - <<EOF
table ip $nft_table {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        iifname != "lo" tcp dport $2 redirect to :$3
    }
}
EOF
}

cmd_unredirect() {
    require_root
    [ $# -eq 1 ] || die "usage: unredirect NODE"
    ip netns exec "$(netns_of "$1")" nft delete table ip "$nft_table" 2>/dev/null || true
}

# Options first or after the subcommand; `exec` passes everything after NODE to the command.
command=""
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) nodes=${2:?--nodes N}; shift 2 ;;
        --rate) rate=${2:?--rate RATE}; shift 2 ;;
        --burst) burst=${2:?--burst SIZE}; shift 2 ;;
        --prefix) prefix=${2:?--prefix P}; shift 2 ;;
        --subnet) subnet=${2:?--subnet A.B.C}; shift 2 ;;
        -h | --help) usage ;;
        *)
            if [ -z "$command" ]; then
                command=$1
                shift
                if [ "$command" = exec ]; then args=("$@"); break; fi
            else
                args+=("$1")
                shift
            fi
            ;;
    esac
done

[[ $prefix =~ ^[A-Za-z0-9_]+$ ]] || die "--prefix must be letters, digits or _ (it names interfaces)"

case "$command" in
    up) [ ${#args[@]} -eq 0 ] || die "up takes no arguments: ${args[*]}"; cmd_up ;;
    down) cmd_down ;;
    list) cmd_list ;;
    addr) [ ${#args[@]} -eq 1 ] || die "usage: addr NODE"; address_of "${args[0]}" ;;
    exec)
        require_root
        [ ${#args[@]} -ge 2 ] || die "usage: exec NODE CMD [ARGS...]"
        exec ip netns exec "$(netns_of "${args[0]}")" "${args[@]:1}"
        ;;
    redirect) cmd_redirect "${args[@]}" ;;
    unredirect) cmd_unredirect "${args[@]}" ;;
    *) usage ;;
esac

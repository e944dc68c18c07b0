# Shared helpers for tests that need network namespaces. Source it; it sets a trap that removes
# everything it created, even on failure. Nothing is created in the root namespace: the bridge
# lives in its own namespace, and every address is inside 10.77.0.0/24 within the namespaces.
set -euo pipefail

NS_PREFIX="ipsy$$"
NS_BR="${NS_PREFIX}br"
NS_CREATED=()
NS_PIDS=()

ns() { echo "${NS_PREFIX}$1"; }

ns_cleanup() {
  local rc=$?
  for p in "${NS_PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  sleep 0.2
  for n in "${NS_CREATED[@]:-}"; do
    [ -n "$n" ] || continue
    # Anything still running inside the namespace goes with it.
    for p in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$n" 2>/dev/null || true
  done
  return $rc
}
trap ns_cleanup EXIT INT TERM

ns_require_root() {
  if [ "$(id -u)" != 0 ]; then echo "SKIP: needs root for network namespaces" >&2; exit 77; fi
}

ns_add() {
  ip netns add "$1"
  NS_CREATED+=("$1")
  ip -n "$1" link set lo up
  ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}

# ns_bridge: the switch, in its own namespace, STP off.
ns_bridge() {
  ns_add "$NS_BR"
  ip -n "$NS_BR" link add br0 type bridge stp_state 0 forward_delay 0
  ip -n "$NS_BR" link set br0 up
}

# ns_host NAME IFNAME MAC [CIDR]: a host namespace with one veth into the bridge.
ns_host() {
  local name; name=$(ns "$1")
  local ifname=$2 mac=$3 cidr=${4:-}
  ns_add "$name"
  local port="${NS_PREFIX}${1:0:3}"   # interface names are at most 15 bytes
  ip link add "$port" netns "$NS_BR" type veth peer name "$ifname" netns "$name"
  ip -n "$NS_BR" link set "$port" master br0 up
  ip -n "$name" link set "$ifname" address "$mac" up
  ip netns exec "$name" sysctl -qw "net.ipv6.conf.$ifname.disable_ipv6=1"
  if [ -n "$cidr" ]; then ip -n "$name" addr add "$cidr" dev "$ifname"; fi
}

ns_install_peers() {
  local need=()
  command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
  command -v dhcpcd >/dev/null || need+=(dhcpcd-base)
  command -v tcpdump >/dev/null || need+=(tcpdump)
  command -v ip >/dev/null || need+=(iproute2)
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

#!/usr/bin/env bash
# Captures the real-peer fixture pcap-fixtures/dnsmasq-dhcpcd.pcap: dnsmasq (server, option 224)
# and dhcpcd (client) in namespaces on a bridge, tcpdump on the terminal's side.
#
#   1. dhcpcd gets a lease; dnsmasq hands out option 224 = 10.77.0.200 (the cloud server A).
#   2. The operator moves the server: 224 becomes 10.77.0.201, dnsmasq reloads (SIGHUP).
#   3. dhcpcd renews (dhcpcd -n); the ACK carries the new option 224.
#
# Usage: tests/netns/capture-real-peers.sh OUT.pcap   (root; removes its namespaces on exit)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
ns_require_root
ns_install_peers
out=$(realpath -m "${1:?usage: $0 OUT.pcap}")
work=$(mktemp -d)
NS_PIDS=()
trap 'ns_cleanup; rm -rf "$work"' EXIT INT TERM

ns_bridge
ns_host srv srv0 02:00:00:00:00:03 10.77.0.2/24
ns_host term term0 02:00:00:00:00:10

# Plain hosts file and untagged options: dnsmasq 2.90 crashes on SIGHUP with set: tags and a
# live lease (LAB-NOTES).
echo "02:00:00:00:00:10,10.77.0.10" > "$work/hosts"
echo "224,10.77.0.200" > "$work/opts"
ip netns exec "$(ns srv)" dnsmasq --no-daemon --port=0 --interface=srv0 --bind-interfaces \
  --dhcp-range=10.77.0.100,10.77.0.150,255.255.255.0,2m --dhcp-hostsfile="$work/hosts" \
  --dhcp-optsfile="$work/opts" --dhcp-option=3 --dhcp-option=6 --dhcp-leasefile="$work/leases" \
  --pid-file="$work/dnsmasq.pid" --log-dhcp >"$work/dnsmasq.log" 2>&1 &
dnsmasq_pid=$!   # ip netns exec execs dnsmasq itself, so this is its PID
NS_PIDS+=($dnsmasq_pid)

ip netns exec "$(ns term)" tcpdump -i term0 -U --immediate-mode -w "$work/cap.pcap" \
  'udp port 67 or udp port 68 or arp' 2>"$work/tcpdump.log" &
tcpdump_pid=$!
NS_PIDS+=($tcpdump_pid)
sleep 1

cat > "$work/dhcpcd.conf" <<CONF
# Keep dhcpcd off the host: a logging-only hook, private run and state directories.
script $work/hook.sh
ipv4only
noarp
nodelay
define 224 ipaddress cloud_server
option cloud_server
option subnet_mask, routers, domain_name_servers
CONF
printf '#!/bin/sh\necho "$reason $new_ip_address $new_cloud_server" >> %s/hook.log\n' "$work" > "$work/hook.sh"
chmod +x "$work/hook.sh"

# One mount namespace for every dhcpcd call, so the control socket is shared between them.
ip netns exec "$(ns term)" unshare -m sh -ec "
  mkdir -p $work/run $work/db
  mount --bind $work/run /run
  mkdir -p /run/dhcpcd
  mount --bind $work/db /var/lib
  dhcpcd -f $work/dhcpcd.conf -4 -w -t 20 term0
  sleep 1
  echo '224,10.77.0.201' > $work/opts
  kill -HUP $dnsmasq_pid
  sleep 1
  dhcpcd -f $work/dhcpcd.conf -4 -n term0
  sleep 2
  dhcpcd -f $work/dhcpcd.conf -x term0 || true
  sleep 0.5
"
sleep 1
kill "$tcpdump_pid"; wait "$tcpdump_pid" 2>/dev/null || true
cat "$work/hook.log" >&2 || true
grep -E 'DHCP(ACK|OFFER)|option:224' "$work/dnsmasq.log" >&2 || true
cp "$work/cap.pcap" "$out"
echo "wrote $out" >&2

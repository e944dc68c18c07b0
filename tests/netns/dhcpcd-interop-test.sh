#!/usr/bin/env bash
# Interop (DESIGN §11): `ipsyncd forcerenew` must be accepted by real dhcpcd configured with
# `authprotocol delayed` and an `authtoken` — our RFC 3118 encoding checked by code nobody here
# wrote. dnsmasq leases (it cannot sign, so dhcpcd runs with `noauthrequired`, which still
# verifies an authentication option that is present). A FORCERENEW signed with the wrong secret
# must be ignored; one signed with the right secret must make dhcpcd send a REQUEST. dhcpcd acts
# only on the xid of its last exchange: `ipsyncd serve --interface` learns it into the xid file.
set -euo pipefail
bin=$(realpath "${1:?usage: $0 path/to/ipsyncd}")
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
ns_require_root
ns_install_peers
work=$(mktemp -d)
trap 'ns_cleanup; rm -rf "$work"' EXIT INT TERM

ns_bridge
ns_host srv srv0 02:00:00:00:00:01 10.77.0.1/24
ns_host dhc dhc0 02:00:00:00:00:20
ip netns exec "$(ns srv)" dnsmasq --no-daemon --port=0 --interface=srv0 --bind-interfaces \
  --dhcp-range=10.77.0.100,10.77.0.150,2m --dhcp-leasefile="$work/leases" --pid-file="$work/pid" \
  --log-dhcp >"$work/dnsmasq.log" 2>&1 &
NS_PIDS+=($!)
mkdir -p "$work/state-serve"
cat > "$work/serve.toml" <<CONF
state_dir = "$work/state-serve"
[[key]]
id = 1
secret = "0x4242424242424242424242424242424242424242424242424242424242424242"
[forcerenew]
xid_db = "$work/xids"
CONF
ip netns exec "$(ns srv)" "$bin" serve --interface srv0 --listen 10.77.0.1:47474 --config "$work/serve.toml" \
  >"$work/serve.log" 2>&1 &
NS_PIDS+=($!)
for _ in $(seq 1 100); do grep -q "watching DHCP clients on srv0" "$work/serve.log" && break; sleep 0.05; done
cat > "$work/dhcpcd.conf" <<CONF
ipv4only
noarp
script /bin/true
authprotocol delayed
authtoken 1 "" forever "dhcpsecret-at-least-16"
noauthrequired
CONF
# dhcpcd keeps to a private /run and /var/lib (LAB-NOTES); -w returns once it has a lease.
ip netns exec "$(ns dhc)" unshare -m sh -c "mkdir -p $work/run $work/db && mount --bind $work/run /run \
  && mkdir -p /run/dhcpcd && mount --bind $work/db /var/lib && dhcpcd -d -f $work/dhcpcd.conf -4 -w -t 20 dhc0" \
  >"$work/dhcpcd.log" 2>&1

ack=$(grep DHCPACK "$work/dnsmasq.log" | tail -1)
ip=$(echo "$ack" | awk '{print $4}')
[ -n "$ip" ] || { echo "no lease:"; cat "$work/dnsmasq.log" "$work/dhcpcd.log"; echo "0 passed, 1 failed"; exit 1; }
# The xid serve learned must be the one dnsmasq ACKed (--log-dhcp prints it in decimal).
want=$(printf '0x%08x' "$(echo "$ack" | awk '{print $2}')")
xid=
for _ in $(seq 1 60); do
  xid=$(awk '$1 == "02:00:00:00:00:20" { x = $2 } END { print x }' "$work/xids" 2>/dev/null || true)
  [ "$xid" = "$want" ] && break; sleep 0.05
done
[ "$xid" = "$want" ] || { echo "serve learned xid '$xid', dnsmasq ACKed $want:"; cat "$work/serve.log"; echo "0 passed, 1 failed"; exit 1; }
for who in right wrong; do
  secret=dhcpsecret-at-least-16; [ $who = wrong ] && secret=not-the-right-secret
  mkdir -p "$work/state-$who"
  cat > "$work/$who.toml" <<CONF
state_dir = "$work/state-$who"
[[dhcp_key]]
id = 1
secret = "$secret"
[forcerenew]
auth = "delayed"
key_id = 1
xid_db = "$work/xids"
CONF
done
requests() { grep -c DHCPREQUEST "$work/dnsmasq.log" || true; }
send() { local who=$1; shift; ip netns exec "$(ns srv)" "$bin" forcerenew --interface srv0 --client "$ip" --client-mac 02:00:00:00:00:20 --config "$work/$who.toml" "$@" >/dev/null; }

passed=0; failed=0
# One wrongly signed frame (no retries); the right one is retried until dhcpcd's REQUEST is seen.
n0=$(requests); send wrong --retries 0; sleep 2; n1=$(requests)
if [ "$n1" = "$n0" ]; then passed=$((passed+1)); echo "dhcpcd ignored a FORCERENEW signed with the wrong secret";
else failed=$((failed+1)); echo "FAIL: dhcpcd renewed on a wrongly signed FORCERENEW"; fi
send right
for _ in $(seq 1 40); do [ "$(requests)" -gt "$n1" ] && break; sleep 0.05; done
if [ "$(requests)" -gt "$n1" ]; then passed=$((passed+1)); echo "dhcpcd accepted ipsyncd's RFC 3118 FORCERENEW (learned xid $xid) and sent a REQUEST";
else failed=$((failed+1)); echo "FAIL: dhcpcd did not act on our FORCERENEW"; tail -20 "$work/dhcpcd.log"; fi
ip netns exec "$(ns dhc)" unshare -m sh -c "mount --bind $work/run /run && dhcpcd -x dhc0" >/dev/null 2>&1 || true
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]

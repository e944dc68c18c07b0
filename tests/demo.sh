#!/usr/bin/env bash
# `make demo`: the main job end to end. As root, live in network namespaces; then (and without
# root) the same pipeline replaying bundled captures.
set -euo pipefail
bin=${1:-target/release/ipsyncd}
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null; then
  echo "### Live: the terminal follows a moving server, in network namespaces"
  bash tests/netns/demo-live.sh "$bin"
  echo
  echo "### Replay: the same pipeline on bundled captures"
else
  echo "(not root: skipping the live namespace demo; showing replays of bundled captures)"
fi
show() {
  local name=$1 what=$2 cap=pcap-fixtures/$1.pcap
  echo
  echo "=== $what"
  echo "    ipsyncd replay $cap --config pcap-fixtures/$name.toml"
  "$bin" replay "$cap" --config "pcap-fixtures/$name.toml" 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    d = json.loads(line)
    who = d.get("server_ip", "")
    if "server_mac" in d: who += " (" + d["server_mac"] + ")"
    acts = ", ".join(a["op"] + ("" if a["op"] in ("set_server",) else " " + " ".join(str(v) for k, v in a.items() if k not in ("op", "detail"))) for a in d["actions"])
    print("  frame %-3s %-10s %-9s %-16s %-28s %s" % (d["frame"] if d["frame"] is not None else "-", d["input"], d["verdict"], d.get("reason", ""), who, acts))
'
}
show server-move "The cloud server moves from 10.77.0.1 to 10.77.0.20, announces again, then announces our own address"
show arp-spoof "An attacker spoofs ARP for the pinned server: alarm, the pin holds"
show announce-forged "Forged, unknown-key and replayed announcements are dropped and counted"
show dnsmasq-dhcpcd "Real dnsmasq + dhcpcd: the server address arrives in DHCP option 224 and moves on renewal"
show forcerenew-rfc3118 "Authenticated FORCERENEW (RFC 3118) wakes the client; the renewal moves the server"
echo
echo "Full JSON decision log: $bin replay pcap-fixtures/server-move.pcap --config pcap-fixtures/server-move.toml"

#!/usr/bin/env bash
# Live test with real peers: captures a fresh dnsmasq + dhcpcd exchange in namespaces (the same
# script that made pcap-fixtures/dnsmasq-dhcpcd.pcap), replays it, and checks that the decisions
# match the reviewed golden in everything but timestamps and frame numbers.
set -euo pipefail
bin=$(realpath "${1:?usage: $0 path/to/ipsyncd}")
here=$(cd "$(dirname "$0")" && pwd)
fixtures="$here/../../pcap-fixtures"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

bash "$here/capture-real-peers.sh" "$tmp/fresh.pcap" 2>"$tmp/capture.log" || { cat "$tmp/capture.log"; exit 1; }
"$bin" replay "$tmp/fresh.pcap" --config "$fixtures/dnsmasq-dhcpcd.toml" > "$tmp/fresh.jsonl"

shape() { python3 -c '
import json, sys
for line in open(sys.argv[1]):
    d = json.loads(line)
    print(d["input"], d["verdict"], d.get("reason", "-"), d.get("server_ip", "-"),
          " ".join(a["op"] + ":" + str(a.get("kind", a.get("reason", a.get("ip", "")))) for a in d["actions"]))
' "$1"; }
if diff <(shape "$fixtures/dnsmasq-dhcpcd.expected.jsonl") <(shape "$tmp/fresh.jsonl"); then
  echo "real-peers: fresh dnsmasq+dhcpcd capture decided as the golden: $(wc -l < "$tmp/fresh.jsonl") decisions"
  echo "1 passed, 0 failed"
else
  echo "real-peers: decisions differ from the golden (above)"; cat "$tmp/capture.log"
  echo "0 passed, 1 failed"
  exit 1
fi
leftover=$(ip netns list | grep -c '^ipsy' || true)
[ "$leftover" = 0 ] || { echo "namespaces left behind: $leftover"; exit 1; }

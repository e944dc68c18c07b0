#!/usr/bin/env bash
# `make bench`: criterion benches, then each figure beside its peer from the same run, as ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --locked --bench decode -- --warm-up-time 1 --measurement-time 4 "$@"
python3 - <<'PY'
import json, os
base = "target/criterion/decode"
n = int(open("target/criterion/decode-frames.txt").read())
def mean(name):
    with open(os.path.join(base, name, "new", "estimates.json")) as f:
        return json.load(f)["mean"]["point_estimate"] / n
ours, owned, borrowed = mean("ours_full_descent"), mean("dhcproto_owned"), mean("dhcproto_borrowed")
off = mean("ours_full_descent_csum_offloaded")
print()
print(f"decode, ns per DHCP frame ({n} fixture frames):")
print(f"  ipsyncd full descent (Ethernet→IPv4→UDP→DHCP, options, 224, 90): {ours:8.1f} ns")
print(f"  ipsyncd, checksum offloaded (live: kernel validated/not ready):   {off:8.1f} ns   ours/borrowed = {off/borrowed:.2f}x, owned/ours = {owned/off:.1f}x")
print(f"  dhcproto borrowed (DHCP payload only, option walk):               {borrowed:8.1f} ns   ours/borrowed = {ours/borrowed:.2f}x  (target ≤ 1.00)")
print(f"  dhcproto owned    (DHCP payload only, full decode):               {owned:8.1f} ns   owned/ours    = {owned/ours:.1f}x faster (target ≥ 10)")
iv = dict(l.split() for l in open("target/criterion/decode-interleaved.txt"))
print()
print("interleaved (all four timed back to back in each of 301 rounds; medians; steadier on a VM):")
print(f"  ours {float(iv['ours_ns']):.1f} ns, offloaded {float(iv['ours_offloaded_ns']):.1f} ns, dhcproto borrowed {float(iv['borrowed_ns']):.1f} ns, owned {float(iv['owned_ns']):.1f} ns")
print(f"  ours/borrowed = {float(iv['ours_over_borrowed']):.2f}x (offloaded {float(iv['offloaded_over_borrowed']):.2f}x)   target ≤ 1.00")
print(f"  owned/ours    = {float(iv['owned_over_ours']):.1f}x (offloaded {float(iv['owned_over_offloaded']):.1f}x)   target ≥ 10")
PY

# Fleet (simulated, no root): 10,000 terminal engines moved by FORCERENEW and by ANNOUNCE at 5%
# loss, each beside the same move at 0% loss, then the spread over seeds 1,2,3 (FLEET_SEED,
# FLEET_TERMINALS, FLEET_LOSS_PCT, FLEET_ANNOUNCE_COUNT, FLEET_ANNOUNCE_INTERVAL_MS: benches/fleet.rs).
echo
cargo bench --locked --bench fleet 2>&1 | grep -vE '^(   Compiling|    Finished|     Running)'

# Live figures (namespaces, root): latency, idle, floods, serve throughput; FORCERENEW vs dhcpcd.
# The forged floods run with the capture's ring and without it (IPSYNCD_CAPTURE=recv); set
# BENCH_BASELINE_BIN=path/to/another/ipsyncd to add the same floods against that build.
echo
if [ "$(id -u)" = 0 ]; then
  make --no-print-directory deps
  cargo bench --locked --bench live 2>&1 | grep -vE '^(dhc0|forked|dnsmasq|   Compiling|    Finished|     Running)'
  # FORCERENEW → REQUEST and → new address: ipsyncd (dhcp mode) vs dhcpcd, BENCH_ROUNDS per client.
  echo
  cargo bench --locked --bench forcerenew 2>&1 | grep -vE '^(term0|forked|dnsmasq|sent FORCERENEW|   Compiling|    Finished|     Running)'
  # forcerenew --leases: 10,000 first sends, paced (default) beside unpaced, frames seen on the wire.
  echo
  cargo bench --locked --bench pacing 2>&1 | grep -vE '^(   Compiling|    Finished|     Running)'
else
  echo "live figures: SKIP (need root for network namespaces)"
fi

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
PY

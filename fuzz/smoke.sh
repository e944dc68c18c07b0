#!/usr/bin/env bash
# `make fuzz-smoke`: each cargo-fuzz target for SECONDS (default 30), seeded with the fixture
# payloads; prints the executions each target ran. Needs cargo-fuzz (installed when missing).
set -euo pipefail
secs=${1:-30}
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1   # cargo-fuzz wants nightly flags; the stable toolchain accepts them this way
mkdir -p corpus/frame corpus/dhcpv4 corpus/ipsync corpus/arp corpus/leases
# Seeds: every fixture frame for `frame`, and the UDP/ARP payloads for the others.
python3 - <<'PY'
import struct, os, glob, hashlib
def records(path):
    b = open(path, 'rb').read()
    if b[:4] == b'\x0a\x0d\x0d\x0a':
        return  # pcapng fixtures hold the same frames as their pcap twins
    off = 24
    while off + 16 <= len(b):
        _, _, incl, _ = struct.unpack_from('<IIII', b, off)
        yield b[off + 16: off + 16 + incl]
        off += 16 + incl
def put(kind, data):
    open(f'corpus/{kind}/{hashlib.sha1(data).hexdigest()}', 'wb').write(data)
for p in glob.glob('../pcap-fixtures/*.pcap'):
    for f in records(p):
        put('frame', f)
        if len(f) >= 42 and f[12:14] == b'\x08\x00' and f[23] == 17:
            ihl = (f[14] & 15) * 4
            payload = f[14 + ihl + 8:]
            dport = struct.unpack_from('>H', f, 14 + ihl + 2)[0]
            if dport in (67, 68):
                put('dhcpv4', payload)
            else:
                # The ipsync target's first byte picks the trailer: seed both (0 HMAC, 1 Ed25519).
                put('ipsync', b'\x00' + payload)
                put('ipsync', b'\x01' + payload)
        if f[12:14] == b'\x08\x06':
            put('arp', f[14:])
# Lease sources: a dnsmasq file, a Kea memfile CSV and a Kea control-socket reply (the
# formats of src/server/leases.rs's tests, which say where each came from).
put('leases', b'1796149920 02:00:00:00:00:10 10.77.0.109 term-1 *\n0 06-02:00:00:00:00:12 10.77.0.52 p 01:02\n'
              b'duid 00:01:00:01\n1796149920 1234567 fd00::50 term 00:01\n')
put('leases', b'address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context\n'
              b'10.77.0.120,02:00:00:00:00:20,,120,1796149914,1,0,0,a&#x2cb&#x26c,0,\n'
              b'10.77.0.120,02:00:00:00:00:20,,0,1796149794,1,0,0,a&#x2cb&#x26c,0,\n'
              b'10.77.0.100,02:00:00:00:00:10,,120,1796150801,1,0,0,term-1,0,\n')
put('leases', b'{ "arguments": { "leases": [ { "cltt": 1796150681, "fqdn-fwd": false, "fqdn-rev": false, '
              b'"hostname": "term-1", "hw-address": "02:00:00:00:00:10", "ip-address": "10.77.0.100", "state": 0, '
              b'"subnet-id": 1, "valid-lft": 120 } ] }, "result": 0, "text": "1 IPv4 lease(s) found." }')
PY
for t in frame dhcpv4 ipsync arp leases; do
  cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=1024 -max_len=2048 > "/tmp/fuzz-$t.log" 2>&1 || { tail -40 "/tmp/fuzz-$t.log"; exit 1; }
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "/tmp/fuzz-$t.log" | grep -o '[0-9]*$' || echo '?')
  cov=$(grep -o 'cov: [0-9]*' "/tmp/fuzz-$t.log" | tail -1)
  echo "fuzz $t: ${secs}s, $execs executions, $cov, no crash"
done

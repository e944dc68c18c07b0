#!/usr/bin/env bash
# The live demo: srv and term namespaces on a bridge; `ipsyncd serve` on the server,
# `ipsyncd run` on the terminal. The server's address moves 10.77.0.1 → 10.77.0.20 and the
# terminal follows: decision lines, the PERMANENT neighbour entry, `ipsyncd status`.
set -euo pipefail
bin=$(realpath "${1:-target/release/ipsyncd}")
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
ns_require_root
work=$(mktemp -d)
trap 'ns_cleanup; rm -rf "$work"' EXIT INT TERM

ns_bridge
ns_host srv srv0 02:00:00:00:00:01 10.77.0.1/24
ns_host term term0 02:00:00:00:00:10 10.77.0.10/24
ns_host attacker att0 02:00:00:00:00:66 10.77.0.66/24
# The recommended keys (README): an Ed25519 pair for ANNOUNCE and WELCOME, of which the terminal
# holds only the public half, and a shared secret the terminal signs HELLO with.
ed=$("$bin" keygen --kind ed25519 --id 2)
server_half=$(printf '%s\n' "$ed" | sed -n '/for the SERVER/,/for every TERMINAL/p' | grep -v '^#')
terminal_half=$(printf '%s\n' "$ed" | sed -n '/for every TERMINAL/,$p' | grep -v '^#')
hello_key=$("$bin" keygen --kind hmac --id 1)
mkdir -p "$work/term" "$work/srv"
cat > "$work/term.toml" <<CONF
interface = "term0"
mode = "follow"
state_dir = "$work/term"
hook = "$work/hook.sh"
[terminal]
address = "10.77.0.10/24"
[server]
address = "10.77.0.1"
$hello_key
$terminal_half
CONF
cat > "$work/srv.toml" <<CONF
state_dir = "$work/srv"
$hello_key
$server_half
CONF
printf '#!/bin/sh\necho "    hook: REASON=$REASON OLD_SERVER_IP=$OLD_SERVER_IP NEW_SERVER_IP=$NEW_SERVER_IP SERVER_MAC=$SERVER_MAC"\n' > "$work/hook.sh"
chmod +x "$work/hook.sh"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say "server namespace: ipsyncd serve (answers HELLO with WELCOME)"
ip netns exec "$(ns srv)" "$bin" serve --config "$work/srv.toml" 2>"$work/serve.log" &
NS_PIDS+=($!)
say "terminal namespace: ipsyncd run (follow mode), decision log at debug"
RUST_LOG=info,ipsyncd::decision=debug ip netns exec "$(ns term)" "$bin" run --config "$work/term.toml" 2>&1 \
  | sed -u 's/^\[[^]]*\] */    /' &
NS_PIDS+=($!)
sleep 1

say "the server announces itself at 10.77.0.1: same address; the terminal pins its MAC"
ip netns exec "$(ns srv)" "$bin" announce --interface srv0 --address 10.77.0.1 --config "$work/srv.toml"
sleep 0.5
say "the operator moves the server to 10.77.0.20 and it announces the move"
ip netns exec "$(ns srv)" sysctl -qw net.ipv4.conf.srv0.promote_secondaries=1
ip -n "$(ns srv)" addr add 10.77.0.20/24 dev srv0
ip -n "$(ns srv)" addr del 10.77.0.1/24 dev srv0
ip netns exec "$(ns srv)" "$bin" announce --interface srv0 --address 10.77.0.20 --previous 10.77.0.1 --config "$work/srv.toml"
sleep 1
say "terminal: ip neigh show nud all (the pin is PERMANENT; 10.77.0.1's pin is gone)"
ip -n "$(ns term)" neigh show nud all dev term0 | sed 's/^/    /'
say "terminal: ipsyncd status"
ip netns exec "$(ns term)" "$bin" status --config "$work/term.toml" | sed 's/^/    /'
say "an attacker on the terminal's segment spoofs ARP for 10.77.0.20; the pin holds"
ip -n "$(ns attacker)" addr add 10.77.0.20/32 dev att0
ip netns exec "$(ns attacker)" arping -q -c 3 -w 2 -U -I att0 -s 10.77.0.20 10.77.0.20 >/dev/null 2>&1 || true
ip netns exec "$(ns attacker)" arping -q -c 3 -w 2 -A -I att0 -s 10.77.0.20 10.77.0.10 >/dev/null 2>&1 || true
sleep 0.5
ip -n "$(ns term)" neigh show 10.77.0.20 nud all dev term0 | sed 's/^/    /'
say "done; namespaces are removed on exit"

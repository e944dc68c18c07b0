#!/usr/bin/env bash
# deb-test: builds the Debian package (`make deb`) and checks what it holds and does.
#   bash tests/deb-test.sh            (from the repository root; `make deb-test`, part of `make test`)
# (No `producer | grep -q`: with pipefail, grep's early exit kills the producer and fails.)
# Every check prints what it checked; the first failure exits 1 naming the missing item. It
# prints "deb-test: SKIP (reason)" and exits 0 only when it cannot run at all: dpkg-deb
# missing (not Debian), or cargo-deb missing and not root (it would otherwise be installed
# into this user's cargo home as a side effect). One check that needs a tool the host lacks
# (systemd-analyze) prints its own SKIP line and the rest still run. Reuses the release build.
set -euo pipefail
cd "$(dirname "$0")/.."

skip() { echo "deb-test: SKIP ($1)"; exit 0; }
fail() { echo "deb-test: FAIL: $1" >&2; exit 1; }
ok() { echo "deb-test: ok: $1"; }

command -v dpkg-deb >/dev/null || skip "dpkg-deb not found: not a Debian system"
CARGO=${CARGO:-cargo}
if ! $CARGO deb --version >/dev/null 2>&1 && [ "$(id -u)" != 0 ]; then
  skip "cargo-deb not installed and not root; run as root, or: cargo install --locked cargo-deb --version 3.8.0"
fi
# groff renders the man pages; Debian's minimal images lack it. As root we install it (as
# `make deps` does for the namespace tests), otherwise that is a failure to report, not a skip.
if ! command -v groff >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "deb-test: installing groff-base (renders the man pages)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq groff-base >/dev/null
fi

tmp=$(mktemp -d /tmp/ipsyncd-deb-test.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

out=$(make --no-print-directory deb) || fail "make deb failed"
deb=$(printf '%s\n' "$out" | tail -n 1)
[ -f "$deb" ] || fail "make deb did not print the path of a .deb (got: $deb)"
ok "make deb built $deb"

# --- control fields -----------------------------------------------------------------------
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = ipsyncd ] || fail "control: Package is not ipsyncd"
case "$(field Version)" in "$version"|"$version"-*) ;; *) fail "control: Version $(field Version) is not $version";; esac
[ "$(field Section)" = net ] || fail "control: Section is not net"
[ "$(field Priority)" = optional ] || fail "control: Priority is not optional"
[ -n "$(field Maintainer)" ] || fail "control: no Maintainer"
grep -q 'libc6' <<<"$(field Depends)" || fail "control: Depends lacks libc6 (\$auto)"
grep -q 'systemd | adduser' <<<"$(field Depends)" || fail "control: Depends lacks 'systemd | adduser'"
[ "$(field Description | wc -l)" -gt 1 ] || fail "control: no extended description"
ok "control: Package ipsyncd $(field Version), Section net, Priority optional, Depends $(field Depends)"

# --- maintainer scripts -------------------------------------------------------------------
dpkg-deb -e "$deb" "$tmp/control"
postinst=$tmp/control/postinst
[ -x "$postinst" ] || fail "maintainer script: no executable postinst"
grep -q 'systemd-sysusers.* ipsyncd.conf' "$postinst" || fail "postinst: does not run systemd-sysusers ipsyncd.conf"
grep -q 'adduser --system' "$postinst" || fail "postinst: no adduser --system fallback"
grep -q '#DEBHELPER#' "$postinst" && fail "postinst: #DEBHELPER# was not replaced"
# enable = false, start = false: cargo-deb's "dont-enable" fragment only keeps a unit the admin
# enabled before (was-enabled, on an upgrade), and on an upgrade only try-restart runs (a
# running unit). Its "enable" fragment (enables on first install) and "start" fragment must not
# be there, nor any other start or enable.
grep -q 'Enables the unit on first installation' "$postinst" && fail "postinst: enables the unit on install"
grep -Eq 'deb-systemd-invoke (start|restart)|systemctl (--system )?(start|enable|restart)' "$postinst" &&
  fail "postinst: starts or enables a unit on install"
grep -q 'deb-systemd-helper --quiet was-enabled ipsyncd.service' "$postinst" ||
  fail "postinst: no dh_installsystemd fragment for ipsyncd.service"
sh -n "$postinst" || fail "postinst: not valid sh"
for s in prerm postrm; do [ -f "$tmp/control/$s" ] && { sh -n "$tmp/control/$s" || fail "$s: not valid sh"; }; done
ok "maintainer scripts: postinst runs systemd-sysusers ipsyncd.conf (adduser fallback), enables and starts nothing"

# --- contents and modes -------------------------------------------------------------------
dpkg-deb -c "$deb" > "$tmp/list"
# mode-of PATH: the permission string dpkg-deb -c shows for ./PATH, empty when absent.
mode_of() { awk -v p="./$1" '$NF == p { print $1 }' "$tmp/list"; }
expect() { # expect PATH MODE WHAT
  local m; m=$(mode_of "$1")
  [ -n "$m" ] || fail "missing from the package: /$1 ($3)"
  [ "$m" = "$2" ] || fail "/$1 ($3): mode $m, expected $2"
  ok "/$1 $m ($3)"
}
exe=-rwxr-xr-x; reg=-rw-r--r--
expect usr/bin/ipsyncd $exe "the binary"
expect usr/lib/systemd/system/ipsyncd.service $reg "the unit"
expect usr/lib/systemd/system/ipsyncd@.service $reg "the per-interface template"
expect usr/lib/sysusers.d/ipsyncd.conf $reg "sysusers: group and user ipsyncd"
expect usr/share/man/man8/ipsyncd.8.gz $reg "ipsyncd(8)"
for sub in run check replay status announce forcerenew serve keygen; do
  expect "usr/share/man/man8/ipsyncd-$sub.8.gz" $reg "ipsyncd-$sub(8)"
done
expect usr/share/man/man5/ipsyncd.toml.5.gz $reg "ipsyncd.toml(5)"
expect usr/share/man/man7/ipsyncd-hooks.7.gz $reg "ipsyncd-hooks(7)"
expect usr/share/bash-completion/completions/ipsyncd $reg "bash completion"
expect usr/share/zsh/vendor-completions/_ipsyncd $reg "zsh completion"
expect usr/share/fish/vendor_completions.d/ipsyncd.fish $reg "fish completion"
expect usr/share/doc/ipsyncd/examples/ipsyncd.toml.example $reg "example terminal config"
expect usr/share/doc/ipsyncd/examples/ipsyncd-server.toml.example $reg "example server config"
for h in contrib/hooks/*; do
  expect "usr/share/doc/ipsyncd/examples/hooks/$(basename "$h")" $exe "example hook, executable"
done
expect usr/share/doc/ipsyncd/README.md $reg "README"
expect usr/share/doc/ipsyncd/LICENSE-MIT $reg "MIT licence"
expect usr/share/doc/ipsyncd/LICENSE-APACHE $reg "Apache licence"
expect usr/share/doc/ipsyncd/copyright $reg "copyright"
if grep -q ' \./etc/' "$tmp/list"; then
  grep ' \./etc/' "$tmp/list" >&2
  fail "the package installs files under /etc (no live config: a terminal needs its keys first)"
fi
ok "nothing under /etc (no live config installed)"

# --- extracted: the binary runs, the pages render, the units -------------------------------
root=$tmp/root
dpkg-deb -x "$deb" "$root"
got=$("$root/usr/bin/ipsyncd" --version) || fail "the extracted /usr/bin/ipsyncd does not run --version"
[ "$got" = "ipsyncd $version" ] || fail "the extracted binary says '$got', expected 'ipsyncd $version'"
ok "extracted /usr/bin/ipsyncd --version: $got"

command -v groff >/dev/null || fail "groff not found: cannot render the man pages (apt-get install groff-base)"
for page in "$root"/usr/share/man/man*/*.gz; do
  warnings=$(zcat "$page" | groff -man -ww -z 2>&1) || fail "man page $(basename "$page") does not render"
  [ -z "$warnings" ] || { echo "$warnings" >&2; fail "man page $(basename "$page") renders with warnings"; }
  text=$(zcat "$page" | groff -man -Tutf8 2>/dev/null | sed 's/.\x08//g')
  grep -q 'NAME' <<<"$text" || fail "man page $(basename "$page") has no NAME section"
done
grep -q 'ipsyncd.toml' <<<"$(zcat "$root/usr/share/man/man8/ipsyncd.8.gz")" || fail "ipsyncd(8) does not SEE ALSO ipsyncd.toml(5)"
grep -q 'ipsyncd\\-hooks' <<<"$(zcat "$root/usr/share/man/man8/ipsyncd.8.gz")" || fail "ipsyncd(8) does not SEE ALSO ipsyncd-hooks(7)"
ok "every man page renders without warnings (groff -man -ww); ipsyncd(8) refers to ipsyncd.toml(5) and ipsyncd-hooks(7)"

comp=$root/usr/share/bash-completion/completions/ipsyncd
bash -n "$comp" || fail "bash completion: not valid bash"
for sub in run check replay status announce forcerenew serve keygen; do
  grep -q "$sub" "$comp" || fail "bash completion: no subcommand $sub"
done
grep -q -- '--require-confirm' "$root/usr/share/zsh/vendor-completions/_ipsyncd" || fail "zsh completion: no --require-confirm"
grep -q 'require-confirm' "$root/usr/share/fish/vendor_completions.d/ipsyncd.fish" || fail "fish completion: no require-confirm"
ok "completions: bash parses (bash -n) and names every subcommand; zsh and fish carry the options"

unit=$root/usr/lib/systemd/system/ipsyncd.service
template=$root/usr/lib/systemd/system/ipsyncd@.service
for line in 'Type=notify' 'User=ipsyncd' 'Group=ipsyncd' 'NoNewPrivileges=yes' 'ProtectSystem=strict' \
    'ProtectKernelTunables=yes' 'ProtectProc=invisible' 'ProcSubset=pid' 'PrivateMounts=yes' \
    'DevicePolicy=closed' 'WatchdogSec=30s' 'StateDirectory=ipsyncd' 'StateDirectoryMode=0750' 'UMask=0077' \
    'CapabilityBoundingSet=CAP_NET_RAW CAP_NET_ADMIN' \
    'ExecStartPre=/usr/bin/ipsyncd check --config /etc/ipsyncd/ipsyncd.toml' \
    'ExecStart=/usr/bin/ipsyncd run --config /etc/ipsyncd/ipsyncd.toml'; do
  grep -qxF "$line" "$unit" || fail "ipsyncd.service lacks: $line"
done
ok "ipsyncd.service: hardening, WatchdogSec=30s, ExecStartPre check, StateDirectoryMode=0750 with Group=ipsyncd"
for line in 'ExecStartPre=/usr/bin/ipsyncd check --config /etc/ipsyncd/%I.toml --interface %I' \
    'ExecStart=/usr/bin/ipsyncd run --config /etc/ipsyncd/%I.toml --interface %I' 'StateDirectory=ipsyncd/%I'; do
  grep -qxF "$line" "$template" || fail "ipsyncd@.service lacks: $line"
done
# The [Service] settings of both, less the per-instance ones, must be the same lines.
hardening() {
  awk '/^\[/{s=($0=="[Service]")} s && !/^#/ && NF && !/^(ExecStartPre|ExecStart|StateDirectory)=/' "$1"
}
diff <(hardening "$unit") <(hardening "$template") >&2 || fail "ipsyncd.service and ipsyncd@.service hardening differ"
ok "ipsyncd@.service: per-interface config, --interface %I, StateDirectory=ipsyncd/%I, same hardening"
grep -q '^g ipsyncd' "$root/usr/lib/sysusers.d/ipsyncd.conf" || fail "sysusers: no group ipsyncd"
grep -q '^u ipsyncd .*/usr/sbin/nologin$' "$root/usr/lib/sysusers.d/ipsyncd.conf" || fail "sysusers: no user ipsyncd without login"
ok "sysusers: group ipsyncd, user ipsyncd with /usr/sbin/nologin"

# --- exposure score -----------------------------------------------------------------------
if ! command -v systemd-analyze >/dev/null; then
  echo "deb-test: SKIP (exposure score: systemd-analyze not found; apt-get install systemd)"
elif ! report=$(systemd-analyze security --offline=yes "$unit" 2>&1); then
  echo "$report" | tail -n 3 >&2
  echo "deb-test: SKIP (exposure score: systemd-analyze security --offline=yes does not work here)"
else
  cp "$template" "$tmp/ipsyncd@eth1.service"
  for u in "$unit" "$tmp/ipsyncd@eth1.service"; do
    score=$(systemd-analyze security --offline=yes "$u" 2>&1 | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
    [ -n "$score" ] || fail "exposure score of $(basename "$u"): not found in systemd-analyze's output"
    awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' || fail "exposure score of $(basename "$u") is $score, above 2.0"
    ok "systemd-analyze security --offline=yes $(basename "$u"): $score (<= 2.0)"
  done
fi
echo "deb-test: PASS ($deb)"

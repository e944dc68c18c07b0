#!/bin/sh
# Installs ipsyncd with exactly CAP_NET_RAW and CAP_NET_ADMIN.
#   capabilities/install.sh [path/to/ipsyncd]        (as root)
# - systemd hosts: the unit grants the capabilities as ambient capabilities to the ipsyncd user;
#   the binary itself carries none.
# - hosts without systemd: file capabilities on the binary (setcap), run as any user.
set -eu
src=${1:-target/release/ipsyncd}
here=$(cd "$(dirname "$0")" && pwd)
install -m 0755 "$src" /usr/local/bin/ipsyncd
install -d -m 0755 /etc/ipsyncd
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  getent passwd ipsyncd >/dev/null || useradd --system --no-create-home --shell /usr/sbin/nologin ipsyncd
  install -m 0644 "$here/ipsyncd.service" /etc/systemd/system/ipsyncd.service
  systemctl daemon-reload
  echo "installed; configure /etc/ipsyncd/ipsyncd.toml, then: systemctl enable --now ipsyncd"
else
  command -v setcap >/dev/null 2>&1 || { echo "setcap not found (Debian: apt-get install libcap2-bin)" >&2; exit 1; }
  setcap cap_net_raw,cap_net_admin=ep /usr/local/bin/ipsyncd
  getcap /usr/local/bin/ipsyncd
fi

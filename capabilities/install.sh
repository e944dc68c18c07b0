#!/bin/sh
# Installs ipsyncd with exactly CAP_NET_RAW and CAP_NET_ADMIN, without the Debian package.
#   capabilities/install.sh [path/to/ipsyncd]        (as root)
# - systemd hosts: the units grant the capabilities as ambient capabilities to the ipsyncd user;
#   the binary itself carries none. The units name /usr/bin/ipsyncd (the package's path); this
#   script installs to /usr/local/bin and rewrites ExecStart/ExecStartPre to match.
# - hosts without systemd: file capabilities on the binary (setcap), run as any user.
# Prefer `make deb` on Debian: the package also installs the man pages and completions.
set -eu
src=${1:-target/release/ipsyncd}
here=$(cd "$(dirname "$0")" && pwd)
bin=/usr/local/bin/ipsyncd
install -m 0755 "$src" "$bin"
install -d -m 0755 /etc/ipsyncd
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  # The same user and group as the package's sysusers.d file (group ipsyncd may read `status`).
  if command -v systemd-sysusers >/dev/null 2>&1; then
    install -D -m 0644 "$here/sysusers.d/ipsyncd.conf" /etc/sysusers.d/ipsyncd.conf
    systemd-sysusers ipsyncd.conf
  else
    getent group ipsyncd >/dev/null || groupadd --system ipsyncd
    getent passwd ipsyncd >/dev/null ||
      useradd --system --gid ipsyncd --no-create-home --home-dir /var/lib/ipsyncd --shell /usr/sbin/nologin ipsyncd
  fi
  for unit in ipsyncd.service ipsyncd@.service; do
    sed "s#/usr/bin/ipsyncd #$bin #g" "$here/$unit" > "/etc/systemd/system/$unit"
    chmod 0644 "/etc/systemd/system/$unit"
  done
  systemctl daemon-reload
  echo "installed; configure /etc/ipsyncd/ipsyncd.toml, then: systemctl enable --now ipsyncd"
  echo "(or, per interface: /etc/ipsyncd/IFACE.toml with state_dir = \"/var/lib/ipsyncd/IFACE\", then: systemctl enable --now ipsyncd@IFACE)"
else
  command -v setcap >/dev/null 2>&1 || { echo "setcap not found (Debian: apt-get install libcap2-bin)" >&2; exit 1; }
  setcap cap_net_raw,cap_net_admin=ep "$bin"
  getcap "$bin"
fi

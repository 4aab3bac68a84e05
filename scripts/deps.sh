#!/usr/bin/env bash
# Installs the Debian packages zpipe's demo, tests and benchmarks use, when
# any is missing, and starts the zfs-fuse daemon when /dev/fuse allows it.
# Safe to run again: it does nothing when everything is there.
set -euo pipefail
pkgs=(zfs-fuse openssh-server openssh-client zstd pv mbuffer iproute2 time util-linux procps man-db)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing ${missing[*]}; run as root (or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "deps: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
mkdir -p /run/sshd 2>/dev/null || true
if [ "$(id -u)" -eq 0 ]; then
  [ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
  if [ -e /dev/fuse ] && ! pgrep -x zfs-fuse >/dev/null; then
    echo "deps: starting zfs-fuse"
    (zfs-fuse --no-daemon >/var/log/zfs-fuse.log 2>&1 &)
    for _ in $(seq 1 50); do zpool list >/dev/null 2>&1 && break; sleep 0.2; done
  fi
fi

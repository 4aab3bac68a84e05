#!/usr/bin/env bash
# The real parts zpipe's demo, tests and benchmarks use: installs the Debian
# packages when any is missing, makes /dev/fuse usable, starts the zfs-fuse
# daemon and prepares sshd's privilege-separation dir. Safe to run again.
# Executed, it does all of that; sourced (by .ci/run), it only defines the
# steps so the caller can time them.
set -Eeuo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# Debian packages the tests and benchmarks use.
PACKAGES=(zfs-fuse openssh-server openssh-client zstd pv mbuffer iproute2 time
          util-linux procps man-db)
ZFS_FUSE_LOG=/tmp/zpipe-ci-zfs-fuse.log
ZFS_FUSE_START_TIMEOUT=60

CI_START=$SECONDS
STEP=""
trap 'echo "!!! .ci/run failed in step: ${STEP:-setup} (after $((SECONDS - CI_START))s)" >&2' ERR

# step NAME COMMAND...: runs one step and prints how long it took.
step() {
    STEP="$1"
    shift
    local t0=$SECONDS
    echo "==> $STEP"
    "$@"
    echo "<== $STEP: $((SECONDS - t0))s"
}

missing_packages() {
    local p
    for p in "${PACKAGES[@]}"; do
        if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
            echo "$p"
        fi
    done
}

install_packages() {
    local missing
    missing=$(missing_packages)
    if [ -z "$missing" ]; then
        echo "all packages present: ${PACKAGES[*]}"
        return
    fi
    echo "installing:" $missing
    # Keep package scripts from starting services (a system sshd on :22,
    # an init-script zfs-fuse): this script starts what the tests need.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made_policy=1
    fi
    local rc=0
    apt-get update -qq || rc=$?
    if [ "$rc" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            -o Dpkg::Use-Pty=0 "${PACKAGES[@]}" || rc=$?
    fi
    if [ "$made_policy" = 1 ]; then rm -f "$policy"; fi
    if [ "$rc" != 0 ]; then
        echo "apt-get failed (exit $rc)" >&2
        return "$rc"
    fi
    missing=$(missing_packages)
    if [ -n "$missing" ]; then
        echo "still missing after apt-get install:" $missing >&2
        return 1
    fi
}

prepare_fuse() {
    if [ ! -e /dev/fuse ]; then
        modprobe fuse 2>/dev/null || echo "modprobe fuse failed (may be built in)"
    fi
    if [ ! -e /dev/fuse ]; then
        mknod -m 0666 /dev/fuse c 10 229 || true
    fi
    if [ ! -c /dev/fuse ]; then
        echo "/dev/fuse is missing: zfs-fuse cannot run" >&2
        return 1
    fi
    ls -l /dev/fuse
}

start_zfs_fuse() {
    if pgrep -x zfs-fuse >/dev/null; then
        echo "zfs-fuse already runs (pid $(pgrep -x zfs-fuse | tr '\n' ' '))"
    else
        # zfs-fuse exits at once, silently, without /run/lock.
        mkdir -p /run/lock
        setsid zfs-fuse --no-daemon </dev/null >"$ZFS_FUSE_LOG" 2>&1 &
        echo "started zfs-fuse (pid $!), log $ZFS_FUSE_LOG"
    fi
    local waited=0
    until zpool list >/dev/null 2>&1; do
        if [ "$waited" -ge "$ZFS_FUSE_START_TIMEOUT" ]; then
            echo "zfs-fuse does not answer zpool list after ${waited}s" >&2
            cat "$ZFS_FUSE_LOG" >&2 || true
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    zpool list
}

prepare_sshd() {
    mkdir -p /run/sshd
    chmod 755 /run/sshd
    # With UsePAM no, sshd refuses key logins to a locked account ('!' in
    # /etc/shadow). '*' still allows no password login but is not "locked".
    if getent shadow root | cut -d: -f2 | grep -q '^!'; then
        echo "root's account is locked; unlocking it for key logins (password stays disabled)"
        usermod -p '*' root
    fi
    /usr/sbin/sshd -V 2>&1 || true
}

# deps_all: every step, in order.
deps_all() {
    install_packages
    prepare_fuse
    start_zfs_fuse
    prepare_sshd
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "deps: must run as root (apt-get, /dev/fuse, zfs-fuse)" >&2
        exit 1
    fi
    deps_all
fi

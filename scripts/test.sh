#!/usr/bin/env bash
# The whole test suite: makes sure the real parts (zfs-fuse, sshd, zstd, pv…)
# are installed and running, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo test --workspace --locked

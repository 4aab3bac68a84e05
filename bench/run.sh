#!/usr/bin/env bash
# Benchmark dispatcher: `cargo xtask bench [TOOL...]` runs bench/<tool>.sh for
# each named tool (default: all). Each script builds release binaries, runs
# the anchors (cat, pv, mbuffer, zstd, pzstd, sha256sum, openssl, ssh) in the
# same run with interleaved repetitions, and prints ratios. SIZE (e.g. 512M)
# shrinks the data for a quick run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tools=("$@")
if [ ${#tools[@]} -eq 0 ]; then
  tools=()
  for f in "$here"/*.sh; do
    n=$(basename "$f" .sh)
    [ "$n" = run ] || [ "$n" = lib ] || tools+=("$n")
  done
fi
for t in "${tools[@]}"; do
  f="$here/$t.sh"
  [ -f "$f" ] || { echo "bench: no bench/$t.sh" >&2; exit 1; }
  echo "=== $t ==="
  bash "$f"
done

#!/usr/bin/env bash
# The main job, end to end on this machine: installs what is missing, builds
# the tools, and replicates a ZFS dataset between two file-backed zfs-fuse
# pools through zsend-wrap | zrecv-wrap (full send, then two incrementals),
# proving each step by snapshot guid and file checksums. Where zfs-fuse
# cannot run (not root, or no /dev/fuse) it says so and runs the filters on
# plain files instead: frame → compress → meter → decompress → verify.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "installing what is missing"
if [ "$(id -u)" -eq 0 ]; then bash scripts/deps.sh; else echo "not root: skipping package installation"; fi
say "building the tools (release)"
cargo build --release --locked --quiet --bins
export PATH="$root/target/release:$PATH"

work=$(mktemp -d /tmp/zpipe-demo.XXXXXX)
pools=()
cleanup() {
  local kept=0
  for p in "${pools[@]}"; do
    # zfs-fuse may still be busy with a just-finished receive: retry.
    for _ in 1 2 3 4 5; do zpool destroy -f "$p" 2>/dev/null && break; sleep 1; done
    if zpool list "$p" >/dev/null 2>&1; then
      echo "demo: could not destroy pool $p; keeping $work" >&2; kept=1
    fi
  done
  [ "$kept" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT

files_demo() {
  say "zfs-fuse is not usable here ($1): running the filters on plain files"
  head -c 64M /dev/urandom > "$work/random.bin"
  for _ in $(seq 1 40); do cat /usr/share/common-licenses/* 2>/dev/null || true; done > "$work/text.txt"
  cat "$work/random.bin" "$work/text.txt" > "$work/input"
  zpipe-verify < "$work/input" | zpipe-compress -3 | zpipe-meter -N demo --interval 1s \
    | zpipe-compress -d | zpipe-verify -d --digest-file "$work/digest" > "$work/output"
  cmp "$work/input" "$work/output"
  echo "round trip identical; stream digest $(cat "$work/digest")"
}

if [ "$(id -u)" -ne 0 ]; then files_demo "not root"; exit 0; fi
if [ ! -e /dev/fuse ] || ! zpool list >/dev/null 2>&1; then files_demo "no /dev/fuse or no zfs-fuse daemon"; exit 0; fi

say "creating two file-backed pools"
src=zpdemo-src-$$ dst=zpdemo-dst-$$
truncate -s 512M "$work/src.img" "$work/dst.img"
zpool create -m "$work/src" "$src" "$work/src.img"; pools+=("$src")
zpool create -m "$work/dst" "$dst" "$work/dst.img"; pools+=("$dst")
zfs create "$src/my data"
# A backup is read, never written: without atime updates, reading it to
# compare checksums does not count as a change that blocks the next incremental.
zfs set atime=off "$dst"

write_sample() { # $1 = tag
  mkdir -p "$work/src/my data/$1"
  head -c 24M /dev/urandom > "$work/src/my data/$1/random.bin"
  for _ in $(seq 1 20); do cat /usr/share/common-licenses/* 2>/dev/null || true; done > "$work/src/my data/$1/text.txt"
  sync
}
checksums() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
guid() { zfs get -Hp -o value guid "$1"; }
prove() { # $1 = snapshot name
  local a b
  a=$(guid "$src/my data@$1"); b=$(guid "$dst/backup@$1")
  [ "$a" = "$b" ] || { echo "guid mismatch for @$1: $a vs $b" >&2; exit 1; }
  diff <(checksums "$work/src/my data") <(checksums "$work/dst/backup") >/dev/null \
    || { echo "file checksums differ after @$1" >&2; exit 1; }
  echo "@$1: guid $a on both sides, all file checksums equal"
}

say "full send"
write_sample day1; zfs snapshot "$src/my data@day1"
zsend-wrap --progress-name full --interval 1s "$src/my data@day1" | zrecv-wrap --quiet "$dst/backup"
prove day1

say "incremental (-i)"
write_sample day2; zfs snapshot "$src/my data@day2"
zsend-wrap --progress-name incremental --interval 1s -i "$src/my data@day1" "$src/my data@day2" | zrecv-wrap --quiet "$dst/backup"
prove day2

say "incremental with intermediates (-I)"
write_sample day3; zfs snapshot "$src/my data@day3"
write_sample day4; zfs snapshot "$src/my data@day4"
zsend-wrap --progress-name catch-up --interval 1s -I "$src/my data@day2" "$src/my data@day4" | zrecv-wrap --quiet "$dst/backup"
prove day4
echo "snapshots on the backup: $(zfs get -H -o name -d 1 guid "$dst/backup" | grep @ | sed 's/.*@//' | tr '\n' ' ')"

say "a sender that dies is caught"
if zsend-wrap --quiet "$src/my data@no-such-snapshot" | zrecv-wrap --quiet "$dst/other" 2>"$work/err"; then
  echo "a failed send was taken for a good one" >&2; exit 1
fi
echo "receiver refused it: $(tail -1 "$work/err")"

say "done: every step verified"

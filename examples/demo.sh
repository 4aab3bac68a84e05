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
truncate -s 1G "$work/src.img" "$work/dst.img"
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

say "pull replication from cron: zfs-pull.sh through a locked-down ssh key"
# A loopback sshd with two keys made for this run: the pull key may only run
# `zsend-wrap --serve` on the source dataset (docs/PULL.md), the drill key
# gets a shell for the restore drill's checksums on the source.
ssh_dir="$work/ssh"; mkdir -p "$ssh_dir" /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$ssh_dir/host"
ssh-keygen -q -t ed25519 -N '' -f "$ssh_dir/pull"
ssh-keygen -q -t ed25519 -N '' -f "$ssh_dir/drill"
ssh-keygen -q -t ed25519 -N '' -f "$ssh_dir/resume"
# zfs-fuse has no resumable receives (recv -s / send -t); the stand-in zfs of
# the tests adds them in OpenZFS's formats on top of it (docs/STANDIN-ZFS.md).
standin="env ZPIPE_STANDIN_STATE=$work/standin $root/target/release/zfs-standin"
mkdir -p "$work/standin"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
{
  printf 'restrict,command="%s --serve --allow %s --allow-snapshot --allow-prune",environment="PATH=%s" %s\n' \
    "$root/target/release/zsend-wrap" "'$src/my data'" "$PATH" "$(cat "$ssh_dir/pull.pub")"
  printf 'environment="PATH=%s" %s\n' "$PATH" "$(cat "$ssh_dir/drill.pub")"
  printf 'restrict,command="%s --serve --zfs %s --allow %s",environment="PATH=%s" %s\n' \
    "$root/target/release/zsend-wrap" "'$standin'" "'$src/big'" "$PATH" "$(cat "$ssh_dir/resume.pub")"
} > "$ssh_dir/authorized_keys"
cat > "$ssh_dir/sshd_config" <<CFG
ListenAddress 127.0.0.1
Port $port
HostKey $ssh_dir/host
AuthorizedKeysFile $ssh_dir/authorized_keys
PermitRootLogin prohibit-password
PermitUserEnvironment PATH
StrictModes no
UsePAM no
PidFile $ssh_dir/sshd.pid
CFG
/usr/sbin/sshd -f "$ssh_dir/sshd_config" -E "$ssh_dir/sshd.log"
trap 'kill "$(cat "$ssh_dir/sshd.pid" 2>/dev/null)" 2>/dev/null; cleanup' EXIT
ssh_opts="-p $port -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR"
export SRC_HOST=root@127.0.0.1 SRC_DATASET="$src/my data" DST_DATASET="$dst/pulled" KEEP=30d
export SSH="ssh $ssh_opts -i $ssh_dir/pull" SNAP_FORMAT="pull-%Y%m%d"
for days_ago in 40 20 0; do
  write_sample "pull-$days_ago"
  SNAP_TIME="@$(( $(date +%s) - days_ago * 86400 ))" bash examples/zfs-pull.sh
done
echo "snapshots pulled and kept (30 days): $(zfs get -H -o name -d 1 guid "$dst/pulled" | grep @ | sed 's/.*@//' | tr '\n' ' ')"
echo "what the locked-down key refuses:"
$SSH root@127.0.0.1 "zfs destroy -r '$src'" 2>&1 | sed 's/^/  /' || true

say "an interrupted pull resumes where it stopped"
zfs create "$src/big"
head -c 160M /dev/urandom > "$work/src/big/blob.bin"; sync
zfs snapshot "$src/big@s1"
resume_ssh="ssh $ssh_opts -i $ssh_dir/resume"
zrecv-wrap --from "$SRC_HOST:$src/big" --ssh "$resume_ssh" --zfs "$standin" \
  --limit 40M --quiet "$dst/resumed" 2>"$work/cut.err" &
pull_pid=$!
sleep 3
cut_ssh=$(pgrep -P "$pull_pid" -x ssh | head -1 || true)
[ -n "$cut_ssh" ] && kill -9 "$cut_ssh"
if wait "$pull_pid"; then echo "the cut pull claimed success" >&2; exit 1; fi
echo "cut: $(tail -1 "$work/cut.err")"
token=-
for _ in $(seq 1 60); do
  token=$($standin get -H -o value receive_resume_token "$dst/resumed" 2>/dev/null || echo -)
  [ "$token" != "-" ] && break; sleep 0.5
done
[ "$token" != "-" ] || { echo "no partial receive was kept" >&2; exit 1; }
echo "partial receive kept; resume token ${token:0:40}…"
zrecv-wrap --from "$SRC_HOST:$src/big" --ssh "$resume_ssh" --zfs "$standin" --quiet "$dst/resumed"
[ "$(guid "$dst/resumed@s1")" = "$(guid "$src/big@s1")" ] && cmp -s "$work/src/big/blob.bin" "$work/dst/resumed/blob.bin" \
  || { echo "resumed copy differs" >&2; exit 1; }
echo "resumed and completed: same guid, same bytes"

say "check: is the backup current?"
zrecv-wrap --from "$SRC_HOST:$SRC_DATASET" --ssh "$SSH" --check "$DST_DATASET"

say "restore drill: clone the newest backup, compare checksums with the source"
SRC_SSH="ssh $ssh_opts -i $ssh_dir/drill" bash examples/restore-drill.sh

say "done: every step verified"

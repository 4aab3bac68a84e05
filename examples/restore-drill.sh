#!/usr/bin/env bash
# restore-drill.sh: prove that a backup restores, without touching it.
#
# Runs on the BACKUP host. Clones a received snapshot of DST_DATASET,
# checksums every file in the clone, checksums the same snapshot on the
# source, compares the two lists, and destroys the clone. Before that it
# checks that the two snapshots are the same snapshot (same guid).
#
#   SRC_HOST=root@web1 SRC_DATASET=tank/home DST_DATASET=backup/web1/home \
#     SRC_SSH="ssh -i /root/.ssh/drill_key" ./restore-drill.sh
#
# monthly from cron:  7 4 1 * *  SRC_HOST=… SRC_DATASET=… DST_DATASET=… /usr/local/bin/restore-drill.sh
#
# Environment:
#   DST_DATASET   the backup dataset on this host (required)
#   SRC_HOST      [user@]host of the source (required)
#   SRC_DATASET   the dataset on the source (required)
#   SNAPSHOT      the snapshot name (after @) to drill (default: the newest on DST_DATASET)
#   SRC_SSH       ssh command with a SHELL on the source (default: ssh). The pull
#                 key's forced command (zsend-wrap --serve) cannot run checksums;
#                 use a separate key, e.g. restricted with from="backup-host".
#   ZFS           the local zfs command (default: zfs)
#   REMOTE_ZFS    the zfs command on the source (default: zfs)
#
# The source side reads the snapshot through <mountpoint>/.zfs/snapshot/NAME
# when it exists (OpenZFS), else through a temporary clone (zfs-fuse has no
# .zfs directory; the source user then needs `zfs allow … clone,create,mount,destroy`).
#
# Exit status: 0 the checksums match; 1 bad settings or no snapshot; 2 the
# snapshot differs (guid or checksums); 4 a zfs or ssh command failed.

set -u -o pipefail

: "${DST_DATASET:?DST_DATASET is not set}"
: "${SRC_HOST:?SRC_HOST is not set}"
: "${SRC_DATASET:?SRC_DATASET is not set}"
read -r -a zfs <<<"${ZFS:-zfs}"
read -r -a ssh <<<"${SRC_SSH:-ssh}"
REMOTE_ZFS=${REMOTE_ZFS:-zfs}

say() { printf 'restore-drill: %s\n' "$*" >&2; }

# zfs-fuse may call a just-used dataset busy for a moment.
destroy_retry() {
    local i
    for i in 1 2 3 4 5 6 7 8 9 10; do
        "$@" 2>/dev/null && return 0
        sleep 0.5
    done
    "$@"
}

if [ -z "${SNAPSHOT:-}" ]; then
    SNAPSHOT=$("${zfs[@]}" get -Hp -o name,value -d 1 createtxg "$DST_DATASET" |
        awk -F'\t' 'index($1, "@") { print $2 "\t" $1 }' | sort -n | tail -n 1 |
        cut -f 2 | sed 's/^[^@]*@//')
    [ -n "$SNAPSHOT" ] || { say "$DST_DATASET has no snapshots"; exit 1; }
fi
dst_snap="$DST_DATASET@$SNAPSHOT"
src_snap="$SRC_DATASET@$SNAPSHOT"

dst_guid=$("${zfs[@]}" get -Hp -o value guid "$dst_snap") || { say "no $dst_snap"; exit 4; }

# One remote script, quoted once: prints the guid, then "path  checksum" lines.
remote_script='
set -eu
zfs=$1 ds=$2 snap=$3
$zfs get -Hp -o value guid "$ds@$snap"
mp=$($zfs get -H -o value mountpoint "$ds")
dir="$mp/.zfs/snapshot/$snap"
clone=""
if [ ! -d "$dir" ]; then
    clone="${ds%%/*}/restore-drill-src-$$"
    $zfs clone "$ds@$snap" "$clone" >&2
    trap "cd /; $zfs unmount \"$clone\" 2>/dev/null; for i in 1 2 3 4 5 6 7 8 9 10; do $zfs destroy \"$clone\" 2>/dev/null && break; sleep 0.5; done" EXIT
    dir=$($zfs get -H -o value mountpoint "$clone")
fi
cd "$dir"
find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum
'
# Single quotes for the remote POSIX shell, each word quoted exactly once.
quote() { local w=${1//\'/\'\\\'\'}; printf "'%s' " "$w"; }
quoted=$(for w in sh -c "$remote_script" sh "$REMOTE_ZFS" "$SRC_DATASET" "$SNAPSHOT"; do quote "$w"; done)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/restore-drill.XXXXXX") || exit 4
clone="${DST_DATASET%%/*}/restore-drill-$$"
cleanup() {
    cd /
    if "${zfs[@]}" get -H -o value name "$clone" >/dev/null 2>&1; then
        "${zfs[@]}" unmount "$clone" 2>/dev/null
        destroy_retry "${zfs[@]}" destroy "$clone" || say "could not destroy $clone"
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

if ! "${ssh[@]}" "$SRC_HOST" "$quoted" >"$tmp/src" 2>"$tmp/src.err"; then
    say "checksumming $SRC_HOST:$src_snap failed: $(tail -n 1 "$tmp/src.err")"
    exit 4
fi
src_guid=$(head -n 1 "$tmp/src")
if [ "$src_guid" != "$dst_guid" ]; then
    say "$dst_snap (guid $dst_guid) is not a copy of $SRC_HOST:$src_snap (guid $src_guid)"
    exit 2
fi
tail -n +2 "$tmp/src" >"$tmp/src.sums"

"${zfs[@]}" clone "$dst_snap" "$clone" || { say "cannot clone $dst_snap"; exit 4; }
mp=$("${zfs[@]}" get -H -o value mountpoint "$clone")
(cd "$mp" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum) >"$tmp/dst.sums" ||
    { say "cannot read the clone at $mp"; exit 4; }

files=$(wc -l <"$tmp/dst.sums")
if ! diff -u "$tmp/src.sums" "$tmp/dst.sums" >"$tmp/diff"; then
    say "$dst_snap differs from $SRC_HOST:$src_snap:"
    head -n 40 "$tmp/diff" >&2
    exit 2
fi
printf 'restore-drill: %s: %s files, checksums match %s:%s (guid %s)\n' \
    "$dst_snap" "$files" "$SRC_HOST" "$src_snap" "$dst_guid"

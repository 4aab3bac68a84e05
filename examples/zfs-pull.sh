#!/usr/bin/env bash
# zfs-pull.sh: the classic pull-based ZFS backup cron job, rebuilt on zpipe.
#
# Runs on the BACKUP host. One run: take a snapshot on the source, pull
# every new snapshot into DST_DATASET (matched by guid, a cut transfer
# resumed, a diverged destination refused), prune old snapshots by the date
# in their names, write ONE log line, and run ALERT_CMD when anything failed.
# zrecv-wrap --from does the work (docs/PULL.md); this script adds the lock,
# the log line and the alert.
#
# crontab on the backup host (hourly at :17; the log line goes to LOG_FILE):
#   17 * * * *  SRC_HOST=zpipe@web1 SRC_DATASET=tank/home DST_DATASET=backup/web1/home KEEP=30d LOG_FILE=/var/log/zfs-pull.log ALERT_CMD='mail -s "zfs-pull failed" root' /usr/local/bin/zfs-pull.sh
#
# Environment (hosts and datasets come only from here):
#   SRC_HOST       [user@]host of the source (required)
#   SRC_DATASET    dataset on the source (required)
#   DST_DATASET    dataset on this host (required)
#   SSH            ssh command, split into words (default: ssh), e.g. "ssh -i /root/.ssh/pull_key"
#   SNAP_FORMAT    strftime name of the snapshots taken (default: zpipe-%Y%m%d-%H%M);
#                  pruning reads the dates back from these names and touches nothing else
#   KEEP           prune snapshots here older than this (default: 30d; empty: never)
#   KEEP_SOURCE    prune snapshots on the source older than this (default: empty, never);
#                  needs --allow-prune when the source key runs zsend-wrap --serve
#   LIMIT          bandwidth limit, e.g. 20M (default: none)
#   ZRECV_WRAP     the zrecv-wrap program (default: zrecv-wrap)
#   REMOTE_ZSEND   zsend-wrap on the source (default: zsend-wrap; plain zfs send when missing)
#   ZFS            the local zfs command (default: zfs), e.g. "sudo zfs"
#   LOCK_FILE      lock against overlapping runs (default: /run/lock/zfs-pull-<DST>.lock)
#   LOG_FILE       append the log line here (default: stdout)
#   JSON_FILE      keep zrecv-wrap's run summary here (default: a temp file, removed)
#   ALERT_CMD      run with sh -c on failure, the log line on stdin and
#                  ZFS_PULL_EXIT / ZFS_PULL_MESSAGE in the environment
#   SNAP_TIME      the time taken as "now" for the snapshot name and pruning
#                  (RFC 3339 or @EPOCH); for tests and backfills only
#
# Exit status: zrecv-wrap's (docs/EXIT-CODES.md): 0 ok, 1 refused or bad
# settings (e.g. a diverged destination), 2 integrity, 3 I/O, 4 zfs or ssh
# failed. A run skipped because the previous one still runs exits 0.

set -u -o pipefail

: "${SRC_HOST:?SRC_HOST is not set}"
: "${SRC_DATASET:?SRC_DATASET is not set}"
: "${DST_DATASET:?DST_DATASET is not set}"
SNAP_FORMAT=${SNAP_FORMAT:-zpipe-%Y%m%d-%H%M}
KEEP=${KEEP-30d}
KEEP_SOURCE=${KEEP_SOURCE:-}
ZRECV_WRAP=${ZRECV_WRAP:-zrecv-wrap}
LOCK_FILE=${LOCK_FILE:-/run/lock/zfs-pull-$(printf '%s' "$DST_DATASET" | tr -c 'A-Za-z0-9._-' '_').lock}

log() {
    local line
    line="$(date -u +%Y-%m-%dT%H:%M:%SZ) zfs-pull $SRC_HOST:$SRC_DATASET -> $DST_DATASET: $*"
    if [ -n "${LOG_FILE:-}" ]; then
        printf '%s\n' "$line" >>"$LOG_FILE"
    else
        printf '%s\n' "$line"
    fi
    LAST_LINE=$line
}

alert() {
    local code=$1
    [ -n "${ALERT_CMD:-}" ] || return 0
    printf '%s\n' "$LAST_LINE" |
        ZFS_PULL_EXIT=$code ZFS_PULL_MESSAGE=$LAST_LINE sh -c "$ALERT_CMD" || true
}

exec 9>>"$LOCK_FILE" || { echo "zfs-pull: cannot open $LOCK_FILE" >&2; exit 1; }
if ! flock -n 9; then
    log "skipped: the previous run still holds $LOCK_FILE"
    exit 0
fi

args=(--quiet --from "$SRC_HOST:$SRC_DATASET" --snapshot "$SNAP_FORMAT")
[ -n "${SSH:-}" ] && args+=(--ssh "$SSH")
[ -n "$KEEP" ] && args+=(--prune-older-than "$KEEP")
[ -n "$KEEP_SOURCE" ] && args+=(--prune-source-older-than "$KEEP_SOURCE")
[ -n "${LIMIT:-}" ] && args+=(--limit "$LIMIT")
[ -n "${REMOTE_ZSEND:-}" ] && args+=(--remote-zsend "$REMOTE_ZSEND")
[ -n "${ZFS:-}" ] && args+=(--zfs "$ZFS")
[ -n "${SNAP_TIME:-}" ] && args+=(--snapshot-time "$SNAP_TIME")

tmp=$(mktemp -d "${TMPDIR:-/tmp}/zfs-pull.XXXXXX") || exit 3
trap 'rm -rf "$tmp"' EXIT
json=${JSON_FILE:-$tmp/run.json}
args+=(--json "$json")

start=$(date +%s)
"$ZRECV_WRAP" "${args[@]}" "$DST_DATASET" 2>"$tmp/err"
code=$?
secs=$(( $(date +%s) - start ))

# A few numbers from the summary (pretty JSON, top-level keys indented by 2).
field() { sed -n "s/^  \"$1\": \\(.*\\),\$/\\1/p" "$json" 2>/dev/null | head -n 1; }
if [ "$code" -eq 0 ]; then
    sends=$(grep -c '"kind":' "$json" 2>/dev/null)
    pruned=$(sed -n '/"pruned_destination"/,/]/p' "$json" 2>/dev/null | grep -c '@')
    log "ok in ${secs}s: snapshot $(field snapshot | tr -d '"'), ${sends:-0} send(s), $(field bytes) bytes, pruned ${pruned:-0}"
else
    why=$(grep -v '^$' "$tmp/err" | tail -n 1)
    log "FAILED (exit $code) after ${secs}s: ${why:-no error text}"
    alert "$code"
fi
exit "$code"

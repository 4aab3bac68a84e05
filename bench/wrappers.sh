#!/usr/bin/env bash
# bench/wrappers.sh: transport speed of zsend-wrap → ssh → zrecv-wrap over a
# loopback sshd, against plain `cat | ssh cat` and `zstd -3 | ssh zstd -d`.
#
#   SIZE=1536M REPS=3 bash bench/wrappers.sh     (cargo xtask bench wrappers)
#
# The stream is a REAL ZFS send stream made once with zfs-fuse and cached in
# $BENCH_CACHE (default /tmp/zpipe-bench-wrappers): one dataset holding
# SIZE of files, alternately a tar of /usr/share + /usr/lib (compressible,
# ~3x) and random bytes (media, encrypted data), COMPRESSIBLE percent
# (default 60) of them compressible. zfs itself is a stand-in script that
# `cat`s the cached stream for `zfs send`, reads stdin to /dev/null for `zfs
# receive`, answers the usage queries with OpenZFS 2.x usage texts, `send
# -nvP` with the exact size and `get guid` with the stream's toguid — so the
# disks and zfs-fuse's slow receive (~220 MB/s) stay out of the measurement
# and only the transport is timed. sshd is started for the run on
# 127.0.0.1.
#
# Cases (interleaved, REPS rounds; ratios use the fastest round of each and
# the median is printed too):
#   plain        cat f | ssh H 'cat >/dev/null'               (default cipher)
#   zstd3        zstd -3 -T0 < f | ssh H 'zstd -d >/dev/null'
#   wrap_auto    zsend-wrap SNAP --to H:pool/x  (--compress auto, AES-GCM preferred)
#   wrap_off     the same with --compress off
#   wrap_1       the same with --compress 1 (the floor --compress auto adapts down to)
#   plain_gcm    cat f | ssh -c aes128-gcm@openssh.com H 'cat >/dev/null'
#   wrap_auto_cc wrap_auto with --ssh-cipher chacha20-poly1305@openssh.com
#                (the default cipher of plain: the cipher's share of the gain)
# Targets (issue): wrap_auto < plain (time ratio < 1.00); zstd3 ≈ 1.5 x plain.
# The local side (zsend-wrap or cat+ssh) runs under /usr/bin/time: its CPU
# seconds are printed; the remote side's are not (sshd's children).
set -euo pipefail

SIZE=${SIZE:-1536M}
REPS=${REPS:-3}
COMPRESSIBLE=${COMPRESSIBLE:-60}
CASES=${CASES:-"plain zstd3 wrap_auto wrap_off wrap_1 plain_gcm wrap_auto_cc"}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
CACHE=${BENCH_CACHE:-/tmp/zpipe-bench-wrappers}
ZFS_LOCK=/tmp/zpipe-tests-zfs.lock # the test kit's pool create/destroy lock
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

bench_need zstd ssh ssh-keygen /usr/bin/time numfmt flock tar

BYTES_WANTED=$(numfmt --from=iec "$SIZE")
STREAM=$CACHE/stream-$BYTES_WANTED-$COMPRESSIBLE.zfs
GUIDFILE=$STREAM.guid
SNAPFILE=$STREAM.snap
mkdir -p "$CACHE"

# Destroys pool $1 (zfs-fuse says "pool is busy" for a while after writes).
destroy_pool() {
    local i
    for i in $(seq 20); do
        flock "$ZFS_LOCK" zpool destroy -f "$1" 2>/dev/null && return 0
        sleep 0.5
    done
    flock "$ZFS_LOCK" zpool destroy -f "$1"
}

# Makes $STREAM with zfs-fuse: pool on a sparse file, files, snapshot, send.
make_stream() {
    bench_need zfs-fuse zpool zfs
    if ! pgrep -x zfs-fuse >/dev/null; then
        mkdir -p /run/lock
        zfs-fuse --no-daemon >/tmp/zpipe-bench-zfs-fuse.log 2>&1 &
        disown
        for _ in $(seq 100); do zpool list >/dev/null 2>&1 && break; sleep 0.1; done
    fi
    local pool=zpbench-$$ img=$CACHE/pool-$$.img mnt=$CACHE/mnt-$$
    local pieces=6 comp_piece rand_piece i
    comp_piece=$((BYTES_WANTED * COMPRESSIBLE / 100 / (pieces / 2)))
    rand_piece=$((BYTES_WANTED * (100 - COMPRESSIBLE) / 100 / (pieces / 2)))
    echo "building a real ZFS stream of ~$SIZE with zfs-fuse (pool $pool) ..." >&2
    truncate -s $((BYTES_WANTED * 13 / 10 + (256 << 20))) "$img"
    flock "$ZFS_LOCK" zpool create -m "$mnt" "$pool" "$img"
    # shellcheck disable=SC2064
    trap "destroy_pool $pool; rm -rf $img $mnt" EXIT
    local corpus=$CACHE/usr-corpus-$comp_piece
    if [[ ! -s $corpus ]]; then
        # A bounded number of passes: once head has enough, tar dies of SIGPIPE.
        for _ in 1 2 3 4 5 6 7 8; do tar cf - /usr/share /usr/lib 2>/dev/null || true; done |
            head -c $((comp_piece * pieces / 2)) >"$corpus" || true
    fi
    for ((i = 0; i < pieces / 2; i++)); do
        dd if="$corpus" of="$mnt/usr-$i.tar" bs=1M iflag=skip_bytes,count_bytes \
            skip=$((i * comp_piece)) count="$comp_piece" status=none
        head -c "$rand_piece" /dev/urandom >"$mnt/media-$i.bin"
    done
    rm -f "$corpus"
    sync
    zfs snapshot "$pool@bench"
    zfs get -Hp -o value guid "$pool@bench" >"$GUIDFILE"
    echo "$pool@bench" >"$SNAPFILE"
    zfs send "$pool@bench" >"$STREAM.tmp"
    mv "$STREAM.tmp" "$STREAM"
    destroy_pool "$pool"
    rm -rf "$img" "$mnt"
    trap - EXIT
}
[[ -s $STREAM && -s $GUIDFILE ]] || make_stream

(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release -q --bins)
ZSEND=$TARGET/release/zsend-wrap
ZRECV=$TARGET/release/zrecv-wrap


WORK=$(mktemp -d "${TMPDIR:-/tmp}/zw-bench.XXXXXX")
trap 'bench_sshd_stop; bench_cpu_group_done; rm -rf "$WORK"' EXIT
BYTES=$(stat -c %s "$STREAM")
GUID=$(cat "$GUIDFILE")
SNAP=$(cat "$SNAPFILE")

# The stand-in zfs (see the header).
FAKE=$WORK/zfs
cat >"$FAKE" <<EOF
#!/bin/bash
# Stand-in zfs for bench/wrappers.sh: transport only, no pool.
case \$1 in
send)
    if [ \$# -eq 1 ]; then
        printf 'missing snapshot argument\nusage:\n\tsend [-DLPbcehnpsVvw] [-i|-I snapshot] <snapshot>\n\tsend [-nVvPe] -t <receive_resume_token>\n' >&2
        exit 2
    fi
    if [ "\$2" = -nvP ]; then
        printf 'full\t%s\t%s\nsize\t%s\n' "\$3" $BYTES $BYTES
        exit 0
    fi
    exec cat $STREAM ;;
receive|recv)
    if [ \$# -eq 1 ]; then
        printf 'missing snapshot argument\nusage:\n\treceive [-FhMnsuv] [-o <property=value>] ... [-x <property>] ... <filesystem|volume|snapshot>\n\treceive -A <filesystem|volume>\n' >&2
        exit 2
    fi
    exec cat >/dev/null ;;
get)
    echo $GUID ;;
*)
    echo "stand-in zfs: unsupported: \$*" >&2
    exit 1 ;;
esac
EOF
chmod +x "$FAKE"

bench_cpu_group_init # before sshd, so remote processes are counted too
bench_sshd_start "$WORK/sshd"
HOST=root@127.0.0.1
SSH_ARGS="${SSH_OPTS[*]}"
SSH_LINE="ssh $SSH_ARGS"
GCM=aes128-gcm@openssh.com
CHACHA=chacha20-poly1305@openssh.com
cat "$STREAM" >/dev/null # into the page cache

declare -A CMD=(
    [plain]="cat $STREAM | ssh $SSH_ARGS $HOST 'cat >/dev/null'"
    [zstd3]="zstd -3 -T0 -q -c <$STREAM | ssh $SSH_ARGS $HOST 'zstd -d -q >/dev/null'"
    [wrap_auto]="$ZSEND --zfs $FAKE $SNAP --to $HOST:pool/x --ssh '$SSH_LINE' --remote-zrecv $ZRECV --recv-arg=--zfs=$FAKE"
    [wrap_off]="$ZSEND --zfs $FAKE $SNAP --compress off --to $HOST:pool/x --ssh '$SSH_LINE' --remote-zrecv $ZRECV --recv-arg=--zfs=$FAKE"
    [wrap_1]="$ZSEND --zfs $FAKE $SNAP --compress 1 --to $HOST:pool/x --ssh '$SSH_LINE' --remote-zrecv $ZRECV --recv-arg=--zfs=$FAKE"
    [plain_gcm]="cat $STREAM | ssh -c $GCM $SSH_ARGS $HOST 'cat >/dev/null'"
    [wrap_auto_cc]="$ZSEND --zfs $FAKE $SNAP --ssh-cipher $CHACHA --to $HOST:pool/x --ssh '$SSH_LINE' --remote-zrecv $ZRECV --recv-arg=--zfs=$FAKE"
)
declare -A CPU=() TOTAL_CPU=()
read -r -a ORDER <<<"$CASES"
[[ " ${ORDER[*]} " == *" plain "* ]] || ORDER=(plain "${ORDER[@]}") # the reference

run_case() { # name: one timed run; fails the bench if the pipeline fails
    local name=$1 t0 c0 c1
    c0=$(bench_cpu_ns)
    t0=$(bench_now)
    if ! /usr/bin/time -f '%U %S' -o "$WORK/time" bash -o pipefail -c "${CMD[$name]}" \
        2>>"$WORK/log.$name"; then
        echo "bench: case $name failed: ${CMD[$name]}" >&2
        tail -5 "$WORK/log.$name" >&2
        exit 1
    fi
    bench_record "$name" "$t0"
    c1=$(bench_cpu_ns)
    CPU[$name]+="$(awk '{printf "%.2f", $1+$2}' "$WORK/time") "
    [[ -z $c0 ]] || TOTAL_CPU[$name]+="$(awk -v a="$c0" -v b="$c1" 'BEGIN{printf "%.2f", (b-a)/1e9}') "
}

echo "wrappers bench: stream $BYTES bytes (real zfs-fuse stream, $COMPRESSIBLE% compressible files), REPS=$REPS, $(nproc) cores"
echo "  cpu has aes: $(grep -qw aes /proc/cpuinfo && echo yes || echo no); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for name in "${ORDER[@]}"; do echo "  $name: ${CMD[$name]}"; done
for ((r = 1; r <= REPS; r++)); do
    for name in "${ORDER[@]}"; do run_case "$name"; done
done
echo "  load after: $(cut -d' ' -f1-3 /proc/loadavg)"

echo
printf '%-14s %8s %8s %9s %9s %9s %8s %8s %8s\n' case "best s" "median s" "best MB/s" "cpu s" "local s" "x plain" "med x" "cpu x"
cpu_of() { echo "${TOTAL_CPU[$1]:-}" | bench_median_of; }
for name in "${ORDER[@]}"; do
    awk -v n="$name" -v t="$(bench_best "$name")" -v m="$(bench_median "$name")" -v b="$BYTES" \
        -v c="$(cpu_of "$name")" -v l="$(echo "${CPU[$name]}" | bench_median_of)" \
        -v p="$(bench_best plain)" -v pm="$(bench_median plain)" -v pc="$(cpu_of plain)" \
        'BEGIN{printf "%-14s %8.3f %8.3f %9.0f %9s %9.2f %8.3f %8.3f %8s\n", n, t, m, b/t/1e6,
               (c == "" ? "-" : sprintf("%.2f", c)), l, t/p, m/pm,
               (c == "" || pc == "" ? "-" : sprintf("%.3f", c/pc))}'
done
echo "(cpu s: median CPU seconds of every process of the case, both sides of ssh, from"
echo " cpuacct; local s: the sending side only; x plain: best-round and median wall"
echo " ratios; cpu x: CPU-time ratio — on a loopback link the transfer is CPU-bound,"
echo " so this is the load-independent number)"
echo
has() { [[ " ${ORDER[*]} " == *" $1 "* ]]; }
pair() { # label a b op limit: best and median time ratios a/b
    has "$2" && has "$3" || return 0
    bench_check "$1 (best)" "$(bench_ratio "$(bench_best "$2")" "$(bench_best "$3")")" "$4" "$5"
    bench_check "$1 (median)" "$(bench_ratio "$(bench_median "$2")" "$(bench_median "$3")")" "$4" "$5"
}
pair "zsend-wrap auto / plain ssh" wrap_auto plain "<=" 0.99
pair "zsend-wrap off / plain ssh" wrap_off plain "<=" 1.00
pair "zsend-wrap auto / zsend-wrap off" wrap_auto wrap_off "<=" 1.00
pair "zsend-wrap -1 / zsend-wrap off" wrap_1 wrap_off "<=" 1.00
pair "zstd -3 / plain ssh (issue: ~1.5)" zstd3 plain ">=" 1.00
pair "plain aes128-gcm / plain default" plain_gcm plain "<=" 1.00
pair "zsend-wrap auto chacha20 / plain" wrap_auto_cc plain "<=" 1.00
pair "zsend-wrap auto / zstd -3" wrap_auto zstd3 "<=" 1.00
cpu_pair() { # label a b limit: CPU-time ratio a/b (when cpuacct worked)
    has "$2" && has "$3" && [[ -n ${TOTAL_CPU[$2]:-} && -n ${TOTAL_CPU[$3]:-} ]] || return 0
    bench_check "$1 (cpu time)" "$(bench_ratio "$(cpu_of "$2")" "$(cpu_of "$3")")" "<=" "$4"
}
cpu_pair "zsend-wrap auto / plain ssh" wrap_auto plain 0.99
cpu_pair "zsend-wrap off / plain ssh" wrap_off plain 1.00
cpu_pair "zsend-wrap auto / zsend-wrap off" wrap_auto wrap_off 1.00
cpu_pair "zsend-wrap -1 / zsend-wrap off" wrap_1 wrap_off 1.00
if has wrap_auto; then
    echo
    echo "last zsend-wrap auto summary: $(grep -v '^$' "$WORK/log.wrap_auto" | tail -1)"
fi

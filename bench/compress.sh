#!/usr/bin/env bash
# bench/compress.sh: zpipe-compress against zstd -T2 and pzstd -p2.
#
#   SIZE=2G REPS=1 bash bench/compress.sh        (cargo xtask bench compress)
#
# Corpus: SIZE (default 2G) of a tar of /usr/share and /usr/lib (repeated
# if short) followed by SIZE/2 of random bytes (an encrypted send), cached in
# $BENCH_CACHE (default /tmp/zpipe-bench-compress) and read from the page
# cache. Everything runs with 2 threads; the cases run interleaved, REPS
# rounds, and the median wall time counts. Targets (issue):
#   ours -3 -T2 wall        <= 0.95 x zstd -3 -T2, size <= 1.01 x its size
#   ours -d -T2 (own output) <= 0.60 x zstd -d (of zstd's output)
#   random part at -3       >= 1.5 GB/s, output <= 1.001 x input
#   RSS at -3 -T2           <= 64 MiB (-19 reported, on a 64 MiB slice)
# Levels 1 and 9 are reported beside zstd and pzstd too.
set -euo pipefail

SIZE=${SIZE:-2G}
REPS=${REPS:-1}
LEVELS=${LEVELS:-"1 3 9"}
T=2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
CACHE=${BENCH_CACHE:-/tmp/zpipe-bench-compress}

for tool in zstd pzstd /usr/bin/time numfmt; do
    command -v "$tool" >/dev/null || {
        echo "compress bench: $tool is missing (apt-get install zstd time coreutils)" >&2
        exit 1
    }
done

(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release -q -p zpipe-compress)
ZC=$TARGET/release/zpipe-compress

MIXED_BYTES=$(numfmt --from=iec "$SIZE")
RANDOM_BYTES=$((MIXED_BYTES / 2))
mkdir -p "$CACHE"
MIXED=$CACHE/mixed-$MIXED_BYTES
RAND=$CACHE/random-$RANDOM_BYTES
ALL=$CACHE/all-$MIXED_BYTES
if [[ ! -s $MIXED ]]; then
    echo "building corpus $MIXED (tar of /usr/share /usr/lib) ..." >&2
    # A bounded number of passes: once head has enough, each tar dies of SIGPIPE.
    for _ in 1 2 3 4 5 6 7 8; do tar cf - /usr/share /usr/lib 2>/dev/null || true; done |
        head -c "$MIXED_BYTES" >"$MIXED.tmp" || true
    mv "$MIXED.tmp" "$MIXED"
fi
if [[ ! -s $RAND ]]; then
    head -c "$RANDOM_BYTES" /dev/urandom >"$RAND.tmp" && mv "$RAND.tmp" "$RAND"
fi
if [[ ! -s $ALL ]]; then
    cat "$MIXED" "$RAND" >"$ALL.tmp" && mv "$ALL.tmp" "$ALL"
fi
SLICE=$CACHE/slice-64M
[[ -s $SLICE ]] || head -c 64M "$MIXED" >"$SLICE"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/zc-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ALL_BYTES=$(stat -c %s "$ALL")
cat "$ALL" >/dev/null

declare -A TIMES RSS SIZES

run_case() { # name input output cmd... -> TIMES[name] += wall, RSS, SIZES
    local name=$1 in=$2 out=$3 start end rss
    shift 3
    start=$(date +%s%N)
    /usr/bin/time -f %M -o "$WORK/time" "$@" <"$in" >"$out" 2>>"$WORK/log"
    end=$(date +%s%N)
    TIMES[$name]+="$(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.4f", (b-a)/1e9}') "
    rss=$(tail -n1 "$WORK/time")
    if [[ -z ${RSS[$name]:-} || $rss -gt ${RSS[$name]} ]]; then RSS[$name]=$rss; fi
    [[ $out == /dev/null ]] || SIZES[$name]=$(stat -c %s "$out")
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }

echo "compress bench: corpus $ALL_BYTES bytes (${SIZE} mixed + random), threads $T, REPS=$REPS"
ORDER=()
for ((r = 1; r <= REPS; r++)); do
    for l in $LEVELS; do
        run_case "ours -$l" "$ALL" "$WORK/ours.$l" "$ZC" "-$l" -T$T
        run_case "zstd -$l" "$ALL" "$WORK/zstd.$l" zstd "-$l" -T$T -q -c
        run_case "pzstd -$l" "$ALL" "$WORK/pzstd.$l" pzstd "-$l" -p $T -q -c
    done
    run_case "ours -d" "$WORK/ours.3" /dev/null "$ZC" -d -T$T
    run_case "zstd -d" "$WORK/zstd.3" /dev/null zstd -d -q -c
    run_case "pzstd -d" "$WORK/pzstd.3" /dev/null pzstd -d -p $T -q -c
    # Random data: timed to /dev/null (the rate is the point), sized once below.
    run_case "ours -3 random" "$RAND" /dev/null "$ZC" -3 -T$T
    run_case "zstd -3 random" "$RAND" /dev/null zstd -3 -T$T -q -c
    run_case "ours -19 slice" "$SLICE" "$WORK/ours.19" "$ZC" -19 -T$T
done
SIZES[ours -3 random]=$("$ZC" -3 -T$T <"$RAND" | wc -c)
SIZES[zstd -3 random]=$(zstd -3 -T$T -q -c <"$RAND" | wc -c)
for l in $LEVELS; do ORDER+=("ours -$l" "zstd -$l" "pzstd -$l"); done
ORDER+=("ours -d" "zstd -d" "pzstd -d" "ours -3 random" "zstd -3 random" "ours -19 slice")

declare -A MED
printf '%-16s %10s %10s %14s %8s %9s\n' case "median s" "MB/s" "output bytes" "ratio" "RSS MiB"
for name in "${ORDER[@]}"; do
    MED[$name]=$(echo "${TIMES[$name]}" | median)
    case $name in
    *random) in_bytes=$(stat -c %s "$RAND") ;;
    *slice) in_bytes=$(stat -c %s "$SLICE") ;;
    *" -d") in_bytes=$ALL_BYTES ;;
    *) in_bytes=$ALL_BYTES ;;
    esac
    out=${SIZES[$name]:-0}
    awk -v n="$name" -v t="${MED[$name]}" -v b="$in_bytes" -v o="$out" -v r="${RSS[$name]}" \
        'BEGIN{printf "%-16s %10.3f %10.0f %14s %8s %9.1f\n", n, t, b/t/1e6, (o ? o : "-"), (o ? sprintf("%.4f", o/b) : "-"), r/1024}'
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a/b}'; }
check() { # label value op limit
    local ok
    ok=$(awk -v v="$2" -v l="$4" -v op="$3" 'BEGIN{print (op=="<=" ? v<=l : v>=l) ? "ok" : "MISS"}')
    printf '%-44s %8s  (target %s %s)  %s\n' "$1" "$2" "$3" "$4" "$ok"
}
echo
for l in $LEVELS; do
    echo "level $l: ours/zstd wall $(ratio "${MED[ours -$l]}" "${MED[zstd -$l]}"), size $(ratio "${SIZES[ours -$l]}" "${SIZES[zstd -$l]}");" \
        "pzstd/zstd wall $(ratio "${MED[pzstd -$l]}" "${MED[zstd -$l]}"), size $(ratio "${SIZES[pzstd -$l]}" "${SIZES[zstd -$l]}")"
done
echo "pzstd -d / zstd -d wall: $(ratio "${MED[pzstd -d]}" "${MED[zstd -d]}")"
echo
if [[ " $LEVELS " == *" 3 "* ]]; then
    check "ours -3 / zstd -3 -T2 (wall)" "$(ratio "${MED[ours -3]}" "${MED[zstd -3]}")" "<=" 0.95
    check "ours -3 / zstd -3 -T2 (size)" "$(ratio "${SIZES[ours -3]}" "${SIZES[zstd -3]}")" "<=" 1.01
    check "ours -d / zstd -d (wall)" "$(ratio "${MED[ours -d]}" "${MED[zstd -d]}")" "<=" 0.60
    check "ours -3 RSS MiB" "$(awk -v r="${RSS[ours -3]}" 'BEGIN{printf "%.1f", r/1024}')" "<=" 64
fi
check "random at -3 GB/s" "$(awk -v b="$(stat -c %s "$RAND")" -v t="${MED[ours -3 random]}" 'BEGIN{printf "%.2f", b/t/1e9}')" ">=" 1.5
check "random at -3 output/input" "$(awk -v o="${SIZES[ours -3 random]}" -v b="$(stat -c %s "$RAND")" 'BEGIN{printf "%.5f", o/b}')" "<=" 1.001
echo "ours -19 RSS MiB (64 MiB slice): $(awk -v r="${RSS[ours -19 slice]}" 'BEGIN{printf "%.1f", r/1024}')"

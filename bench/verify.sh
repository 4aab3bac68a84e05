#!/usr/bin/env bash
# bench/verify.sh: zpipe-verify framing against openssl dgst and sha256sum.
#
#   SIZE=2G REPS=1 THREADS=2 bash bench/verify.sh      (cargo xtask bench verify)
#
# The data file (random, SIZE bytes) and its framed form are read from the
# page cache. Cases, interleaved, REPS rounds, the median counts:
#   openssl   openssl dgst -sha256 FILE                 (the CPU anchor)
#   sha256sum sha256sum FILE                            (the wall-time anchor)
#   encode    zpipe-verify -T THREADS <FILE >/dev/null
#   decode    zpipe-verify -d -T THREADS <FRAMED >/dev/null
#   chain     zpipe-verify -T THREADS <FILE | zpipe-verify -d -T THREADS >/dev/null
# Targets (issue):
#   CPU (user+sys) per GiB of encode and of decode <= 1.15 x openssl dgst
#   encode and decode throughput with 2 threads   >= 2.5 GB/s
#   chain wall time                               <= 0.25 x sha256sum
#   peak RSS of each stage                        <= 32 MiB
set -euo pipefail

SIZE=${SIZE:-2G}
REPS=${REPS:-1}
THREADS=${THREADS:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

for tool in openssl sha256sum /usr/bin/time; do
    command -v "$tool" >/dev/null || {
        echo "verify bench: $tool is missing (apt-get install openssl coreutils time)" >&2
        exit 1
    }
done

(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release -q -p zpipe-verify)
ZV=$TARGET/release/zpipe-verify

if grep -qo sha_ni /proc/cpuinfo; then shani=yes; else shani=no; fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
FILE=$WORK/data
FRAMED=$WORK/framed
# Both files are written in 1 MiB writes, so the page cache holds them
# alike (small writes leave small folios that are slower to read back, which
# would skew encode-vs-decode comparisons).
head -c "$SIZE" /dev/urandom | dd of="$FILE" bs=1M iflag=fullblock status=none
"$ZV" -T "$THREADS" <"$FILE" | dd of="$FRAMED" bs=1M iflag=fullblock status=none
BYTES=$(stat -c %s "$FILE")
cat "$FILE" "$FRAMED" >/dev/null # into the page cache

declare -A CMD=(
    [openssl]="openssl dgst -sha256 $FILE"
    [sha256sum]="sha256sum $FILE"
    [encode]="$ZV -T $THREADS"
    [decode]="$ZV -d -T $THREADS"
)
declare -A INPUT=([openssl]=/dev/null [sha256sum]=/dev/null [encode]=$FILE [decode]=$FRAMED)
ORDER=(openssl sha256sum encode decode chain)
declare -A WALL CPU RSS

add() { # name wall cpu rss
    WALL[$1]+="$2 "
    CPU[$1]+="$3 "
    if [[ -z ${RSS[$1]:-} || $4 -gt ${RSS[$1]} ]]; then RSS[$1]=$4; fi
}

run_case() {
    local name=$1 start end wall
    start=$(date +%s%N)
    if [[ $name == chain ]]; then
        "$ZV" -T "$THREADS" <"$FILE" | "$ZV" -d -T "$THREADS" >/dev/null
        end=$(date +%s%N)
        wall=$(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.4f", (b-a)/1e9}')
        add chain "$wall" 0 0
        return
    fi
    # shellcheck disable=SC2086
    /usr/bin/time -f '%U %S %M' -o "$WORK/time" ${CMD[$name]} <"${INPUT[$name]}" >/dev/null
    end=$(date +%s%N)
    wall=$(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.4f", (b-a)/1e9}')
    read -r u s m <"$WORK/time"
    add "$name" "$wall" "$(awk -v u="$u" -v s="$s" 'BEGIN{printf "%.3f", u+s}')" "$m"
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }

echo "verify bench: SIZE=$SIZE ($BYTES bytes) REPS=$REPS THREADS=$THREADS sha_ni=$shani"
for ((r = 1; r <= REPS; r++)); do
    for name in "${ORDER[@]}"; do run_case "$name"; done
done

GIB=$(awk -v b="$BYTES" 'BEGIN{print b/1073741824}')
declare -A MW MC
printf '%-10s %9s %9s %11s %9s\n' case "wall s" "GB/s" "CPU s/GiB" "RSS MiB"
for name in "${ORDER[@]}"; do
    MW[$name]=$(echo "${WALL[$name]}" | median)
    MC[$name]=$(echo "${CPU[$name]}" | median)
    awk -v n="$name" -v t="${MW[$name]}" -v c="${MC[$name]}" -v b="$BYTES" -v g="$GIB" -v r="${RSS[$name]}" \
        'BEGIN{printf "%-10s %9.3f %9.2f %11.3f %9.1f\n", n, t, b/t/1e9, c/g, r/1024}'
done

fails=0
check() { # label value op limit
    local ok
    ok=$(awk -v v="$2" -v l="$4" -v op="$3" 'BEGIN{print (op=="<=" ? v<=l : v>=l) ? "ok" : "MISS"}')
    printf '%-44s %8.3f %s %-6s %s\n' "$1" "$2" "$3" "$4" "$ok"
    [[ $ok == ok ]] || fails=$((fails + 1))
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.4f", a/b}'; }
gbps() { awk -v b="$BYTES" -v t="$1" 'BEGIN{printf "%.3f", b/t/1e9}'; }

echo
check "encode CPU / openssl dgst CPU" "$(ratio "${MC[encode]}" "${MC[openssl]}")" "<=" 1.15
check "decode CPU / openssl dgst CPU" "$(ratio "${MC[decode]}" "${MC[openssl]}")" "<=" 1.15
check "encode GB/s (-T $THREADS, to /dev/null)" "$(gbps "${MW[encode]}")" ">=" 2.5
check "decode GB/s (-T $THREADS, to /dev/null)" "$(gbps "${MW[decode]}")" ">=" 2.5
check "chain wall / sha256sum wall" "$(ratio "${MW[chain]}" "${MW[sha256sum]}")" "<=" 0.25
check "encode RSS MiB" "$(awk -v r="${RSS[encode]}" 'BEGIN{print r/1024}')" "<=" 32
check "decode RSS MiB" "$(awk -v r="${RSS[decode]}" 'BEGIN{print r/1024}')" "<=" 32
echo "verify bench: $fails target(s) missed (machine load: $(cut -d' ' -f1-3 /proc/loadavg))"

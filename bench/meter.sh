#!/usr/bin/env bash
# bench/meter.sh: zpipe-meter against pv, cat and mbuffer in the middle of a pipe.
#
#   SIZE=2G REPS=5 bash bench/meter.sh      (cargo xtask bench meter)
#
# Every case is `cat FILE | <middle> | cat >/dev/null`; the cases run
# interleaved, REPS rounds. Ratios use the fastest round of each case (on a
# shared machine other load only ever adds time); medians are printed too.
# The middle process runs under /usr/bin/time -v for its peak RSS and CPU
# time. Targets (issue):
#   meter -q        <= 1.00 x pv -q          (wall)
#   meter -q        <= 0.85 x cat            (wall)
#   meter progress  <= 1.03 x meter -q       (log lines to a file, -i 1s)
#   meter -B 256M   >= mbuffer -m 256M       (throughput: time ratio <= 1.00)
#   RSS meter -q <= 16 MiB; meter -B 256M <= 16 MiB + 256 MiB
set -euo pipefail

SIZE=${SIZE:-2G}
REPS=${REPS:-5}
BUF=${BUF:-256M}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

for tool in pv mbuffer /usr/bin/time; do
    command -v "$tool" >/dev/null || {
        echo "meter bench: $tool is missing (apt-get install pv mbuffer time)" >&2
        exit 1
    }
done

(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release -q -p zpipe-meter)
METER=$TARGET/release/zpipe-meter

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
FILE=$WORK/data
head -c "$SIZE" /dev/urandom >"$FILE"
BYTES=$(stat -c %s "$FILE")
cat "$FILE" >/dev/null # into the page cache

declare -A MIDDLE=(
    [meter_q]="$METER -q"
    [pv_q]="pv -q"
    [cat]="cat"
    [meter_progress]="$METER -i 1s -N bench"
    [meter_buffer]="$METER -q -B $BUF"
    [mbuffer]="mbuffer -q -m $BUF"
)
ORDER=(meter_q pv_q cat meter_progress meter_buffer mbuffer)
declare -A TIMES RSS CPU

run_case() { # name -> appends wall seconds to TIMES[name], keeps max RSS (KiB)
    local name=$1 start end rss
    start=$(date +%s%N)
    # shellcheck disable=SC2086
    cat "$FILE" | /usr/bin/time -v -o "$WORK/time" ${MIDDLE[$name]} 2>>"$WORK/log.$name" | cat >/dev/null
    end=$(date +%s%N)
    TIMES[$name]+="$(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.4f", (b-a)/1e9}') "
    rss=$(awk -F': ' '/Maximum resident set size/{print $2}' "$WORK/time")
    CPU[$name]+="$(awk -F': ' '/User time|System time/{s+=$2} END{printf "%.3f", s}' "$WORK/time") "
    if [[ -z ${RSS[$name]:-} || $rss -gt ${RSS[$name]} ]]; then RSS[$name]=$rss; fi
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
minimum() { tr ' ' '\n' | grep -v '^$' | sort -g | head -1; }

echo "meter bench: SIZE=$SIZE ($BYTES bytes) REPS=$REPS BUF=$BUF"
for ((r = 1; r <= REPS; r++)); do
    for name in "${ORDER[@]}"; do run_case "$name"; done
done

declare -A MED BEST
printf '%-16s %9s %9s %10s %10s %9s\n' case "best s" "median s" "best MiB/s" "cpu s" "RSS MiB"
for name in "${ORDER[@]}"; do
    MED[$name]=$(echo "${TIMES[$name]}" | median)
    BEST[$name]=$(echo "${TIMES[$name]}" | minimum)
    awk -v n="$name" -v t="${BEST[$name]}" -v m="${MED[$name]}" -v b="$BYTES" -v r="${RSS[$name]}" \
        -v c="$(echo "${CPU[$name]}" | median)" \
        'BEGIN{printf "%-16s %9.3f %9.3f %10.0f %10.3f %9.1f\n", n, t, m, b/t/1048576, c, r/1024}'
done
lines=$(grep -c 'bytes=' "$WORK/log.meter_progress" || true)
echo "progress log lines written: $lines"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a/b}'; }
check() { # label value op limit
    local ok
    ok=$(awk -v v="$2" -v l="$4" -v op="$3" 'BEGIN{print (op=="<=" ? v<=l : v>=l) ? "ok" : "MISS"}')
    printf '%-40s %8s  (target %s %s)  %s\n' "$1" "$2" "$3" "$4" "$ok"
}
echo
pair() { # label a b limit: best-round and median ratios of a/b
    check "$1 (best)" "$(ratio "${BEST[$2]}" "${BEST[$3]}")" "<=" "$4"
    check "$1 (median)" "$(ratio "${MED[$2]}" "${MED[$3]}")" "<=" "$4"
}
pair "meter -q / pv -q" meter_q pv_q 1.00
pair "meter -q / cat" meter_q cat 0.85
pair "meter progress / meter -q" meter_progress meter_q 1.03
pair "meter -B / mbuffer -m ($BUF)" meter_buffer mbuffer 1.00
check "meter -q RSS MiB" "$(awk -v r="${RSS[meter_q]}" 'BEGIN{printf "%.1f", r/1024}')" "<=" 16
check "meter -B RSS MiB" "$(awk -v r="${RSS[meter_buffer]}" 'BEGIN{printf "%.1f", r/1024}')" "<=" \
    "$(awk -v b="$(numfmt --from=iec "$BUF")" 'BEGIN{printf "%.0f", 16 + b/1048576}')"

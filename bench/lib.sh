# bench/lib.sh: helpers shared by the bench scripts (source it; not run by
# bench/run.sh). Timing, statistics over repeated rounds, ratio checks, and
# a throw-away loopback sshd.
#
#   . "$(dirname "$0")/lib.sh"
#   t0=$(bench_now); ...; bench_record NAME "$t0"
#   bench_best NAME; bench_median NAME; bench_ratio A B; bench_check LABEL V OP LIMIT
#   bench_sshd_start DIR   # sets SSHD_PORT, SSHD_PID, SSH_KEY, SSH_OPTS (array)
#   bench_sshd_stop
# shellcheck shell=bash

# Wall times per case name, space-separated seconds.
declare -gA BENCH_TIMES=()

# Nanoseconds since the epoch.
bench_now() { date +%s%N; }

# Seconds between two bench_now values, 4 decimals.
bench_secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.4f", (b-a)/1e9}'; }

# bench_record NAME START: appends the seconds since START to NAME's times.
bench_record() {
    local end
    end=$(bench_now)
    BENCH_TIMES[$1]+="$(bench_secs "$2" "$end") "
}

# Reads numbers (whitespace-separated) on stdin; prints their median / minimum.
bench_median_of() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
bench_min_of() { tr ' ' '\n' | grep -v '^$' | sort -g | head -1; }

# Fastest / median round of case NAME (on a shared machine, other load only
# ever adds time, so the fastest round is the fairest single number).
bench_best() { echo "${BENCH_TIMES[$1]}" | bench_min_of; }
bench_median() { echo "${BENCH_TIMES[$1]}" | bench_median_of; }

# a / b with 3 decimals.
bench_ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a/b}'; }

# bench_check LABEL VALUE OP LIMIT: one result line, "ok" or "MISS".
bench_check() {
    local ok
    ok=$(awk -v v="$2" -v l="$4" -v op="$3" 'BEGIN{print (op=="<=" ? v<=l : v>=l) ? "ok" : "MISS"}')
    printf '%-46s %8s  (target %s %s)  %s\n' "$1" "$2" "$3" "$4" "$ok"
}

# bench_need PROGRAM...: exits 1 naming the first missing program.
bench_need() {
    local p
    for p in "$@"; do
        command -v "$p" >/dev/null || [[ -x $p ]] || {
            echo "bench: $p is missing" >&2
            exit 1
        }
    done
}

# bench_sshd_start DIR: an OpenSSH sshd on a free 127.0.0.1 port with keys
# made in DIR (root login by key only). Sets SSHD_PORT, SSHD_PID, SSH_KEY
# and SSH_OPTS (the ssh options reaching it, without program and host).
bench_sshd_start() {
    local dir=$1 sshd attempt
    sshd=$(command -v sshd || echo /usr/sbin/sshd)
    bench_need "$sshd" ssh ssh-keygen
    mkdir -p /run/sshd "$dir"
    chmod 0755 /run/sshd
    ssh-keygen -q -t ed25519 -N '' -C bench-host -f "$dir/host_key" </dev/null
    ssh-keygen -q -t ed25519 -N '' -C bench-client -f "$dir/id" </dev/null
    cp "$dir/id.pub" "$dir/authorized_keys"
    SSH_KEY=$dir/id
    for attempt in 1 2 3 4 5; do
        SSHD_PORT=$((20000 + RANDOM % 20000))
        cat >"$dir/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $SSHD_PORT
HostKey $dir/host_key
AuthorizedKeysFile $dir/authorized_keys
PidFile $dir/sshd.pid
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
PrintMotd no
UseDNS no
X11Forwarding no
MaxStartups 100:30:200
LogLevel ERROR
EOF
        "$sshd" -D -e -f "$dir/sshd_config" 2>"$dir/sshd.log" &
        SSHD_PID=$!
        SSH_OPTS=(-F /dev/null -p "$SSHD_PORT" -i "$SSH_KEY" -o IdentitiesOnly=yes
            -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
            -o BatchMode=yes -o LogLevel=ERROR -o ConnectTimeout=10)
        local i
        for i in $(seq 50); do
            if ssh "${SSH_OPTS[@]}" root@127.0.0.1 true 2>/dev/null; then
                return 0
            fi
            kill -0 "$SSHD_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill "$SSHD_PID" 2>/dev/null || true
        wait "$SSHD_PID" 2>/dev/null || true
    done
    echo "bench: sshd did not start: $(cat "$dir/sshd.log")" >&2
    exit 1
}

# Stops the sshd of bench_sshd_start (by its pid only).
bench_sshd_stop() {
    if [[ -n ${SSHD_PID:-} ]]; then
        kill "$SSHD_PID" 2>/dev/null || true
        wait "$SSHD_PID" 2>/dev/null || true
        SSHD_PID=
    fi
}

# CPU accounting of everything a case runs, both sides of an ssh link
# included: the bench shell moves itself into a cgroup-v1 cpuacct group
# (BENCH_CPU_GROUP) before starting sshd, so every process forked later —
# local pipeline, sshd sessions, remote commands — is counted there.
# Without cpuacct, bench_cpu_ns prints nothing and callers print "-".
BENCH_CPU_GROUP=
bench_cpu_group_init() {
    local root=/sys/fs/cgroup/cpuacct
    [[ -w $root/tasks ]] || return 0
    BENCH_CPU_GROUP=$root/zpipe-bench-$$
    mkdir -p "$BENCH_CPU_GROUP" 2>/dev/null || { BENCH_CPU_GROUP=; return 0; }
    echo "$BASHPID" >"$BENCH_CPU_GROUP/tasks" 2>/dev/null || { rmdir "$BENCH_CPU_GROUP"; BENCH_CPU_GROUP=; }
}

# Total CPU nanoseconds used in the group so far (empty without a group).
bench_cpu_ns() { [[ -n $BENCH_CPU_GROUP ]] && cat "$BENCH_CPU_GROUP/cpuacct.usage" || true; }

# Leaves and removes the group (call after the processes in it have ended).
bench_cpu_group_done() {
    [[ -n $BENCH_CPU_GROUP ]] || return 0
    echo "$BASHPID" >/sys/fs/cgroup/cpuacct/tasks 2>/dev/null || true
    rmdir "$BENCH_CPU_GROUP" 2>/dev/null || true
    BENCH_CPU_GROUP=
}

# Sourced by the tests/infra scripts (bash): stop everything a test server
# started in WORKDIR, then remove WORKDIR. Never fails.
#
#   stop_workdir WORKDIR              # stop, then rm -rf WORKDIR
#   stop_workdir_processes WORKDIR    # stop only (keeps logs)
#
# 1. every pid in WORKDIR/**/*.pid whose process still belongs to WORKDIR
#    (its command line, working directory or an open file is inside WORKDIR, so a
#    recycled pid is never hit);
# 2. then any other process still holding WORKDIR that way (not this script or
#    its ancestors).
# SIGTERM first, SIGKILL after LIFEBOAT_STOP_GRACE seconds (default 10; 0 = SIGKILL at once).

# Does process $1 belong to directory $2?
_lb_holds() {
    local pid=$1 dir=$2 f
    [[ -d /proc/$pid ]] || return 1
    while IFS= read -r -d '' f; do
        [[ "$f" == "$dir" || "$f" == "$dir"/* || "$f" == *=/* && "${f#*=}" == "$dir"/* ]] && return 0
    done 2>/dev/null <"/proc/$pid/cmdline"
    f=$(readlink "/proc/$pid/cwd" 2>/dev/null) || true
    [[ "$f" == "$dir" || "$f" == "$dir"/* ]] && return 0
    for f in /proc/"$pid"/fd/*; do
        f=$(readlink "$f" 2>/dev/null) || continue
        [[ "$f" == "$dir"/* ]] && return 0
    done
    return 1
}

_lb_ancestors() {
    local pid=$$
    while [[ -n "$pid" && "$pid" != 0 ]]; do
        echo "$pid"
        pid=$(awk '/^PPid:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || break
    done
}

_lb_alive() {
    kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# Wait up to $1 tenths of a second until none of the other arguments is alive.
_lb_wait_gone() {
    local tenths=$1 i pid left
    shift
    for ((i = 0; i <= tenths; i++)); do
        left=0
        for pid in "$@"; do
            _lb_alive "$pid" && left=1
        done
        ((left)) || return 0
        ((i < tenths)) && sleep 0.1
    done
    return 1
}

# Send TERM to the given pids, wait, then KILL the survivors and wait for them to go.
_lb_terminate() {
    local grace=${LIFEBOAT_STOP_GRACE:-10}
    (($# > 0)) || return 0
    if ((grace > 0)); then
        kill -TERM "$@" 2>/dev/null || true
        _lb_wait_gone $((grace * 10)) "$@" && return 0
    fi
    kill -KILL "$@" 2>/dev/null || true
    _lb_wait_gone 50 "$@" || echo "processes $* survived SIGKILL for 5 s" >&2
    return 0
}

# Stop WORKDIR's processes, then remove WORKDIR.
stop_workdir() {
    stop_workdir_processes "$1"
    if [[ -n "$1" && "$1" != / ]]; then
        rm -rf -- "$1" 2>/dev/null || true
    fi
    return 0
}

# Stop WORKDIR's processes, keep the directory (up scripts call this when they fail).
stop_workdir_processes() {
    local dir=$1 pid f skip
    local -a pids=()
    if [[ -z "$dir" || "$dir" == / ]]; then
        echo "refusing to stop/remove '$dir'" >&2
        return 0
    fi
    if [[ -d "$dir" ]]; then
        dir=$(cd "$dir" && pwd -P)
    fi
    skip=" $(_lb_ancestors | tr '\n' ' ') "

    # 1. pid files
    if [[ -d "$dir" ]]; then
        while IFS= read -r -d '' f; do
            pid=$(tr -dc '0-9' <"$f" 2>/dev/null) || continue
            [[ -n "$pid" && "$skip" != *" $pid "* ]] || continue
            _lb_holds "$pid" "$dir" && pids+=("$pid")
        done < <(find "$dir" -name '*.pid' -type f -print0 2>/dev/null)
    fi
    _lb_terminate "${pids[@]}"

    # 2. anything else still holding the directory (candidates found in one pass, then checked)
    pids=()
    for pid in $(
        {
            grep -lsF -- "$dir" /proc/[0-9]*/cmdline
            find /proc/[0-9]*/cwd /proc/[0-9]*/fd -maxdepth 1 \( -lname "$dir" -o -lname "$dir/*" \) 2>/dev/null
        } | cut -d/ -f3 | sort -un
    ); do
        [[ "$skip" != *" $pid "* ]] || continue
        _lb_holds "$pid" "$dir" && pids+=("$pid")
    done
    if ((${#pids[@]} > 0)); then
        echo "stopping leftover processes holding $dir: ${pids[*]}" >&2
        _lb_terminate "${pids[@]}"
    fi
    return 0
}

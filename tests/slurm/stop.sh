#!/usr/bin/env bash
# Stop the test cluster started by tests/slurm/start.sh, daemon by daemon through the PIDs
# in its state folder (never by process name: other clusters or helpers may run beside it).
# Jobs still queued or running are cancelled first so no job step outlives its slurmd.
#
#   stop.sh [--purge]     --purge also deletes the state folder (database, logs, spool)
#   VOXTELL_SLURM_DIR     state folder (default /tmp/voxtell-slurm)
set -uo pipefail

STATE=${VOXTELL_SLURM_DIR:-/tmp/voxtell-slurm}
PURGE=0
[ "${1:-}" = "--purge" ] && PURGE=1
export SLURM_CONF=$STATE/etc/slurm.conf

# pid_of PIDFILE COMM: the PID, only if that process still runs the expected program.
pid_of() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ] && running "$pid" && echo "$pid"
}
# A zombie has exited; only its parent (often init) has yet to reap it.
running() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

stop_daemon() { # stop_daemon NAME PIDFILE
    local pid i
    pid=$(pid_of "$2" "$1") || { rm -f "$2"; return 0; }
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 100); do
        running "$pid" || break
        sleep 0.1
    done
    if running "$pid"; then
        echo "stop.sh: $1 (pid $pid) ignored SIGTERM for 10 s, sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$2"
    echo "stop.sh: stopped $1 (pid $pid)"
}

if [ -f "$SLURM_CONF" ] && pid_of "$STATE/run/slurmctld.pid" slurmctld >/dev/null; then
    jobs=$(timeout 10 squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
        echo "stop.sh: cancelling jobs $jobs"
        # shellcheck disable=SC2086
        timeout 10 scancel $jobs
        for i in $(seq 100); do
            [ -z "$(timeout 10 squeue -h -t running,completing -o %i 2>/dev/null)" ] && break
            sleep 0.1
        done
    fi
fi

stop_daemon slurmd "$STATE/run/slurmd.pid"
stop_daemon slurmctld "$STATE/run/slurmctld.pid"
stop_daemon slurmdbd "$STATE/run/slurmdbd.pid"
stop_daemon mariadbd "$STATE/mysql-run/mariadb.pid"
stop_daemon munged "$STATE/munge/munged.pid"

# The default-path link start.sh made, only if it still points at this cluster.
if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$SLURM_CONF" ]; then
    rm -f /etc/slurm/slurm.conf
fi

if [ "$PURGE" = 1 ]; then
    case "$STATE" in
        /|"") echo "stop.sh: refusing to delete '$STATE'" >&2; exit 1 ;;
    esac
    rm -rf "$STATE"
    echo "stop.sh: removed $STATE"
fi

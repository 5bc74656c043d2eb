#!/usr/bin/env bash
# Start a real single-node SLURM cluster on this machine, without systemd or cgroups:
#   munged (as the munge user, private socket) -> MariaDB (loopback port) -> slurmdbd
#   -> slurmctld -i -> slurmd, node line from `slurmd -C`.
# Everything (configs, munge key, spool, logs, PID files, database) lives in one state
# folder; the one thing outside it is a symlink /etc/slurm/slurm.conf -> that folder's
# slurm.conf (made only where no other slurm.conf exists; stop.sh removes it), because
# srun inside Snakemake jobs runs without SLURM_CONF (see below).
#
#   VOXTELL_SLURM_DIR   state folder        (default /tmp/voxtell-slurm)
#   VOXTELL_SLURM_PORT  first of 4 ports    (default 6817: slurmctld, slurmd, slurmdbd, MariaDB)
#
# Clients find the cluster through SLURM_CONF: `source "$VOXTELL_SLURM_DIR/env.sh"`.
# Idempotent: a running cluster is left alone. Reuses the database of an earlier start
# (job ids keep growing); `stop.sh --purge` removes the state folder. Needs root:
# slurmd launches jobs and munged must run as the munge user. Packages: install.sh.
set -euo pipefail

STATE=${VOXTELL_SLURM_DIR:-/tmp/voxtell-slurm}
PORT=${VOXTELL_SLURM_PORT:-6817}
CTLD_PORT=$PORT
SLURMD_PORT=$((PORT + 1))
DBD_PORT=$((PORT + 2))
DB_PORT=$((PORT + 3))
CLUSTER=voxtell
PARTITION=main
ME=$(id -un)
HOST=$(hostname -s)
WAIT_S=${VOXTELL_SLURM_WAIT_S:-60}

die() {
    echo "start.sh: $*" >&2
    for f in "$STATE"/log/*.log; do
        [ -s "$f" ] && { echo "--- tail $f" >&2; tail -n 15 "$f" >&2; }
    done
    exit 1
}
[ "$(id -u)" -eq 0 ] || die "must run as root (slurmd launches jobs, munged runs as the munge user)"
for b in munged mungekey slurmctld slurmd slurmdbd sacctmgr sinfo mariadbd mariadb-install-db mariadb; do
    command -v "$b" >/dev/null || die "$b not found: run tests/slurm/install.sh first"
done

# A PID file names a live daemon only if that PID still runs the expected program.
alive() { # alive PIDFILE COMM
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ] &&
        [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}
wait_for() { # wait_for WHAT CMD...
    local what=$1 deadline=$((SECONDS + WAIT_S))
    shift
    until timeout 10 "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || die "timed out after ${WAIT_S}s waiting for $what"
        sleep 0.1
    done
}
now() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); } # milliseconds
lap() { local ms=$(($(now) - T0)); printf 'start.sh: %s after %d.%02ds\n' "$1" $((ms / 1000)) $((ms % 1000 / 10)); }

export SLURM_CONF=$STATE/etc/slurm.conf
if alive "$STATE/munge/munged.pid" munged && alive "$STATE/mysql-run/mariadb.pid" mariadbd &&
    alive "$STATE/run/slurmdbd.pid" slurmdbd && alive "$STATE/run/slurmctld.pid" slurmctld &&
    alive "$STATE/run/slurmd.pid" slurmd; then
    echo "start.sh: cluster already running (SLURM_CONF=$SLURM_CONF)"
    exit 0
fi
T0=$(now)

mkdir -p "$STATE"/{etc,run,log,spool/ctld,spool/d,munge,mysql-run}
chmod 755 "$STATE" "$STATE"/{etc,run,log}

# ---- munge: private key and socket; munged insists on its own dirs and a 0400 key.
MUNGE_SOCKET=$STATE/munge/munge.socket.2
chown munge:munge "$STATE/munge"
chmod 755 "$STATE/munge"
if [ ! -s "$STATE/munge/munge.key" ]; then
    runuser -u munge -- mungekey --create --keyfile="$STATE/munge/munge.key"
fi
chmod 400 "$STATE/munge/munge.key"
touch "$STATE/log/munged.log"
chown munge:munge "$STATE/log/munged.log"
if ! alive "$STATE/munge/munged.pid" munged; then
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    runuser -u munge -- munged --socket="$MUNGE_SOCKET" --key-file="$STATE/munge/munge.key" \
        --log-file="$STATE/log/munged.log" --pid-file="$STATE/munge/munged.pid" \
        --seed-file="$STATE/munge/munged.seed" --num-threads=4 \
        || die "munged failed to start"
fi
wait_for "munged" sh -c "munge -n -S '$MUNGE_SOCKET' | unmunge -S '$MUNGE_SOCKET'"
lap "munged up"

# ---- MariaDB on a loopback port (slurmdbd cannot be told a socket path).
DB_SOCKET=$STATE/mysql-run/mysqld.sock
chown mysql:mysql "$STATE/mysql-run"
if [ ! -d "$STATE/mysql/mysql" ]; then
    mkdir -p "$STATE/mysql"
    chown mysql:mysql "$STATE/mysql"
    mariadb-install-db --no-defaults --datadir="$STATE/mysql" --user=mysql \
        --auth-root-authentication-method=socket --skip-test-db \
        >"$STATE/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed"
    lap "database initialised"
fi
if ! alive "$STATE/mysql-run/mariadb.pid" mariadbd; then
    setsid nohup mariadbd --no-defaults --datadir="$STATE/mysql" --user=mysql \
        --socket="$DB_SOCKET" --port="$DB_PORT" --bind-address=127.0.0.1 \
        --pid-file="$STATE/mysql-run/mariadb.pid" --log-error="$STATE/log/mariadb.log" \
        --skip-name-resolve --innodb-buffer-pool-size=64M \
        --innodb-flush-log-at-trx-commit=2 --innodb-lock-wait-timeout=900 \
        </dev/null >/dev/null 2>&1 &
fi
wait_for "MariaDB" mariadb-admin --no-defaults --socket="$DB_SOCKET" -u root ping
lap "MariaDB up"
if [ ! -s "$STATE/etc/db.pass" ]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$STATE/etc/db.pass")
    mariadb --no-defaults --socket="$DB_SOCKET" -u root -e "
        CREATE DATABASE IF NOT EXISTS slurm_acct_db;
        CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$(cat "$STATE/etc/db.pass")';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" || die "creating the database user failed"
fi

# ---- configuration files
NODE_LINE=$(slurmd -C | head -n 1)
[[ $NODE_LINE == NodeName=* ]] || die "unexpected 'slurmd -C' output: $NODE_LINE"
cat >"$STATE/etc/slurm.conf" <<EOF
# Written by tests/slurm/start.sh: a single-node test cluster, no systemd, no cgroups.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=$ME
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in the sandbox: track processes through /proc, no task affinity/containment.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=10
MpiDefault=none
SwitchType=switch/none
# Cores and memory are consumable, so --cpus-per-task/--mem requests are really honoured.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SchedulerType=sched/backfill
ReturnToService=2
# Real accounting: sacct (the SLURM executor plugin's status query) reads slurmdbd.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# For slurmdbd connections the munge socket comes from here, not from AuthInfo.
AccountingStoragePass=$MUNGE_SOCKET
JobCompType=jobcomp/none
MailProg=/bin/true
# Keep finished jobs visible to squeue long enough for the squeue status fallback too.
MinJobAge=600
KillWait=10
InactiveLimit=0
Waittime=0
$NODE_LINE State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
cat >"$STATE/etc/slurmdbd.conf" <<EOF
# Written by tests/slurm/start.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=$ME
DebugLevel=info
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(cat "$STATE/etc/db.pass")
StorageLoc=slurm_acct_db
EOF
chmod 600 "$STATE/etc/slurmdbd.conf"
chmod 644 "$STATE/etc/slurm.conf"
# Clients inside jobs must find the config without SLURM_CONF: the Snakemake jobstep
# plugin strips SLURM_* (SLURM_CONF included) before its nested srun (known upstream:
# snakemake-executor-plugin-slurm#164). So link the default path, as a real cluster has it,
# but never over a slurm.conf that is not ours.
SYS_CONF=/etc/slurm/slurm.conf
if [ -L "$SYS_CONF" ] || [ ! -e "$SYS_CONF" ]; then
    mkdir -p /etc/slurm
    ln -sfn "$SLURM_CONF" "$SYS_CONF"
elif ! cmp -s "$SYS_CONF" "$SLURM_CONF"; then
    echo "start.sh: warning: $SYS_CONF is not ours; srun inside Snakemake jobs may not reach this cluster" >&2
fi
cat >"$STATE/env.sh" <<EOF
# source this to talk to the test cluster
export SLURM_CONF=$SLURM_CONF
EOF

# ---- slurmdbd (finds slurmdbd.conf next to \$SLURM_CONF), then the cluster record.
if ! alive "$STATE/run/slurmdbd.pid" slurmdbd; then
    slurmdbd || die "slurmdbd failed to start"
fi
wait_for "slurmdbd" sacctmgr -n list cluster
lap "slurmdbd up"
if [ -z "$(sacctmgr -nP list cluster "$CLUSTER" format=cluster)" ]; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster failed"
fi
# root is in the association tree from the start (account root), which the executor
# plugin finds as the default account; nothing else to add.

# ---- slurmctld and slurmd
if ! alive "$STATE/run/slurmctld.pid" slurmctld; then
    slurmctld -i || die "slurmctld failed to start"
fi
wait_for "slurmctld" scontrol ping
lap "slurmctld up"
if ! alive "$STATE/run/slurmd.pid" slurmd; then
    slurmd || die "slurmd failed to start"
fi
wait_for "node $HOST to become idle" sh -c "sinfo -h -n '$HOST' -o %T | grep -qx 'idle\\|mixed\\|allocated'"
lap "cluster up"
echo "start.sh: SLURM_CONF=$SLURM_CONF (source $STATE/env.sh); partition $PARTITION"

#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, in a temporary folder, for tests and trials.
#
#   scripts/slurm-local.sh start DIR   write DIR/slurm.conf, start munged, slurmctld, slurmd
#                                      (needs root and slurm-wlm + munge installed; it installs nothing:
#                                      sudo apt-get install slurm-wlm munge)
#   scripts/slurm-local.sh stop DIR    stop the daemons started by `start DIR`
#
# After `start`, point the SLURM commands at the cluster with: export SLURM_CONF=DIR/slurm.conf
# The node is this machine (short hostname, its CPUs and memory); one partition, "debug".
# Settings that work in a container: proctrack/linuxproc (no cgroups), task/none, cons_tres;
# cores are the consumable (CR_Core): jobs without --mem would otherwise each claim all memory.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)

stop() {
    for name in slurmd slurmctld munged; do
        if [ -f "$dir/$name.pid" ]; then
            pid=$(cat "$dir/$name.pid")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            rm -f "$dir/$name.pid"
        fi
    done
}

wait_for() {  # wait_for SECONDS COMMAND...: until COMMAND succeeds
    local seconds=$1; shift
    for _ in $(seq $((seconds * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    return 1
}

start() {
    local command
    for command in munged mungekey slurmctld slurmd scontrol sinfo; do
        command -v "$command" >/dev/null || { echo "$command is not installed; install slurm-wlm and munge (sudo apt-get install slurm-wlm munge)" >&2; exit 1; }
    done
    [ "$(id -u)" -eq 0 ] || { echo "slurmd must run as root to start jobs as the submitting user" >&2; exit 1; }
    stop
    local host cpus mem user
    host=$(hostname -s)
    cpus=$(nproc --all)
    mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    user=$(id -un)
    mkdir -p "$dir/spool/ctld" "$dir/spool/d" "$dir/munge" "$dir/log"
    chmod 700 "$dir/munge"
    [ -f "$dir/munge/munge.key" ] || mungekey -c -k "$dir/munge/munge.key"
    munged --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
        --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munge.seed" --force
    cat > "$dir/slurm.conf" <<CONF
ClusterName=accvitlocal
SlurmctldHost=$host
SlurmUser=$user
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/spool/ctld
SlurmdSpoolDir=$dir/spool/d
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=$((20000 + RANDOM % 20000))
SlurmdPort=$((40000 + RANDOM % 20000))
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
MaxArraySize=10000
SchedulerParameters=sched_interval=1
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
    export SLURM_CONF="$dir/slurm.conf"
    slurmctld -f "$dir/slurm.conf"
    wait_for 20 scontrol ping || { echo "slurmctld did not start; see $dir/log/slurmctld.log:" >&2; tail -5 "$dir/log/slurmctld.log" >&2; exit 1; }
    slurmd -f "$dir/slurm.conf"
    if ! wait_for 30 bash -c "sinfo -h -N -o %t | grep -qE '^(idle|mix|alloc)'"; then
        echo "slurmd did not register an idle node; see $dir/log/slurmd.log:" >&2
        tail -5 "$dir/log/slurmd.log" >&2
        exit 1
    fi
    echo "SLURM_CONF=$dir/slurm.conf"
}

case $action in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac

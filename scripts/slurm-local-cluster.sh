#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (Debian 12, root, no systemd), to test the SLURM profile
# of the workflow (profiles/slurm-local; scripts/slurm-local-proof.sh) without a real cluster.
#
#   scripts/slurm-local-cluster.sh start    # install if missing, configure, start, wait until idle
#   scripts/slurm-local-cluster.sh status   # daemons, sinfo
#   scripts/slurm-local-cluster.sh stop     # stop the daemons this script started (by pid file)
#
# Idempotent: `start` installs slurm-wlm and munge only when missing, keeps an existing munge key,
# rewrites slurm.conf only when it changed (restarting slurmctld/slurmd then) and starts only the
# daemons that are not running. The cluster: SlurmctldHost=localhost on 127.0.0.1, one node
# `localhost` with every CPU and the machine's memory less a headroom, partition `debug`, no
# accounting (no slurmdbd: `sacct` has no data, so the workflow queries job status with `squeue`),
# no cgroups (proctrack/linuxproc, task/none). Jobs run as root: SlurmUser=root.
#
# Environment:
#   SLURM_LOCAL_ROOT         state, spool, logs and pid files (default /var/spool/slurm-local)
#   SLURM_LOCAL_MEM_HEADROOM MB of memory kept out of the node's RealMemory (default 1024)
#   SLURM_LOCAL_WAIT         seconds to wait for the node to become idle (default 60)
# The configuration goes to /etc/slurm/slurm.conf (where Debian's clients look for it); a file
# there that this script did not write is left alone (the script stops with a message instead).
set -euo pipefail

readonly ROOT_DIR="${SLURM_LOCAL_ROOT:-/var/spool/slurm-local}"
readonly HEADROOM_MB="${SLURM_LOCAL_MEM_HEADROOM:-1024}"
readonly WAIT_S="${SLURM_LOCAL_WAIT:-60}"
readonly CONF_DIR=/etc/slurm
readonly CONF="${CONF_DIR}/slurm.conf"
readonly MARKER="# written by scripts/slurm-local-cluster.sh"
readonly NODE=localhost
readonly MUNGE_KEY=/etc/munge/munge.key
readonly MUNGE_RUN=/run/munge
readonly MUNGE_PID="${MUNGE_RUN}/munged.pid"
readonly CTLD_PID="${ROOT_DIR}/run/slurmctld.pid"
readonly SLURMD_PID="${ROOT_DIR}/run/slurmd.pid"

log() { printf '[slurm-local] %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

need_root() {
  [[ "$(id -u)" -eq 0 ]] || die "run as root (installs packages, writes ${CONF}, starts daemons)"
}

# pid from a pid file if that process is alive (not a zombie) and is the daemon `name`, else
# nothing.
# The name check matters: a pid file left over from an earlier run (container restart, SIGKILL)
# may hold a pid that the kernel has since given to an unrelated process (a training job): that
# must neither count as the daemon running nor be killed by `stop`.
alive_pid() {
  local file=$1 name=$2 pid comm
  [[ -r "$file" ]] || return 1
  pid=$(tr -dc '0-9' <"$file")
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  comm=$(cat "/proc/${pid}/comm" 2>/dev/null) || return 1
  [[ "$comm" == "$name" ]] || return 1
  # A zombie (killed, not yet reaped) passes kill -0 but is not running.
  [[ "$(sed 's/^.*) //' "/proc/${pid}/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]] || return 1
  printf '%s\n' "$pid"
}

# The installed version (sinfo --version would need a configuration already).
slurm_version() { dpkg-query -W -f='${Version}' slurm-client 2>/dev/null || echo unknown; }

install_packages() {
  local missing=()
  command -v slurmctld >/dev/null 2>&1 || missing+=(slurmctld)
  command -v slurmd >/dev/null 2>&1 || missing+=(slurmd)
  command -v sbatch >/dev/null 2>&1 || missing+=(slurm-client)
  command -v munged >/dev/null 2>&1 || missing+=(munge)
  if ((${#missing[@]} == 0)); then
    log "slurm $(slurm_version) and munge already installed"
    return
  fi
  # slurm-wlm is the meta package of slurmctld + slurmd + slurm-client; name it for the record.
  missing+=(slurm-wlm)
  log "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d 101: the packages' maintainer scripts must not try to start services (no systemd).
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    created_policy=1
  fi
  # Keep existing configuration files without asking (dpkg's conffile prompt is not debconf's).
  local rc=0
  apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" >/dev/null || rc=$?
  if ((created_policy)); then rm -f "$policy"; fi
  ((rc == 0)) || die "apt-get install ${missing[*]} failed (exit ${rc})"
  log "installed slurm $(slurm_version)"
}

setup_munge() {
  # munge authenticates every slurm RPC (auth/munge is the only authentication of slurm 22.05).
  getent passwd munge >/dev/null || die "user munge missing (the munge package creates it)"
  install -d -m 0700 -o munge -g munge /etc/munge /var/lib/munge /var/log/munge
  install -d -m 0755 -o munge -g munge "$MUNGE_RUN"
  if [[ ! -s "$MUNGE_KEY" ]]; then
    log "generating munge key ${MUNGE_KEY}"
    if command -v mungekey >/dev/null 2>&1; then
      mungekey --create --keyfile="$MUNGE_KEY" --force
    else
      dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
    fi
  fi
  chown munge:munge "$MUNGE_KEY"
  chmod 0400 "$MUNGE_KEY"
  if alive_pid "$MUNGE_PID" munged >/dev/null; then
    log "munged already running (pid $(alive_pid "$MUNGE_PID" munged))"
  else
    log "starting munged"
    # munged daemonizes and writes ${MUNGE_PID}; it runs as the key's owner, munge.
    runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGE_PID"
  fi
  for _ in $(seq 1 20); do
    munge -n </dev/null | unmunge >/dev/null 2>&1 && return
    sleep 0.5
  done
  die "munge does not work: munge -n | unmunge fails (log: /var/log/munge/munged.log)"
}

# The node's memory: MemTotal less a headroom, as slurmd would report it (free -m).
node_memory_mb() {
  local total
  total=$(free -m | awk '/^Mem:/ {print $2}')
  [[ "$total" =~ ^[0-9]+$ ]] || die "cannot read the memory size from free -m"
  ((total > HEADROOM_MB + 512)) || die "only ${total} MB of memory"
  printf '%s\n' $((total - HEADROOM_MB))
}

# Writes ${CONF}; sets CONF_CHANGED=1 when its content changed.
CONF_CHANGED=0
write_conf() {
  local cpus mem tmp
  cpus=$(nproc --all)
  mem=$(node_memory_mb)
  tmp=$(mktemp)
  cat >"$tmp" <<EOF
${MARKER}; a one-node cluster for tests, no accounting.
ClusterName=echomtl-local
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=${ROOT_DIR}/state
SlurmdSpoolDir=${ROOT_DIR}/slurmd
SlurmctldPidFile=${CTLD_PID}
SlurmdPidFile=${SLURMD_PID}
SlurmctldLogFile=${ROOT_DIR}/log/slurmctld.log
SlurmdLogFile=${ROOT_DIR}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in a container: track processes by /proc, bind no tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
# Schedule CPUs and memory (CR_CPU_Memory: a 1-CPU job takes one CPU, not a whole core).
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# Trust this file over the detected hardware (a VM's topology may differ from CPUs=N).
SlurmdParameters=config_overrides
# No accounting: no slurmdbd, nothing for sacct. Finished jobs stay visible to
# 'squeue --states=all' for MinJobAge seconds, which is what the workflow's status check reads
# (the plugin falls back to sacct when MinJobAge < 3 x its first status-check delay).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=3600
# A node that was down comes back by itself when slurmd registers.
ReturnToService=2
SlurmdTimeout=120
InactiveLimit=0
KillWait=30
Waittime=0
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
EOF
  install -d -m 0755 "$CONF_DIR"
  if [[ -e "$CONF" ]] && ! grep -qF "$MARKER" "$CONF"; then
    rm -f "$tmp"
    die "${CONF} exists and was not written by this script; move it away to use the local cluster"
  fi
  if [[ -e "$CONF" ]] && cmp -s "$tmp" "$CONF"; then
    rm -f "$tmp"
    log "${CONF} up to date (node ${NODE}: CPUs=${cpus} RealMemory=${mem} MB)"
    return 0
  fi
  install -m 0644 "$tmp" "$CONF"
  rm -f "$tmp"
  log "wrote ${CONF} (node ${NODE}: CPUs=${cpus} RealMemory=${mem} MB)"
  CONF_CHANGED=1
}

stop_pidfile() {
  local name=$1 file=$2 pid
  if ! pid=$(alive_pid "$file" "$name"); then
    log "${name} not running"
    return 0
  fi
  log "stopping ${name} (pid ${pid})"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.25
  done
  log "${name} (pid ${pid}) still alive after 10 s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

start_slurm() {
  install -d -m 0755 "${ROOT_DIR}/state" "${ROOT_DIR}/slurmd" "${ROOT_DIR}/log" "${ROOT_DIR}/run"
  if alive_pid "$CTLD_PID" slurmctld >/dev/null; then
    log "slurmctld already running (pid $(alive_pid "$CTLD_PID" slurmctld))"
  else
    log "starting slurmctld"
    # -c: clear the saved state (jobs and node states of a previous run of this test cluster).
    slurmctld -c
  fi
  if alive_pid "$SLURMD_PID" slurmd >/dev/null; then
    log "slurmd already running (pid $(alive_pid "$SLURMD_PID" slurmd))"
  else
    log "starting slurmd"
    # -N: this host is the node named ${NODE} whatever its hostname is.
    slurmd -N "$NODE"
  fi
}

node_state() { sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -n 1; }

wait_idle() {
  local deadline=$((SECONDS + WAIT_S)) state resumed=0
  while ((SECONDS < deadline)); do
    state=$(node_state || true)
    case "$state" in
      idle | mixed | allocated | completing)
        log "node ${NODE} is ${state}"
        sinfo
        return 0
        ;;
      down* | drain* | fail* | unknown* | inval* | "")
        # Down from a previous run (or drained by a config change): put it back in service.
        if [[ -n "$state" && "$state" != unknown* ]] && ((resumed == 0)); then
          log "node ${NODE} is ${state}: scontrol update nodename=${NODE} state=resume"
          scontrol update nodename="$NODE" state=resume || true
          resumed=1
        fi
        ;;
    esac
    sleep 1
  done
  log "node ${NODE} not idle after ${WAIT_S} s (state: ${state:-none}); last log lines:"
  tail -n 20 "${ROOT_DIR}/log/slurmctld.log" "${ROOT_DIR}/log/slurmd.log" >&2 || true
  sinfo -R >&2 || true
  return 1
}

cmd_start() {
  need_root
  install_packages
  setup_munge
  write_conf
  if ((CONF_CHANGED)); then
    # The configuration changed: daemons started with the old one must restart.
    stop_pidfile slurmd "$SLURMD_PID"
    stop_pidfile slurmctld "$CTLD_PID"
  fi
  start_slurm
  wait_idle
}

cmd_stop() {
  # Only what this script started, by pid file: slurmd, slurmctld, then munged.
  stop_pidfile slurmd "$SLURMD_PID"
  stop_pidfile slurmctld "$CTLD_PID"
  stop_pidfile munged "$MUNGE_PID"
}

cmd_status() {
  local name file pid rc=0
  for name in munged slurmctld slurmd; do
    case "$name" in
      munged) file=$MUNGE_PID ;;
      slurmctld) file=$CTLD_PID ;;
      slurmd) file=$SLURMD_PID ;;
    esac
    if pid=$(alive_pid "$file" "$name"); then
      log "${name} running (pid ${pid})"
    else
      log "${name} not running"
      rc=1
    fi
  done
  if ((rc == 0)); then sinfo; fi
  return "$rc"
}

case "${1:-start}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  -h | --help | help) sed -n '2,20p' "$0" ;;
  *) die "usage: $0 [start|stop|status]" ;;
esac

#!/usr/bin/env bash
# slurm_local.sh - a real single-node SLURM cluster on localhost (Debian 12, as root).
# Project copy of the tested recipe in ../shared/slurm/ (slurm_local.sh + slurm_notes.md), written for rlexp;
# used by tests/test_slurm.py and .ci/run. Changes here: this note and MaxArraySize (SLURM_LOCAL_MAX_ARRAY_SIZE,
# default 3 instead of SLURM's 1001, so the tests meet a sweep larger than one array may be).
#
#   bash slurm_local.sh install   # apt packages only (idempotent)
#   bash slurm_local.sh up        # install if needed, write configs, start daemons, wait for node idle
#   bash slurm_local.sh status    # daemons + sinfo
#   bash slurm_local.sh selftest  # srun / sbatch / sacct round-trip
#   bash slurm_local.sh demo      # venv with submitit+hydra, submitit job + hydra submitit_slurm multirun
#   bash slurm_local.sh env       # prints: export SLURM_CONF=...
#   bash slurm_local.sh down      # cancel jobs, stop daemons by PID, remove state (idempotent)
#
# Everything the cluster writes lives under $SLURM_LOCAL_DIR (default /tmp/slurm-local; its parents
# must be traversable by the munge and mysql users, so not under /root):
# configs, munge key + socket, MariaDB data dir, spool, logs, pid files. Nothing is started
# through systemd/init (PID 1 here is not systemd). Outside that dir the only changes are the
# Debian packages, plus (undone by `down`) a symlink /etc/slurm/slurm.conf -> our config when
# none exists (SLURM_LOCAL_LINK_ETC=1) and an /etc/hosts line if `hostname -s` does not resolve.
#
# Knobs (environment):
#   SLURM_LOCAL_DIR=/tmp/slurm-local   state dir
#   SLURM_LOCAL_ACCOUNTING=1           1: slurmdbd + private MariaDB, so `sacct` works (submitit
#                                      reads job states with sacct). 0: no accounting (lighter;
#                                      submitit still gets results but logs sacct warnings and
#                                      job.state stays UNKNOWN).
#   SLURM_LOCAL_CPUS=$(nproc)          CPUs advertised (may exceed nproc to run more jobs at once)
#   SLURM_LOCAL_MEM_MARGIN_MB=1024     RealMemory = MemTotal - margin
#   SLURM_LOCAL_CLUSTER=localcluster   SLURM_LOCAL_PARTITION=debug
#   SLURM_LOCAL_MAX_ARRAY_SIZE=3       MaxArraySize: array indices 0..N-1 (SLURM's default: 1001)
#   SLURM_LOCAL_CTLD_PORT=6817 SLURM_LOCAL_SLURMD_PORT=6818 SLURM_LOCAL_DBD_PORT=6819
#   SLURM_LOCAL_MYSQL_PORT=3307        (MariaDB binds 127.0.0.1 only)
#   SLURM_LOCAL_CGROUP=0               1: proctrack/cgroup + task/cgroup (memory/cores enforced; works on
#                                      this VM's cgroup-v1 hierarchy). 0: proctrack/linuxproc, task/none.
#   SLURM_LOCAL_LINK_ETC=1             symlink /etc/slurm/slurm.conf if absent (clients then need no SLURM_CONF)
#   SLURM_LOCAL_VENV=/tmp/slurmtest-venv   (demo only)
#   SLURM_LOCAL_KEEP=0                 1: `down` keeps $SLURM_LOCAL_DIR (logs, DB) instead of deleting it
# Knobs are read when the configs are written, i.e. by an `up` with no daemon running: `down` then `up`
# to change them. `up` prints `export SLURM_CONF=...` on stdout (logs go to stderr), so
# `eval "$(bash slurm_local.sh up)"` works. If `up` fails it leaves what it started running, for
# debugging: call `down` (e.g. from a trap) in any case.
set -euo pipefail

D=${SLURM_LOCAL_DIR:-/tmp/slurm-local}
ACCOUNTING=${SLURM_LOCAL_ACCOUNTING:-1}
CLUSTER=${SLURM_LOCAL_CLUSTER:-localcluster}
PARTITION=${SLURM_LOCAL_PARTITION:-debug}
CTLD_PORT=${SLURM_LOCAL_CTLD_PORT:-6817}
SLURMD_PORT=${SLURM_LOCAL_SLURMD_PORT:-6818}
DBD_PORT=${SLURM_LOCAL_DBD_PORT:-6819}
MYSQL_PORT=${SLURM_LOCAL_MYSQL_PORT:-3307}
LINK_ETC=${SLURM_LOCAL_LINK_ETC:-1}
CGROUP=${SLURM_LOCAL_CGROUP:-0}
VENV=${SLURM_LOCAL_VENV:-/tmp/slurmtest-venv}
MAX_ARRAY=${SLURM_LOCAL_MAX_ARRAY_SIZE:-3}
DB_PASS=slurm-local-pw

H=$(hostname -s)
CONF=$D/etc/slurm.conf
MUNGE_DIR=$D/munge
MUNGE_SOCK=$MUNGE_DIR/munge.socket.2
MYSQL_DATA=$D/mysql/data
MYSQL_RUN=$D/mysql/run
MYSQL_SOCK=$MYSQL_RUN/mysqld.sock

BASE_PKGS=(munge slurmctld slurmd slurm-client)
ACCT_PKGS=(slurmdbd mariadb-server)

export SLURM_CONF=$CONF

elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}'; }
log() { printf '[slurm_local %s] %s\n' "$(date +%T)" "$*" >&2; }
dump_logs() { # tails of the daemon logs, to make a failed bring-up debuggable from CI output
  local f
  for f in "$D"/log/*.log "$D"/munge/munged.log "$D"/mysql/run/mysqld.log; do
    [[ -s $f ]] || continue
    printf -- '----- %s (last 15 lines)\n' "$f" >&2
    tail -n 15 "$f" >&2 || true
  done
}
die() { log "ERROR: $*"; dump_logs; exit 1; }

# ---------------------------------------------------------------- process helpers
# A PID counts as alive unless gone or a zombie: PID 1 on this VM (process_api) reaps
# orphans only now and then, so `kill -0` alone would report dead daemons as alive.
# With a name, the PID must also belong to a process of that name (guards against a stale
# pid file whose PID has been reused by an unrelated process).
pid_alive() { # pid [name]
  local p=$1 name=${2:-} st comm
  [[ -n $p ]] || return 1
  read -r st comm < <(ps -o stat=,comm= -p "$p" 2>/dev/null) || return 1
  [[ -n $st && ${st:0:1} != Z ]] || return 1
  [[ -z $name || $comm == "$name" ]]
}
pidfile_pid() { [[ -s $1 ]] && tr -dc '0-9' <"$1" || true; }
pidfile_alive() { pid_alive "$(pidfile_pid "$1")" "$(basename "$1" .pid)"; }

stop_pidfile() { # name pidfile [timeout_s]
  local name=$1 f=$2 t=${3:-30} p i
  p=$(pidfile_pid "$f")
  if ! pid_alive "$p" "$name"; then rm -f "$f"; return 0; fi
  log "stopping $name (pid $p)"
  kill -TERM "$p" 2>/dev/null || true
  for ((i = 0; i < t * 10; i++)); do pid_alive "$p" || break; sleep 0.1; done
  if pid_alive "$p"; then
    log "$name did not exit in ${t}s; SIGKILL $p"
    kill -KILL "$p" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$f"
}

# wait_for description timeout_s [pidfile|-] command...
# Deadline-based (one probe may itself take seconds); with a pidfile, gives up as soon as the
# daemon has died (after a 2 s grace for it to write the pidfile).
wait_for() {
  local desc=$1 start=$SECONDS end=$((SECONDS + $2)) pf=$3; shift 3
  while ((SECONDS < end)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if [[ $pf != - ]] && ((SECONDS - start >= 2)) && ! pidfile_alive "$pf"; then
      die "$desc exited during start-up"
    fi
    sleep 0.1
  done
  die "timed out waiting for: $desc"
}

# ---------------------------------------------------------------- install
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

do_install() {
  local pkgs=("${BASE_PKGS[@]}") missing=() p made_policy=0
  [[ $ACCOUNTING == 1 ]] && pkgs+=("${ACCT_PKGS[@]}")
  for p in "${pkgs[@]}"; do pkg_installed "$p" || missing+=("$p"); done
  if ((${#missing[@]} == 0)); then log "packages already installed"; return 0; fi
  log "installing: ${missing[*]}"
  # Keep maintainer scripts from starting munge/slurm/mariadb services themselves.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >"/tmp/slurm_local_apt.log" 2>&1; then
    apt-get update -q >/dev/null 2>&1 || true
    apt-get install -y -q --no-install-recommends "${missing[@]}" >"/tmp/slurm_local_apt.log" 2>&1 ||
      { ((made_policy)) && rm -f /usr/sbin/policy-rc.d; tail -20 /tmp/slurm_local_apt.log >&2; die "apt-get install failed"; }
  fi
  ((made_policy)) && rm -f /usr/sbin/policy-rc.d
  rm -f /tmp/slurm_local_apt.log
  return 0
}

# ---------------------------------------------------------------- config
write_configs() {
  local cpus mem_total mem defmem
  cpus=${SLURM_LOCAL_CPUS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}  # nproc obeys OMP_NUM_THREADS
  mem_total=$(awk '/^MemTotal:/{print int($2/1024)}' /proc/meminfo)
  mem=$((mem_total - ${SLURM_LOCAL_MEM_MARGIN_MB:-1024}))
  ((mem > 256)) || mem=$((mem_total / 2))
  defmem=$((mem / cpus))
  mkdir -p "$D"/{etc,log,run,spool/slurmctld,spool/slurmd}
  chmod 755 "$D"
  local acct track
  if [[ $CGROUP == 1 ]]; then
    track="ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup,task/affinity"
    printf 'CgroupPlugin=autodetect\nConstrainCores=yes\nConstrainRAMSpace=yes\n' >"$D/etc/cgroup.conf"
  else
    track="ProctrackType=proctrack/linuxproc
TaskPlugin=task/none"
    rm -f "$D/etc/cgroup.conf"
  fi
  if [[ $ACCOUNTING == 1 ]]; then
    acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$MUNGE_SOCK
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
  else
    acct="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
  fi
  cat >"$CONF" <<EOF
# generated by slurm_local.sh - single node on localhost (to change it: slurm_local.sh down; slurm_local.sh up)
ClusterName=$CLUSTER
SlurmctldHost=$H(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCK
MpiDefault=none
$track
SlurmdParameters=config_overrides
ReturnToService=2
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
StateSaveLocation=$D/spool/slurmctld
SlurmdSpoolDir=$D/spool/slurmd
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$defmem
$acct
JobCompType=jobcomp/filetxt
JobCompLoc=$D/log/jobcomp.log
InactiveLimit=0
KillWait=10
MinJobAge=300
MaxArraySize=$MAX_ARRAY
SlurmctldTimeout=120
SlurmdTimeout=300
Waittime=0
NodeName=$H NodeAddr=127.0.0.1 CPUs=$cpus Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  if [[ $ACCOUNTING == 1 ]]; then
    cat >"$D/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
DbdHost=$H
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
DebugLevel=info
LogFile=$D/log/slurmdbd.log
PidFile=$D/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MYSQL_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$D/etc/slurmdbd.conf"   # slurmdbd refuses a config readable by others
  fi
}

# ---------------------------------------------------------------- hostname / /etc links
ensure_hostname() {
  if ! getent hosts "$H" >/dev/null; then
    log "hostname $H does not resolve; adding it to /etc/hosts"
    echo "127.0.0.1 $H # slurm_local.sh" >>/etc/hosts
    touch "$D/.added-hosts-entry"
  fi
}
link_etc() {
  [[ $LINK_ETC == 1 ]] || return 0
  mkdir -p /etc/slurm
  if [[ ! -e /etc/slurm/slurm.conf && ! -L /etc/slurm/slurm.conf ]]; then
    ln -s "$CONF" /etc/slurm/slurm.conf && touch "$D/.linked-etc"
  elif [[ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" != "$CONF" ]]; then
    log "note: /etc/slurm/slurm.conf exists and is not ours; clients need SLURM_CONF=$CONF"
  fi
}

# ---------------------------------------------------------------- daemons
start_munge() {
  if pidfile_alive "$MUNGE_DIR/munged.pid"; then return 0; fi
  mkdir -p "$MUNGE_DIR"
  chown munge:munge "$MUNGE_DIR"
  chmod 755 "$MUNGE_DIR"   # munged demands the socket dir be world-executable
  if [[ ! -s $MUNGE_DIR/munge.key ]]; then
    dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none
  fi
  chown munge:munge "$MUNGE_DIR/munge.key"   # munged insists on owning a key nobody else can read
  chmod 400 "$MUNGE_DIR/munge.key"
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged --key-file="$MUNGE_DIR/munge.key" --socket="$MUNGE_SOCK" \
    --pid-file="$MUNGE_DIR/munged.pid" --log-file="$MUNGE_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed"
  wait_for "munged" 10 "$MUNGE_DIR/munged.pid" bash -c "munge -S '$MUNGE_SOCK' -n | unmunge -S '$MUNGE_SOCK'"
}

mysql_cli() { mariadb --no-defaults -S "$MYSQL_SOCK" -u root "$@"; }

start_mysql() {
  if pidfile_alive "$MYSQL_RUN/mariadbd.pid"; then return 0; fi
  mkdir -p "$MYSQL_DATA" "$MYSQL_RUN"
  chown -R mysql:mysql "$MYSQL_DATA" "$MYSQL_RUN"   # mariadbd runs as mysql; the uid may differ after a reinstall
  local opts=(--no-defaults --datadir="$MYSQL_DATA" --innodb-log-file-size=64M)
  if [[ ! -d $MYSQL_DATA/mysql ]]; then
    log "initialising private MariaDB in $MYSQL_DATA"
    mariadb-install-db "${opts[@]}" --user=mysql --skip-test-db --skip-name-resolve >"$D/log/mysql-install.log" 2>&1 ||
      { tail -20 "$D/log/mysql-install.log" >&2; die "mariadb-install-db failed"; }
  fi
  log "starting mariadbd on 127.0.0.1:$MYSQL_PORT"
  # mariadbd does not daemonize itself; setsid detaches it from our session/process group.
  setsid /usr/sbin/mariadbd "${opts[@]}" --user=mysql --port="$MYSQL_PORT" --bind-address=127.0.0.1 \
    --socket="$MYSQL_SOCK" --pid-file="$MYSQL_RUN/mariadbd.pid" --log-error="$MYSQL_RUN/mysqld.log" \
    --skip-name-resolve --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 \
    </dev/null >/dev/null 2>&1 &
  wait_for "mariadbd (log: $MYSQL_RUN/mysqld.log)" 60 - mysql_cli -e 'SELECT 1'
  mysql_cli -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
                GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
}

start_slurmdbd() {
  if pidfile_alive "$D/run/slurmdbd.pid"; then return 0; fi
  log "starting slurmdbd"
  slurmdbd   # finds slurmdbd.conf next to $SLURM_CONF; daemonizes
  wait_for "slurmdbd (log: $D/log/slurmdbd.log)" 30 "$D/run/slurmdbd.pid" sacctmgr -n list cluster
  if ! sacctmgr -n -P list cluster format=Cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
  fi
}

ctld_up() { scontrol ping 2>/dev/null | grep -q 'is UP'; }

start_slurmctld() {
  if pidfile_alive "$D/run/slurmctld.pid"; then return 0; fi
  log "starting slurmctld"
  slurmctld -i   # -i: ignore unreadable state files; daemonizes
  wait_for "slurmctld (log: $D/log/slurmctld.log)" 30 "$D/run/slurmctld.pid" ctld_up
}

start_slurmd() {
  if pidfile_alive "$D/run/slurmd.pid"; then return 0; fi
  log "starting slurmd"
  slurmd -N "$H"
}

node_state() { sinfo -h -N -n "$H" -o %T 2>/dev/null | head -1; }
node_ready() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing) ]]; }

wait_node() {
  local i st
  for ((i = 0; i < 300; i++)); do
    st=$(node_state)
    [[ $st =~ ^(idle|mixed|allocated|completing) ]] && return 0
    if [[ $i == 50 && $st =~ ^(down|drain) ]]; then
      scontrol update NodeName="$H" State=RESUME >/dev/null 2>&1 || true
    fi
    sleep 0.1
  done
  scontrol show node "$H" >&2 || true
  tail -20 "$D/log/slurmd.log" >&2 || true
  die "node $H not ready (state: ${st:-?})"
}

# ---------------------------------------------------------------- commands
cmd_up() {
  local t0=$SECONDS
  [[ $EUID == 0 ]] || die "must run as root"
  do_install
  mkdir -p "$D"
  if ! pidfile_alive "$D/run/slurmctld.pid" && ! pidfile_alive "$D/run/slurmd.pid"; then
    write_configs
  fi
  ensure_hostname
  start_munge
  if [[ $ACCOUNTING == 1 ]]; then start_mysql; start_slurmdbd; fi
  start_slurmctld
  start_slurmd
  wait_node
  link_etc
  log "cluster up in $((SECONDS - t0))s: node $H $(node_state), partition $PARTITION"
  echo "export SLURM_CONF=$CONF"
}

cmd_down() {
  if [[ -e $CONF ]] && pidfile_alive "$D/run/slurmctld.pid"; then
    local ids
    ids=$(squeue -h -o %F 2>/dev/null | sort -u | tr '\n' ' ')
    if [[ -n ${ids// /} ]]; then
      log "cancelling jobs: $ids"
      # shellcheck disable=SC2086
      scancel $ids 2>/dev/null || true
      for ((i = 0; i < 150; i++)); do
        [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break
        sleep 0.1
      done
    fi
  fi
  stop_pidfile slurmd "$D/run/slurmd.pid"
  stop_pidfile slurmctld "$D/run/slurmctld.pid"
  stop_pidfile slurmdbd "$D/run/slurmdbd.pid"
  stop_pidfile mariadbd "$MYSQL_RUN/mariadbd.pid" 60
  stop_pidfile munged "$MUNGE_DIR/munged.pid"
  if [[ -e $D/.linked-etc && "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" == "$CONF" ]]; then
    rm -f /etc/slurm/slurm.conf
  fi
  # cgroup mode leaves (empty) /sys/fs/cgroup/<controller>/slurm_<node> trees behind; remove them.
  local cg
  for cg in /sys/fs/cgroup/*/slurm_"$H" /sys/fs/cgroup/slurm_"$H"; do
    [[ -d $cg ]] && find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  if [[ -e $D/.added-hosts-entry ]]; then
    sed -i "/^127\.0\.0\.1 $H # slurm_local\.sh$/d" /etc/hosts
  fi
  if [[ ${SLURM_LOCAL_KEEP:-0} != 1 ]]; then rm -rf "$D"; fi
  log "down"
}

cmd_status() {
  local n f
  for n in munged:$MUNGE_DIR/munged.pid mariadbd:$MYSQL_RUN/mariadbd.pid slurmdbd:$D/run/slurmdbd.pid \
    slurmctld:$D/run/slurmctld.pid slurmd:$D/run/slurmd.pid; do
    f=${n#*:}
    if pidfile_alive "$f"; then echo "${n%%:*}: running (pid $(pidfile_pid "$f"))"; else echo "${n%%:*}: stopped"; fi
  done
  if pidfile_alive "$D/run/slurmctld.pid"; then sinfo; squeue; fi
}

cmd_selftest() {
  local t0 j out
  node_ready || die "cluster not up"
  t0=$(date +%s.%N)
  out=$(srun -N1 -n1 hostname)
  [[ $out == "$H" ]] || die "srun hostname returned '$out'"
  log "srun hostname -> $out ($(elapsed "$t0") s)"
  t0=$(date +%s.%N)
  j=$(sbatch --parsable -o "$D/log/selftest-%j.out" --wrap 'echo sbatch-ok $SLURM_JOB_ID')
  for ((i = 0; i < 300; i++)); do [[ -z $(squeue -h -j "$j" 2>/dev/null) ]] && break; sleep 0.1; done
  grep -q "sbatch-ok $j" "$D/log/selftest-$j.out" || die "sbatch job $j produced no output"
  log "sbatch --wrap job $j done ($(elapsed "$t0") s)"
  if [[ $ACCOUNTING == 1 ]]; then
    for ((i = 0; i < 100; i++)); do
      sacct -n -X -P -j "$j" -o State 2>/dev/null | grep -q COMPLETED && break; sleep 0.1
    done
    sacct -j "$j" -P -o JobID,JobName,State,ExitCode,NodeList
  fi
  echo "selftest OK"
}

cmd_demo() {
  node_ready || die "cluster not up"
  if [[ ! -x $VENV/bin/python ]]; then
    log "creating venv $VENV"
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/python" -c 'import submitit, hydra_plugins.hydra_submitit_launcher' 2>/dev/null ||
    "$VENV/bin/pip" install -q submitit hydra-core hydra-submitit-launcher
  local W=$D/demo
  rm -rf "$W"; mkdir -p "$W/conf"
  cat >"$W/sub.py" <<'EOF'
import os, socket, sys, time
import submitit

def add(a, b):
    return a + b, socket.gethostname(), os.environ["SLURM_JOB_ID"]

ex = submitit.AutoExecutor(folder=os.path.join(sys.argv[1], "%j"))
assert ex.cluster == "slurm", ex.cluster
ex.update_parameters(timeout_min=5, slurm_partition=sys.argv[2], cpus_per_task=1, mem_gb=1, name="demo")
t0 = time.time()
job = ex.submit(add, 2, 3)
res = job.result()
print(f"submitit: job {job.job_id} -> {res} in {time.time() - t0:.2f}s, state {job.state}")
assert res[0] == 5
EOF
  cat >"$W/conf/config.yaml" <<EOF
x: 1
hydra:
  launcher:
    partition: $PARTITION
    timeout_min: 5
    cpus_per_task: 1
    mem_gb: 1
EOF
  cat >"$W/app.py" <<'EOF'
import os, socket
import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> int:
    out = HydraConfig.get().runtime.output_dir
    line = f"x={cfg.x} host={socket.gethostname()} slurm_job={os.environ.get('SLURM_JOB_ID')}"
    with open(os.path.join(out, "result.txt"), "w") as f:
        f.write(line + "\n")
    print(line)
    return cfg.x * 2

if __name__ == "__main__":
    main()
EOF
  cd "$W"
  "$VENV/bin/python" sub.py "$W/submitit_logs" "$PARTITION"
  local t0=$SECONDS
  "$VENV/bin/python" app.py -m hydra/launcher=submitit_slurm 'x=1,2,3'
  log "hydra multirun took $((SECONDS - t0))s"
  local n
  n=$(find "$W/multirun" -name result.txt | wc -l)
  cat "$W"/multirun/*/*/*/result.txt
  [[ $n == 3 ]] || die "expected 3 result.txt under multirun/, found $n"
  [[ $ACCOUNTING == 1 ]] && sacct -X -P -o JobID,JobName,State,ExitCode
  echo "demo OK"
}

case ${1:-} in
  install) do_install ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  selftest) cmd_selftest ;;
  demo) cmd_demo ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) sed -n '2,10p' "$0"; exit 2 ;;
esac

#!/usr/bin/env bash
# Runs N processes of one command on this machine as ONE multi-process JAX job (CPU collectives).
#
# usage: launch/local/multiprocess.sh N [--devices TOTAL] [--port PORT] -- COMMAND [ARGS...]
#
#   N              number of processes (process ids 0..N-1)
#   --devices      simulated CPU devices in all (default 8), split evenly: TOTAL/N per process
#   --port         coordinator port on localhost (default: a free one)
#
# Each process gets JAX_COORDINATOR_ADDRESS=localhost:PORT, JAX_NUM_PROCESSES=N, JAX_PROCESS_ID=i,
# JAXAV_LOCAL_DEVICES=TOTAL/N and JAX_PLATFORMS=cpu (`jaxav train` reads them through
# jaxav/distributed.py). Output lines are prefixed with [pI]. The script waits for all processes;
# when one fails it stops the others and exits with the failed process's status.
#
# example:
#   bash launch/local/multiprocess.sh 2 -- jaxav train --config configs/quickstart.py \
#     --workdir runs/mp --config.train.num_steps=20
set -euo pipefail

usage() {
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}

[ $# -ge 1 ] || usage
case "$1" in -h | --help) usage 0 ;; esac
NPROC=$1
shift
TOTAL_DEVICES=8
PORT=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  case "$1" in
    --devices) TOTAL_DEVICES=${2:?--devices needs a number}; shift 2 ;;
    --port) PORT=${2:?--port needs a number}; shift 2 ;;
    -h | --help) usage 0 ;;
    *) echo "multiprocess.sh: unknown option $1" >&2; usage ;;
  esac
done
[ "${1:-}" = "--" ] || { echo "multiprocess.sh: missing -- before the command" >&2; usage; }
shift
[ $# -ge 1 ] || { echo "multiprocess.sh: no command given" >&2; usage; }
case "$NPROC" in '' | *[!0-9]*) echo "multiprocess.sh: N must be a number, got '$NPROC'" >&2; exit 2 ;; esac
[ "$NPROC" -ge 1 ] || { echo "multiprocess.sh: N must be >= 1" >&2; exit 2; }
if [ $((TOTAL_DEVICES % NPROC)) -ne 0 ]; then
  echo "multiprocess.sh: --devices $TOTAL_DEVICES does not split over $NPROC processes" >&2
  exit 2
fi
PER_PROCESS=$((TOTAL_DEVICES / NPROC))

free_port() {
  local py
  for py in python3 python; do
    if command -v "$py" > /dev/null 2>&1; then
      "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
      return
    fi
  done
  echo $((20000 + RANDOM % 20000))
}
[ -n "$PORT" ] || PORT=$(free_port)

# Simulated devices per process (the XLA flag for commands other than jaxav).
XLA_FLAGS="$(printf '%s' "${XLA_FLAGS:-}" | sed 's/--xla_force_host_platform_device_count=[0-9]*//g')"
export XLA_FLAGS="${XLA_FLAGS} --xla_force_host_platform_device_count=${PER_PROCESS}"
export JAX_PLATFORMS=cpu JAXAV_LOCAL_DEVICES=$PER_PROCESS JAX_NUM_PROCESSES=$NPROC
export JAX_COORDINATOR_ADDRESS="localhost:${PORT}" PYTHONUNBUFFERED=1

PIDS=()
stop_all() {  # TERM the processes still running, KILL them after a grace period
  local pid alive=0 waited=0
  for pid in "${PIDS[@]}"; do
    if kill -0 "$pid" 2> /dev/null; then kill -TERM "$pid" 2> /dev/null || true; alive=1; fi
  done
  while [ "$alive" -eq 1 ] && [ "$waited" -lt 10 ]; do
    sleep 1
    waited=$((waited + 1))
    alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2> /dev/null && alive=1; done
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2> /dev/null || true; done
}
trap 'stop_all; exit 130' INT TERM

echo "multiprocess.sh: $NPROC processes x $PER_PROCESS CPU devices, coordinator localhost:$PORT" >&2
for ((i = 0; i < NPROC; i++)); do
  JAX_PROCESS_ID=$i "$@" > >(sed -u "s/^/[p$i] /") 2>&1 &
  PIDS+=("$!")
done

status=0
remaining=$NPROC
declare -A FINISHED=()
while [ "$remaining" -gt 0 ]; do
  for i in "${!PIDS[@]}"; do
    pid=${PIDS[$i]}
    [ -z "${FINISHED[$i]:-}" ] || continue
    kill -0 "$pid" 2> /dev/null && continue
    rc=0
    wait "$pid" || rc=$?
    FINISHED[$i]=1
    remaining=$((remaining - 1))
    if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then
      status=$rc
      echo "multiprocess.sh: process $i exited with status $rc; stopping the others" >&2
      stop_all
    fi
  done
  [ "$remaining" -eq 0 ] || sleep 0.5
done
wait  # the log prefixers
exit "$status"

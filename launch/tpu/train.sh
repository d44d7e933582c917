#!/usr/bin/env bash
# Creates a Cloud TPU VM slice, installs this checkout on every worker, runs `jaxav train` on all
# workers at once (one JAX process per worker, one job) and streams the logs; deletes the TPU on
# exit unless --keep.
#
# usage: launch/tpu/train.sh [OPTIONS] CONFIG WORKDIR [JAXAV TRAIN ARGS...]
#   --name NAME          TPU name (default: jaxav-$USER)
#   --zone ZONE          (default: $TPU_ZONE or us-central2-b)
#   --type TYPE          accelerator type (default: $TPU_TYPE or v4-16)
#   --version VERSION    TPU VM software version (default: $TPU_VERSION or tpu-ubuntu2204-base)
#   --project PROJECT    (default: gcloud's configured project)
#   --spot               create a spot (preemptible) slice
#   --reuse              use an existing TPU of that name instead of creating one
#   --keep               do not delete the TPU when the script ends
#   WORKDIR              a gs:// bucket path or a path on a disk every worker shares
#
#   e.g. launch/tpu/train.sh --type v4-16 configs/ssast_tiny.py gs://my-bucket/runs/ssast
#
# On each worker the repo is copied to ~/jaxav and installed with `pip install -e ~/jaxav[tpu]`
# (falls back to `jax[tpu]` + the repo); jax.distributed finds the workers from the TPU VM
# metadata (jaxav/distributed.py, JAXAV_DISTRIBUTED=auto).
set -euo pipefail

usage() {
  sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}

NAME="jaxav-${USER:-user}"
ZONE=${TPU_ZONE:-us-central2-b}
TYPE=${TPU_TYPE:-v4-16}
VERSION=${TPU_VERSION:-tpu-ubuntu2204-base}
PROJECT=""
SPOT=0
REUSE=0
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAME=${2:?--name needs a value}; shift 2 ;;
    --zone) ZONE=${2:?--zone needs a value}; shift 2 ;;
    --type) TYPE=${2:?--type needs a value}; shift 2 ;;
    --version) VERSION=${2:?--version needs a value}; shift 2 ;;
    --project) PROJECT=${2:?--project needs a value}; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --reuse) REUSE=1; shift ;;
    --keep) KEEP=1; shift ;;
    -h | --help) usage 0 ;;
    --) shift; break ;;
    -*) echo "train.sh: unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done
[ $# -ge 2 ] || { echo "train.sh: CONFIG and WORKDIR are required" >&2; usage; }
CONFIG=$1
WORKDIR=$2
shift 2
REPO=$(cd "$(dirname "$0")/../.." && pwd)
[ -f "$REPO/pyproject.toml" ] || { echo "train.sh: no pyproject.toml in $REPO" >&2; exit 2; }

GC=(gcloud compute tpus tpu-vm)
WHERE=(--zone "$ZONE")
[ -z "$PROJECT" ] || WHERE+=(--project "$PROJECT")

cleanup() {
  local rc=$?
  if [ "$KEEP" = "1" ]; then
    echo "train.sh: keeping TPU $NAME (delete: ${GC[*]} delete $NAME ${WHERE[*]} --quiet)" >&2
  else
    echo "train.sh: deleting TPU $NAME" >&2
    "${GC[@]}" delete "$NAME" "${WHERE[@]}" --quiet || echo "train.sh: delete failed; delete $NAME by hand" >&2
  fi
  exit "$rc"
}

if [ "$REUSE" = "0" ]; then
  create=(create "$NAME" "${WHERE[@]}" --accelerator-type "$TYPE" --version "$VERSION")
  [ "$SPOT" = "0" ] || create+=(--spot)
  echo "train.sh: creating TPU $NAME ($TYPE, $ZONE)" >&2
  "${GC[@]}" "${create[@]}"
fi
trap cleanup EXIT
trap 'exit 130' INT TERM

# Copy the checkout (tracked files) to every worker and install it.
ARCHIVE=$(mktemp -t jaxav-src.XXXXXX.tar.gz)
git -C "$REPO" archive --format=tar.gz -o "$ARCHIVE" HEAD
"${GC[@]}" scp "$ARCHIVE" "$NAME:~/jaxav-src.tar.gz" --worker=all "${WHERE[@]}"
rm -f "$ARCHIVE"
# shellcheck disable=SC2016  # expands on the worker
INSTALL='set -e; rm -rf ~/jaxav && mkdir -p ~/jaxav && tar -xzf ~/jaxav-src.tar.gz -C ~/jaxav
python3 -m venv ~/jaxav-venv && . ~/jaxav-venv/bin/activate && pip install -q -U pip
pip install -q -e "$HOME/jaxav[tpu]" || pip install -q "jax[tpu]" -e "$HOME/jaxav"'
"${GC[@]}" ssh "$NAME" --worker=all "${WHERE[@]}" --command "$INSTALL"

# Run on every worker at once; gcloud streams each worker's output here.
ARGS=$(printf ' %q' "$@")
RUN="cd ~/jaxav && . ~/jaxav-venv/bin/activate && export JAXAV_DISTRIBUTED=auto PYTHONUNBUFFERED=1 \
&& jaxav train --config $(printf '%q' "$CONFIG") --workdir $(printf '%q' "$WORKDIR")$ARGS"
echo "train.sh: running on all workers of $NAME: jaxav train --config $CONFIG --workdir $WORKDIR $*" >&2
"${GC[@]}" ssh "$NAME" --worker=all "${WHERE[@]}" --command "$RUN"

# shellcheck shell=bash
# Shared by up.sh, e2e.sh and down.sh: names, operator versions, and `run`, which prints each command and runs it
# (DRY_RUN=1: prints only, so the scripts can be checked on a machine with no Docker engine).

KIND_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$KIND_DIR/../.." && pwd)
CLUSTER=${CLUSTER:-mlkube}
IMAGE=${IMAGE:-mlkube:dev}
VARIANT=${VARIANT:-cpu}
NAMESPACE=${NAMESPACE:-mlkube}
SIGNING_SECRET=${SIGNING_SECRET:-mlkube-signing}  # the chart's signing.secretName
# Operator versions: the CRDs under deploy/crds/ are these releases' (see deploy/crds/README.md).
KUBERAY_VERSION=${KUBERAY_VERSION:-1.7.0}
TRAINING_OPERATOR_VERSION=${TRAINING_OPERATOR_VERSION:-v1.9.0}
TRAINER_VERSION=${TRAINER_VERSION:-v2.3.0}  # Kubeflow Trainer v2 (TrainJob, the chart's default training.kind)
KUEUE_VERSION=${KUEUE_VERSION:-v0.19.2}     # only with KUEUE=1
DRY_RUN=${DRY_RUN:-0}
MLKUBE=${MLKUBE:-$ROOT/.venv/bin/mlkube}

run() {
  echo "+ $*" >&2
  if [ "$DRY_RUN" != 1 ]; then
    "$@"
  fi
}

# need TOOL HINT: stop with the install hint when a tool is missing (skipped in dry runs).
need() {
  [ "$DRY_RUN" = 1 ] && return 0
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "$(basename "$0"): $1 not found: $2" >&2
    exit 1
  fi
}

need_docker() {
  need docker "install Docker (https://docs.docker.com/get-docker/)"
  if [ "$DRY_RUN" != 1 ] && ! docker info >/dev/null 2>&1; then
    echo "$(basename "$0"): the Docker engine is not running (docker info failed): start it and retry" >&2
    exit 1
  fi
}

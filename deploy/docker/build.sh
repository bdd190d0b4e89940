#!/usr/bin/env bash
# The one image build (`make image`; deploy/kind/up.sh and the container tests use it too): make sure an engine
# answers, make the base image from Debian's packages when it is absent, hand the build this machine's CA bundle
# and its local torch wheel when pip's configuration names them, and build the Dockerfile with the legacy builder
# or BuildKit alike. Prints the image's size.
#   deploy/docker/build.sh                        # IMAGE=mlkube:dev BASE=mlkube-base:bookworm (debootstrap)
#   BASE=python:3.11-slim-bookworm deploy/docker/build.sh
#   VARIANT=gpu deploy/docker/build.sh            # BASE defaults to the CUDA torch base, whose torch it keeps
#   DRY_RUN=1 deploy/docker/build.sh              # print the build command only
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
IMAGE=${IMAGE:-mlkube:dev}
VARIANT=${VARIANT:-cpu}
GPU_BASE=${GPU_BASE:-pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime}
LOCAL_BASE=mlkube-base:bookworm
PIP=${PIP:-pip}
EXTRAS=$HERE/extras
DRY_RUN=${DRY_RUN:-0}

case "$VARIANT" in
  cpu) BASE=${BASE:-$LOCAL_BASE} ;;
  gpu) BASE=${BASE:-$GPU_BASE} ;;
  *) echo "build: VARIANT=$VARIANT: use cpu or gpu" >&2; exit 2 ;;
esac
args=(--build-arg "BASE=$BASE")
# pip's own configuration (`pip config list`: files and PIP_* variables) says which CA bundle this machine trusts
# and where wheels lie.
pip_config() {
  { "$PIP" config list 2>/dev/null || python3 -m pip config list 2>/dev/null; } |
    sed -n "s/^[^=]*\.$1='\(.*\)'\$/\1/p" | head -n 1
}
cert=${CA_BUNDLE:-$(pip_config cert)}
if [ -n "$cert" ] && [ -f "$cert" ]; then
  [ "$DRY_RUN" = 1 ] || cp "$cert" "$EXTRAS/ca.crt"
  args+=(--build-arg CA_BUNDLE=ca.crt)
fi
if [ "$VARIANT" = gpu ]; then
  args+=(--build-arg TORCH_FROM=base)
else
  torch=$(sed -n 's/^torch==//p' "$ROOT/constraints.txt")
  wheels=$(pip_config find-links)
  wheel=$(find "${wheels:-/nonexistent}" -maxdepth 1 -name "torch-${torch}+cpu-cp3*-linux_x86_64.whl" \
    -o -maxdepth 1 -name "torch-${torch}+cpu-cp3*-manylinux*_x86_64.whl" 2>/dev/null | head -n 1)
  if [ -n "$wheel" ]; then
    if [ "$DRY_RUN" != 1 ]; then
      mkdir -p "$EXTRAS/wheels"
      cmp -s "$wheel" "$EXTRAS/wheels/$(basename "$wheel")" || cp "$wheel" "$EXTRAS/wheels/"
    fi
    args+=(--build-arg "TORCH_FROM=--find-links /opt/extras/wheels")
  fi
fi
echo "+ docker build ${args[*]} -t $IMAGE $ROOT" >&2
[ "$DRY_RUN" = 1 ] && exit 0
bash "$HERE/engine.sh"
if [ "$BASE" = "$LOCAL_BASE" ]; then
  bash "$HERE/base.sh" "$BASE"
fi
start=$(date +%s)
docker build "${args[@]}" -t "$IMAGE" "$ROOT"
size=$(docker image inspect --format '{{.Size}}' "$IMAGE")
echo "build: $IMAGE is $((size / 1000000)) MB, built in $(( $(date +%s) - start )) s" >&2

#!/usr/bin/env bash
# Make sure a Docker engine answers: when `docker info` fails, install Debian's docker.io (root only), start dockerd
# in the background (its log in $ENGINE_LOG) and wait until it answers. Prints nothing when one already runs.
#   deploy/docker/engine.sh            # exit 0: an engine answers; exit 1: why none could be had
set -euo pipefail
ENGINE_LOG=${ENGINE_LOG:-/var/log/mlkube-dockerd.log}
WAIT_S=${WAIT_S:-60}

docker info >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "engine: no Docker engine answers and this is not root: start dockerd (or run as root) and retry" >&2
  exit 1
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "engine: installing docker.io" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi
if ! pgrep -x dockerd >/dev/null; then
  echo "engine: starting dockerd (log: $ENGINE_LOG)" >&2
  nohup dockerd --storage-driver=overlay2 >"$ENGINE_LOG" 2>&1 &
fi
for _ in $(seq "$WAIT_S"); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "engine: dockerd did not answer within ${WAIT_S}s; see $ENGINE_LOG" >&2
tail -n 20 "$ENGINE_LOG" >&2 || true
exit 1

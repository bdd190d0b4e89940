#!/usr/bin/env bash
# Make the base image NAME from Debian's packages when no image of that name exists (no registry needed):
# debootstrap a minimal bookworm with Python 3.11 (what python:3.11-slim-bookworm carries), then `docker import`.
#   deploy/docker/base.sh mlkube-base:bookworm
set -euo pipefail
NAME=${1:?usage: base.sh IMAGE_NAME}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

docker image inspect "$NAME" >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "base: image $NAME is absent and debootstrap needs root: run as root or pass BASE=<an image you have>" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi
ROOTFS=$(mktemp -d /tmp/mlkube-base.XXXXXX)
cleanup() {
  umount "$ROOTFS/proc" "$ROOTFS/sys" 2>/dev/null || true
  rm -rf --one-file-system "$ROOTFS"
}
trap cleanup EXIT
echo "base: debootstrap bookworm into $ROOTFS" >&2
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$ROOTFS" "$MIRROR" >/dev/null
# What a slim image leaves out: downloaded packages, package lists, docs, manuals and translations; dpkg is told
# to leave them out of later installs too (as Debian's slim images do).
rm -rf "$ROOTFS"/var/cache/apt/* "$ROOTFS"/var/lib/apt/lists/* \
  "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/*
find "$ROOTFS"/usr/share/locale -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
  'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
  'path-exclude /usr/share/locale/*' 'path-include /usr/share/locale/locale.alias' \
  > "$ROOTFS"/etc/dpkg/dpkg.cfg.d/slim
umount "$ROOTFS/proc" "$ROOTFS/sys" 2>/dev/null || true
tar -C "$ROOTFS" --one-file-system -c . | docker import --change 'CMD ["python3"]' - "$NAME" >/dev/null
echo "base: imported $NAME ($(docker image inspect --format '{{.Size}}' "$NAME") bytes)" >&2

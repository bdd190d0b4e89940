#!/usr/bin/env bash
# Debian packages the integration tests start for real: Prometheus (metrics server), etcd (torchrun's etcd
# rendezvous, as on an ElasticJob), chromium + chromedriver (the HTML report in a real browser), a JDK (javac builds
# mlkube's TorchServe agent for the Open Inference Protocol's model endpoints). Installs only
# what is missing; needs root (CI runs as root); otherwise prints the apt-get line to run.
set -euo pipefail
declare -A want=(
  [prometheus]=prometheus
  [etcd]=etcd-server
  [chromium]=chromium
  [chromedriver]=chromium-driver
  [javac]=openjdk-17-jdk-headless
)
missing=()
for bin in "${!want[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("${want[$bin]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "system-deps: missing ${missing[*]}; run: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

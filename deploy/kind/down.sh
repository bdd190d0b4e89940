#!/usr/bin/env bash
# Delete the kind cluster of up.sh (and with it every run and the runs volume).
#   deploy/kind/down.sh           DRY_RUN=1 deploy/kind/down.sh
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

need kind "install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"
run kind delete cluster --name "$CLUSTER"

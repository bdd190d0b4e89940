#!/usr/bin/env bash
# End to end on the kind cluster of up.sh: tune with `mlkube submit --kind ray`, (ELASTIC=1: train the LSTM with
# `--kind elastic`), serve the tuned run with `helm install`, predict through the Service with the token
# (`helm test` and a port-forward), and collect every pod's log and the events under deploy/kind/artifacts/.
#   deploy/kind/e2e.sh            DRY_RUN=1 deploy/kind/e2e.sh
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

need kubectl "install kubectl (https://kubernetes.io/docs/tasks/tools/)"
need helm "install Helm 3 or 4 (https://helm.sh/docs/intro/install/)"
need curl "install curl"
[ "$DRY_RUN" = 1 ] || [ -x "$MLKUBE" ] || { echo "e2e: $MLKUBE not found: run make install" >&2; exit 1; }

RUN_ID=${RUN_ID:-e2e-$(date +%H%M%S)}
ARTIFACTS=${ARTIFACTS:-$KIND_DIR/artifacts/$RUN_ID}
SPEC=$KIND_DIR/experiment.yaml
VALUES=$KIND_DIR/values.yaml
RELEASE=mlkube-serve-$RUN_ID
PORT=${PORT:-18080}

collect() {
  [ "$DRY_RUN" = 1 ] && return 0
  mkdir -p "$ARTIFACTS"
  "$MLKUBE" logs "$RUN_ID" -n "$NAMESPACE" > "$ARTIFACTS/pods.log" 2>&1 || true
  kubectl -n "$NAMESPACE" get events --sort-by=.lastTimestamp > "$ARTIFACTS/events.txt" 2>&1 || true
  kubectl -n "$NAMESPACE" describe pods > "$ARTIFACTS/pods.txt" 2>&1 || true
  echo "e2e: logs and events in $ARTIFACTS" >&2
}
trap collect EXIT

run "$MLKUBE" submit "$SPEC" --kind ray --run-id "$RUN_ID" -n "$NAMESPACE" -f "$VALUES" --timeout 1800
if [ "${ELASTIC:-0}" = 1 ]; then
  run "$MLKUBE" submit "$SPEC" --kind elastic --run-id "$RUN_ID-lstm" -n "$NAMESPACE" -f "$VALUES" --timeout 1800
fi

run helm upgrade --install "$RELEASE" "$ROOT/helm/mlkube" -n "$NAMESPACE" -f "$VALUES" \
  --set ray.enabled=false --set elastic.enabled=false --set serve.enabled=true \
  --set "serve.runId=$RUN_ID" --set runs.create=false --set runs.claimName=mlkube-runs --wait --timeout 10m
run helm test "$RELEASE" -n "$NAMESPACE" --logs

run kubectl -n "$NAMESPACE" port-forward "svc/$RELEASE-serve" "$PORT:8080" &
FORWARD=$!
sleep 3
TOKEN=$([ "$DRY_RUN" = 1 ] || kubectl -n "$NAMESPACE" get secret "$RELEASE-serve-token" -o jsonpath='{.data.token}' | base64 -d)
run curl --fail-with-body -sS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{"instances": [[5.1, 3.5, 1.4, 0.2]]}' "http://127.0.0.1:$PORT/predictions/best"
kill "$FORWARD" 2>/dev/null || true
echo "e2e: run $RUN_ID tuned, served and predicted" >&2

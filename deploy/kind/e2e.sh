#!/usr/bin/env bash
# End to end on the kind cluster of up.sh: tune with `mlkube submit --kind ray`, (ELASTIC=1: train the LSTM with
# `--kind elastic`), serve the tuned run with `helm install`, predict with the key TorchServe made (`helm test`, in the
# pod with `mlkube predict`, and through a port-forward), and collect every pod's log and the events under
# deploy/kind/artifacts/.
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

SERVING=/runs/$RUN_ID/serving
run kubectl -n "$NAMESPACE" exec "deploy/$RELEASE-serve" -- mlkube predict "/runs/$RUN_ID" --model classical

# From outside: the key header and the example request are read from the pod into private files, never onto a
# command line or into a log.
run kubectl -n "$NAMESPACE" port-forward "svc/$RELEASE-serve" "$PORT:8080" &
FORWARD=$!
sleep 3
AUTH=$(mktemp)
REQUEST=$(mktemp)
run kubectl -n "$NAMESPACE" exec "deploy/$RELEASE-serve" -- python -c \
  "import json; print('Authorization: Bearer ' + json.load(open('$SERVING/key_file.json'))['inference']['key'])" > "$AUTH"
run kubectl -n "$NAMESPACE" exec "deploy/$RELEASE-serve" -- cat "$SERVING/examples/classical.json" > "$REQUEST"
run curl --fail-with-body -sS -H "@$AUTH" -H 'Content-Type: application/json' --data "@$REQUEST" \
  "http://127.0.0.1:$PORT/predictions/classical"
rm -f "$AUTH" "$REQUEST"
kill "$FORWARD" 2>/dev/null || true
echo "e2e: run $RUN_ID tuned, served and predicted" >&2

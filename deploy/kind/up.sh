#!/usr/bin/env bash
# Create the kind cluster (1 control plane + 2 workers), install the KubeRay operator (Helm chart), Kubeflow
# Trainer v2 (TrainJob, the chart's default) and the Kubeflow training operator v1 (PyTorchJob, the elastic path)
# from their released manifests, build the mlkube image and load it into the nodes.
#   deploy/kind/up.sh                 # ELASTICJOB=1 also installs TorchElastic's ElasticJob controller;
#                                     # KUEUE=1 installs Kueue (set the chart's `queue` to use it)
#   DRY_RUN=1 deploy/kind/up.sh       # print the commands only
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

need_docker
need kind "install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"
need kubectl "install kubectl (https://kubernetes.io/docs/tasks/tools/)"
need helm "install Helm 3 or 4 (https://helm.sh/docs/intro/install/)"

if [ "$DRY_RUN" = 1 ] || ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  run kind create cluster --name "$CLUSTER" --config "$KIND_DIR/cluster.yaml" --wait 180s
fi
run kubectl config use-context "kind-$CLUSTER"

run helm repo add kuberay https://ray-project.github.io/kuberay-helm/ --force-update
run helm upgrade --install kuberay-operator kuberay/kuberay-operator --version "$KUBERAY_VERSION" \
  --namespace kuberay-system --create-namespace --wait --timeout 5m

run kubectl apply --server-side \
  -k "github.com/kubeflow/training-operator.git/manifests/overlays/standalone?ref=$TRAINING_OPERATOR_VERSION"
run kubectl -n kubeflow rollout status deployment/training-operator --timeout=300s

# Trainer v2 with JobSet (its manager overlay brings both), then its torch runtimes; TrainJob uses the chart's own.
run kubectl apply --server-side -k "github.com/kubeflow/trainer.git/manifests/overlays/manager?ref=$TRAINER_VERSION"
run kubectl -n kubeflow-system rollout status deployment/kubeflow-trainer-controller-manager --timeout=300s

if [ "${KUEUE:-0}" = 1 ]; then
  run kubectl apply --server-side \
    -f "https://github.com/kubernetes-sigs/kueue/releases/download/$KUEUE_VERSION/manifests.yaml"
  run kubectl -n kueue-system wait deploy/kueue-controller-manager --for=condition=available --timeout=5m
fi

if [ "${ELASTICJOB:-0}" = 1 ]; then
  run kubectl apply -k "$KIND_DIR/elasticjob"
  run kubectl -n elastic-job rollout status deployment/elastic-job-k8s-controller --timeout=300s
fi

if [ "$DRY_RUN" = 1 ] || ! kubectl get namespace "$NAMESPACE" >/dev/null 2>&1; then
  run kubectl create namespace "$NAMESPACE"
fi
# The key that signs model cards (training) and checks them (serving): 32 random bytes, made once per cluster.
if [ "$DRY_RUN" = 1 ] || ! kubectl -n "$NAMESPACE" get secret "$SIGNING_SECRET" >/dev/null 2>&1; then
  KEY=$(mktemp)
  head -c 32 /dev/urandom > "$KEY"
  run kubectl -n "$NAMESPACE" create secret generic "$SIGNING_SECRET" --from-file=key="$KEY"
  rm -f "$KEY"
fi

# The one image build (make image): it prints its docker build command, and only that in a dry run.
IMAGE="$IMAGE" VARIANT="$VARIANT" DRY_RUN="$DRY_RUN" bash "$ROOT/deploy/docker/build.sh"
run kind load docker-image "$IMAGE" --name "$CLUSTER"
echo "up: cluster $CLUSTER ready, image $IMAGE loaded; next: deploy/kind/e2e.sh" >&2

"""What the operators add to the chart's pods when they run them (so the rendered chart does not hold it). The
container tests apply these, so that the chart's own commands, env and mounts run as on a cluster; each says
which operator does it and where in that operator's source (the releases deploy/kind/common.sh installs).

Anything not listed here comes from the rendered chart unchanged."""

from __future__ import annotations

import math
from typing import Any

RAY_PORT = 6379  # KubeRay's default GCS port (DefaultGcsServerPort)
DASHBOARD_PORT = 8265  # the Jobs API (DefaultDashboardPort)


def head_service(cluster_name: str) -> str:
    """KubeRay names the head's Service `<RayCluster>-head-svc` (ray-operator/controllers/ray/utils/util.go,
    GenerateHeadServiceName); pods reach the head through it."""
    return f"{cluster_name}-head-svc"


def ray_auth_env(token: str) -> dict[str, str]:
    """KubeRay with `authOptions.mode: token` (>= 1.5) makes the Secret `<RayCluster>` (key auth_token) and
    sets RAY_AUTH_MODE and RAY_AUTH_TOKEN in every Ray container and the submitter
    (ray-operator/controllers/ray/common/pod.go, BuildPod's auth env; common/job.go for the submitter)."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}


def ray_start(group: dict, head: bool, cluster_name: str) -> list[str]:
    """KubeRay's ray start line (ray-operator/controllers/ray/common/pod.go: BuildPod replaces the command of
    a container that has none with `/bin/bash -c --` and generateRayStartCommand's `ulimit -n 65536; ray start
    ...`): the group's rayStartParams, `--block`, num-cpus and memory from the container's limits, a worker's
    `--address=<head-svc>:6379` (setMissingRayStartParams)."""
    params: dict[str, Any] = {"block": True, **group.get("rayStartParams", {})}
    limits = group["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
    if "cpu" in limits:
        params.setdefault("num-cpus", str(quantity(limits["cpu"])))
    if "memory" in limits:
        params.setdefault("memory", str(quantity(limits["memory"])))
    if not head:
        params.setdefault("address", f"{head_service(cluster_name)}:{RAY_PORT}")
    flags = " ".join(f"--{k}" if v is True else f"--{k}={v}" for k, v in params.items())
    return ["/bin/bash", "-c", "--", f"ulimit -n 65536; ray start {'--head ' if head else ''}{flags}"]


def quantity(value: Any) -> int:
    """A Kubernetes quantity as KubeRay reads it (resource.Quantity.Value: rounded up to a whole number)."""
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    unit = next((u for u in units if text.endswith(u)), "")
    return math.ceil(float(text[: len(text) - len(unit)]) * units.get(unit, 1))


def ray_pod(group: dict, head: bool, cluster_name: str, token: str) -> dict[str, Any]:
    """The head's or a worker's injected command, env and mounts (pod.go: setContainerEnvVars sets RAY_ADDRESS
    to the local GCS on the head, to the head Service on a worker, RAY_CLUSTER_NAME and RAY_PORT; BuildPod's
    addEmptyDir mounts a memory-backed /dev/shm for the object store)."""
    address = f"127.0.0.1:{RAY_PORT}" if head else f"{head_service(cluster_name)}:{RAY_PORT}"
    command = ray_start(group, head, cluster_name)
    return {
        "command": command[:1],
        "args": command[1:],
        "flags": ["--mount", "type=tmpfs,destination=/dev/shm"],
        "extra_env": {
            "RAY_ADDRESS": address,
            "RAY_CLUSTER_NAME": cluster_name,
            "RAY_PORT": str(RAY_PORT),
            **ray_auth_env(token),
        },
    }


def ray_submitter(job: dict, cluster_name: str, token: str) -> dict[str, Any]:
    """KubeRay's submitter (K8sJobMode; ray-operator/controllers/ray/common/job.go, GetK8sJobCommand):
    `ray job submit --address http://<head-svc>:8265 --submission-id <jobId> -- <entrypoint>`, which returns
    when the job ends (exit 0: SUCCEEDED)."""
    spec = job["spec"]
    address = f"http://{head_service(cluster_name)}:{DASHBOARD_PORT}"
    submit = ["ray", "job", "submit", "--address", address, "--submission-id", spec["jobId"], "--"]
    return {
        "command": submit[:1],
        "args": [*submit[1:], *spec["entrypoint"].split()],
        "extra_env": {
            "RAY_DASHBOARD_ADDRESS": address,
            "RAY_JOB_SUBMISSION_ID": spec["jobId"],
            **ray_auth_env(token),
        },
    }


def pytorchjob_worker_service(job_name: str, index: int) -> str:
    """The training operator gives each replica a headless Service `<job>-worker-<i>`
    (pkg/controller.v1/common/service.go); the elastic rendezvous endpoint is worker 0's."""
    return f"{job_name}-worker-{index}"


def pytorchjob_env(job: dict) -> dict[str, str]:
    """What the Kubeflow training operator v1 sets in an elastic PyTorchJob's `pytorch` container
    (pkg/controller.v1/pytorch/envvar.go, setPodEnv: PYTHONUNBUFFERED; pkg/controller.v1/pytorch/elastic.go,
    ElasticEnvVarGenerator: PET_RDZV_BACKEND, PET_RDZV_ENDPOINT (worker 0's Service), PET_RDZV_ID, PET_NNODES
    min:max, PET_MAX_RESTARTS). torchrun reads PET_* as the defaults of its flags; the chart's flags win."""
    policy = job["spec"]["elasticPolicy"]
    endpoint = f"{pytorchjob_worker_service(job['metadata']['name'], 0)}:{policy['rdzvPort']}"
    return {
        "PYTHONUNBUFFERED": "1",
        "PET_RDZV_BACKEND": policy["rdzvBackend"],
        "PET_RDZV_ENDPOINT": endpoint,
        "PET_RDZV_ID": policy["rdzvId"],
        "PET_NNODES": f"{policy['minReplicas']}:{policy['maxReplicas']}",
        "PET_MAX_RESTARTS": str(policy["maxRestarts"]),
    }


def trainjob_node(trainjob: dict, index: int) -> str:
    """Trainer v2 runs a TrainJob as a JobSet: node i is the pod `<job>-node-0-<i>`, reached by that name in
    the JobSet's headless Service (JobSet's pkg/controllers/pod_controller.go; DNS hostnames on)."""
    return f"{trainjob['metadata']['name']}-node-0-{index}"


def trainjob_env(trainjob: dict, index: int) -> dict[str, str]:
    """What Trainer v2's torch plugin sets in the trainer container of node `index`
    (kubeflow/trainer pkg/runtime/framework/plugins/torch/torch.go: PET_NNODES, PET_NPROC_PER_NODE,
    PET_NODE_RANK, PET_MASTER_ADDR (node 0), PET_MASTER_PORT 29400)."""
    spec = trainjob["spec"]["trainer"]
    return {
        "PET_NNODES": str(spec["numNodes"]),
        "PET_NPROC_PER_NODE": str(spec["numProcPerNode"]),
        "PET_NODE_RANK": str(index),
        "PET_MASTER_ADDR": trainjob_node(trainjob, 0),
        "PET_MASTER_PORT": "29400",
    }


def kserve_predictor_pod(isvc: dict) -> dict[str, Any]:
    """The pod KServe's Standard mode makes of a custom predictor: the predictor's PodSpec fields as they are,
    its `labels` and `annotations` on the pod (pkg/apis/serving/v1beta1/predictor_custom.go keeps the PodSpec;
    component.go's ComponentExtensionSpec fields are the Deployment's, not the pod's)."""
    predictor = isvc["spec"]["predictor"]
    extension = {"minReplicas", "maxReplicas", "deploymentStrategy", "labels", "annotations", "scaleTarget"}
    return {
        "metadata": {"labels": predictor.get("labels", {}), "annotations": predictor.get("annotations", {})},
        "spec": {k: v for k, v in predictor.items() if k not in extension},
    }


def kserve_env(isvc: dict) -> dict[str, str]:
    """What KServe v0.20.0 adds to every predictor container: INFERENCE_SERVICE_NAME, the InferenceService's
    name (pkg/controller/v1beta1/inferenceservice/components/predictor.go, AddEnvVarToPodSpec). Its Service
    `<name>-predictor` maps port 80 to the container's first port (reconcilers/service/service_reconciler.go,
    createDefaultSvc); a Docker network alias cannot remap ports, so the tests reach the container port."""
    return {"INFERENCE_SERVICE_NAME": isvc["metadata"]["name"]}

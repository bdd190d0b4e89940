"""The workloads a run makes on Kubernetes: how to read each kind's state, wait for it, and find a run's pods.

A run's objects carry the label mlkube.dev/run-id; `mlkube status`, `logs` and `delete` find them by it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlkube.cluster.kube import Kube
from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.progress import Progress
from mlkube.trainer.spec import Spec, parse_spec, read_spec_text


@dataclass(frozen=True)
class State:
    text: str
    done: bool = False
    ok: bool = False


def _rayjob_state(obj: dict) -> State:
    status = obj.get("status") or {}
    deployment, job = status.get("jobDeploymentStatus") or "Pending", status.get("jobStatus")
    text = f"{deployment}, Ray job {job}" if job else deployment
    if status.get("message") and deployment == "Failed":
        text += f": {status['message']}"
    done = deployment in ("Complete", "Failed") or job in ("SUCCEEDED", "FAILED", "STOPPED")
    return State(text, done, job == "SUCCEEDED")


def _raycluster_state(obj: dict) -> State:
    state = (obj.get("status") or {}).get("state") or "pending"
    return State(state, state in ("ready", "failed"), state == "ready")


def _conditions_state(obj: dict) -> State:
    """Training-operator style: the last condition that holds (Created, Running, Restarting, Succeeded,
    Failed)."""
    held = [c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
    if not held:
        return State("Pending")
    last = held[-1]
    text = last["type"] + (f": {last['message']}" if last.get("message") else "")
    return State(text, last["type"] in ("Succeeded", "Failed"), last["type"] == "Succeeded")


def _trainjob_state(obj: dict) -> State:
    """Kubeflow Trainer v2: the conditions Complete and Failed end it; Suspended (Kueue has not admitted it,
    or it was suspended) waits; else its Jobs run (status.jobsStatus)."""
    status = obj.get("status") or {}
    held = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    for kind, ok in (("Failed", False), ("Complete", True), ("Suspended", False)):
        if kind in held:
            message = held[kind].get("message")
            return State(kind + (f": {message}" if message else ""), kind != "Suspended", ok)
    active = sum(job.get("active") or 0 for job in status.get("jobsStatus") or [])
    return State(f"Running, {active} active" if active else "Pending")


def _inferenceservice_state(obj: dict) -> State:
    """KServe: Ready once its predictor serves; a predictor that failed to start is reported with its reason
    (it keeps retrying, so a serving run never ends on its own)."""
    conditions = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}
    ready = conditions.get("Ready") or {}
    if ready.get("status") == "True":
        return State("Ready", True, True)
    reason = ready.get("message") or ready.get("reason")
    return State("Not ready" + (f": {reason}" if reason else ""))


def _deployment_state(obj: dict) -> State:
    want = (obj.get("spec") or {}).get("replicas") or 1
    status = obj.get("status") or {}
    have = status.get("availableReplicas") or 0
    stuck = any(c.get("reason") == "ProgressDeadlineExceeded" for c in status.get("conditions") or [])
    return State(f"{have}/{want} replicas available", have >= want or stuck, have >= want)


# The workload kinds the chart makes: apiVersion, how to read their state.
WORKLOADS: dict[str, tuple[str, Callable[[dict], State]]] = {
    "RayJob": ("ray.io/v1", _rayjob_state),
    "RayCluster": ("ray.io/v1", _raycluster_state),
    "TrainJob": ("trainer.kubeflow.org/v1alpha1", _trainjob_state),
    "PyTorchJob": ("kubeflow.org/v1", _conditions_state),
    "ElasticJob": ("elastic.pytorch.org/v1alpha1", _conditions_state),
    "Deployment": ("apps/v1", _deployment_state),
    "InferenceService": ("serving.kserve.io/v1beta1", _inferenceservice_state),
}
# Every other kind the chart makes with a run's label (the runs PersistentVolumeClaim has none: it is kept).
SUPPORT_KINDS = (
    ("trainer.kubeflow.org/v1alpha1", "TrainingRuntime"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
)
CHART_KINDS = tuple((api, kind) for kind, (api, _) in WORKLOADS.items()) + SUPPORT_KINDS
# The pod whose log submit streams: the Ray job driver, the first training worker; serving has none to wait
# for.
LOG_ROLE = {"ray": "driver", "elastic": "worker", "serve": None}


# ------------------------------------------------------------------------------------------- waiting
def wait(
    kube: Kube,
    kind: str,
    name: str,
    run_id: str,
    log_role: str | None,
    timeout: float,
    poll: float,
    progress: Progress,
) -> State:
    """Poll the workload until it is done, saying each new state; stream the log of each pod of `log_role`
    once."""
    api, read = WORKLOADS[kind]
    resource = kube.resource(api, kind)
    deadline = time.monotonic() + timeout
    streamed: set[str] = set()
    said = None
    while True:
        obj = kube.get(resource, name)
        if obj is None:
            raise MlkubeError(
                f"{kind}/{name} was deleted while mlkube waited for it",
                f"see `kubectl -n {kube.namespace} get events`",
            )
        state = read(obj)
        if state.text != said:
            progress.say(f"{kind}/{name}: {state.text}")
            said = state.text
        if state.done:
            return state
        if time.monotonic() > deadline:
            raise MlkubeError(
                f"{kind}/{name} is still {state.text} after {timeout:.0f} s",
                f"follow it with `mlkube status {run_id}`, or stop it with `mlkube delete {run_id}`",
            )
        pod = _pod_with_log(kube, run_id, log_role, streamed) if log_role else None
        if pod:
            streamed.add(pod)
            progress.say(f"log of pod {pod}:")
            for line in kube.log_lines(pod, follow=True):
                print(line, flush=True)
        else:
            time.sleep(poll)


def _pod_with_log(kube: Kube, run_id: str, role: str, streamed: set[str]) -> str | None:
    """The first pod of `role` that has started and whose log was not streamed yet."""
    for pod in kube.pods(run_id, role):
        name = pod["metadata"]["name"]
        if name not in streamed and (pod.get("status") or {}).get("phase") in (
            "Running",
            "Succeeded",
            "Failed",
        ):
            return name
    return None


# ------------------------------------------------------------------------------------------- helpers
def read_spec(path: str) -> Spec:
    """Validate the spec as the pods will read it: paths stay as written (they name places inside the pod)."""
    file = Path(path)
    return parse_spec(read_spec_text(file), source=str(file))


def pod_phase(pod: dict) -> str:
    status = pod.get("status") or {}
    restarts = sum(c.get("restartCount") or 0 for c in status.get("containerStatuses") or [])
    return (status.get("phase") or "Unknown") + (f", {restarts} restarts" if restarts else "")


def no_run(run_id: str, namespace: str) -> MlkubeError:
    return MlkubeError(
        f"no objects of run {run_id!r} in namespace {namespace}",
        f"check the id and the namespace (-n): kubectl get pods -A -l mlkube.dev/run-id={run_id}",
    )

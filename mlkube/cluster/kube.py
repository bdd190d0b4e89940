"""The Kubernetes API calls of `mlkube submit/status/logs/delete`, through the `kubernetes` client's dynamic
client.

Every API failure a user can fix (no kubeconfig, cluster down, operator missing, namespace missing, RBAC)
becomes an MlkubeError naming the thing and the fix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from mlkube.trainer.errors import MlkubeError

if TYPE_CHECKING:
    from urllib3 import HTTPResponse

RUN_LABEL = "mlkube.dev/run-id"
ROLE_LABEL = "mlkube.dev/role"
KEPT_IF_PRESENT = ("PersistentVolumeClaim",)  # the shared runs volume outlives every job

# Which operator serves each custom resource group, and where to get it.
OPERATORS = {
    "ray.io": "the KubeRay operator",
    "trainer.kubeflow.org": "Kubeflow Trainer v2",
    "kubeflow.org": "the Kubeflow training operator (v1)",
    "elastic.pytorch.org": "the TorchElastic ElasticJob controller",
    "monitoring.coreos.com": "the Prometheus operator (or set serve.serviceMonitor.enabled=false)",
    "serving.kserve.io": "KServe (or set serve.kind: deployment)",
}


def current_namespace(context: str | None = None) -> str:
    """The namespace of the kubeconfig's (current) context, else `default`."""
    from kubernetes import config

    with contextlib.suppress(config.ConfigException, OSError):
        contexts, active = config.list_kube_config_contexts()
        chosen = next((c for c in contexts if c["name"] == context), active) if context else active
        return chosen["context"].get("namespace") or "default"
    return "default"


class NotServed(MlkubeError):
    """The cluster does not serve a kind: its operator (CRD) is not installed."""


class Kube:
    """One namespace of one cluster, as the current kubeconfig (or the pod's service account) reaches it."""

    def __init__(self, namespace: str, context: str | None = None):
        from kubernetes import client, dynamic

        self.namespace = namespace
        self.api = _api_client(context)
        with self.errors("the API server"):
            self.dynamic = dynamic.DynamicClient(self.api)
        self.core = client.CoreV1Api(self.api)

    # -- errors
    @contextlib.contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Translate API failures about `what` into MlkubeErrors."""
        from kubernetes.client.exceptions import ApiException
        from kubernetes.dynamic.exceptions import DynamicApiError
        from urllib3.exceptions import HTTPError

        try:
            yield
        except (ApiException, DynamicApiError) as err:
            raise self._api_error(what, err.status, _server_message(err)) from None
        except HTTPError as err:
            raise MlkubeError(
                f"cannot reach the Kubernetes API at {self.api.configuration.host}: {type(err).__name__}",
                "is the cluster up (kind: deploy/kind/up.sh) "
                "and is your kubeconfig's current context the right one?",
            ) from None

    def _api_error(self, what: str, status: int, message: str) -> MlkubeError:
        ns = self.namespace
        if status == 401:
            return MlkubeError(
                f"the cluster did not accept your credentials ({message})",
                "refresh the kubeconfig's credentials",
            )
        if status == 403:
            return MlkubeError(
                f"forbidden by RBAC: {message}",
                f"ask a cluster admin for a Role in namespace {ns} that allows it (docs/cluster.md, 'RBAC')",
            )
        if status == 404 and "namespaces" in message and ns in message:
            return MlkubeError(
                f"namespace {ns!r} does not exist",
                f"kubectl create namespace {ns}  (or set cluster.namespace / -n)",
            )
        if status == 409:
            return MlkubeError(
                f"{what} already exists",
                "pick another --run-id, or remove the old run with `mlkube delete RUN_ID`",
            )
        return MlkubeError(
            f"the cluster refused {what} (HTTP {status}): {message}",
            "fix the value it names (spec or -f values file)",
        )

    # -- resources
    def resource(self, api_version: str, kind: str):
        """The API resource of a kind; if the cluster does not serve it, say which operator to install."""
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            with self.errors(f"discovery of {kind}"):
                return self.dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            group = api_version.split("/")[0] if "/" in api_version else "core"
            operator = OPERATORS.get(group, f"the operator that serves {api_version}")
            raise NotServed(
                f"the cluster does not serve {kind} ({api_version}): {operator} is not installed",
                f"install {operator} (docs/cluster.md, 'Operators'; on kind: deploy/kind/up.sh)",
            ) from None

    def apply(self, objects: list[dict], dry_run: bool = False) -> list[str]:
        """Create every object (a server-side dry run first catches RBAC, namespace and schema problems before
        any object exists). Returns `Kind/name` of each object created, or kept because it was already
        there."""
        done = []
        for obj in objects:
            resource = self.resource(obj["apiVersion"], obj["kind"])
            name = f"{obj['kind']}/{obj['metadata']['name']}"
            if obj["kind"] in KEPT_IF_PRESENT and self.get(resource, obj["metadata"]["name"]) is not None:
                done.append(f"{name} (kept)")
                continue
            with self.errors(name):
                resource.create(body=obj, namespace=self.namespace, **({"dry_run": "All"} if dry_run else {}))
            done.append(name)
        return done

    def get(self, resource, name: str) -> dict | None:
        from kubernetes.dynamic.exceptions import NotFoundError

        with self.errors(f"{resource.kind}/{name}"):
            try:
                return resource.get(name=name, namespace=self.namespace).to_dict()
            except NotFoundError:
                return None

    def find(self, api_version: str, kind: str, run_id: str, role: str | None = None) -> list[dict]:
        """Objects of one kind that belong to a run, by name (empty when the cluster does not serve the
        kind)."""
        try:
            resource = self.resource(api_version, kind)
        except NotServed:
            return []
        selector = f"{RUN_LABEL}={run_id}" + (f",{ROLE_LABEL}={role}" if role else "")
        with self.errors(f"the list of {kind}"):
            items = resource.get(namespace=self.namespace, label_selector=selector).to_dict()["items"]
        return sorted(items, key=lambda o: o["metadata"]["name"])

    def delete(self, api_version: str, kind: str, name: str) -> None:
        resource = self.resource(api_version, kind)
        with self.errors(f"{kind}/{name}"):
            resource.delete(name=name, namespace=self.namespace, propagation_policy="Background")

    # -- pods
    def pods(self, run_id: str, role: str | None = None) -> list[dict]:
        return self.find("v1", "Pod", run_id, role)

    def log_lines(self, pod: str, follow: bool) -> Iterator[str]:
        """A pod's log, line by line; with `follow`, until its container ends."""
        with self.errors(f"the log of pod {pod}"):
            # the client annotates the log as str; with _preload_content=False it is the raw HTTP response
            response = cast(
                "HTTPResponse",
                self.core.read_namespaced_pod_log(pod, self.namespace, follow=follow, _preload_content=False),
            )
            buffer = b""
            for chunk in response.stream(4096):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                yield from (line.decode(errors="replace") for line in lines)
            if buffer:
                yield buffer.decode(errors="replace")


def _api_client(context: str | None):
    """An API client from the kubeconfig (KUBECONFIG or ~/.kube/config), else the pod's service account."""
    from kubernetes import client, config

    try:
        return config.new_client_from_config(context=context)
    except (config.ConfigException, OSError) as err:
        kubeconfig_problem = str(err)
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        raise MlkubeError(
            f"no usable kubeconfig ({kubeconfig_problem}) and not running in a pod",
            "point KUBECONFIG at your cluster's config, or create a local cluster with deploy/kind/up.sh",
        ) from None


def _server_message(err: Any) -> str:
    """The `message` of the API server's Status body, else the HTTP reason."""
    import json

    body = getattr(err, "body", None)
    if isinstance(body, (str, bytes, bytearray)):
        with contextlib.suppress(TypeError, ValueError, AttributeError):
            return json.loads(body).get("message") or str(err.reason)
    return str(getattr(err, "reason", err))

"""The chart against hostile pods (issue 16, class 2): the rendered NetworkPolicies evaluated pod by pod with
a small label-selector matcher against a table of who must and must not reach whom; Ray's token
authentication; the model-signing key in every pod that signs or checks model cards; no service-account token
where no API is needed; size-limited scratch volumes and ephemeral-storage limits; the image tag of the
chart's own version."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from mlkube.cluster.chart import deep_merge, render
from mlkube.trainer.errors import MlkubeError
from tests.fixtures.k8s.schemas import problems
from tests.test_chart import (
    VALUES_FILES,
    by_kind,
    containers,
    helm_test_pod,
    objects,
    pod_templates,
    values_of,
)

pytestmark = pytest.mark.integration
CHART = Path(__file__).resolve().parents[1] / "helm" / "mlkube"
NAMESPACE = "ml"
MONITORING = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}


# ------------------------------------------------------------------------------ a NetworkPolicy evaluator
@dataclass(frozen=True)
class Pod:
    """A pod as NetworkPolicies see it: its namespace, its labels and its named container ports."""

    name: str
    namespace: str
    labels: dict = field(default_factory=dict)
    ports: dict = field(default_factory=dict)


def selects(selector: dict, labels: dict) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) applied to labels; {} selects all."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def namespace_labels(namespace: str) -> dict:
    return {"kubernetes.io/metadata.name": namespace}


def peer_matches(peer: dict, policy_namespace: str, pod: Pod) -> bool:
    assert "ipBlock" not in peer, "the chart names pods, never addresses"
    if "namespaceSelector" in peer:
        in_namespace = selects(peer["namespaceSelector"], namespace_labels(pod.namespace))
    else:
        in_namespace = pod.namespace == policy_namespace
    return in_namespace and selects(peer.get("podSelector", {}), pod.labels)


def port_matches(rule_ports: list | None, port: int, protocol: str, target: Pod) -> bool:
    """A rule's ports against a destination port; a named port is the target's container port of that name."""
    if not rule_ports:
        return True
    for entry in rule_ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        value = entry.get("port")
        if value is None:
            return True
        if isinstance(value, str):
            if target.ports.get(value) == port:
                return True
        elif value <= port <= entry.get("endPort", value):
            return True
    return False


def admits(
    policies: list[dict], direction: str, subject: Pod, other: Pod, port: int, protocol: str, target: Pod
):
    """Whether the policies selecting `subject` let this connection through in `direction`; no such policy:
    open."""
    mine = [
        p
        for p in policies
        if p["metadata"]["namespace"] == subject.namespace
        and selects(p["spec"]["podSelector"], subject.labels)
        and direction in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not mine:
        return True
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    return any(
        (
            not rule.get(peers_key)
            or any(peer_matches(peer, subject.namespace, other) for peer in rule[peers_key])
        )
        and port_matches(rule.get("ports"), port, protocol, target)
        for policy in mine
        for rule in policy["spec"].get(rules_key) or []
    )


def reachable(policies: list[dict], source: Pod, target: Pod, port: int, protocol: str = "TCP") -> bool:
    """The source's egress and the target's ingress both allow the connection."""
    return admits(policies, "Egress", source, target, port, protocol, target) and admits(
        policies, "Ingress", target, source, port, protocol, target
    )


# ------------------------------------------------------------------------------ the pods of two releases
def role_of(template: dict) -> str:
    labels = template["metadata"]["labels"]
    return labels.get("mlkube.dev/role") or labels["app.kubernetes.io/component"]


def release_pods(values: dict, release: str) -> tuple[list[dict], dict[str, Pod]]:
    """The release's NetworkPolicies and one pod per role, as the chart labels its pod templates."""
    objs = render(values, release, NAMESPACE).objects
    policies = [
        {**p, "metadata": {**p["metadata"], "namespace": NAMESPACE}} for p in by_kind(objs, "NetworkPolicy")
    ]
    pods = {}
    for obj in objs:
        for template in pod_templates(obj):
            ports = {p["name"]: p["containerPort"] for c in containers(template) for p in c.get("ports", [])}
            role = role_of(template)
            pods[role] = Pod(f"{release}/{role}", NAMESPACE, template["metadata"]["labels"], ports)
    return policies, pods


OUTSIDERS = {
    "stranger": Pod("stranger", NAMESPACE, {"app": "notebook"}),
    "other-namespace": Pod("other-namespace", "team-b", {"app": "notebook"}),
    "operator": Pod("operator", "kuberay-system", {"app.kubernetes.io/name": "kuberay-operator"}),
    "fake-operator": Pod("fake-operator", "team-b", {"app.kubernetes.io/name": "kuberay-operator"}),
    "ray-client": Pod("ray-client", NAMESPACE, {"mlkube.dev/ray-client": "true"}),
    "prometheus": Pod("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}),
    "kube-dns": Pod("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, {"dns": 53}),
    "internet": Pod("internet", "elsewhere", {}),
}


def everything(**overrides) -> dict:
    """Every workload (RayJob, ElasticJob with etcd, serving), Prometheus allowed on the exporter ports."""
    base = {
        "training": {"kind": "elasticjob"},
        "elastic": {"enabled": True},
        "serve": {"enabled": True},
        "networkPolicy": {"metricsFrom": [MONITORING]},
    }
    return deep_merge(base, overrides)


@pytest.fixture(scope="module")
def cluster() -> tuple[list[dict], dict[str, Pod]]:
    """Our release `demo` and another release `other` (another run) in one namespace, plus the outsiders."""
    ours, pods = release_pods(everything(), "demo")
    theirs, other_pods = release_pods(everything(), "other")
    return ours + theirs, {**pods, **{f"other-{k}": v for k, v in other_pods.items()}, **OUTSIDERS}


ANY = 23456  # a Ray worker port, object manager or gloo port: assigned at run time
# (source, target, port, protocol, allowed): the table of what must and must not be reachable.
REACH = [
    # Ray: the cluster talks to itself on any port; nobody else speaks GCS or the raylets.
    ("ray-worker", "ray-head", 6379, "TCP", True),
    ("ray-worker", "ray-head", ANY, "TCP", True),
    ("ray-head", "ray-worker", ANY, "TCP", True),
    ("ray-worker", "ray-worker", ANY, "TCP", True),
    ("driver", "ray-head", 8265, "TCP", True),
    ("driver", "ray-head", 6379, "TCP", False),
    ("driver", "ray-worker", ANY, "TCP", False),
    ("driver", "internet", 443, "TCP", False),
    ("operator", "ray-head", 8265, "TCP", True),
    ("operator", "ray-head", 6379, "TCP", False),
    ("operator", "ray-worker", ANY, "TCP", False),
    ("fake-operator", "ray-head", 8265, "TCP", False),
    ("ray-client", "ray-head", 10001, "TCP", True),
    ("ray-client", "ray-head", 8265, "TCP", True),
    ("ray-client", "ray-head", 6379, "TCP", False),
    ("ray-client", "ray-worker", ANY, "TCP", False),
    ("stranger", "ray-head", 8265, "TCP", False),
    ("stranger", "ray-head", 10001, "TCP", False),
    ("stranger", "ray-head", 6379, "TCP", False),
    ("stranger", "ray-head", 52365, "TCP", False),
    ("stranger", "ray-worker", ANY, "TCP", False),
    ("other-namespace", "ray-head", 8265, "TCP", False),
    ("other-ray-worker", "ray-head", 6379, "TCP", False),
    ("other-driver", "ray-head", 8265, "TCP", False),
    ("ray-worker", "other-ray-head", 6379, "TCP", False),
    ("worker", "ray-head", 8265, "TCP", False),
    ("server", "ray-head", 8265, "TCP", False),
    ("ray-worker", "internet", 443, "TCP", False),
    ("ray-worker", "kube-dns", 53, "UDP", True),
    ("ray-head", "kube-dns", 53, "UDP", True),
    # Training: rendezvous and collectives among themselves; etcd only for them.
    ("worker", "worker", 29400, "TCP", True),
    ("worker", "worker", ANY, "TCP", True),
    ("worker", "rendezvous", 2379, "TCP", True),
    ("worker", "kube-dns", 53, "UDP", True),
    ("worker", "internet", 443, "TCP", False),
    ("worker", "ray-head", 6379, "TCP", False),
    ("stranger", "worker", 29400, "TCP", False),
    ("stranger", "rendezvous", 2379, "TCP", False),
    ("ray-worker", "rendezvous", 2379, "TCP", False),
    ("server", "rendezvous", 2379, "TCP", False),
    ("other-worker", "rendezvous", 2379, "TCP", False),
    ("other-worker", "worker", 29400, "TCP", False),
    ("worker", "other-rendezvous", 2379, "TCP", False),
    ("rendezvous", "worker", ANY, "TCP", False),
    ("rendezvous", "internet", 443, "TCP", False),
    # Serving: inference for everyone, metrics for Prometheus, management for nobody; out only DNS.
    ("stranger", "server", 8080, "TCP", True),
    ("stranger", "server", 8081, "TCP", False),
    ("stranger", "server", 8082, "TCP", False),
    ("server", "kube-dns", 53, "UDP", True),
    ("server", "kube-dns", 53, "TCP", True),
    ("server", "internet", 443, "TCP", False),
    ("server", "stranger", 80, "TCP", False),
    ("server", "worker", 29400, "TCP", False),
    # Prometheus: every exporter port, nothing else.
    ("prometheus", "server", 8082, "TCP", True),
    ("prometheus", "server", 8081, "TCP", False),
    ("prometheus", "ray-head", 9400, "TCP", True),
    ("prometheus", "ray-head", 8265, "TCP", False),
    ("prometheus", "worker", 9400, "TCP", True),
    ("prometheus", "worker", 29400, "TCP", False),
    ("prometheus", "rendezvous", 2379, "TCP", False),
    ("stranger", "worker", 9400, "TCP", False),
    ("stranger", "ray-head", 9400, "TCP", False),
]


@pytest.mark.parametrize(
    ("source", "target", "port", "protocol", "allowed"),
    REACH,
    ids=[f"{s}->{t}:{p}/{proto}-{'open' if a else 'closed'}" for s, t, p, proto, a in REACH],
)
def test_network_policies_let_through_exactly_the_intended_peers(
    cluster, source, target, port, protocol, allowed
):
    policies, pods = cluster
    assert reachable(policies, pods[source], pods[target], port, protocol) is allowed


def test_every_pod_of_every_workload_has_an_ingress_and_egress_policy():
    for name in VALUES_FILES:
        policies, pods = release_pods(
            deep_merge(values_of(name), {"networkPolicy": {"metricsFrom": [MONITORING]}}), "demo"
        )
        for role, pod in pods.items():
            types = {
                t
                for p in policies
                if selects(p["spec"]["podSelector"], pod.labels)
                for t in p["spec"]["policyTypes"]
            }
            autoscaler = role == "ray-head" and values_of(name).get("ray", {}).get("autoscaling", True)
            expected = {"Ingress"} if autoscaler else {"Ingress", "Egress"}  # the autoscaler: the API
            assert types == expected, (name, role)


def test_without_autoscaling_the_ray_head_reaches_only_its_cluster_and_dns():
    policies, pods = release_pods(everything(ray={"autoscaling": False}), "demo")
    assert not reachable(policies, pods["ray-head"], OUTSIDERS["internet"], 443)
    assert reachable(policies, pods["ray-head"], pods["ray-worker"], ANY)
    assert reachable(policies, pods["ray-head"], OUTSIDERS["kube-dns"], 53, "UDP")


def test_a_raycluster_head_takes_drivers_from_ray_client_peers_and_not_from_the_operator():
    policies, pods = release_pods(everything(ray={"mode": "cluster"}), "demo")
    assert "driver" not in pods
    head = pods["ray-head"]
    assert reachable(policies, OUTSIDERS["ray-client"], head, 10001)
    assert not reachable(policies, OUTSIDERS["operator"], head, 8265)
    assert not reachable(policies, OUTSIDERS["stranger"], head, 10001)


def test_the_pytorchjob_workers_reach_each_other_and_no_etcd_is_started():
    policies, pods = release_pods(everything(training={"kind": "pytorchjob"}), "demo")
    assert "rendezvous" not in pods
    assert reachable(policies, pods["worker"], pods["worker"], 29400)
    assert not reachable(policies, OUTSIDERS["stranger"], pods["worker"], 29400)


def test_the_trainjob_nodes_reach_each_other_and_nobody_else_does():
    """Trainer v2's pods are its runtime's pod template: the chart's labels, so the training policy holds them
    (Trainer and JobSet add their own labels, trainer.kubeflow.org/* and jobset.sigs.k8s.io/*, which no policy
    here selects on)."""
    policies, pods = release_pods(everything(training={"kind": "trainjob"}), "demo")
    theirs, other = release_pods(everything(training={"kind": "trainjob"}), "other")
    policies = policies + theirs
    assert "rendezvous" not in pods
    node = pods["worker"]
    assert node.ports["rdzv"] == 29500  # PET_MASTER_PORT of Trainer v2's torch plugin
    assert reachable(policies, node, node, 29500) and reachable(policies, node, node, ANY)
    assert reachable(policies, node, OUTSIDERS["kube-dns"], 53, "UDP")
    assert reachable(policies, OUTSIDERS["prometheus"], node, 9400)
    for outsider in ("stranger", "other-namespace", "ray-client"):
        assert not reachable(policies, OUTSIDERS[outsider], node, 29500), outsider
    assert not reachable(policies, other["worker"], node, 29500)
    assert not reachable(policies, node, other["worker"], 29500)
    assert not reachable(policies, node, OUTSIDERS["internet"], 443)
    assert not reachable(policies, pods["server"], node, 29500)
    assert not reachable(policies, node, pods["ray-head"], 6379)


def test_serving_metrics_peers_of_both_values_are_admitted():
    values = everything(
        serve={"networkPolicy": {"metricsFrom": [{"podSelector": {"matchLabels": {"app": "x"}}}]}}
    )
    policies, pods = release_pods(values, "demo")
    assert reachable(policies, OUTSIDERS["prometheus"], pods["server"], 8082)
    assert reachable(policies, Pod("x", NAMESPACE, {"app": "x"}), pods["server"], 8082)


def test_the_network_policy_switch_turns_the_workload_policies_off():
    objs = objects(everything(networkPolicy={"enabled": False}, serve={"networkPolicy": {"enabled": False}}))
    assert by_kind(objs, "NetworkPolicy") == []


def test_a_podmonitor_behind_closed_exporter_ports_is_refused():
    with pytest.raises(MlkubeError, match="add Prometheus to networkPolicy.metricsFrom"):
        render({"metrics": {"podMonitor": {"enabled": True}}}, "demo", NAMESPACE)


def test_the_selector_matcher_follows_the_kubernetes_rules():
    labels = {"a": "1", "b": "2"}
    assert selects({}, labels) and selects({"matchLabels": {"a": "1"}}, labels)
    assert not selects({"matchLabels": {"a": "2"}}, labels)
    assert selects({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "3"]}]}, labels)
    assert not selects({"matchExpressions": [{"key": "c", "operator": "Exists"}]}, labels)
    assert selects({"matchExpressions": [{"key": "c", "operator": "DoesNotExist"}]}, labels)
    assert not selects({"matchExpressions": [{"key": "b", "operator": "NotIn", "values": ["2"]}]}, labels)


# ------------------------------------------------------------------------------ Ray's token authentication
def ray_cluster_specs(values: dict) -> list[dict]:
    objs = objects(values)
    return [o["spec"]["rayClusterSpec"] for o in by_kind(objs, "RayJob")] + [
        o["spec"] for o in by_kind(objs, "RayCluster")
    ]


@pytest.mark.parametrize("mode", ["job", "cluster"])
def test_ray_token_authentication_is_on_by_default(mode):
    (spec,) = ray_cluster_specs({"ray": {"mode": mode}})
    assert spec["authOptions"] == {"mode": "token"} and spec["rayVersion"] >= "2.52.0"


def test_ray_token_authentication_can_be_turned_off():
    (spec,) = ray_cluster_specs({"ray": {"auth": "disabled"}})
    assert spec["authOptions"] == {"mode": "disabled"}


def test_token_authentication_on_a_ray_too_old_for_it_is_refused():
    with pytest.raises(MlkubeError, match=r"ray.auth token needs Ray 2.52.0 or newer"):
        render({"ray": {"version": "2.47.1"}}, "demo", NAMESPACE)


def test_notes_tell_a_raycluster_driver_where_the_token_is():
    notes = render({"ray": {"mode": "cluster"}}, "demo", NAMESPACE).notes
    assert "RAY_AUTH_MODE=token" in notes and "secret demo-ray" in notes and "mlkube.dev/ray-client" in notes


# ------------------------------------------------------------------------------ the model-signing key
SIGNING_FILE = "/etc/mlkube/signing/key"
SIGNED = {  # workload → values that render it; every pod of these writes or checks model cards
    "RayJob": {},
    "RayCluster": {"ray": {"mode": "cluster"}},
    "TrainingRuntime": {"elastic": {"enabled": True}},  # the TrainJob's pods
    "PyTorchJob": {"training": {"kind": "pytorchjob"}, "elastic": {"enabled": True}},
    "ElasticJob": {"training": {"kind": "elasticjob"}, "elastic": {"enabled": True}},
    "Deployment": {"serve": {"enabled": True}, "ray": {"enabled": False}},
}


def signing_pods(obj: dict) -> list[dict]:
    """The pods that sign or check model cards: all but the RayJob's submitter."""
    return [t for t in pod_templates(obj) if role_of(t) != "driver"]


@pytest.mark.parametrize("kind", sorted(SIGNED))
def test_every_model_writing_or_serving_pod_mounts_the_signing_key_read_only(kind):
    (obj,) = by_kind(objects(SIGNED[kind]), kind)
    assert problems(obj) == []
    for template in signing_pods(obj):
        assert {
            "name": "signing",
            "secret": {
                "secretName": "mlkube-signing",
                "items": [{"key": "key", "path": "key"}],
                "defaultMode": 0o440,
            },
        } in template["spec"]["volumes"]
        for container in containers(template):
            assert {"name": "signing", "mountPath": "/etc/mlkube/signing", "readOnly": True} in container[
                "volumeMounts"
            ]
            assert {"name": "MLKUBE_SIGNING_KEY_FILE", "value": SIGNING_FILE} in container["env"]


def test_the_signing_secret_is_the_one_named_in_the_values():
    (job,) = by_kind(
        objects({"elastic": {"enabled": True}, "signing": {"secretName": "team-key"}}), "TrainingRuntime"
    )
    (volume,) = [v for v in pod_templates(job)[0]["spec"]["volumes"] if v["name"] == "signing"]
    assert volume["secret"]["secretName"] == "team-key"


def test_pods_that_never_touch_models_get_no_signing_key():
    objs = objects(everything())
    (job,) = by_kind(objs, "RayJob")
    (etcd,) = [d for d in by_kind(objs, "Deployment") if d["metadata"]["name"] == "demo-etcd"]
    for template in (
        job["spec"]["submitterPodTemplate"],
        etcd["spec"]["template"],
        helm_test_pod(everything()),
    ):
        assert "signing" not in str(template["spec"].get("volumes")), role_of(template)


# ------------------------------------------------------------------------------ tokens, scratch, image
def all_pod_templates(values: dict) -> list[dict]:
    return [t for o in objects(values) for t in pod_templates(o)] + (
        [helm_test_pod(values)] if values.get("serve", {}).get("enabled") else []
    )


def every_values() -> list[dict]:
    return [values_of(name) for name in VALUES_FILES] + [everything()]


def test_no_pod_but_the_autoscaling_ray_head_mounts_a_service_account_token():
    for autoscaling in (True, False):
        for template in all_pod_templates(everything(ray={"autoscaling": autoscaling})):
            wants_api = role_of(template) == "ray-head" and autoscaling  # KubeRay's autoscaler sidecar
            assert template["spec"]["automountServiceAccountToken"] is wants_api, role_of(template)


def test_every_emptydir_has_a_size_limit():
    for values in every_values():
        for template in all_pod_templates(values):
            for volume in template["spec"].get("volumes", []):
                if "emptyDir" in volume:
                    assert volume["emptyDir"].get("sizeLimit"), (role_of(template), volume["name"])


def test_every_container_limits_its_ephemeral_storage():
    for values in every_values():
        for template in all_pod_templates(values):
            for container in containers(template):
                assert "ephemeral-storage" in container["resources"]["limits"], container["name"]


def test_the_default_image_is_the_charts_own_version():
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    images = {c["image"] for t in all_pod_templates({"serve": {"enabled": True}}) for c in containers(t)}
    assert images == {f"mlkube:{app_version}"}
    gpu = {c["image"] for t in all_pod_templates({"gpu": True}) for c in containers(t)}
    assert gpu == {f"mlkube:{app_version}-gpu"}
    pinned = {c["image"] for t in all_pod_templates({"image": {"tag": "1.2"}}) for c in containers(t)}
    assert pinned == {"mlkube:1.2"}

"""The Helm chart, rendered by a real Helm engine (helm-python-sdk) for several values files, every manifest checked
against the Kubernetes schemas and the vendored CRD schemas; each values.schema.json rule and template rule tested by
rendering a bad value; `mlkube submit`'s objects are the chart's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.fixtures.k8s.schemas import CRDS, crd_schemas, problems
from trainer.cluster import CHART_KINDS
from trainer.cluster_chart import CHART, deep_merge, render, values_for
from trainer.errors import MlkubeError
from trainer.spec import parse_spec

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
KIND = ROOT / "deploy" / "kind"
# Ids never equal a marker name (a test id `gpu` would be skipped as a gpu test).
VALUES_FILES = {"defaults": None, "kind-values": KIND / "values.yaml",
                **{p.stem: p for p in sorted((CHART / "ci").glob("*.yaml"))}}


def values_of(name: str) -> dict:
    path = VALUES_FILES[name]
    return yaml.safe_load(path.read_text()) if path else {}


def kind_everything() -> dict:
    """deploy/kind's values with every workload on and the e2e experiment."""
    experiment = yaml.safe_load((KIND / "experiment.yaml").read_text())
    return deep_merge(values_of("kind-values"), {"elastic": {"enabled": True}, "serve": {"enabled": True},
                                                 "experiment": experiment})


def objects(values: dict, release: str = "demo", namespace: str = "ml") -> list[dict]:
    return render(values, release, namespace).objects


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def only(objs: list[dict], kind: str) -> dict:
    (obj,) = by_kind(objs, kind)
    return obj


def containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def pod_templates(obj: dict) -> list[dict]:
    """Every pod template inside a workload object."""
    spec = obj.get("spec", {})
    if obj["kind"] == "Deployment":
        return [spec["template"]]
    if obj["kind"] == "RayJob":
        return [spec["submitterPodTemplate"], *pod_templates({"kind": "RayCluster", "spec": spec["rayClusterSpec"]})]
    if obj["kind"] == "RayCluster":
        return [spec["headGroupSpec"]["template"], *(g["template"] for g in spec["workerGroupSpecs"])]
    if obj["kind"] == "PyTorchJob":
        return [r["template"] for r in spec["pytorchReplicaSpecs"].values()]
    if obj["kind"] == "ElasticJob":
        return [r["template"] for r in spec["replicaSpecs"].values()]
    if obj["kind"] == "Pod":
        return [obj]
    return []


# ------------------------------------------------------------------------------------------ engine and schemas
def test_chart_lints_clean_with_helm():
    import helm_python as helm

    report = helm.lint(str(CHART), strict=True)
    assert report["errors"] == [], report
    assert [m for m in report["messages"] if m["severity"] > 1] == [], report["messages"]


@pytest.mark.parametrize("name", sorted(VALUES_FILES))
def test_every_rendered_manifest_matches_its_schema(name):
    rendered = render(values_of(name), "demo", "ml")
    found = [p for obj in rendered.objects for p in problems(obj)]
    assert rendered.objects and found == []


def test_helm_test_pod_matches_the_pod_schema():
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        text = chart.render({"serve": {"enabled": True}}, name="demo", namespace="ml")["mlkube/templates/tests/predict.yaml"]
    pod = yaml.safe_load(text)
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert problems(pod) == []


def test_crd_schemas_are_vendored_for_every_custom_kind():
    assert {("ray.io/v1", "RayJob"), ("ray.io/v1", "RayCluster"), ("kubeflow.org/v1", "PyTorchJob"),
            ("elastic.pytorch.org/v1alpha1", "ElasticJob")} <= set(crd_schemas())
    readme = (CRDS / "README.md").read_text()
    for path in CRDS.glob("*.yaml"):
        assert path.name in readme, f"{path.name}: source and version missing from deploy/crds/README.md"


def test_a_misspelt_field_in_a_custom_resource_is_caught():
    rayjob = only(objects({}), "RayJob")
    rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Never"
    assert any("'imagePullPolicyy' was unexpected" in p for p in problems(rayjob))


def test_a_wrongly_typed_field_in_a_custom_resource_is_caught():
    job = only(objects({"elastic": {"enabled": True}}), "PyTorchJob")
    job["spec"]["elasticPolicy"]["minReplicas"] = "one"
    assert any("elasticPolicy.minReplicas: 'one' is not of type 'integer'" in p for p in problems(job))


def test_every_kind_the_chart_renders_is_one_mlkube_delete_removes():
    rendered = {(o["apiVersion"], o["kind"]) for name in VALUES_FILES for o in objects(values_of(name))}
    assert rendered - {("v1", "PersistentVolumeClaim")} <= set(CHART_KINDS)
    assert {kind for _, kind in rendered} >= {"RayJob", "RayCluster", "PyTorchJob", "ElasticJob", "Deployment",
                                              "HorizontalPodAutoscaler", "ServiceMonitor", "NetworkPolicy"}


# ------------------------------------------------------------------------------------------ what the objects say
def test_run_id_is_the_ray_job_id_the_rendezvous_id_and_the_run_folder():
    objs = objects({"runId": "exp-7", "elastic": {"enabled": True}})
    rayjob, pytorchjob = only(objs, "RayJob"), only(objs, "PyTorchJob")
    assert rayjob["spec"]["jobId"] == "exp-7"
    assert rayjob["spec"]["entrypoint"] == "mlkube run /spec/experiment.yaml --run-id exp-7"
    assert pytorchjob["spec"]["elasticPolicy"]["rdzvId"] == "exp-7"
    args = containers(pod_templates(pytorchjob)[0])[0]["args"]
    assert "--rdzv-id=exp-7" in args and args[-2:] == ["--run-dir", "/runs/exp-7"]


def test_run_id_defaults_to_the_release_name():
    assert only(objects({}, release="nightly"), "RayJob")["spec"]["jobId"] == "nightly"


def test_two_releases_never_share_a_rendezvous():
    ids = {only(objects({"elastic": {"enabled": True}}, release=r), "PyTorchJob")["spec"]["elasticPolicy"]["rdzvId"]
           for r in ("a", "b")}
    assert ids == {"a", "b"}


def test_torchrun_launches_the_elastic_entrypoint_with_the_elastic_values():
    job = only(objects({"elastic": {"enabled": True, "minNodes": 2, "maxNodes": 4, "nprocPerNode": 3, "maxRestarts": 5}}),
               "PyTorchJob")
    (container,) = containers(pod_templates(job)[0])
    assert container["name"] == "pytorch" and container["command"] == ["torchrun"]
    assert container["args"][:6] == ["--nnodes=2:4", "--nproc-per-node=3", "--rdzv-backend=c10d",
                                     "--rdzv-endpoint=demo-train-worker-0:29400", "--rdzv-id=demo", "--max-restarts=5"]
    assert container["args"][6:8] == ["-m", "trainer.lstm.elastic"]
    assert (job["spec"]["elasticPolicy"]["minReplicas"], job["spec"]["elasticPolicy"]["maxReplicas"]) == (2, 4)


def test_elasticjob_rendezvous_is_the_etcd_service_the_chart_starts():
    objs = objects(values_of("torchelastic-values"))
    job = only(objs, "ElasticJob")
    service = next(s for s in by_kind(objs, "Service") if s["metadata"]["name"] == "demo-etcd")
    assert job["spec"]["rdzvEndpoint"] == "demo-etcd:2379" and service["spec"]["ports"][0]["port"] == 2379
    args = containers(pod_templates(job)[0])[0]["args"]
    assert "--rdzv-backend=etcd" in args and "--rdzv-endpoint=demo-etcd:2379" in args
    etcd = only(objs, "Deployment")
    assert "--enable-v2" in containers(etcd["spec"]["template"])[0]["args"]


def test_gpu_values_request_gpus_and_ray_workers_declare_them():
    objs = objects(values_of("gpu-values"))
    worker_group = only(objs, "RayJob")["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert worker_group["rayStartParams"] == {"num-gpus": "1"}
    assert containers(worker_group["template"])[0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    training = pod_templates(only(objs, "PyTorchJob"))[0]
    assert containers(training)[0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert "--nproc-per-node=2" in containers(training)[0]["args"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in training["spec"]["tolerations"]


def test_cpu_fallback_requests_no_gpu_anywhere():
    text = json.dumps(objects(kind_everything()))
    assert "nvidia.com/gpu" not in text and "num-gpus" not in text


def test_ray_workers_autoscale_between_min_and_max():
    spec = only(objects({"ray": {"workers": {"minReplicas": 2, "maxReplicas": 5}}}), "RayJob")["spec"]["rayClusterSpec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert (spec["workerGroupSpecs"][0]["minReplicas"], spec["workerGroupSpecs"][0]["maxReplicas"]) == (2, 5)


def test_ray_cluster_mode_makes_a_long_lived_raycluster_and_no_rayjob():
    objs = objects({"ray": {"mode": "cluster"}})
    assert by_kind(objs, "RayJob") == [] and only(objs, "RayCluster")["metadata"]["name"] == "demo-ray"
    assert "ray://demo-ray-head-svc.ml.svc:10001" in render({"ray": {"mode": "cluster"}}, "demo", "ml").notes


def test_every_pod_runs_as_non_root_without_privilege_escalation_and_with_limits():
    for name in VALUES_FILES:
        for obj in objects(values_of(name)):
            for template in pod_templates(obj):
                assert template["spec"]["securityContext"]["runAsNonRoot"] is True, obj["metadata"]["name"]
                for container in containers(template):
                    security = container["securityContext"]
                    assert security["allowPrivilegeEscalation"] is False and security["capabilities"] == {"drop": ["ALL"]}
                    assert security["readOnlyRootFilesystem"] is True
                    assert {"requests", "limits"} <= set(container["resources"]), container["name"]


def test_tuning_training_and_serving_share_one_runs_claim():
    objs = objects(kind_everything())
    claims = {v["persistentVolumeClaim"]["claimName"] for o in objs for t in pod_templates(o)
              for v in t["spec"].get("volumes", []) if "persistentVolumeClaim" in v}
    assert claims == {"demo-runs"} and only(objs, "PersistentVolumeClaim")["metadata"]["name"] == "demo-runs"


def test_an_existing_claim_is_used_and_not_created():
    objs = objects(values_of("serving-values"))
    assert by_kind(objs, "PersistentVolumeClaim") == []
    volumes = only(objs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "runs", "persistentVolumeClaim": {"claimName": "mlkube-runs"}} in volumes


def test_the_mounted_spec_is_a_valid_experiment_that_writes_to_the_runs_volume():
    config = only(objects(kind_everything()), "ConfigMap")
    spec = parse_spec(config["data"]["experiment.yaml"])
    assert str(spec.run_dir) == "/runs" and spec.serve.host == "0.0.0.0" and spec.metrics.port == 9400
    assert spec.runs_classical and spec.runs_lstm


def test_serving_deployment_service_probes_token_and_scrape_annotations():
    objs = objects(values_of("serving-values"))
    deployment, service = only(objs, "Deployment"), only(objs, "Service")
    template = deployment["spec"]["template"]
    (container,) = containers(template)
    assert container["command"] == ["mlkube", "serve", "/runs/tuned-run"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"inference": 8080, "management": 8081, "metrics": 8082}
    assert {p["name"] for p in service["spec"]["ports"]} == {"inference", "management", "metrics"}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/ping", "port": "inference"}
    token = next(e for e in container["env"] if e["name"] == "MLKUBE_SERVE_TOKEN")
    assert token["valueFrom"]["secretKeyRef"]["name"] == only(objs, "Secret")["metadata"]["name"]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "8082"
    assert "replicas" not in deployment["spec"]  # the HorizontalPodAutoscaler owns it
    hpa = only(objs, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert only(objs, "ServiceMonitor")["spec"]["endpoints"][0]["port"] == "metrics"


def test_network_policy_lets_only_the_inference_port_in():
    policy = only(objects({"serve": {"enabled": True}, "ray": {"enabled": False}}), "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8080}]}]


def test_metrics_peers_may_reach_the_metrics_port_only():
    rules = only(objects(values_of("serving-values")), "NetworkPolicy")["spec"]["ingress"]
    assert rules[1]["ports"] == [{"protocol": "TCP", "port": 8082}] and "from" in rules[1] and "from" not in rules[0]


def test_the_given_serve_token_is_stored_and_an_empty_one_is_generated():
    given = only(objects({"serve": {"enabled": True, "token": "s3cret"}}), "Secret")
    assert given["data"]["token"] == "czNjcmV0"
    generated = [only(objects({"serve": {"enabled": True}}), "Secret")["data"]["token"] for _ in range(2)]
    assert generated[0] != generated[1] and len(generated[0]) > 40


def test_notes_tell_how_to_predict_with_the_token():
    notes = render(values_of("serving-values"), "demo", "ml").notes
    assert "port-forward svc/demo-serve 8080:8080" in notes
    assert "get secret demo-serve-token" in notes and "/predictions/best" in notes and "helm test demo" in notes


def test_tuning_and_training_pods_carry_scrape_annotations_for_mlkube_metrics():
    objs = objects({"elastic": {"enabled": True}, "metrics": {"port": 9500}})
    for obj in by_kind(objs, "PyTorchJob") + by_kind(objs, "RayJob"):
        for template in pod_templates(obj)[obj["kind"] == "RayJob":]:
            assert template["metadata"]["annotations"]["prometheus.io/port"] == "9500"
    assert "annotations" not in pod_templates(only(objects({"metrics": {"port": None}}), "RayJob"))[1]["metadata"]


def test_image_version_of_ray_matches_the_dockerfile():
    dockerfile = (ROOT / "Dockerfile").read_text()
    (pinned,) = re.findall(r"ARG RAY_VERSION=(\S+)", dockerfile)
    assert yaml.safe_load((CHART / "values.yaml").read_text())["ray"]["version"] == pinned


# ------------------------------------------------------------------------------------------ submit = chart
def test_submit_values_from_a_spec_render_the_specs_workload():
    spec = parse_spec("data: {name: iris}\nlstm: {elastic: {min_nodes: 2, max_nodes: 3, nproc_per_node: 2}}\n"
                      "cluster: {image: 'registry:5000/team/mlkube:1.2', gpu: true}\n")
    objs = render(values_for(spec, "elastic", "r1"), "mlkube-r1", "ml").objects
    assert {o["kind"] for o in objs} == {"ConfigMap", "PersistentVolumeClaim", "PyTorchJob"}
    job = only(objs, "PyTorchJob")
    (container,) = containers(pod_templates(job)[0])
    assert container["image"] == "registry:5000/team/mlkube:1.2"
    assert container["args"][:2] == ["--nnodes=2:3", "--nproc-per-node=1"]  # gpu: one process per GPU
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert only(objs, "PersistentVolumeClaim")["metadata"]["name"] == "mlkube-runs"


def test_submit_values_files_override_the_spec():
    spec = parse_spec("data: {name: iris}\n")
    objs = render(values_for(spec, "ray", "r2", [{"ray": {"mode": "cluster"}}]), "mlkube-r2", "ml").objects
    assert by_kind(objs, "RayCluster") and not by_kind(objs, "RayJob")


def test_objects_come_in_apply_order_storage_and_config_first():
    kinds = [o["kind"] for o in objects(kind_everything())]
    assert kinds.index("PersistentVolumeClaim") < kinds.index("ConfigMap") < kinds.index("Secret") < kinds.index("RayJob")


# ------------------------------------------------------------------------------------------ bad values
SCHEMA_RULES = [
    ({"runId": "Exp_1"}, "runId: 'Exp_1' does not match pattern"),
    ({"runId": "a" * 31}, "runId: maxLength: got 31, want 30"),
    ({"image": {"repository": ""}}, "image.repository: minLength: got 0, want 1"),
    ({"image": {"pullPolicy": "Sometimes"}}, "image.pullPolicy: value must be one of"),
    ({"gpu": "yes"}, "gpu: got string, want boolean"),
    ({"runs": {"accessMode": "ReadMany"}}, "runs.accessMode: value must be one of"),
    ({"runs": {"size": "lots"}}, "runs.size: 'lots' does not match pattern"),
    ({"runs": {"mountPath": "runs"}}, "runs.mountPath: 'runs' does not match pattern"),
    ({"metrics": {"port": 70000}}, "metrics.port: maximum: got 70,000, want 65,535"),
    ({"security": {"runAsUser": 0}}, "security.runAsUser: minimum: got 0, want 1"),
    ({"ray": {"mode": "forever"}}, "ray.mode: value must be one of 'job', 'cluster'"),
    ({"ray": {"version": "latest"}}, "ray.version: 'latest' does not match pattern"),
    ({"ray": {"stages": "evaluate;rm"}}, "ray.stages: 'evaluate;rm' does not match pattern"),
    ({"ray": {"workers": {"maxReplicas": 0}}}, "ray.workers.maxReplicas: minimum: got 0, want 1"),
    ({"ray": {"head": {"resources": {"requests": {"cpu": "two"}}}}}, "ray.head.resources.requests.cpu: 'two' does not match"),
    ({"elastic": {"operator": "mpi"}}, "elastic.operator: value must be one of 'kubeflow', 'torchelastic'"),
    ({"elastic": {"minNodes": 0}}, "elastic.minNodes: minimum: got 0, want 1"),
    ({"elastic": {"nprocPerNode": 0}}, "elastic.nprocPerNode: minimum: got 0, want 1"),
    ({"elastic": {"maxRestarts": -1}}, "elastic.maxRestarts: minimum: got -1, want 0"),
    ({"elastic": {"rdzvPort": 0}}, "elastic.rdzvPort: minimum: got 0, want 1"),
    ({"serve": {"replicas": 0}}, "serve.replicas: minimum: got 0, want 1"),
    ({"serve": {"ports": {"inference": 65536}}}, "serve.ports.inference: maximum: got 65,536, want 65,535"),
    ({"serve": {"service": {"type": "Ingress"}}}, "serve.service.type: value must be one of"),
    ({"serve": {"autoscaling": {"targetCPUUtilizationPercentage": 150}}}, "serve.autoscaling.targetCPUUtilizationPercentage: maximum"),
    ({"serve": {"serviceMonitor": {"interval": "often"}}}, "serve.serviceMonitor.interval: 'often' does not match"),
    ({"serve": {"test": {"model": ""}}}, "serve.test.model: minLength: got 0, want 1"),
    ({"serve": {"tokn": "x"}}, "serve: additional properties 'tokn' not allowed"),
    ({"raay": {}}, "<top level>: additional properties 'raay' not allowed"),
    ({"serve": {"runId": "Run 1"}}, "serve.runId: 'Run 1' does not match pattern"),
    ({"runs": {"claimName": "c" * 64}}, "runs.claimName: maxLength: got 64, want 63"),
    ({"image": {"tag": ""}}, "image.tag: minLength: got 0, want 1"),
    ({"elastic": {"maxNodes": 0}}, "elastic.maxNodes: minimum: got 0, want 1"),
    ({"elastic": {"gpusPerNode": 0}}, "elastic.gpusPerNode: minimum: got 0, want 1"),
    ({"elastic": {"etcd": {"image": ""}}}, "elastic.etcd.image: minLength: got 0, want 1"),
    ({"ray": {"workers": {"replicas": -1}}}, "ray.workers.replicas: minimum: got -1, want 0"),
    ({"ray": {"workers": {"minReplicas": -1}}}, "ray.workers.minReplicas: minimum: got -1, want 0"),
    ({"ray": {"workers": {"gpusPerWorker": 0}}}, "ray.workers.gpusPerWorker: minimum: got 0, want 1"),
    ({"ray": {"ttlSecondsAfterFinished": -5}}, "ray.ttlSecondsAfterFinished: minimum: got -5, want 0"),
    ({"security": {"fsGroup": 0}}, "security.fsGroup: minimum: got 0, want 1"),
    ({"serve": {"autoscaling": {"minReplicas": 0}}}, "serve.autoscaling.minReplicas: minimum: got 0, want 1"),
    ({"serve": {"autoscaling": {"maxReplicas": 0}}}, "serve.autoscaling.maxReplicas: minimum: got 0, want 1"),
    ({"serve": {"test": {"payload": "{"}}}, "serve.test.payload: minLength: got 1, want 2"),
]


@pytest.mark.parametrize(("bad", "message"), SCHEMA_RULES, ids=[f"bad-{m.split(':')[0]}" for _, m in SCHEMA_RULES])
def test_a_bad_value_fails_with_a_message_naming_it(bad, message):
    with pytest.raises(MlkubeError) as err:
        render(bad, "demo", "ml")
    assert message in str(err.value)


TEMPLATE_RULES = [
    ({"elastic": {"minNodes": 3, "maxNodes": 2}}, "elastic.minNodes (3) must be <= elastic.maxNodes (2)"),
    ({"ray": {"workers": {"minReplicas": 4, "maxReplicas": 2}}}, "ray.workers.minReplicas (4) must be <= ray.workers.maxReplicas (2)"),
    ({"serve": {"autoscaling": {"minReplicas": 5, "maxReplicas": 1}}}, "serve.autoscaling.minReplicas (5) must be <= "),
    ({"runs": {"create": False}}, "runs.create is false: set runs.claimName"),
    ({"ray": {"enabled": False}}, "nothing to deploy: enable ray, elastic or serve"),
]


@pytest.mark.parametrize(("bad", "message"), TEMPLATE_RULES, ids=[f"bad-{m.split(' ')[0]}" for _, m in TEMPLATE_RULES])
def test_a_rule_across_values_fails_with_the_fix(bad, message):
    with pytest.raises(MlkubeError) as err:
        render(bad, "demo", "ml")
    assert message in str(err.value) and "execution error" not in str(err.value)


def test_every_constrained_value_has_a_bad_value_test():
    """Each property with a rule (enum, pattern, bounds, lengths) is tested, itself or through a shared definition."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    tested = {re.match(r"^([\w.<> ]+?):", m).group(1) for _, m in SCHEMA_RULES}
    rules = ("enum", "pattern", "minimum", "maximum", "minLength", "maxLength")
    untested, covered_refs = [], {_ref_name(node) for path, node in _properties(schema) if path in tested}

    for path, node in _properties(schema):
        target = schema["definitions"].get(_ref_name(node), node)
        if any(rule in target for rule in rules) and path not in tested and _ref_name(node) not in covered_refs:
            untested.append(path)
    assert untested == []


def _ref_name(node: dict) -> str | None:
    ref = node.get("$ref")
    return ref.rsplit("/", 1)[-1] if ref else None


def _properties(schema: dict, node: dict | None = None, path: str = ""):
    """(dotted path, schema node) of every property, following $refs into definitions."""
    for key, sub in (node or schema).get("properties", {}).items():
        sub_path = f"{path}.{key}" if path else key
        yield sub_path, sub
        yield from _properties(schema, schema["definitions"].get(_ref_name(sub), sub), sub_path)

"""The Helm chart, rendered by a real Helm engine (helm-python-sdk) for several values files, every manifest
checked against the Kubernetes schemas and the vendored CRD schemas; each values.schema.json rule and template
rule tested by rendering a bad value; `mlkube submit`'s objects are the chart's. The `helm test` pod's script
runs against a real TorchServe; the Grafana dashboard's queries are parsed by promtool and checked against the
metrics the exporters really expose."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from mlkube.cluster.chart import deep_merge, render, values_for
from mlkube.cluster.jobs import CHART_KINDS
from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.spec import parse_spec
from tests.fixtures.k8s.schemas import CRDS, crd_schemas, problems

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
KIND = ROOT / "deploy" / "kind"
CHART = ROOT / "helm" / "mlkube"
# Ids never equal a marker name (a test id `gpu` would be skipped as a gpu test).
VALUES_FILES = {
    "defaults": None,
    "kind-values": KIND / "values.yaml",
    **{p.stem: p for p in sorted((CHART / "ci").glob("*.yaml"))},
}


PYTORCHJOB = {"training": {"kind": "pytorchjob"}, "elastic": {"enabled": True}}
TRAINJOB = {"training": {"kind": "trainjob"}, "elastic": {"enabled": True}}


def values_of(name: str) -> dict:
    path = VALUES_FILES[name]
    return yaml.safe_load(path.read_text()) if path else {}


def kind_everything() -> dict:
    """deploy/kind's values with every workload on and the e2e experiment."""
    experiment = yaml.safe_load((KIND / "experiment.yaml").read_text())
    return deep_merge(
        values_of("kind-values"),
        {"elastic": {"enabled": True}, "serve": {"enabled": True}, "experiment": experiment},
    )


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
        return [
            *([spec["submitterPodTemplate"]] if "submitterPodTemplate" in spec else []),
            *pod_templates({"kind": "RayCluster", "spec": spec["rayClusterSpec"]}),
        ]
    if obj["kind"] == "RayCluster":
        return [spec["headGroupSpec"]["template"], *(g["template"] for g in spec["workerGroupSpecs"])]
    if obj["kind"] == "PyTorchJob":
        return [r["template"] for r in spec["pytorchReplicaSpecs"].values()]
    if obj["kind"] == "ElasticJob":
        return [r["template"] for r in spec["replicaSpecs"].values()]
    if (
        obj["kind"] == "TrainingRuntime"
    ):  # a TrainJob's pods: its runtime's (the TrainJob sets the same container)
        return [job["template"]["spec"]["template"] for job in spec["template"]["spec"]["replicatedJobs"]]
    if obj["kind"] == "Pod":
        return [obj]
    return []


# ----------------------------------------------------------------------------------------- engine and schemas
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


def helm_test_pod(values: dict) -> dict:
    """The `helm test` pod (render() leaves hooks out, as a release applies them only on `helm test`)."""
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        return yaml.safe_load(
            chart.render(values, name="demo", namespace="ml")["mlkube/templates/tests/predict.yaml"]
        )


def test_helm_test_pod_matches_the_pod_schema():
    pod = helm_test_pod({"serve": {"enabled": True}})
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert problems(pod) == []


def test_crd_schemas_are_vendored_for_every_custom_kind():
    assert {
        ("ray.io/v1", "RayJob"),
        ("ray.io/v1", "RayCluster"),
        ("kubeflow.org/v1", "PyTorchJob"),
        ("elastic.pytorch.org/v1alpha1", "ElasticJob"),
        ("trainer.kubeflow.org/v1alpha1", "TrainJob"),
        ("trainer.kubeflow.org/v1alpha1", "TrainingRuntime"),
        ("trainer.kubeflow.org/v1alpha1", "ClusterTrainingRuntime"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PodMonitor"),
    } <= set(crd_schemas())
    readme = (CRDS / "README.md").read_text()
    for path in CRDS.glob("*.yaml"):
        assert path.name in readme, f"{path.name}: source and version missing from deploy/crds/README.md"


def test_a_misspelt_field_in_a_custom_resource_is_caught():
    rayjob = only(objects({}), "RayJob")
    rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0][
        "imagePullPolicyy"
    ] = "Never"
    assert any("'imagePullPolicyy' was unexpected" in p for p in problems(rayjob))


def test_a_wrongly_typed_field_in_a_custom_resource_is_caught():
    job = only(objects(PYTORCHJOB), "PyTorchJob")
    job["spec"]["elasticPolicy"]["minReplicas"] = "one"
    assert any("elasticPolicy.minReplicas: 'one' is not of type 'integer'" in p for p in problems(job))


def test_every_kind_the_chart_renders_is_one_mlkube_delete_removes():
    rendered = {(o["apiVersion"], o["kind"]) for name in VALUES_FILES for o in objects(values_of(name))}
    assert rendered - {("v1", "PersistentVolumeClaim")} <= set(CHART_KINDS)
    assert {kind for _, kind in rendered} >= {
        "RayJob",
        "RayCluster",
        "PyTorchJob",
        "ElasticJob",
        "TrainJob",
        "TrainingRuntime",
        "Deployment",
        "ServiceMonitor",
        "PodMonitor",
        "NetworkPolicy",
    }


# --------------------------------------------------------------------------------------- what the objects say
def test_run_id_is_the_ray_job_id_the_rendezvous_id_and_the_run_folder():
    objs = objects(deep_merge(PYTORCHJOB, {"runId": "exp-7"}))
    rayjob, pytorchjob = only(objs, "RayJob"), only(objs, "PyTorchJob")
    assert rayjob["spec"]["jobId"] == "exp-7"
    assert rayjob["spec"]["entrypoint"] == "mlkube run /spec/experiment.yaml --run-id exp-7"
    assert pytorchjob["spec"]["elasticPolicy"]["rdzvId"] == "exp-7"
    args = containers(pod_templates(pytorchjob)[0])[0]["args"]
    assert "--rdzv-id=exp-7" in args and args[-2:] == ["--run-dir", "/runs/exp-7"]


def test_run_id_defaults_to_the_release_name():
    assert only(objects({}, release="nightly"), "RayJob")["spec"]["jobId"] == "nightly"


def test_two_releases_never_share_a_rendezvous():
    ids = {
        only(objects(PYTORCHJOB, release=r), "PyTorchJob")["spec"]["elasticPolicy"]["rdzvId"]
        for r in ("a", "b")
    }
    assert ids == {"a", "b"}


def test_torchrun_launches_the_elastic_entrypoint_with_the_elastic_values():
    job = only(
        objects(
            deep_merge(
                PYTORCHJOB, {"elastic": {"minNodes": 2, "maxNodes": 4, "nprocPerNode": 3, "maxRestarts": 5}}
            )
        ),
        "PyTorchJob",
    )
    (container,) = containers(pod_templates(job)[0])
    assert container["name"] == "pytorch" and container["command"] == ["torchrun"]
    assert container["args"][:6] == [
        "--nnodes=2:4",
        "--nproc-per-node=3",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=demo-train-worker-0:29400",
        "--rdzv-id=demo",
        "--max-restarts=5",
    ]
    assert container["args"][6:8] == ["-m", "mlkube.commands.lstm_worker"]
    assert (job["spec"]["elasticPolicy"]["minReplicas"], job["spec"]["elasticPolicy"]["maxReplicas"]) == (
        2,
        4,
    )


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
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in training["spec"][
        "tolerations"
    ]


def test_cpu_fallback_requests_no_gpu_anywhere():
    text = json.dumps(objects(kind_everything()))
    assert "nvidia.com/gpu" not in text and "num-gpus" not in text


def test_ray_workers_autoscale_between_min_and_max():
    spec = only(objects({"ray": {"workers": {"minReplicas": 2, "maxReplicas": 5}}}), "RayJob")["spec"][
        "rayClusterSpec"
    ]
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
                    assert security["allowPrivilegeEscalation"] is False and security["capabilities"] == {
                        "drop": ["ALL"]
                    }
                    assert security["readOnlyRootFilesystem"] is True
                    assert {"requests", "limits"} <= set(container["resources"]), container["name"]


def test_tuning_training_and_serving_share_one_runs_claim():
    objs = objects(kind_everything())
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for o in objs
        for t in pod_templates(o)
        for v in t["spec"].get("volumes", [])
        if "persistentVolumeClaim" in v
    }
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


def test_serving_is_one_torchserve_pod_probed_on_the_inference_port_without_a_key():
    objs = objects(values_of("serving-values"))
    deployment, service = only(objs, "Deployment"), only(objs, "Service")
    template = deployment["spec"]["template"]
    (container,) = containers(template)
    # where the server binds is the deployment's decision, not the training spec's serve.host (loopback)
    assert container["command"] == ["mlkube", "serve", "/runs/tuned-run", "--host", "0.0.0.0"]
    # No management port at all: its key can scale workers without bound, so it is a Unix socket in the pod.
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"inference": 8080, "metrics": 8082}
    assert {p["name"] for p in service["spec"]["ports"]} == {"inference", "metrics"}
    assert "management_port" not in str(objs)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["tcpSocket"] == {"port": "inference"} and "httpGet" not in container[probe]
    # Every TorchServe makes its own keys: one pod, and never two on one serving folder during a rollout.
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "8082"
    assert only(objs, "ServiceMonitor")["spec"]["endpoints"][0]["port"] == "metrics"


def test_no_preset_token_is_rendered_or_accepted():
    objs = objects(kind_everything())
    assert by_kind(objs, "Secret") == [] and "MLKUBE_SERVE_TOKEN" not in json.dumps(objs)
    with pytest.raises(MlkubeError, match="additional properties 'token' not allowed"):
        render({"serve": {"enabled": True, "token": "s3cret"}}, "demo", "ml")


def test_network_policy_lets_only_the_inference_port_in():
    policy = only(objects({"serve": {"enabled": True}, "ray": {"enabled": False}}), "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8080}]}]
    assert {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]} == {53}


def test_metrics_peers_may_reach_the_metrics_port_only():
    rules = only(objects(values_of("serving-values")), "NetworkPolicy")["spec"]["ingress"]
    assert (
        rules[1]["ports"] == [{"protocol": "TCP", "port": 8082}]
        and "from" in rules[1]
        and "from" not in rules[0]
    )


def test_notes_tell_how_to_predict_with_the_key_torchserve_made():
    notes = render(values_of("serving-values"), "demo", "ml").notes
    assert "helm test demo -n ml --logs" in notes
    assert "kubectl -n ml exec deploy/demo-serve -- mlkube predict /runs/tuned-run --model classical" in notes
    assert "port-forward svc/demo-serve 8080:8080" in notes and "/predictions/classical" in notes
    assert 'json.load(open("/runs/tuned-run/serving/key_file.json"))["inference"]["key"]' in notes
    assert "cat /runs/tuned-run/serving/examples/classical.json" in notes
    assert "exec deploy/demo-serve -- mlkube serve /runs/tuned-run --renew-key inference" in notes
    assert "get secret" not in notes


def test_the_tuning_driver_and_each_training_process_have_an_exporter_port_and_scrape_annotations():
    objs = objects(deep_merge(PYTORCHJOB, {"elastic": {"nprocPerNode": 3}, "metrics": {"port": 9500}}))
    submitter, head, worker = pod_templates(only(objs, "RayJob"))
    (training,) = pod_templates(only(objs, "PyTorchJob"))
    for template in (head, training):
        assert template["metadata"]["annotations"]["prometheus.io/port"] == "9500"
    assert containers(head)[0]["ports"] == [{"name": "metrics-0", "containerPort": 9500}]
    ports = {p["name"]: p["containerPort"] for p in containers(training)[0]["ports"]}
    assert ports == {
        "rdzv": 29400,
        "metrics-0": 9500,
        "metrics-1": 9501,
        "metrics-2": 9502,
    }  # port + local rank
    for template in (submitter, worker):  # no exporter there: nothing to scrape
        assert "annotations" not in template["metadata"] and "ports" not in containers(template)[0]


def test_no_exporter_port_or_annotation_without_metrics_or_on_a_raycluster_head():
    for values in ({"metrics": {"port": None}, "elastic": {"enabled": True}}, {"ray": {"mode": "cluster"}}):
        for obj in objects(values):
            for template in pod_templates(obj):
                assert "annotations" not in template["metadata"], obj["kind"]
                assert not [
                    p for p in containers(template)[0].get("ports", []) if p["name"].startswith("metrics-")
                ]


def test_podmonitor_scrapes_every_exporter_port_of_the_driver_and_the_training_workers():
    objs = objects(values_of("gpu-values"))  # two GPUs per training pod: local ranks 0 and 1
    monitor = only(objs, "PodMonitor")
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics-0", "metrics-1"]
    selector = monitor["spec"]["selector"]
    selected = [
        t
        for o in objs
        for t in pod_templates(o)
        if all(t["metadata"]["labels"].get(k) == v for k, v in selector["matchLabels"].items())
        and t["metadata"]["labels"].get("mlkube.dev/role") in selector["matchExpressions"][0]["values"]
    ]
    assert {t["metadata"]["labels"]["mlkube.dev/role"] for t in selected} == {"ray-head", "worker"}
    exporter_ports = {
        p["name"] for t in selected for p in containers(t)[0]["ports"] if p["name"].startswith("metrics-")
    }
    assert exporter_ports == {"metrics-0", "metrics-1"}


def test_podmonitor_is_off_by_default_and_when_nothing_exports():
    assert by_kind(objects({}), "PodMonitor") == []
    assert (
        by_kind(
            objects({"metrics": {"podMonitor": {"enabled": True}}, "ray": {"mode": "cluster"}}), "PodMonitor"
        )
        == []
    )


# ---------------------------------------------------------------------------------------- helm test, for real
@pytest.fixture(scope="module")
def torchserve(tmp_path_factory):
    """A real TorchServe serving both models of a run (classical, lstm), as the serve Deployment runs it."""
    from mlkube.serving.server import serve_run
    from mlkube.trainer.run import Run
    from tests.serving_fixtures import make_run, serve_spec

    server = serve_run(Run.open(make_run(tmp_path_factory.mktemp("runs"), serve=serve_spec())))
    yield server
    server.stop()


def run_helm_test_script(serving: Path, url: str) -> subprocess.CompletedProcess:
    """The `helm test` pod's own command, with its two addresses pointed at this machine."""
    pod = helm_test_pod({"serve": {"enabled": True, "runId": "tuned-run"}})
    (container,) = containers(pod)
    env = {e["name"]: e["value"] for e in container["env"]}
    assert (env["SERVING"], env["URL"]) == ("/runs/tuned-run/serving", "http://demo-serve:8080")
    env.update(
        SERVING=str(serving), URL=url, HOME=str(serving.parent), PYTHONPATH=str(ROOT), PATH=os.environ["PATH"]
    )
    command = [sys.executable if part == "python" else part for part in container["command"]]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_helm_test_pod_reads_the_run_from_the_runs_volume_read_only():
    pod = helm_test_pod({"serve": {"enabled": True, "runId": "tuned-run"}})
    assert {"name": "runs", "mountPath": "/runs", "readOnly": True} in containers(pod)[0]["volumeMounts"]
    assert {"name": "runs", "persistentVolumeClaim": {"claimName": "demo-runs", "readOnly": True}} in pod[
        "spec"
    ]["volumes"]


def test_helm_test_pod_gets_an_answer_from_every_served_model_with_their_example_and_the_key(torchserve):
    done = run_helm_test_script(torchserve.folder, torchserve.url("inference"))
    assert done.returncode == 0, done.stderr
    answers = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert sorted(answers) == ["classical", "lstm"]
    assert json.loads(answers["classical"])["predictions"][0] in ("setosa", "versicolor", "virginica")
    assert isinstance(json.loads(answers["lstm"])["predictions"][0], float)


def test_helm_test_pod_fails_naming_a_refused_key(torchserve, tmp_path):
    serving = tmp_path / "serving"
    shutil.copytree(torchserve.folder / "examples", serving / "examples")
    shutil.copy(torchserve.folder / "server.json", serving)
    keys = json.loads(torchserve.token_file.read_text())
    keys["inference"]["key"] = "not-the-key"
    (serving / "key_file.json").write_text(json.dumps(keys))
    done = run_helm_test_script(serving, torchserve.url("inference"))
    assert done.returncode == 1 and "HTTP 400" in done.stderr and "Token Authorization failed" in done.stderr


def test_helm_test_pod_names_an_expired_key_and_the_fix(tmp_path):
    serving = tmp_path / "serving"
    serving.mkdir()
    (serving / "server.json").write_text(json.dumps({"models": ["classical"]}))
    expired = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    (serving / "key_file.json").write_text(
        json.dumps({"inference": {"key": "k", "expiration time": expired}})
    )
    done = run_helm_test_script(serving, "http://127.0.0.1:9")
    assert done.returncode == 1 and "the inference key expired at" in done.stderr and "restart" in done.stderr


def test_helm_test_pod_says_when_torchserve_does_not_serve_the_run(tmp_path):
    done = run_helm_test_script(tmp_path / "serving", "http://127.0.0.1:9")
    assert done.returncode == 1 and "no server.json in" in done.stderr


# ------------------------------------------------------------------------------------------ Grafana dashboard
DASHBOARD = CHART / "dashboards" / "mlkube.json"
# The LSTM workers' exporter (being written): every series carries the worker's global rank.
LSTM_METRICS = {
    name: {"rank"}
    for name in (
        "mlkube_lstm_steps_total",
        "mlkube_lstm_epoch",
        "mlkube_lstm_train_loss",
        "mlkube_lstm_validation_nse",
        "mlkube_lstm_sequences_per_second",
        "mlkube_lstm_checkpoint_age_seconds",
        "mlkube_lstm_restarts",
        "mlkube_lstm_gpu_memory_bytes",
    )
}
SCRAPE_LABELS = {"namespace", "pod"}  # added by the scrape (Prometheus operator, kubernetes_sd relabelling)
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$namespace": ".*"}


def dashboard_targets() -> list[dict]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target for panel in panels for target in panel.get("targets", [])]


def exposed(text: str) -> dict[str, set[str]]:
    """Series name → label names of a /metrics page, as Prometheus stores them (prometheus_client's parser
    would add `_total` to TorchServe's counter ts_inference_latency_microseconds)."""
    names: dict[str, set[str]] = {}
    for line in text.splitlines():
        sample = re.match(r"(\w+)(?:\{(.*)\})? ", line)  # comments (#) do not match
        if sample:
            names.setdefault(sample[1], set()).update(re.findall(r'(\w+)="', sample[2] or ""))
    return names


def promql_problems(expressions: list[str], folder: Path) -> str:
    """promtool's report on the expressions (Grafana's variables filled in) as recording rules; empty when
    valid."""
    if shutil.which("promtool") is None:
        subprocess.run(["bash", str(ROOT / "deploy" / "system-deps.sh")], check=True)
    fill = re.compile("|".join(map(re.escape, GRAFANA_VARIABLES)))
    rules = [
        {"record": f"dashboard:query_{i}", "expr": fill.sub(lambda m: GRAFANA_VARIABLES[m[0]], expr)}
        for i, expr in enumerate(expressions)
    ]
    path = folder / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    return "" if done.returncode == 0 else done.stdout + done.stderr


def test_dashboard_configmap_carries_the_dashboard_with_the_sidecar_label():
    config = next(
        o for o in objects(values_of("serving-values")) if o["metadata"]["name"] == "demo-dashboard"
    )
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config["data"]["mlkube.json"]) == json.loads(DASHBOARD.read_text())
    assert [o for o in objects({}) if o["metadata"]["name"] == "demo-dashboard"] == []  # off by default


def test_dashboard_shows_training_tuning_and_serving():
    queries = " ".join(t["expr"] for t in dashboard_targets())
    for metric in (
        "mlkube_lstm_train_loss",
        "mlkube_lstm_validation_nse",
        "mlkube_lstm_sequences_per_second",
        "mlkube_lstm_checkpoint_age_seconds",
        "mlkube_lstm_restarts",
        "mlkube_tune_trials_total",
        "rate(mlkube_tune_folds_total",
        "mlkube_tune_best_score",
        "rate(ts_inference_requests_total",
        "ts_inference_latency_microseconds",
        "mlkube_predictions_total",
    ):
        assert metric in queries


def test_every_dashboard_query_is_valid_promql(tmp_path):
    assert "parse error" in promql_problems(
        ["sum by (pod (mlkube_tune_best_score)"], tmp_path
    )  # promtool does parse
    assert promql_problems([t["expr"] for t in dashboard_targets()], tmp_path) == ""


def test_every_dashboard_metric_and_label_is_one_an_exporter_exposes(torchserve):
    """Names and labels come from the real exporters: the tuning driver's registry and TorchServe's /metrics
    page after predictions (the handlers' metrics appear once counted); the LSTM's from its agreed list."""
    import requests
    from prometheus_client import generate_latest

    from mlkube.trainer.exporters import TuneMetrics

    assert run_helm_test_script(torchserve.folder, torchserve.url("inference")).returncode == 0
    deadline = time.monotonic() + 30
    while "mlkube_predictions_total" not in (
        serving := exposed(requests.get(f"{torchserve.url('metrics')}/metrics", timeout=10).text)
    ):
        assert time.monotonic() < deadline, "the handlers' metrics never reached TorchServe's /metrics page"
        time.sleep(0.5)
    known = {**serving, **exposed(generate_latest(TuneMetrics.create().registry).decode()), **LSTM_METRICS}
    for target in dashboard_targets():
        expr = target["expr"]
        metrics = set(re.findall(r"\b(?:mlkube|ts)_\w+", expr))
        assert metrics and metrics <= set(known), f"{expr}: unknown {metrics - set(known)}"
        labels = set(re.findall(r"by \(([\w, ]*)\)", expr)) | set(
            re.findall(r"\{\{(\w+)\}\}", target["legendFormat"])
        )
        labels = {name.strip() for group in labels for name in group.split(",")}
        assert labels <= SCRAPE_LABELS | set.intersection(*(known[m] for m in metrics)), expr


def test_image_version_of_ray_matches_the_dockerfile():
    dockerfile = (ROOT / "Dockerfile").read_text()
    (pinned,) = re.findall(r"ARG RAY_VERSION=(\S+)", dockerfile)
    assert yaml.safe_load((CHART / "values.yaml").read_text())["ray"]["version"] == pinned


# ------------------------------------------------------------------------------------------ submit = chart
def test_submit_values_from_a_spec_render_the_specs_workload():
    spec = parse_spec(
        "data: {name: iris}\nlstm: {elastic: {min_nodes: 2, max_nodes: 3, nproc_per_node: 2}}\n"
        "cluster: {image: 'registry:5000/team/mlkube:1.2', gpu: true}\n"
    )
    objs = render(values_for(spec, "elastic", "r1"), "mlkube-r1", "ml").objects
    kinds = {o["kind"] for o in objs}
    assert kinds == {"ConfigMap", "PersistentVolumeClaim", "TrainJob", "TrainingRuntime", "NetworkPolicy"}
    trainer = only(objs, "TrainJob")["spec"]["trainer"]  # Trainer v2, the default: max_nodes nodes, fixed
    (container,) = containers(pod_templates(only(objs, "TrainingRuntime"))[0])
    assert container["image"] == trainer["image"] == "registry:5000/team/mlkube:1.2"
    assert container["args"][:2] == ["--nnodes=3", "--nproc-per-node=1"]  # gpu: one process per GPU
    assert trainer["numNodes"] == 3 and trainer["numProcPerNode"] == 1
    assert (
        container["resources"]["limits"]["nvidia.com/gpu"]
        == trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"]
        == 1
    )
    with_values = render(values_for(spec, "elastic", "r1", [PYTORCHJOB]), "mlkube-r1", "ml").objects
    assert only(with_values, "PyTorchJob")["spec"]["elasticPolicy"]["maxReplicas"] == 3
    assert only(objs, "PersistentVolumeClaim")["metadata"]["name"] == "mlkube-runs"


@pytest.mark.parametrize(
    ("image", "expected"), [(None, "mlkube:{app}"), ("team/mlkube", "team/mlkube:{app}")]
)
def test_submit_without_an_image_tag_runs_the_charts_version_never_latest(image, expected):
    app = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    cluster = "" if image is None else f"cluster: {{image: {image}}}\n"
    spec = parse_spec("data: {name: iris}\nclassical: {models: [LR]}\n" + cluster)
    objs = render(values_for(spec, "ray", "r3"), "mlkube-r3", "ml").objects
    images = {c["image"] for o in by_kind(objs, "RayJob") for t in pod_templates(o) for c in containers(t)}
    assert images == {expected.format(app=app)}


def test_submit_values_files_override_the_spec():
    spec = parse_spec("data: {name: iris}\n")
    objs = render(values_for(spec, "ray", "r2", [{"ray": {"mode": "cluster"}}]), "mlkube-r2", "ml").objects
    assert by_kind(objs, "RayCluster") and not by_kind(objs, "RayJob")


def test_objects_come_in_apply_order_storage_and_config_first():
    kinds = [o["kind"] for o in objects(kind_everything())]
    assert (
        kinds.index("PersistentVolumeClaim")
        < kinds.index("ConfigMap")
        < kinds.index("Service")
        < kinds.index("RayJob")
    )


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
    ({"serve": {"kind": "knative"}}, "serve.kind: value must be one of 'deployment', 'kserve'"),
    ({"ray": {"version": "latest"}}, "ray.version: 'latest' does not match pattern"),
    ({"ray": {"stages": "evaluate;rm"}}, "ray.stages: 'evaluate;rm' does not match pattern"),
    ({"ray": {"workers": {"maxReplicas": 0}}}, "ray.workers.maxReplicas: minimum: got 0, want 1"),
    (
        {"ray": {"head": {"resources": {"requests": {"cpu": "two"}}}}},
        "ray.head.resources.requests.cpu: 'two' does not match",
    ),
    (
        {"training": {"kind": "mpi"}},
        "training.kind: value must be one of 'trainjob', 'pytorchjob', 'elasticjob'",
    ),
    ({"queue": "Team A"}, "queue: 'Team A' does not match pattern"),
    ({"queue": "q" * 64}, "queue: maxLength: got 64, want 63"),
    (
        {"ray": {"deletion": {"mode": "never"}}},
        "ray.deletion.mode: value must be one of 'rules', 'shutdown', 'none'",
    ),
    ({"ray": {"deletion": {"afterSuccessSeconds": -1}}}, "ray.deletion.afterSuccessSeconds: minimum: got -1"),
    ({"ray": {"deletion": {"afterFailureSeconds": -1}}}, "ray.deletion.afterFailureSeconds: minimum: got -1"),
    ({"ray": {"activeDeadlineSeconds": -1}}, "ray.activeDeadlineSeconds: minimum: got -1, want 0"),
    ({"ray": {"backoffLimit": -1}}, "ray.backoffLimit: minimum: got -1, want 0"),
    (
        {"ray": {"submissionMode": "InteractiveMode"}},
        "ray.submissionMode: value must be one of 'K8sJobMode', 'HTTPMode', 'SidecarMode'",
    ),
    ({"elastic": {"minNodes": 0}}, "elastic.minNodes: minimum: got 0, want 1"),
    ({"elastic": {"nprocPerNode": 0}}, "elastic.nprocPerNode: minimum: got 0, want 1"),
    ({"elastic": {"maxRestarts": -1}}, "elastic.maxRestarts: minimum: got -1, want 0"),
    ({"elastic": {"rdzvPort": 0}}, "elastic.rdzvPort: minimum: got 0, want 1"),
    ({"serve": {"ports": {"inference": 65536}}}, "serve.ports.inference: maximum: got 65,536, want 65,535"),
    ({"serve": {"service": {"type": "Ingress"}}}, "serve.service.type: value must be one of"),
    (
        {"serve": {"serviceMonitor": {"interval": "often"}}},
        "serve.serviceMonitor.interval: 'often' does not match",
    ),
    ({"serve": {"tokn": "x"}}, "serve: additional properties 'tokn' not allowed"),
    ({"metrics": {"podMonitor": {"interval": "30"}}}, "metrics.podMonitor.interval: '30' does not match"),
    (
        {"grafana": {"dashboard": {"labels": {"grafana_dashboard": None}}}},
        "grafana.dashboard.labels: minProperties: got 0, want 1",
    ),
    ({"grafana": {"dashboard": {"labels": None}}}, "grafana.dashboard: missing property 'labels'"),
    ({"raay": {}}, "<top level>: additional properties 'raay' not allowed"),
    ({"serve": {"runId": "Run 1"}}, "serve.runId: 'Run 1' does not match pattern"),
    ({"runs": {"claimName": "c" * 64}}, "runs.claimName: maxLength: got 64, want 63"),
    ({"image": {"tag": "1.0 latest"}}, "image.tag: '1.0 latest' does not match pattern"),
    ({"elastic": {"maxNodes": 0}}, "elastic.maxNodes: minimum: got 0, want 1"),
    ({"elastic": {"gpusPerNode": 0}}, "elastic.gpusPerNode: minimum: got 0, want 1"),
    ({"elastic": {"etcd": {"image": ""}}}, "elastic.etcd.image: minLength: got 0, want 1"),
    ({"ray": {"workers": {"replicas": -1}}}, "ray.workers.replicas: minimum: got -1, want 0"),
    ({"ray": {"workers": {"minReplicas": -1}}}, "ray.workers.minReplicas: minimum: got -1, want 0"),
    ({"ray": {"workers": {"gpusPerWorker": 0}}}, "ray.workers.gpusPerWorker: minimum: got 0, want 1"),
    ({"ray": {"ttlSecondsAfterFinished": -5}}, "ray.ttlSecondsAfterFinished: minimum: got -5, want 0"),
    ({"security": {"fsGroup": 0}}, "security.fsGroup: minimum: got 0, want 1"),
    ({"signing": {"secretName": "My_Key"}}, "signing.secretName: 'My_Key' does not match pattern"),
    ({"signing": {"secretName": "k" * 254}}, "signing.secretName: maxLength: got 254, want 253"),
    ({"ray": {"auth": "none"}}, "ray.auth: value must be one of 'token', 'disabled'"),
    (
        {"serve": {"resources": {"limits": {"ephemeral-storage": None}}}},
        "serve.resources.limits: missing property 'ephemeral-storage'",
    ),
    ({"networkPolicy": {"metricsFrom": [{}]}}, "networkPolicy.metricsFrom.0: minProperties: got 0, want 1"),
]


@pytest.mark.parametrize(
    ("bad", "message"), SCHEMA_RULES, ids=[f"bad-{m.split(':')[0]}" for _, m in SCHEMA_RULES]
)
def test_a_bad_value_fails_with_a_message_naming_it(bad, message):
    with pytest.raises(MlkubeError) as err:
        render(bad, "demo", "ml")
    assert message in str(err.value)


TEMPLATE_RULES = [
    ({"elastic": {"minNodes": 3, "maxNodes": 2}}, "elastic.minNodes (3) must be <= elastic.maxNodes (2)"),
    (
        {"ray": {"workers": {"minReplicas": 4, "maxReplicas": 2}}},
        "ray.workers.minReplicas (4) must be <= ray.workers.maxReplicas (2)",
    ),
    (
        {"metrics": {"port": None, "podMonitor": {"enabled": True}}},
        "metrics.podMonitor.enabled needs metrics.port",
    ),
    ({"runs": {"create": False}}, "runs.create is false: set runs.claimName"),
    ({"ray": {"enabled": False}}, "nothing to deploy: enable ray, elastic or serve"),
    ({"ray": {"version": "2.51.0"}}, "ray.auth token needs Ray 2.52.0 or newer (ray.version is 2.51.0)"),
    (
        {"metrics": {"podMonitor": {"enabled": True}}},
        "metrics.podMonitor.enabled: the NetworkPolicies close the exporter ports",
    ),
    (
        {"elastic": {"operator": "kubeflow"}},
        "elastic.operator (kubeflow) was replaced by training.kind: operator kubeflow is training.kind",
    ),
    (
        {
            "queue": "q",
            "ray": {"enabled": False},
            "elastic": {"enabled": True},
            "training": {"kind": "elasticjob"},
        },
        "queue: Kueue does not admit an ElasticJob",
    ),
    ({"queue": "q"}, "queue: Kueue refuses an autoscaling Ray cluster (it admits a fixed size)"),
    ({"multiKueue": True}, "multiKueue needs queue"),
]


@pytest.mark.parametrize(
    ("bad", "message"), TEMPLATE_RULES, ids=[f"bad-{m.split(' ')[0]}" for _, m in TEMPLATE_RULES]
)
def test_a_rule_across_values_fails_with_the_fix(bad, message):
    with pytest.raises(MlkubeError) as err:
        render(bad, "demo", "ml")
    assert message in str(err.value) and "execution error" not in str(err.value)


def test_every_constrained_value_has_a_bad_value_test():
    """Each property with a rule (enum, pattern, bounds, lengths) is tested, itself or through a shared
    definition."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    tested = {re.match(r"^([\w.<> ]+?):", m).group(1) for _, m in SCHEMA_RULES}
    rules = ("enum", "pattern", "minimum", "maximum", "minLength", "maxLength", "minProperties")
    untested = []
    covered_refs = {_ref_name(node) for path, node in _properties(schema) if path in tested} - {None}

    for path, node in _properties(schema):
        target = schema["definitions"].get(_ref_name(node), node)
        if (
            any(rule in target for rule in rules)
            and path not in tested
            and _ref_name(node) not in covered_refs
        ):
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


# ---------------------------------------------------------------- Kubeflow Trainer v2 (TrainJob), the default
def trainjob_objects(values: dict | None = None, release: str = "demo") -> tuple[dict, dict]:
    objs = objects(deep_merge(TRAINJOB, values or {}), release=release)
    return only(objs, "TrainJob"), only(objs, "TrainingRuntime")


def test_trainjob_is_the_default_training_kind_and_no_v1_job_is_made():
    objs = objects({"elastic": {"enabled": True}})
    assert {o["kind"] for o in objs} >= {"TrainJob", "TrainingRuntime"}
    assert by_kind(objs, "PyTorchJob") == by_kind(objs, "ElasticJob") == []


def test_trainjob_runs_on_the_runtime_the_chart_ships():
    job, runtime = trainjob_objects()
    assert job["spec"]["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "TrainingRuntime",
        "name": runtime["metadata"]["name"],
    }
    assert runtime["spec"]["mlPolicy"] == {"numNodes": 2, "torch": {}}
    (replicated,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    # Trainer v2 applies spec.trainer to the container `node` of the job marked as the trainer step.
    assert replicated["name"] == "node"
    assert (
        replicated["template"]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"]
        == "trainer"
    )
    assert [c["name"] for c in containers(pod_templates(runtime)[0])] == ["node"]
    assert problems(job) == [] and problems(runtime) == []


def test_trainjob_starts_the_lstm_worker_under_torchrun_with_the_run_id_as_rendezvous_id():
    job, runtime = trainjob_objects({"runId": "exp-7", "elastic": {"maxNodes": 3, "nprocPerNode": 2}})
    trainer = job["spec"]["trainer"]
    (container,) = containers(pod_templates(runtime)[0])
    assert trainer["command"] == container["command"] == ["torchrun"]
    assert trainer["args"] == container["args"]
    assert trainer["args"][:6] == [
        "--nnodes=3",  # Trainer v2 has no elastic membership: maxNodes nodes, always
        "--nproc-per-node=2",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=$(PET_MASTER_ADDR):$(PET_MASTER_PORT)",  # node 0, as the torch plugin sets them
        "--rdzv-id=exp-7",
        "--max-restarts=3",
    ]
    assert trainer["args"][6:] == [
        "-m",
        "mlkube.commands.lstm_worker",
        "--spec",
        "/spec/experiment.yaml",
        "--run-dir",
        "/runs/exp-7",
    ]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (3, 2)
    assert trainer["env"] == container["env"] and trainer["image"] == container["image"]
    assert trainer["resourcesPerNode"] == container["resources"]


def test_trainjob_sets_no_env_the_torch_runtime_reserves():
    job, runtime = trainjob_objects()
    reserved = {"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT"}
    names = {e["name"] for e in job["spec"]["trainer"]["env"]}
    names |= {e["name"] for e in containers(pod_templates(runtime)[0])[0]["env"]}
    assert names & reserved == set()


def test_trainjob_pods_carry_the_labels_the_training_policy_selects():
    _, runtime = trainjob_objects()
    labels = pod_templates(runtime)[0]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "training" and labels["mlkube.dev/role"] == "worker"
    assert labels["mlkube.dev/run-id"] == "demo"


def test_two_releases_never_share_a_trainjob_rendezvous_or_runtime():
    (a_job, a_runtime), (b_job, b_runtime) = trainjob_objects(release="a"), trainjob_objects(release="b")
    assert a_runtime["metadata"]["name"] != b_runtime["metadata"]["name"]
    assert (
        "--rdzv-id=a" in a_job["spec"]["trainer"]["args"]
        and "--rdzv-id=b" in b_job["spec"]["trainer"]["args"]
    )


def test_gpu_trainjob_requests_gpus_per_node_and_one_process_per_gpu():
    job, runtime = trainjob_objects({"gpu": True, "elastic": {"gpusPerNode": 4}})
    assert job["spec"]["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 4
    assert job["spec"]["trainer"]["numProcPerNode"] == 4
    assert "--nproc-per-node=4" in job["spec"]["trainer"]["args"]
    tolerations = pod_templates(runtime)[0]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations


def test_a_trainjob_release_name_must_start_with_a_letter():
    """The TrainJob CRD's CEL rule (RFC 1035 names), which jsonschema does not evaluate, as a chart rule."""
    with pytest.raises(MlkubeError, match="Trainer v2 names a TrainJob with a letter first"):
        render(TRAINJOB, "7th", "ml")
    assert by_kind(render(PYTORCHJOB, "7th", "ml").objects, "PyTorchJob")


def test_a_misspelt_field_in_a_trainjob_is_caught():
    job, _ = trainjob_objects()
    job["spec"]["trainer"]["numNode"] = 2
    assert any("'numNode' was unexpected" in p for p in problems(job))


# ------------------------------------------------------------------------------------------------ Kueue
QUEUED = {"queue": "team-a", "ray": {"autoscaling": False}}


@pytest.mark.parametrize(
    ("values", "kind", "suspend"),
    [
        ({}, "RayJob", ("spec", "suspend")),
        ({"ray": {"mode": "cluster"}}, "RayCluster", ("spec", "suspend")),
        (TRAINJOB, "TrainJob", ("spec", "suspend")),
        (PYTORCHJOB, "PyTorchJob", ("spec", "runPolicy", "suspend")),
    ],
    ids=["RayJob", "RayCluster", "TrainJob", "PyTorchJob"],
)
def test_a_queue_labels_each_batch_workload_and_creates_it_suspended(values, kind, suspend):
    def suspended(obj: dict):
        node = obj
        for key in suspend:
            node = node.get(key, {})
        return node

    queued = only(objects(deep_merge(QUEUED, values)), kind)
    assert queued["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert suspended(queued) is True and problems(queued) == []
    plain = only(objects(values), kind)
    assert "kueue.x-k8s.io/queue-name" not in plain["metadata"]["labels"] and suspended(plain) == {}


@pytest.mark.parametrize(
    ("values", "kind", "path"),
    [
        ({}, "RayJob", ("spec",)),
        ({"ray": {"mode": "cluster"}}, "RayCluster", ("spec",)),
        (TRAINJOB, "TrainJob", ("spec",)),
        (PYTORCHJOB, "PyTorchJob", ("spec", "runPolicy")),
    ],
    ids=["RayJob", "RayCluster", "TrainJob", "PyTorchJob"],
)
def test_multikueue_hands_each_batch_workload_to_kueue(values, kind, path):
    def managed_by(obj: dict):
        for key in path:
            obj = obj[key]
        return obj.get("managedBy")

    job = only(objects(deep_merge({**QUEUED, "multiKueue": True}, values)), kind)
    assert managed_by(job) == "kueue.x-k8s.io/multikueue" and problems(job) == []
    assert managed_by(only(objects(deep_merge(QUEUED, values)), kind)) is None


def test_a_queue_leaves_pods_and_support_objects_unlabelled():
    objs = objects(deep_merge(QUEUED, TRAINJOB))
    for obj in objs:
        if obj["kind"] not in ("RayJob", "TrainJob"):
            assert "kueue.x-k8s.io/queue-name" not in obj["metadata"]["labels"], obj["kind"]
        for template in pod_templates(obj):
            assert "kueue.x-k8s.io/queue-name" not in template["metadata"]["labels"]
    assert "Queued in Kueue's LocalQueue team-a" in render(QUEUED, "demo", "ml").notes
    assert "Kueue" not in render({}, "demo", "ml").notes


# ------------------------------------------------------------------------------------------ RayJob lifecycle
def rayjob_spec(values: dict | None = None) -> dict:
    job = only(objects(values or {}), "RayJob")
    assert problems(job) == []
    kuberay_rules(job["spec"])
    return job["spec"]


def kuberay_rules(spec: dict) -> None:
    """The RayJob rules that the vendored CRD states in CEL (x-kubernetes-validations) or KubeRay's validation
    states in Go, which jsonschema does not evaluate (KubeRay v1.7.0)."""
    strategy = spec.get("deletionStrategy")
    if strategy is not None:
        legacy, rules = {"onSuccess", "onFailure"} & set(strategy), strategy.get("deletionRules")
        assert bool(legacy) != bool(rules), "legacy policies or deletionRules, one of them"
        assert not (rules and spec.get("shutdownAfterJobFinishes")), (
            "deletionRules exclude shutdownAfterJobFinishes"
        )
        for rule in rules or []:
            assert ("jobStatus" in rule["condition"]) != ("jobDeploymentStatus" in rule["condition"])
    if not spec.get("shutdownAfterJobFinishes"):
        assert not spec.get("ttlSecondsAfterFinished"), "a TTL without shutdownAfterJobFinishes is refused"
    if spec.get("submissionMode", "K8sJobMode") != "K8sJobMode":
        assert "submitterPodTemplate" not in spec, "a submitter pod only in K8sJobMode"


def test_rayjob_deletes_its_cluster_after_success_and_keeps_a_failed_one_for_a_day():
    spec = rayjob_spec()
    assert spec["deletionStrategy"] == {
        "deletionRules": [
            {"policy": "DeleteCluster", "condition": {"jobStatus": "SUCCEEDED", "ttlSeconds": 60}},
            {"policy": "DeleteCluster", "condition": {"jobStatus": "FAILED", "ttlSeconds": 86400}},
        ]
    }
    assert "shutdownAfterJobFinishes" not in spec and "ttlSecondsAfterFinished" not in spec
    assert (spec["submissionMode"], spec["backoffLimit"]) == ("K8sJobMode", 0)
    assert "activeDeadlineSeconds" not in spec


def test_rayjob_lifecycle_values_reach_the_rayjob():
    spec = rayjob_spec(
        {
            "ray": {
                "deletion": {"afterSuccessSeconds": 0, "afterFailureSeconds": 600},
                "activeDeadlineSeconds": 3600,
                "backoffLimit": 2,
            }
        }
    )
    ttls = [r["condition"]["ttlSeconds"] for r in spec["deletionStrategy"]["deletionRules"]]
    assert ttls == [0, 600] and (spec["activeDeadlineSeconds"], spec["backoffLimit"]) == (3600, 2)


def test_rayjob_legacy_shutdown_and_keep_modes():
    shutdown = rayjob_spec({"ray": {"deletion": {"mode": "shutdown"}, "ttlSecondsAfterFinished": 30}})
    assert (shutdown["shutdownAfterJobFinishes"], shutdown["ttlSecondsAfterFinished"]) == (True, 30)
    assert "deletionStrategy" not in shutdown
    kept = rayjob_spec({"ray": {"deletion": {"mode": "none"}}})
    assert kept["shutdownAfterJobFinishes"] is False and "deletionStrategy" not in kept
    # and the rule check refuses what KubeRay refuses
    with pytest.raises(AssertionError, match="exclude shutdownAfterJobFinishes"):
        kuberay_rules(
            {"shutdownAfterJobFinishes": True, "deletionStrategy": {"deletionRules": [{"condition": {}}]}}
        )
    with pytest.raises(AssertionError, match="TTL without"):
        kuberay_rules({"shutdownAfterJobFinishes": False, "ttlSecondsAfterFinished": 5})


@pytest.mark.parametrize("mode", ["HTTPMode", "SidecarMode"])
def test_rayjob_without_a_submitter_pod_has_no_submitter_policy(mode):
    objs = objects({"ray": {"submissionMode": mode}})
    spec = rayjob_spec({"ray": {"submissionMode": mode}})
    assert spec["submissionMode"] == mode and "submitterPodTemplate" not in spec
    assert "demo-ray-submitter" not in {p["metadata"]["name"] for p in by_kind(objs, "NetworkPolicy")}


# ------------------------------------------------------------------------------------------ every combination
TRAINING_KINDS = ("trainjob", "pytorchjob", "elasticjob")
QUEUES = ("", "team-a")
RAY_MODES = ("job", "cluster")
SERVE_KINDS = (
    "",
    "deployment",
    "kserve",
)  # serve off / the TorchServe Deployment / a KServe InferenceService


def combination(kind: str, queue: str, mode: str, serve: str) -> dict:
    return {
        "training": {"kind": kind},
        "elastic": {"enabled": True},
        "queue": queue,
        "ray": {"mode": mode, "autoscaling": not queue},
        "serve": {"enabled": bool(serve), **({"kind": serve} if serve else {})},
    }


COMBINATIONS = [(k, q, m, s) for k in TRAINING_KINDS for q in QUEUES for m in RAY_MODES for s in SERVE_KINDS]


@pytest.mark.parametrize(
    ("kind", "queue", "mode", "serve"),
    COMBINATIONS,
    ids=[f"{k}-{q or 'noqueue'}-{m}-{s or 'noserve'}" for k, q, m, s in COMBINATIONS],
)
def test_every_combination_of_the_values_renders_valid_objects(kind, queue, mode, serve):
    values = combination(kind, queue, mode, serve)
    if queue and kind == "elasticjob":
        with pytest.raises(MlkubeError, match="Kueue does not admit an ElasticJob"):
            render(values, "demo", "ml")
        return
    objs = objects(values)
    assert [p for o in objs for p in problems(o)] == []
    workload = {"trainjob": "TrainJob", "pytorchjob": "PyTorchJob", "elasticjob": "ElasticJob"}[kind]
    ray_kind = "RayJob" if mode == "job" else "RayCluster"
    kinds = {o["kind"] for o in objs}
    assert {workload, ray_kind} <= kinds
    assert ("Deployment" in kinds) == (serve == "deployment" or kind == "elasticjob")
    assert ("InferenceService" in kinds) == (serve == "kserve")
    for obj in objs:
        if obj["kind"] == "RayJob":
            kuberay_rules(obj["spec"])
        queued = obj["metadata"]["labels"].get("kueue.x-k8s.io/queue-name")
        assert queued == (queue if obj["kind"] in (workload, ray_kind) and queue else None), obj["kind"]


# ------------------------------------------------------------------------------------------ KServe serving
def test_kserve_serves_the_same_pod_as_the_deployment_in_an_inferenceservice_of_one_replica():
    """serve.kind kserve: a custom predictor of KServe's Standard mode (no Knative) running the Deployment's
    own pod (one template helper), one replica, Recreate, no autoscaler, the Open Inference Protocol declared;
    no Service of the chart's (KServe makes <name>-predictor) and valid against KServe v0.20.0's CRD."""
    deployment = only(objects({"serve": {"enabled": True}}), "Deployment")
    objs = objects({"serve": {"enabled": True, "kind": "kserve"}})
    isvc = only(objs, "InferenceService")
    assert problems(isvc) == []
    assert isvc["metadata"]["annotations"] == {
        "serving.kserve.io/deploymentMode": "Standard",
        "serving.kserve.io/autoscalerClass": "none",
    }
    predictor = isvc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 1)
    assert predictor["deploymentStrategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    (container,) = predictor["containers"]
    (served,) = pod["containers"]
    assert container["name"] == "kserve-container" and {"name": "PROTOCOL", "value": "v2"} in container["env"]
    assert {**container, "name": served["name"], "env": served["env"]} == served
    assert [e for e in container["env"] if e["name"] != "PROTOCOL"] == served["env"]
    assert {k: predictor[k] for k in pod if k != "containers"} == {
        k: v for k, v in pod.items() if k != "containers"
    }
    assert (
        predictor["labels"] == deployment["spec"]["template"]["metadata"]["labels"]
    )  # the NetworkPolicy's pods
    kinds = {o["kind"] for o in objs}
    assert "Deployment" not in kinds and "Service" not in kinds and "NetworkPolicy" in kinds


def test_kserve_helm_test_and_notes_use_kserves_names():
    values = {"serve": {"enabled": True, "kind": "kserve"}}
    rendered = render(values, "demo", "ml")
    env = {e["name"]: e.get("value") for e in helm_test_pod(values)["spec"]["containers"][0]["env"]}
    assert env["URL"] == "http://demo-serve-predictor:80"
    assert "exec deploy/demo-serve-predictor -- mlkube predict" in rendered.notes
    assert "port-forward svc/demo-serve-predictor 8080:80" in rendered.notes


def test_kserve_refuses_the_service_monitor_naming_what_to_scrape_instead():
    with pytest.raises(MlkubeError, match="KServe makes the serving Service itself"):
        render(
            {"serve": {"enabled": True, "kind": "kserve", "serviceMonitor": {"enabled": True}}}, "demo", "ml"
        )

"""`mlkube submit/status/logs/delete` as a user runs them (the CLI in a subprocess, the real `kubernetes`
client, a generated kubeconfig) against the fake API server of tests/fixtures/k8s: no real API server installs
here. The test plays the operators, scripting the states a job goes through."""

from __future__ import annotations

import pytest

from mlkube.cluster.chart import render, values_for
from mlkube.trainer.spec import parse_spec
from tests.fixtures.k8s.fake_apiserver import FakeApiServer, FakeCluster

pytestmark = pytest.mark.integration
SPEC = "data: {name: iris}\nclassical: {models: [LR, CART]}\nlstm: {elastic: {min_nodes: 1, max_nodes: 2}}\n"
FAST = ("--poll", "0.05", "--timeout", "30")


@pytest.fixture
def cluster():
    fake = FakeCluster()
    fake.install("kuberay", "training-operator")
    return fake


@pytest.fixture
def mlkube(run_cli, tmp_path, cluster):
    """Run `mlkube ...` against the fake cluster; the spec is written to tmp_path/experiment.yaml."""
    (tmp_path / "experiment.yaml").write_text(SPEC)
    with FakeApiServer(cluster) as server:
        kubeconfig = server.kubeconfig(tmp_path / "kubeconfig")

        def run(*args: str, env: dict | None = None):
            return run_cli(
                *args,
                env={"KUBECONFIG": str(kubeconfig), "TMPDIR": str(tmp_path), **(env or {})},
                timeout=120,
            )

        yield run


def labels(run_id: str, role: str) -> dict:
    return {"mlkube.dev/run-id": run_id, "mlkube.dev/role": role}


def script_ray_success(cluster: FakeCluster, run_id: str) -> None:
    cluster.script(
        "rayjobs",
        f"mlkube-{run_id}-tune",
        {"jobDeploymentStatus": "Initializing"},
        {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"},
        {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"},
    )
    cluster.add_pod(
        "default",
        f"mlkube-{run_id}-tune-submitter",
        labels(run_id, "driver"),
        "Running",
        "[  12.0s] [2/4] evaluate …\nbest: LR accuracy 0.96\n",
    )


# The NetworkPolicies of a RayJob (the chart's networkPolicy.enabled), created before the RayJob's pods start.
RAY_POLICIES = [
    "NetworkPolicy/mlkube-t1-ray-head",
    "NetworkPolicy/mlkube-t1-ray-workers",
    "NetworkPolicy/mlkube-t1-ray-submitter",
]


# ------------------------------------------------------------------------------------------- submit
def test_submit_ray_creates_the_rayjob_waits_streams_the_driver_log_and_exits_0(mlkube, cluster):
    script_ray_success(cluster, "t1")
    proc = mlkube("submit", "experiment.yaml", "--kind", "ray", "--run-id", "t1", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert cluster.created() == [
        "PersistentVolumeClaim/mlkube-runs",
        "ConfigMap/mlkube-t1-spec",
        *RAY_POLICIES,
        "RayJob/mlkube-t1-tune",
    ]
    assert "best: LR accuracy 0.96" in proc.stdout
    for state in ("Initializing", "Running, Ray job RUNNING", "Complete, Ray job SUCCEEDED"):
        assert f"RayJob/mlkube-t1-tune: {state}" in proc.stderr
    assert "run t1: RayJob/mlkube-t1-tune Complete, Ray job SUCCEEDED" in proc.stdout


def test_submit_dry_runs_every_object_on_the_server_before_creating_any(mlkube, cluster):
    script_ray_success(cluster, "t1")
    mlkube("submit", "experiment.yaml", "--kind", "ray", "--run-id", "t1", *FAST)
    posts = [("dryRun" in query, kind) for method, _, query, kind, _ in cluster.calls if method == "POST"]
    kinds = ["PersistentVolumeClaim", "ConfigMap", *["NetworkPolicy"] * len(RAY_POLICIES), "RayJob"]
    assert posts == [(True, kind) for kind in kinds] + [(False, kind) for kind in kinds]


def test_submitted_objects_are_the_charts_objects(mlkube, cluster):
    script_ray_success(cluster, "t1")
    mlkube("submit", "experiment.yaml", "--kind", "ray", "--run-id", "t1", *FAST)
    stored = {(o["kind"], o["metadata"]["name"]): o for o in cluster.objects.values()}
    chart = render(values_for(parse_spec(SPEC), "ray", "t1"), "mlkube-t1", "default").objects
    for obj in chart:
        sent = stored[(obj["kind"], obj["metadata"]["name"])]
        server_side = {
            "metadata": {k: v for k, v in sent["metadata"].items() if k not in ("namespace", "uid")}
        }
        assert {k: v for k, v in sent.items() if k != "status"} | server_side == obj


def test_the_run_id_is_the_ray_job_id(mlkube, cluster):
    script_ray_success(cluster, "t1")
    mlkube("submit", "experiment.yaml", "--kind", "ray", "--run-id", "t1", *FAST)
    (rayjob,) = cluster.stored("rayjobs")
    assert rayjob["spec"]["jobId"] == "t1" and "--run-id t1" in rayjob["spec"]["entrypoint"]


def test_a_failed_job_exits_1_with_its_message(mlkube, cluster):
    cluster.script(
        "rayjobs",
        "mlkube-t2-tune",
        {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "message": "entrypoint exited with 2"},
    )
    proc = mlkube("submit", "experiment.yaml", "--kind", "ray", "--run-id", "t2", *FAST)
    assert proc.returncode == 1
    assert "Failed, Ray job FAILED: entrypoint exited with 2" in proc.stdout


def test_submit_elastic_runs_a_pytorchjob_with_the_run_id_as_rendezvous_id(mlkube, cluster, tmp_path):
    (tmp_path / "pytorchjob.yaml").write_text("training: {kind: pytorchjob}\n")
    cluster.script(
        "pytorchjobs",
        "mlkube-e1-train",
        {"conditions": [{"type": "Created", "status": "True"}]},
        {"conditions": [{"type": "Created", "status": "True"}, {"type": "Running", "status": "True"}]},
        {"conditions": [{"type": "Running", "status": "False"}, {"type": "Succeeded", "status": "True"}]},
    )
    cluster.add_pod(
        "default", "mlkube-e1-train-worker-0", labels("e1", "worker"), "Running", "epoch 1 nse 0.61\n"
    )
    proc = mlkube(
        "submit", "experiment.yaml", "--kind", "elastic", "--run-id", "e1", "-f", "pytorchjob.yaml", *FAST
    )
    assert proc.returncode == 0, proc.stderr
    assert "epoch 1 nse 0.61" in proc.stdout and "PyTorchJob/mlkube-e1-train: Succeeded" in proc.stderr
    (job,) = cluster.stored("pytorchjobs")
    assert job["spec"]["elasticPolicy"]["rdzvId"] == "e1"
    assert (job["spec"]["elasticPolicy"]["minReplicas"], job["spec"]["elasticPolicy"]["maxReplicas"]) == (
        1,
        2,
    )


def script_trainjob(cluster: FakeCluster, run_id: str, *last: dict) -> None:
    """Trainer v2's conditions over time: Kueue holds it suspended, admits it, its Jobs run, then `last`."""
    cluster.script(
        "trainjobs",
        f"mlkube-{run_id}-train",
        {"conditions": [{"type": "Suspended", "status": "True", "message": "waiting for Kueue"}]},
        {
            "conditions": [{"type": "Suspended", "status": "False"}],
            "jobsStatus": [{"name": "node", "active": 2}],
        },
        *last,
    )


def test_submit_elastic_runs_a_trainjob_by_default_on_the_charts_runtime(mlkube, cluster, tmp_path):
    cluster.install("trainer")
    (tmp_path / "queue.yaml").write_text("queue: team-a\n")
    script_trainjob(
        cluster,
        "tj1",
        {"conditions": [{"type": "Suspended", "status": "False"}, {"type": "Complete", "status": "True"}]},
    )
    cluster.add_pod("default", "mlkube-tj1-train-node-0-0", labels("tj1", "worker"), "Running", "epoch 1\n")
    proc = mlkube(
        "submit", "experiment.yaml", "--kind", "elastic", "--run-id", "tj1", "-f", "queue.yaml", *FAST
    )
    assert proc.returncode == 0, proc.stderr
    for state in ("Suspended: waiting for Kueue", "Running, 2 active", "Complete"):
        assert f"TrainJob/mlkube-tj1-train: {state}" in proc.stderr
    assert "epoch 1" in proc.stdout
    (runtime,) = cluster.stored("trainingruntimes")
    (job,) = cluster.stored("trainjobs")
    assert job["spec"]["runtimeRef"]["name"] == runtime["metadata"]["name"] == "mlkube-tj1-train"
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert "--rdzv-id=tj1" in job["spec"]["trainer"]["args"] and job["spec"]["trainer"]["numNodes"] == 2
    assert cluster.stored("pytorchjobs") == []
    assert mlkube("status", "tj1").stdout.startswith("TrainJob/mlkube-tj1-train: Complete")
    deleted = mlkube("delete", "tj1").stdout
    assert "TrainJob/mlkube-tj1-train" in deleted and "TrainingRuntime/mlkube-tj1-train" in deleted


def test_a_failed_trainjob_exits_1_with_its_message(mlkube, cluster):
    cluster.install("trainer")
    script_trainjob(
        cluster, "tj2", {"conditions": [{"type": "Failed", "status": "True", "message": "node-0 exited 1"}]}
    )
    proc = mlkube("submit", "experiment.yaml", "--kind", "elastic", "--run-id", "tj2", *FAST)
    assert proc.returncode == 1 and "TrainJob/mlkube-tj2-train Failed: node-0 exited 1" in proc.stdout


def test_submit_elastic_without_trainer_v2_names_it(mlkube, cluster):
    proc = mlkube("submit", "experiment.yaml", "--kind", "elastic", "--run-id", "tj3", *FAST)
    assert proc.returncode == 2
    assert "the cluster does not serve TrainingRuntime (trainer.kubeflow.org/v1alpha1)" in proc.stderr
    assert "Kubeflow Trainer v2 is not installed" in proc.stderr and cluster.stored("configmaps") == []


@pytest.mark.parametrize(
    ("lstm", "named"),
    [
        ("{search: {space: {learning_rate: [0.001, 0.01]}}}", "lstm.search"),
        ("{ensemble: 3}", "lstm.ensemble: 3"),
        ("{cv: {scheme: kfold, folds: 2}}", "lstm.cv"),
    ],
)
def test_submit_elastic_refuses_what_only_mlkube_run_does(mlkube, cluster, tmp_path, lstm, named):
    (tmp_path / "trials.yaml").write_text(f"lstm: {lstm}\n")
    proc = mlkube("submit", "trials.yaml", "--kind", "elastic", "--run-id", "e1", *FAST)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"--kind elastic runs one elastic training, not {named}" in proc.stderr
    assert "submit with --kind ray" in proc.stderr and cluster.created() == []


def test_submit_serve_waits_for_the_replicas_and_prints_how_to_predict(mlkube, cluster):
    cluster.script("deployments", "mlkube-t1-serve", {"availableReplicas": 0}, {"availableReplicas": 1})
    proc = mlkube("submit", "experiment.yaml", "--kind", "serve", "--run-id", "t1", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert "0/1 replicas available" in proc.stderr and "1/1 replicas available" in proc.stderr
    assert "port-forward svc/mlkube-t1-serve 8080:8080" in proc.stdout
    assert {"Service/mlkube-t1-serve", "NetworkPolicy/mlkube-t1-serve", "Deployment/mlkube-t1-serve"} <= set(
        cluster.created()
    )


def test_submit_serve_on_kserve_waits_for_the_inferenceservice_and_prints_its_names(
    mlkube, cluster, tmp_path
):
    cluster.install("kserve")
    not_ready = {"conditions": [{"type": "Ready", "status": "False", "reason": "PredictorNotReady"}]}
    ready = {"conditions": [{"type": "Ready", "status": "True"}]}
    cluster.script("inferenceservices", "mlkube-t1-serve", not_ready, ready)
    (tmp_path / "values.yaml").write_text("serve: {kind: kserve}\n")
    proc = mlkube(
        "submit", "experiment.yaml", "--kind", "serve", "--run-id", "t1", "-f", "values.yaml", *FAST
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        "Not ready: PredictorNotReady" in proc.stderr
        and "InferenceService/mlkube-t1-serve Ready" in proc.stdout
    )
    assert "port-forward svc/mlkube-t1-serve-predictor 8080:80" in proc.stdout
    created = set(cluster.created())
    assert {"InferenceService/mlkube-t1-serve", "NetworkPolicy/mlkube-t1-serve"} <= created
    assert not {"Service/mlkube-t1-serve", "Deployment/mlkube-t1-serve"} & created  # KServe makes its own


def test_submit_serve_on_kserve_without_kserve_names_it(mlkube, cluster, tmp_path):
    (tmp_path / "values.yaml").write_text("serve: {kind: kserve}\n")
    proc = mlkube(
        "submit", "experiment.yaml", "--kind", "serve", "--run-id", "t1", "-f", "values.yaml", *FAST
    )
    assert proc.returncode == 2
    assert "does not serve InferenceService (serving.kserve.io/v1beta1): KServe" in proc.stderr


def test_submit_serve_needs_the_run_to_serve(mlkube, cluster):
    proc = mlkube("submit", "experiment.yaml", "--kind", "serve")
    assert (
        proc.returncode == 2
        and "--kind serve needs the run to serve" in proc.stderr
        and "--run-id" in proc.stderr
    )


def test_detach_returns_once_the_objects_exist(mlkube, cluster):
    proc = mlkube("submit", "experiment.yaml", "--kind", "ray", "--run-id", "d1", "--detach")
    assert proc.returncode == 0 and "mlkube status d1 -n default" in proc.stdout
    assert "RayJob/mlkube-d1-tune" in cluster.created()


def test_the_runs_claim_is_shared_and_kept_by_a_second_submit(mlkube, cluster):
    for run_id in ("a1", "a2"):
        assert (
            mlkube("submit", "experiment.yaml", "--kind", "ray", "--run-id", run_id, "--detach").returncode
            == 0
        )
    assert cluster.created().count("PersistentVolumeClaim/mlkube-runs") == 1


def test_a_job_that_never_finishes_times_out_with_the_commands_to_follow_it(mlkube, cluster):
    proc = mlkube(
        "submit", "experiment.yaml", "--kind", "ray", "--run-id", "slow", "--poll", "0.05", "--timeout", "0.3"
    )
    assert proc.returncode == 2
    assert (
        "RayJob/mlkube-slow-tune is still Pending after 0 s" in proc.stderr
        and "mlkube status slow" in proc.stderr
    )


# ------------------------------------------------------------------------------------------- user errors
def test_missing_operator_names_the_operator_and_creates_nothing(mlkube, cluster):
    cluster.groups.pop(("ray.io", "v1"))
    proc = mlkube("submit", "experiment.yaml", "--kind", "ray", "--run-id", "t1", *FAST)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "does not serve RayJob (ray.io/v1): the KubeRay operator is not installed" in proc.stderr
    assert "fix: install the KubeRay operator" in proc.stderr and cluster.created() == []


def test_missing_namespace_says_how_to_create_it(mlkube, cluster):
    proc = mlkube("submit", "experiment.yaml", "--kind", "ray", "-n", "team-a", *FAST)
    assert proc.returncode == 2
    assert (
        "namespace 'team-a' does not exist" in proc.stderr
        and "kubectl create namespace team-a" in proc.stderr
    )


def test_rbac_refusal_is_reported_before_anything_is_created(mlkube, cluster):
    cluster.forbidden.add(("create", "rayjobs"))
    proc = mlkube("submit", "experiment.yaml", "--kind", "ray", "--run-id", "t1", *FAST)
    assert (
        proc.returncode == 2
        and "forbidden by RBAC" in proc.stderr
        and 'cannot create resource "rayjobs"' in proc.stderr
    )
    assert "ask a cluster admin for a Role in namespace default" in proc.stderr and cluster.created() == []


def test_a_run_id_submitted_twice_is_refused(mlkube, cluster):
    assert mlkube("submit", "experiment.yaml", "--kind", "ray", "--run-id", "t1", "--detach").returncode == 0
    proc = mlkube("submit", "experiment.yaml", "--kind", "ray", "--run-id", "t1", "--detach")
    assert (
        proc.returncode == 2
        and "ConfigMap/mlkube-t1-spec already exists" in proc.stderr
        and "mlkube delete" in proc.stderr
    )


def test_no_kubeconfig_says_how_to_get_one(mlkube, tmp_path):
    proc = mlkube(
        "submit",
        "experiment.yaml",
        "--kind",
        "ray",
        env={"KUBECONFIG": str(tmp_path / "absent"), "KUBERNETES_SERVICE_HOST": ""},
    )
    assert (
        proc.returncode == 2 and "no usable kubeconfig" in proc.stderr and "deploy/kind/up.sh" in proc.stderr
    )


def test_an_unreachable_cluster_is_named(mlkube, tmp_path):
    config = (tmp_path / "kubeconfig").read_text()
    down = tmp_path / "down-kubeconfig"
    down.write_text(config.replace(config.split("server: ")[1].split()[0], "http://127.0.0.1:9"))
    proc = mlkube("submit", "experiment.yaml", "--kind", "ray", env={"KUBECONFIG": str(down)})
    assert proc.returncode == 2 and "cannot reach the Kubernetes API at http://127.0.0.1:9" in proc.stderr


def test_a_run_id_that_cannot_name_objects_is_refused_before_any_call(mlkube, cluster):
    proc = mlkube("submit", "experiment.yaml", "--kind", "ray", "--run-id", "My_Run")
    assert (
        proc.returncode == 2
        and "run id 'My_Run' cannot name Kubernetes objects" in proc.stderr
        and cluster.calls == []
    )


def test_a_bad_chart_value_is_named(mlkube, cluster, tmp_path):
    (tmp_path / "values.yaml").write_text("training: {kind: mpi}\n")
    proc = mlkube("submit", "experiment.yaml", "--kind", "elastic", "-f", "values.yaml")
    assert proc.returncode == 2
    assert (
        "the chart rejected the values: training.kind: value must be one of 'trainjob', 'pytorchjob', "
        "'elasticjob'" in proc.stderr
    )


def test_the_old_operator_value_is_refused_with_its_new_spelling(mlkube, cluster, tmp_path):
    (tmp_path / "values.yaml").write_text("elastic: {operator: torchelastic}\n")
    proc = mlkube("submit", "experiment.yaml", "--kind", "elastic", "-f", "values.yaml")
    assert proc.returncode == 2 and "torchelastic is elasticjob" in proc.stderr


def test_a_bad_spec_is_reported_like_mlkube_validate(mlkube, tmp_path):
    (tmp_path / "bad.yaml").write_text("lstm: {elastic: {min_nodes: 3, max_nodes: 2}}\n")
    proc = mlkube("submit", "bad.yaml", "--kind", "elastic")
    assert proc.returncode == 2 and "min_nodes (3) must be ≤ max_nodes (2)" in proc.stderr


# --------------------------------------------------------------------------------------- status, logs, delete
def test_status_lists_the_runs_jobs_and_pods(mlkube, cluster):
    script_ray_success(cluster, "t1")
    mlkube("submit", "experiment.yaml", "--kind", "ray", "--run-id", "t1", *FAST)
    proc = mlkube("status", "t1")
    assert proc.returncode == 0, proc.stderr
    assert "RayJob/mlkube-t1-tune: Complete, Ray job SUCCEEDED" in proc.stdout
    assert "pod mlkube-t1-tune-submitter: Running" in proc.stdout


def test_status_of_a_failed_run_exits_1(mlkube, cluster):
    cluster.script("rayjobs", "mlkube-f1-tune", {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED"})
    mlkube("submit", "experiment.yaml", "--kind", "ray", "--run-id", "f1", "--detach")
    assert mlkube("status", "f1").returncode == 1


def test_status_of_an_unknown_run_says_where_it_looked(mlkube):
    proc = mlkube("status", "nope", "-n", "default")
    assert proc.returncode == 2 and "no objects of run 'nope' in namespace default" in proc.stderr


def test_logs_prints_each_pod_of_the_run(mlkube, cluster):
    cluster.add_pod("default", "mlkube-t1-tune-head", labels("t1", "ray-head"), "Running", "ray head up\n")
    cluster.add_pod("default", "mlkube-t9-tune-head", labels("t9", "ray-head"), "Running", "another run\n")
    proc = mlkube("logs", "t1")
    assert proc.returncode == 0 and "==> pod mlkube-t1-tune-head <==\nray head up" in proc.stdout
    assert "another run" not in proc.stdout


def test_delete_removes_the_runs_objects_and_keeps_the_runs_volume(mlkube, cluster):
    mlkube("submit", "experiment.yaml", "--kind", "ray", "--run-id", "t1", "--detach")
    mlkube("submit", "experiment.yaml", "--kind", "ray", "--run-id", "t2", "--detach")
    proc = mlkube("delete", "t1")
    assert (
        proc.returncode == 0
        and f"deleted RayJob/mlkube-t1-tune, {', '.join(sorted(RAY_POLICIES))}, ConfigMap/mlkube-t1-spec"
        in proc.stdout
    )
    assert {o["metadata"]["name"] for o in cluster.objects.values()} == {
        "mlkube-runs",
        "mlkube-t2-tune",
        "mlkube-t2-spec",
        *(name.split("/")[1].replace("t1", "t2") for name in RAY_POLICIES),
    }
    assert mlkube("delete", "t1").returncode == 2

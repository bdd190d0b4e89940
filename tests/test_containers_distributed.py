"""The chart's distributed workloads across real containers (one network, one runs volume, a hostname each),
started with what their operators add (tests/containers_operators.py): Ray over three hosts with a worker
killed, torch elastic losing a node, Trainer v2's TrainJob, the ElasticJob meeting through the chart's etcd.
A training node cut off the network is tested here; what a Ray worker's cut does is written in
docs/cluster.md."""

from __future__ import annotations

import collections
import json
import secrets
import time

import pytest

from tests.containers import Cluster, chart, docker, wait_until
from tests.containers_operators import (
    head_service,
    pytorchjob_env,
    pytorchjob_worker_service,
    ray_auth_env,
    ray_pod,
    ray_submitter,
    trainjob_env,
    trainjob_node,
)
from tests.test_chart import only, pod_templates

pytestmark = pytest.mark.container
pytest_plugins = ["tests.containers"]  # the image and cluster fixtures


# ------------------------------------------------------------------------------------------- Ray across hosts
# Trials slow enough (forests on 569 rows, 5 folds) that a worker can be killed while some run on it.
RAY_EXPERIMENT = {
    "seed": 1,
    "data": {"name": "breast_cancer"},
    "classical": {
        "models": ["LR", "CART", "RF", "GBM", "KNN", "SVM"],
        "cv": {"folds": 5},
        "search": {
            "algorithm": "random",
            "trials": 6,
            "space": {"RF": {"n_estimators": {"randint": [150, 300]}}},
        },
    },
}


def ray_job(cluster: Cluster, workers: int) -> tuple[str, str]:
    """The chart's RayJob for RAY_EXPERIMENT: its head and `workers` workers started as KubeRay starts them,
    then its submitter, which submits through the Jobs API; returns the run id and the head's Service name."""
    token = secrets.token_hex(16)
    objs = chart(
        ray={"workers": {"replicas": workers, "minReplicas": workers, "maxReplicas": workers}},
        elastic={"enabled": False},
        serve={"enabled": False},
        experiment=RAY_EXPERIMENT,
    )
    job, config = only(objs, "RayJob"), only(objs, "ConfigMap")
    cluster.config_maps[config["metadata"]["name"]] = config["data"]
    name = f"{job['metadata']['name']}-raycluster"  # KubeRay: the RayJob's name and a random suffix
    spec = job["spec"]["rayClusterSpec"]
    submitter, head, worker = pod_templates(job)
    head_pod = ray_pod(spec["headGroupSpec"], True, name, token)
    cluster.start_pod("ray-head", head, aliases=[head_service(name)], injected=head_pod)
    for i in range(1, workers + 1):
        group = spec["workerGroupSpecs"][0]
        cluster.start_pod(f"ray-worker-{i}", worker, injected=ray_pod(group, False, name, token))
    wait_until(f"{workers + 1} Ray nodes", lambda: alive_nodes(cluster) == workers + 1, timeout=180, every=3)
    cluster.start_pod("ray-submitter", submitter, injected=ray_submitter(job, name, token))
    return job["spec"]["jobId"], head_service(name)


def alive_nodes(cluster: Cluster) -> int:
    """How many nodes the Ray cluster counts alive (asked on the head)."""
    script = "import ray; ray.init(); print('alive', sum(n['Alive'] for n in ray.nodes()))"
    out = cluster.exec("ray-head", "python", "-c", script, check=False)
    found = [line.split()[1] for line in out.splitlines() if line.startswith("alive ")]
    return int(found[0]) if found else 0


def run_status(cluster: Cluster, run_id: str) -> dict:
    """The run's status.json (trials running/finished/failed), {} before it exists."""
    path = f"/runs/{run_id}/status.json"
    proc = docker(
        "run",
        "--rm",
        "-v",
        f"{cluster.volume}:/runs:ro",
        "--entrypoint",
        "cat",
        cluster.image,
        path,
        check=False,
    )
    return json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else {}


def wait_for_trials(cluster: Cluster, run_id: str, finished: int) -> None:
    trials = lambda: run_status(cluster, run_id).get("trials", {})  # noqa: E731
    wait_until(f"{finished} finished trials", lambda: trials().get("finished", 0) >= finished, 600, every=1)


def finished_job(cluster: Cluster, run_id: str) -> list[dict]:
    """Every trial's row once the submitter returns (it returns when the Ray job ends; 0: SUCCEEDED)."""
    code = cluster.wait("ray-submitter", timeout=900)
    assert code == 0, cluster.logs("ray-submitter")[-4000:]
    return complete_trials(cluster, run_id)


def trials_on(cluster: Cluster, host: str) -> int:
    """Trial actors alive on a Ray host now (Ray's state API, asked on the head)."""
    script = (
        "import ray; from ray.util.state import list_actors; ray.init()\n"
        f"node = [n['NodeID'] for n in ray.nodes() if n['Alive'] and n['NodeManagerHostname'] == {host!r}]\n"
        "alive = list_actors(filters=[('node_id', '=', node[0]), ('state', '=', 'ALIVE')]) if node else []\n"
        "print('trials', len(alive))"
    )
    out = cluster.exec("ray-head", "python", "-c", script, check=False)
    found = [line.split()[1] for line in out.splitlines() if line.startswith("trials ")]
    return int(found[0]) if found else 0


def complete_trials(cluster: Cluster, run_id: str) -> list[dict]:
    """Every model spot-checked and every search trial scored, none failed; their rows (leaderboard.json's
    spot-check rows, stages/improve.json's trials)."""
    board = json.loads(cluster.read(f"/runs/{run_id}/leaderboard.json"))
    trials = json.loads(cluster.read(f"/runs/{run_id}/stages/improve.json"))["trials"]
    spot = [r for r in board["rows"] if r["stage"] == "evaluate"]
    assert {r["model"] for r in spot} == set(RAY_EXPERIMENT["classical"]["models"])
    assert len(trials) == RAY_EXPERIMENT["classical"]["search"]["trials"]
    rows = spot + trials
    assert [r for r in rows if r["status"] not in ("ok", "early_stopped")] == []
    return rows


def test_ray_tunes_across_hosts_and_retries_the_trials_of_a_killed_worker(cluster, capsys):
    run_id, _ = ray_job(cluster, workers=2)
    wait_until("a trial on ray-worker-2", lambda: trials_on(cluster, "ray-worker-2") >= 1, 600, every=1)
    cluster.kill("ray-worker-2")  # mid-trial: Tune retries its trials elsewhere (FailureConfig)
    rows = finished_job(cluster, run_id)
    per_node = collections.Counter(r["node"] for r in rows)
    with capsys.disabled():
        print(f"\n[container] ray: trials per Ray node {sorted(per_node.values(), reverse=True)}")
    assert len(per_node) >= 2


def test_ray_worker_cut_off_the_network_mid_trial_ends_recovered_or_with_failed_rows_naming_it(
    cluster, capsys
):
    """A head and one worker; the worker cut off the network (`docker network disconnect`) while a trial runs
    on it. Either Ray declares the node dead before Tune retries there and the trial is rerun on the head, or
    a retry lands on the cut node first and the trial exhausts classical.max_failures: then its row is failed
    and names the lost node. Either way the job succeeds and every other trial is scored."""
    run_id, _ = ray_job(cluster, workers=1)
    wait_until("a trial on ray-worker-1", lambda: trials_on(cluster, "ray-worker-1") >= 1, 600, every=1)
    cluster.disconnect("ray-worker-1")
    cut = time.monotonic()
    code = cluster.wait("ray-submitter", timeout=900)
    ended_after = time.monotonic() - cut
    assert code == 0, cluster.logs("ray-submitter")[-4000:]
    board = json.loads(cluster.read(f"/runs/{run_id}/leaderboard.json"))
    trials = json.loads(cluster.read(f"/runs/{run_id}/stages/improve.json"))["trials"]
    rows = [r for r in board["rows"] if r["stage"] == "evaluate"] + trials
    failed = [r for r in rows if r["status"] == "failed"]
    with capsys.disabled():
        print(
            f"\n[container] ray: job ended {ended_after:.0f} s after a worker's cut; {len(rows)} trials, "
            f"{len(failed)} failed: {[r['error'] for r in failed]}"
        )
    assert {r["model"] for r in rows} == set(RAY_EXPERIMENT["classical"]["models"])
    assert len(trials) == RAY_EXPERIMENT["classical"]["search"]["trials"]
    for row in failed:
        assert "Ray worker on node ray-worker-1" in row["error"] and "was lost" in row["error"], row["error"]
    assert len(failed) < len(rows)


def test_raycluster_mode_a_driver_elsewhere_tunes_through_the_ray_client_address(cluster, capsys):
    """ray.mode cluster: the chart's long-lived RayCluster (a head and one worker, started as KubeRay starts
    them); a driver in a container of its own runs `mlkube run` of a spec with the `cluster.ray_address` the
    chart's NOTES print (Ray Client, through the head's Service) and the token they say to export: every
    trial is scored on the cluster's nodes and the run lands on the shared volume."""
    import re

    import yaml

    from mlkube.cluster.chart import deep_merge, render
    from tests.containers import RELEASE
    from tests.test_chart import kind_everything

    token = secrets.token_hex(16)
    values = {"ray": {"mode": "cluster", "workers": {"replicas": 1, "minReplicas": 1, "maxReplicas": 1}}}
    rendered = render(deep_merge(kind_everything(), values), RELEASE, "mlkube")
    ray, config = only(rendered.objects, "RayCluster"), only(rendered.objects, "ConfigMap")
    cluster.config_maps[config["metadata"]["name"]] = config["data"]
    address = re.search(r'ray_address: "(ray://[^"]+)"', rendered.notes).group(1)  # type: ignore[union-attr]
    service = address.removeprefix("ray://").split(":")[0]  # <head-svc>.<namespace>.svc
    name, spec = ray["metadata"]["name"], ray["spec"]
    head, worker = pod_templates(ray)
    assert service.split(".")[0] == head_service(name)  # NOTES name the Service KubeRay makes
    cluster.start_pod(
        "ray-head",
        head,
        aliases=[head_service(name), service],
        injected=ray_pod(spec["headGroupSpec"], True, name, token),
    )
    cluster.start_pod(
        "ray-worker-1", worker, injected=ray_pod(spec["workerGroupSpecs"][0], False, name, token)
    )
    wait_until("2 Ray nodes", lambda: alive_nodes(cluster) == 2, timeout=180, every=3)
    charts = yaml.safe_load(config["data"]["experiment.yaml"])  # its run_dir and cluster settings
    experiment = {
        **RAY_CLUSTER_EXPERIMENT,
        "run_dir": charts["run_dir"],
        "cluster": {**charts.get("cluster", {}), "ray_address": address},
    }
    folder = cluster.write("driver-spec", {"experiment.yaml": yaml.safe_dump(experiment)}, 0o444)
    out = cluster.run(
        "driver",
        ["run", "/spec/experiment.yaml", "--run-id", "rc"],
        entrypoint="mlkube",
        env={
            "HOME": "/tmp",
            "NUMBA_CACHE_DIR": "/tmp/numba",
            "MPLCONFIGDIR": "/tmp/mpl",
            **ray_auth_env(token),
        },
        flags=["--workdir", "/tmp", "--mount", f"type=bind,source={folder},target=/spec,readonly"],
        timeout=600,
    )
    assert f"joining the Ray cluster at {address}" in out
    board = json.loads(cluster.read(f"{experiment['run_dir']}/rc/leaderboard.json"))
    per_node = collections.Counter(r["node"] for r in board["rows"])
    with capsys.disabled():
        print(f"\n[container] raycluster: trials per Ray node {sorted(per_node.values(), reverse=True)}")
    assert {r["model"] for r in board["rows"]} == set(RAY_CLUSTER_EXPERIMENT["classical"]["models"])
    assert [r for r in board["rows"] if r["status"] != "ok"] == []


RAY_CLUSTER_EXPERIMENT = {
    "data": {"name": "breast_cancer"},
    "classical": {"models": ["LR", "CART", "RF", "KNN"]},
}


# ------------------------------------------------------------------------------------------- torch elastic
ELASTIC_EXPERIMENT = {
    "seed": 1,
    "data": {"name": "iris"},
    "lstm": {
        "data": {"name": "synthetic", "synthetic_sites": 2, "synthetic_years": 3},
        "sequence_length": 30,
        # 160 steps of 30-day windows: the default forget-gate bias of 3 (right for a year's windows) keeps
        # so small a network near its mean this early (NSE -1.0 against climatology's -0.15); 0 learns here
        "model": {"hidden_size": 16, "initial_forget_bias": 0.0},
        "train": {"epochs": 4, "steps_per_epoch": 40, "checkpoint_every": 10},
        "elastic": {"min_nodes": 1, "max_nodes": 2, "nproc_per_node": 1},
    },
}


def run_dir_of(template: dict) -> str:
    """The run directory a training pod's torchrun command names (--run-dir)."""
    args = template["spec"]["containers"][0]["args"]
    return args[args.index("--run-dir") + 1]


def training_record(cluster: Cluster, nodes: list[str], template: dict) -> dict:
    """Wait for every node to finish (exit 0); the LSTM's training.json."""
    for node in nodes:
        assert cluster.wait(node, 900) == 0, cluster.logs(node)[-4000:]
    return json.loads(cluster.read(f"{run_dir_of(template)}/models/lstm/training.json"))


def steps_logged(cluster: Cluster, host: str) -> list[str]:
    return [line for line in cluster.logs(host).splitlines() if line.startswith("[lstm] step")]


CLIMATOLOGY_NSE = """
import json, pathlib, sys
from mlkube.trainer.lstm.baselines import climatology
from mlkube.trainer.lstm.evaluate import score
from mlkube.trainer.lstm.prepared import load_prepared
from mlkube.trainer.spec import load_spec
spec, run = load_spec("/spec/experiment.yaml"), pathlib.Path(sys.argv[1])
prepared = load_prepared(spec, run)
sim = climatology(prepared.data, spec.lstm.sequence_length, spec.lstm.horizon, spec.seed, "test")
card = json.loads((run / "models/lstm/model.json").read_text())
baseline = score(sim, prepared.data, "test", spec.lstm.horizon)["median"]["nse"]
print("nse", baseline, card["metrics"]["median"]["nse"])
"""


def elastic_job(cluster: Cluster, experiment: dict) -> tuple[dict, list[str], dict[str, str]]:
    """The chart's PyTorchJob for `experiment`, its two nodes started at worker 0's c10d rendezvous, once the
    first checkpoint exists: (the pod template, the two node names, what the operator injects)."""
    objs = chart(ray={"enabled": False}, serve={"enabled": False}, experiment=experiment)
    job, config = only(objs, "PyTorchJob"), only(objs, "ConfigMap")
    cluster.config_maps[config["metadata"]["name"]] = config["data"]
    (template,) = pod_templates(job)
    name = job["metadata"]["name"]
    nodes = [pytorchjob_worker_service(name, i) for i in (0, 1)]  # pod name = its Service's name
    for node in nodes:
        cluster.start_pod(node, template, injected={"extra_env": pytorchjob_env(job)})
    run_dir = run_dir_of(template)
    listing = lambda: cluster.exec(nodes[0], "ls", f"{run_dir}/checkpoints", check=False)  # noqa: E731
    wait_until("a checkpoint", lambda: "step-" in listing(), 600)
    return template, nodes, {"extra_env": pytorchjob_env(job)}


def resumed_after(record: dict, fault_at: float) -> float:
    """Seconds from a fault (unix time here; the containers share this machine's clock) to the first step of
    the group re-formed without the node."""
    return record["segments"][1]["first_step_at"] - fault_at


# long enough that a replacement node is admitted before the survivor alone finishes
REPLACED_EXPERIMENT = {
    **ELASTIC_EXPERIMENT,
    "lstm": {
        **ELASTIC_EXPERIMENT["lstm"],
        "train": {**ELASTIC_EXPERIMENT["lstm"]["train"], "epochs": 50},
    },
}


def test_torch_elastic_across_hosts_loses_a_node_the_survivor_resumes_and_a_replacement_joins(
    cluster, capsys
):
    """The chart's PyTorchJob, two containers as two nodes at worker 0's c10d rendezvous; one killed after a
    checkpoint: the survivor re-forms the group alone (min_nodes 1) and resumes from the shared volume's last
    checkpoint; a replacement node started then is admitted (world size 2 again, from a later checkpoint),
    and they finish; training.json records the three memberships; the LSTM still beats climatology."""
    template, nodes, injected = elastic_job(cluster, REPLACED_EXPERIMENT)
    killed_at = time.time()
    cluster.kill(nodes[1])
    before = len(steps_logged(cluster, nodes[0]))
    wait_until("the survivor's next step", lambda: len(steps_logged(cluster, nodes[0])) > before, 300)
    cluster.remove(nodes[1])
    started_at = time.time()
    cluster.start_pod(nodes[1], template, injected=injected)
    record = training_record(cluster, nodes, template)
    train = REPLACED_EXPERIMENT["lstm"]["train"]
    with capsys.disabled():
        print(
            f"\n[container] elastic: next step {resumed_after(record, killed_at):.1f} s after a node died, "
            f"{record['segments'][2]['first_step_at'] - started_at:.1f} s after its replacement started; "
            f"{record['segments']}"
        )
    assert [s["world_size"] for s in record["segments"]] == [2, 1, 2]
    alone, rejoined = record["segments"][1]["from_step"], record["segments"][2]["from_step"]
    assert 0 < alone < rejoined  # from checkpoints, not from scratch
    assert alone % train["checkpoint_every"] == 0 and rejoined % train["checkpoint_every"] == 0
    assert record["steps"] == train["epochs"] * train["steps_per_epoch"] and record["restarts"] >= 1
    spec = ["--mount", f"type=bind,source={cluster.files / cluster.tag / 'spec'},target=/spec,readonly"]
    out = docker(
        "run",
        "--rm",
        "-v",
        f"{cluster.volume}:/runs:ro",
        *spec,
        "-e",
        "HOME=/tmp",
        "-e",
        "NUMBA_CACHE_DIR=/tmp",
        "--entrypoint",
        "python",
        cluster.image,
        "-c",
        CLIMATOLOGY_NSE,
        run_dir_of(template),
    ).stdout
    climatology_nse, lstm_nse = map(
        float, next(x for x in out.splitlines() if x.startswith("nse ")).split()[1:]
    )
    assert lstm_nse > climatology_nse


CUT_EXPERIMENT = {
    **ELASTIC_EXPERIMENT,
    "lstm": {
        **ELASTIC_EXPERIMENT["lstm"],
        "elastic": {**ELASTIC_EXPERIMENT["lstm"]["elastic"], "timeout_seconds": 20},
    },
}


def test_torch_elastic_node_cut_off_the_network_the_survivor_gives_up_on_it_and_resumes(cluster, capsys):
    """The PyTorchJob's second node cut off the network (`docker network disconnect`) after a checkpoint: the
    survivor's step waits lstm.elastic.timeout_seconds for it, gives up, and torchrun re-forms the group
    alone from the last checkpoint; it finishes."""
    template, nodes, _ = elastic_job(cluster, CUT_EXPERIMENT)
    cut_at = time.time()
    cluster.disconnect(nodes[1])
    record = training_record(cluster, nodes[:1], template)
    train = CUT_EXPERIMENT["lstm"]["train"]
    with capsys.disabled():
        print(
            f"\n[container] elastic: next step {resumed_after(record, cut_at):.1f} s after a node's cut; "
            f"{record['segments']}"
        )
    assert [s["world_size"] for s in record["segments"]] == [2, 1]
    resumed = record["segments"][-1]["from_step"]
    assert resumed > 0 and resumed % train["checkpoint_every"] == 0
    assert "Timed out waiting 20000ms" in cluster.logs(nodes[0])  # the step's collective gave up on it
    assert record["steps"] == train["epochs"] * train["steps_per_epoch"]


def test_trainjob_nodes_train_together_with_what_trainer_v2_gives_them(cluster):
    objs = chart(training={"kind": "trainjob"}, ray={"enabled": False}, serve={"enabled": False})
    job, runtime, config = only(objs, "TrainJob"), only(objs, "TrainingRuntime"), only(objs, "ConfigMap")
    cluster.config_maps[config["metadata"]["name"]] = config["data"]
    (template,) = pod_templates(runtime)
    nodes = [trainjob_node(job, i) for i in range(job["spec"]["trainer"]["numNodes"])]
    for i, node in enumerate(nodes):
        cluster.start_pod(node, template, injected={"extra_env": trainjob_env(job, i)})
    record = training_record(cluster, nodes, template)
    assert record["world_size"] == len(nodes) == 2 and record["restarts"] == 0


def test_elasticjob_nodes_meet_through_the_charts_etcd_and_train(cluster):
    """The chart's etcd Deployment (its command and args; Debian's etcd binary, as no registry serves its
    image here) and the ElasticJob's two workers meeting through it (torchrun's etcd rendezvous, v2 API)."""
    objs = chart(training={"kind": "elasticjob"}, ray={"enabled": False}, serve={"enabled": False})
    job, config = only(objs, "ElasticJob"), only(objs, "ConfigMap")
    etcd = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-etcd"))
    cluster.config_maps[config["metadata"]["name"]] = config["data"]
    (etcd_pod,) = pod_templates(etcd)
    binary = ["--mount", "type=bind,source=/usr/bin/etcd,target=/usr/local/bin/etcd,readonly"]
    cluster.start_pod(etcd["metadata"]["name"], etcd_pod, flags=binary)
    (template,) = pod_templates(job)
    nodes = [f"{job['metadata']['name']}-worker-{i}" for i in (0, 1)]  # the controller's pod names
    for node in nodes:
        cluster.start_pod(node, template)
    record = training_record(cluster, nodes, template)
    assert record["world_size"] == 2

"""A Ray node lost under a trial on each of its attempts: `mlkube run` on a Ray cluster of its own (a head
with no CPUs and three one-CPU worker nodes, `ray.cluster_utils`), the node running the slow trial removed on
its first attempt and on its retry (classical.max_failures 1). That trial is a failed leaderboard row naming
the lost node, the other models are scored, and the run finishes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration

# RF first in the grid and alone at a time (max_concurrent 1): the first trial actors seen are RF's attempts
SPEC = """\
seed: 1
data: {name: breast_cancer}
classical:
  models: [RF, LR, CART]
  params: {RF: {n_estimators: 400}}
  cv: {folds: 5}
  max_concurrent: 1
  max_failures: 1
"""


def _trial_actor_nodes(cluster, nodes) -> list:
    """The worker nodes on which a Tune trial actor's process runs now."""
    import psutil

    found = []
    for node in nodes:
        raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
        try:
            titles = [" ".join(p.cmdline()) for p in raylet.children(recursive=True)]
        except psutil.Error:
            continue
        if any("ray::ImplicitFunc" in t for t in titles):
            found.append(node)
    return found


def _lose_the_nodes_of_two_attempts(cluster, nodes: list, lost: list[str], deadline: float) -> None:
    """Remove (SIGKILL, no graceful drain) the node of the first trial actor seen, a moment into its trial,
    then the node its retry lands on."""
    while time.monotonic() < deadline and len(lost) < 2:
        busy = _trial_actor_nodes(cluster, nodes)
        if busy:
            time.sleep(1.0)  # mid-trial: its folds are being fitted
            node = busy[0]
            cluster.remove_node(node, allow_graceful=False)
            nodes.remove(node)
            lost.append(node.node_id)
        time.sleep(0.1)


def test_a_trial_whose_node_is_lost_on_every_attempt_is_a_failed_row_and_the_run_finishes(tmp_path, capsys):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        nodes = [cluster.add_node(num_cpus=1) for _ in range(3)]
        cluster.wait_for_nodes()
        (tmp_path / "spec.yaml").write_text(SPEC)
        lost: list[str] = []
        killer = threading.Thread(
            target=_lose_the_nodes_of_two_attempts, args=(cluster, nodes, lost, time.monotonic() + 240)
        )
        killer.start()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": cluster.address}
        proc = subprocess.run(
            [sys.executable, "-m", "mlkube.cli", "run", "spec.yaml", "--run-id", "r"],
            check=False,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        killer.join()
    finally:
        cluster.shutdown()
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(lost) == 2, "the trial's two attempts were not both seen on a node"
    board = json.loads((tmp_path / "runs" / "r" / "leaderboard.json").read_text())
    rows = {r["model"]: r for r in board["rows"] if r["stage"] == "evaluate"}
    assert rows["LR"]["status"] == rows["CART"]["status"] == "ok"
    assert rows["RF"]["status"] == "failed"
    error = rows["RF"]["error"]
    with capsys.disabled():
        print(f"\n[ray] RF: {error}")
    assert "Ray worker on node" in error and "was lost" in error and "2 attempts" in error, error
    assert rows["RF"]["node"] == lost[1]  # the node of its last attempt
    assert rows["LR"]["node"] not in lost and rows["CART"]["node"] not in lost

"""Shared fixtures: one Ray (a real two-node cluster on this machine) per test session; hardware markers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MLKUBE = [sys.executable, "-m", "mlkube.cli"]


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _docker_engine() -> bool:
    if not (shutil.which("docker") and shutil.which("kind")):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def pytest_collection_modifyitems(config, items):
    """`gpu` and `kind` tests skip, with the reason printed, where the hardware is absent; nothing else skips."""
    marked = {name: [item for item in items if item.get_closest_marker(name)] for name in ("gpu", "kind")}
    reasons = {}
    if marked["gpu"] and not _has_cuda():
        reasons["gpu"] = "needs a CUDA GPU (torch.cuda.is_available() is False on this machine)"
    if marked["kind"] and not _docker_engine():
        reasons["kind"] = "needs a Docker engine and the kind binary (docker info failed or kind is not on PATH)"
    for name, reason in reasons.items():
        for item in marked[name]:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def ray_cluster():
    """A real two-node Ray cluster (head + one worker node, 1 CPU each), connected for the whole session."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def run_cli(tmp_path):
    """Run the `mlkube` command in a subprocess (as a user would), in tmp_path."""

    def run(*args: str, check: bool = False, env: dict | None = None, timeout: float = 600):
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        proc = subprocess.run([*MLKUBE, *map(str, args)], cwd=tmp_path, capture_output=True, text=True,
                              env=full_env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"mlkube {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    return run


@pytest.fixture
def run_spec(tmp_path):
    """Run a spec's stages in this process (sharing the session's Ray) and return the Run."""
    from mlkube.pipeline import check_inputs, run_pipeline
    from trainer.progress import Progress
    from trainer.run import Run
    from trainer.spec import parse_spec

    def run(text: str, run_id: str = "t", stages: str | None = None):
        spec = parse_spec(text)
        check_inputs(spec)
        run = Run.start(spec.to_yaml(), tmp_path / "runs", run_id=run_id)
        return run_pipeline(spec, run, Progress(quiet=True), only=stages)

    return run

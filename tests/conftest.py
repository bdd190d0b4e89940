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


def _kind_missing() -> str | None:
    """Why the kind tests cannot run here (None: they can): the kind binary, the Docker engine."""
    if not shutil.which("kind"):
        return "needs the kind binary (not on PATH; no registry here serves it or its node image)"
    if not shutil.which("docker"):
        return "needs a Docker engine (no docker client on PATH)"
    if subprocess.run(["docker", "info"], check=False, capture_output=True).returncode != 0:
        return "needs a Docker engine (docker info failed)"
    return None


def pytest_collection_modifyitems(config, items):
    """`gpu` and `kind` tests skip, with the reason printed, where the hardware is absent; nothing else
    skips."""
    marked = {name: [item for item in items if item.get_closest_marker(name)] for name in ("gpu", "kind")}
    reasons = {}
    if marked["gpu"] and not _has_cuda():
        reasons["gpu"] = "needs a CUDA GPU (torch.cuda.is_available() is False on this machine)"
    missing = _kind_missing() if marked["kind"] else None
    if missing:
        reasons["kind"] = missing
    for name, reason in reasons.items():
        for item in marked[name]:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session", autouse=True)
def signing_key_file(tmp_path_factory):
    """The session's model-card signing key (32 random bytes), named by MLKUBE_SIGNING_KEY_FILE before
    anything saves a model: tests never touch the real ~/.config/mlkube/signing.key. Subprocesses inherit
    it."""
    from mlkube.trainer.signing import KEY_ENV

    key = tmp_path_factory.mktemp("signing") / "signing.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    previous = os.environ.get(KEY_ENV)
    os.environ[KEY_ENV] = str(key)
    yield key
    if previous is None:
        os.environ.pop(KEY_ENV, None)
    else:
        os.environ[KEY_ENV] = previous


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


@pytest.fixture(scope="session")
def iris_run(ray_cluster, tmp_path_factory):
    """examples/iris.yaml (the classic tutorial), run once per session on the shared Ray."""
    from mlkube.pipeline import run_pipeline
    from mlkube.trainer.progress import Progress
    from mlkube.trainer.run import Run
    from mlkube.trainer.spec import load_spec

    spec = load_spec(ROOT / "examples" / "iris.yaml")
    with Run.start(spec.to_yaml(), tmp_path_factory.mktemp("iris") / "runs", run_id="t") as run:
        return run_pipeline(spec, run, Progress(quiet=True))


@pytest.fixture
def scratch():
    """A new empty folder with a short path (/tmp/mlkube-t-...): TorchServe's private folder made under it
    holds Unix sockets, whose paths must stay within 107 bytes whatever the length of pytest's basetemp
    (/tmp/pytest-of-root/pytest-108/<test name>0/ failed two tests where pytest had run 108 times)."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="mlkube-t-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def run_cli(tmp_path):
    """Run the `mlkube` command in a subprocess (as a user would), in tmp_path."""

    def run(*args: str, check: bool = False, env: dict | None = None, timeout: float = 600):
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        proc = subprocess.run(
            [*MLKUBE, *map(str, args)],
            check=False,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"mlkube {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    return run


@pytest.fixture
def run_spec(tmp_path):
    """Run a spec's stages in this process (sharing the session's Ray) and return the Run."""
    from mlkube.pipeline import check_inputs, run_pipeline
    from mlkube.trainer.progress import Progress
    from mlkube.trainer.run import Run
    from mlkube.trainer.spec import parse_spec

    def run(text: str, run_id: str = "t", stages: str | None = None):
        spec = parse_spec(text)
        check_inputs(spec)
        with Run.start(spec.to_yaml(), tmp_path / "runs", run_id=run_id) as run:
            return run_pipeline(spec, run, Progress(quiet=True), only=stages)

    return run


class PrometheusServer:
    """A real Prometheus on loopback; tests add scrape targets (file-based discovery, picked up at once)."""

    def __init__(self, url: str, targets: Path):
        self.url = url
        self.targets = targets

    def scrape(self, address: str, component: str) -> None:
        import json

        (self.targets / f"{component}.json").write_text(
            json.dumps([{"targets": [address], "labels": {"component": component}}])
        )

    def query(self, promql: str) -> list[dict]:
        import requests

        reply = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5).json()
        return reply["data"]["result"]

    def wait_for(self, promql: str, condition, timeout: float = 60) -> list[dict]:
        """Poll the query until `condition(result)` holds; fail after `timeout` seconds."""
        import time

        deadline = time.monotonic() + timeout
        result: list[dict] = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if condition(result):
                return result
            time.sleep(0.5)
        pytest.fail(f"Prometheus query {promql!r} never met the condition; last result {result}")


_HANDED_OUT: set[int] = set()


def free_tcp_port(count: int = 1) -> int:
    """A port P with P .. P+count-1 free and not handed out before in this session, between Ray's worker ports
    (10002-19999) and the kernel's ephemeral range: a port in that range can be taken by any outgoing
    connection or listener of the session (an exporter on P+1 then cannot bind), and a scraper polling a port
    where nothing listens yet can even connect to itself there (TCP simultaneous open)."""
    import random
    import socket

    ranges = Path("/proc/sys/net/ipv4/ip_local_port_range")
    ephemeral = int(ranges.read_text().split()[0]) if ranges.is_file() else 32768
    low, high = (
        (20000, ephemeral - count) if ephemeral > 20000 + 100 * count else (ephemeral + 1000, 65000 - count)
    )
    for _ in range(1000):
        port = random.randrange(low, high)
        wanted = set(range(port, port + count))
        if wanted & _HANDED_OUT:
            continue
        try:
            for candidate in wanted:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        _HANDED_OUT.update(wanted)
        return port
    raise RuntimeError(f"no {count} free consecutive TCP port(s) in {low}-{high}")


@pytest.fixture(scope="session")
def prometheus_server(tmp_path_factory):
    """One real Prometheus (Debian's package, installed by deploy/system-deps.sh) per test session."""
    import json
    import time

    import requests

    if shutil.which("prometheus") is None:
        subprocess.run(["bash", str(ROOT / "deploy" / "system-deps.sh")], check=True)
    folder = tmp_path_factory.mktemp("prometheus")
    targets = folder / "targets"
    targets.mkdir()
    config = folder / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "mlkube",
                        "file_sd_configs": [{"files": [str(targets / "*.json")], "refresh_interval": "1s"}],
                    }
                ],
            }
        )
    )
    port = free_tcp_port()
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{url}/-/ready", timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("Prometheus did not become ready in 30 s")
        time.sleep(0.2)
    yield PrometheusServer(url, targets)
    process.terminate()
    process.wait(timeout=30)


# ------------------------------------------------------------ handlers in-process (one run per test module)
@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    """A run with both models (tests/serving_fixtures.make_run), made once per module."""
    from tests.serving_fixtures import make_run

    return make_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def classical(run_path):
    """The classical model's handler, called in this process as a TorchServe worker would."""
    from mlkube.serving.handlers import InProcess
    from mlkube.trainer.run import CLASSICAL_MODEL, Run

    return InProcess(Run(run_path).model_dir(CLASSICAL_MODEL), version="v1")


@pytest.fixture(scope="module")
def lstm_dir(run_path):
    from mlkube.trainer.run import LSTM_MODEL, Run

    return Run(run_path).model_dir(LSTM_MODEL)


@pytest.fixture(scope="module")
def lstm(lstm_dir):
    """The LSTM's handler, called in this process as a TorchServe worker would."""
    from mlkube.serving.handlers import InProcess

    return InProcess(lstm_dir, version="v1")

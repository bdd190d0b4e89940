"""The ElasticJob path: torchrun's etcd rendezvous against a real etcd (Debian's etcd-server), the run id as
the rendezvous id."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
from conftest import free_tcp_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def etcd(tmp_path):
    """A real etcd on loopback with the v2 API torchrun's etcd-v2 rendezvous uses."""
    if shutil.which("etcd") is None:
        subprocess.run(["bash", str(ROOT / "deploy" / "system-deps.sh")], check=True)
    client, peer = free_tcp_port(), free_tcp_port()
    process = subprocess.Popen(
        [
            "etcd",
            "--data-dir",
            str(tmp_path / "etcd"),
            "--enable-v2",
            "--listen-client-urls",
            f"http://127.0.0.1:{client}",
            "--advertise-client-urls",
            f"http://127.0.0.1:{client}",
            "--listen-peer-urls",
            f"http://127.0.0.1:{peer}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{client}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{url}/health", timeout=2).ok:
                break
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, "etcd did not start in 30 s"
        time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_two_workers_meet_through_etcd_under_the_run_id(etcd, run_spec):
    endpoint = etcd.removeprefix("http://")
    run = run_spec(
        "seed: 2\nlstm:\n  data: {name: synthetic, synthetic_sites: 3, synthetic_years: 2}\n"
        "  sequence_length: 30\n"
        "  model: {hidden_size: 8}\n  train: {epochs: 1, steps_per_epoch: 10, batch_size: 8}\n"
        f"  elastic: {{nproc_per_node: 2, rdzv_backend: etcd-v2, rdzv_endpoint: '{endpoint}'}}\n",
        run_id="etcd-run",
    )
    training = json.loads(run.stage_file("deep").read_text())["training"]
    assert (training["world_size"], training["steps"]) == (2, 10)
    keys = requests.get(f"{etcd}/v2/keys/torch/elastic/rendezvous", timeout=5).json()["node"]["nodes"]
    assert [k["key"] for k in keys] == [
        "/torch/elastic/rendezvous/etcd-run"
    ]  # the rendezvous id is the run id

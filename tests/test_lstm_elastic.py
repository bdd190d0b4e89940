"""The deep stage end to end with real torchrun and two gloo workers: it trains past the climatology baseline,
writes what the report and the TorchServe handler read, and a worker SIGKILLed mid-training costs nothing:
torchrun restarts the group, training resumes from the last checkpoint and ends with bit-identical weights."""

from __future__ import annotations

import csv
import json
import os
import signal
import threading
import time

import numpy as np
import pytest

from mlkube.trainer.lstm.scores import METRICS
from mlkube.trainer.spec import parse_spec

pytestmark = pytest.mark.integration

SPEC = """
seed: 5
lstm:
  data: {name: synthetic, synthetic_sites: 4, synthetic_years: 3}
  sequence_length: 60
  model: {hidden_size: 32}
  train: {epochs: 8, steps_per_epoch: 40, batch_size: 32, learning_rate: 0.005, warmup_days: 20,
          checkpoint_every: 20}
  elastic: {nproc_per_node: 2, max_restarts: 2}
"""


def run_deep(root, run_id: str):
    from mlkube.pipeline import run_pipeline
    from mlkube.trainer.progress import Progress
    from mlkube.trainer.run import Run

    spec = parse_spec(SPEC)
    with Run.start(spec.to_yaml(), root, run_id=run_id) as run:
        return run_pipeline(spec, run, Progress(quiet=True))


def model_weights(run) -> dict:
    import torch

    return torch.load(run.path / "models" / "lstm" / "model.pt", weights_only=True)


class ListeningSockets:
    """Every listening TCP address that this process and its children open while the block runs, with the
    command line that holds it (sampled every 20 ms)."""

    def __init__(self):
        self.seen: dict[tuple[str, int], str] = {}
        self._before = set(self._sample())
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch)

    @staticmethod
    def _sample() -> dict[tuple[str, int], str]:
        import psutil

        me = psutil.Process()
        found = {}
        for proc in (me, *me.children(recursive=True)):
            try:
                for conn in proc.net_connections(kind="inet"):
                    if conn.status == psutil.CONN_LISTEN:
                        found[(conn.laddr.ip, conn.laddr.port)] = " ".join(proc.cmdline())
            except psutil.Error:
                continue
        return found

    def _watch(self) -> None:
        while not self._done.wait(0.02):
            self.seen.update({k: v for k, v in self._sample().items() if k not in self._before})

    def __enter__(self) -> ListeningSockets:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


@pytest.fixture(scope="module")
def calm_and_listeners(tmp_path_factory):
    with ListeningSockets() as sockets:
        run = run_deep(tmp_path_factory.mktemp("runs"), "calm")
    return run, sockets.seen


@pytest.fixture(scope="module")
def calm(calm_and_listeners):
    return calm_and_listeners[0]


def test_a_local_rendezvous_listens_on_loopback_only(calm_and_listeners):
    import ipaddress

    _, seen = calm_and_listeners
    holders = " ".join(seen.values())
    assert "mlkube.commands.lstm_worker" in holders, seen  # rank 0's store and gloo were seen
    assert "mlkube.commands.torchrun_agent" in holders, seen  # the rendezvous store, in torchrun's agent
    assert {ip for ip, _ in seen if not ipaddress.ip_address(ip).is_loopback} == set(), seen


def test_two_workers_train_below_the_climatology_baseline(calm):
    from mlkube.trainer.run import read_json

    deep = read_json(calm.stage_file("deep"))
    models = deep["models"]
    assert models["lstm"]["median"]["nse"] > models["climatology"]["median"]["nse"] + 0.3
    training = deep["training"]
    assert (training["world_size"], training["restarts"], training["steps"]) == (2, 0, 320)
    assert training["torch_threads"] == max(1, len(os.sched_getaffinity(0)) // 2)  # each its share
    losses = [h["train_loss"] for h in training["history"]]
    assert losses[-1] < losses[0]


def test_deep_stage_writes_its_result_figures_and_model(calm):
    from mlkube.trainer.run import read_json

    deep = read_json(calm.stage_file("deep"))
    assert set(deep["models"]) == {"lstm", "climatology", "Ridge", "GBM"}
    assert set(deep["models"]["lstm"]["sites"]) == set(deep["sites"]) and len(deep["sites"]) == 4
    assert set(deep["models"]["lstm"]["median"]) == set(METRICS)  # neuralhydrology's metric set
    medians = [r["median_nse"] for r in deep["ranking"]]
    assert {r["model"] for r in deep["ranking"]} == set(deep["models"]) and medians == sorted(
        medians, reverse=True
    )
    assert all(r["medians"] == deep["models"][r["model"]]["median"] for r in deep["ranking"])
    assert len(deep["training"]["history"]) == 8
    assert set(deep["figures"]) == {"training", "hydrographs", "nse_cdf"}
    for figure in deep["figures"].values():
        assert (calm.path / figure).read_bytes().startswith(b"\x89PNG")
    # basin_scores.csv: every model × site, every metric, equal to the stage's record
    with open(calm.path / deep["basin_scores"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(deep["models"]) * len(deep["sites"]) and list(rows[0])[2:] == list(METRICS)
    for row in rows:
        recorded = deep["models"][row["model"]]["sites"][row["site"]]
        assert {k: float(row[k]) if row[k] else None for k in METRICS} == recorded
    meta = read_json(calm.path / "models" / "lstm" / "model.json")
    assert meta["metrics"]["median"] == pytest.approx(
        deep["models"]["lstm"]["median"], rel=1e-6
    )  # thread counts
    assert read_json(calm.path / "env.json")["data_hash"]["lstm"] == meta["data_hash"]


def test_served_lstm_predicts_what_the_trained_network_predicts(calm):
    import torch

    from mlkube.serving.handlers import InProcess
    from mlkube.trainer.lstm.model import load_lstm_model
    from mlkube.trainer.lstm.prepared import read_prepared
    from mlkube.trainer.preprocess import destandardize_target, standardize

    prepared = read_prepared(calm.path / "prepared" / "lstm.npz")
    data, days, site, last = prepared.data, 60, 2, prepared.data.periods["test"][0] + 30
    window = slice(last - days + 1, last + 1)
    instance = {
        "dynamic": {
            name: data.dynamic[site, window, i].tolist() for i, name in enumerate(data.dynamic_inputs)
        }
    }
    [(status, answer)] = InProcess(calm.path / "models" / "lstm")(
        [json.dumps({"instances": [instance]}).encode()]
    )
    net, _ = load_lstm_model(calm.path / "models" / "lstm")
    x = torch.from_numpy(standardize(data, prepared.stats).dynamic[site : site + 1, window])
    with torch.no_grad():
        expected = destandardize_target(net(x)[:, -1:].numpy(), prepared.stats, np.array([site]))
    assert status == 200
    np.testing.assert_allclose(answer["predictions"], expected[0], rtol=1e-5)


def worker_of_rank(rank: int):
    """The torchrun worker process of `rank` under this test process, or None."""
    import psutil

    for proc in psutil.Process().children(recursive=True):
        try:
            if "mlkube.commands.lstm_worker" in proc.cmdline() and proc.environ().get("RANK") == str(rank):
                return proc
        except psutil.Error:
            continue
    return None


def test_a_sigkilled_worker_is_restarted_and_training_ends_with_bit_identical_weights(calm, tmp_path):
    import torch

    from mlkube.trainer.run import read_json

    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(run=run_deep(tmp_path, "killed")))
    thread.start()
    first_checkpoint = tmp_path / "killed" / "checkpoints" / "step-000000040.ckpt"
    deadline = time.monotonic() + 300
    while not first_checkpoint.exists() and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.01)
    victim = worker_of_rank(1)
    assert victim is not None, "no rank-1 worker found while training ran"
    os.kill(victim.pid, signal.SIGKILL)
    thread.join(timeout=600)
    training = read_json(outcome["run"].stage_file("deep"))["training"]
    assert training["restarts"] == 1
    assert training["segments"][-1]["from_step"] >= 40 and training["steps"] == 320
    calm_weights, resumed = model_weights(calm), model_weights(outcome["run"])
    assert all(torch.equal(calm_weights[k], resumed[k]) for k in calm_weights)

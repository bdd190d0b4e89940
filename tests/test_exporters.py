"""mlkube's own Prometheus exporters: scraped by a real Prometheus, names checked by promtool, busy ports."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess

import pytest
from conftest import free_tcp_port

pytestmark = pytest.mark.integration


def test_prometheus_scrapes_a_real_ray_tune_run(ray_cluster, run_spec, prometheus_server):
    port = free_tcp_port()
    prometheus_server.scrape(f"127.0.0.1:{port}", "tune")
    run = run_spec(
        f"seed: 1\ndata: {{name: iris}}\nmetrics: {{port: {port}}}\n"
        "classical: {models: [LDA, NB, KNN], cv: {scheme: kfold, folds: 4}}\n"
    )
    finished = prometheus_server.wait_for(
        'mlkube_tune_trials_total{state="finished",component="tune"}',
        lambda r: r and float(r[0]["value"][1]) == 3,
    )
    assert finished[0]["metric"]["job"] == "mlkube"
    folds = prometheus_server.query("mlkube_tune_folds_total")
    assert float(folds[0]["value"][1]) == 12
    best = prometheus_server.query("mlkube_tune_best_score")
    board = json.loads((run.path / "leaderboard.json").read_text())
    assert float(best[0]["value"][1]) == pytest.approx(board["rows"][0]["mean"])
    assert float(prometheus_server.query("mlkube_tune_trials_running")[0]["value"][1]) == 0
    status = json.loads((run.path / "status.json").read_text())
    assert status["trials"] == {"running": 0, "finished": 3, "failed": 0, "early_stopped": 0, "total": 3}


def test_tune_metric_names_pass_promtool():
    from prometheus_client import generate_latest

    from mlkube.trainer.exporters import TuneMetrics

    metrics = TuneMetrics.create()
    metrics.trial_started()
    metrics.fold_scored()
    metrics.trial_ended("finished", 0.9)
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with Debian's prometheus package (deploy/system-deps.sh)"
    check = subprocess.run(
        [promtool, "check", "metrics"],
        check=False,
        input=generate_latest(metrics.registry),
        capture_output=True,
    )
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


def test_a_busy_port_names_the_port_and_the_setting_and_work_goes_on(capsys):
    from mlkube.trainer.exporters import TuneMetrics, start_exporter

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert (
            start_exporter(port, TuneMetrics.create().registry, "the tuning driver", host="127.0.0.1")
            is False
        )
    err = capsys.readouterr().err
    assert f"port {port} (metrics.port)" in err and "Going on without metrics" in err


def test_prometheus_scrapes_a_real_two_worker_torchrun_training(run_spec, prometheus_server):
    port = free_tcp_port(count=2)  # rank r exports on port + r
    for rank in (0, 1):
        prometheus_server.scrape(f"127.0.0.1:{port + rank}", f"lstm-{rank}")
    run = run_spec(
        f"seed: 3\nmetrics: {{port: {port}, linger_seconds: 4}}\n"
        "lstm:\n  data: {name: synthetic, synthetic_sites: 4, synthetic_years: 3}\n  sequence_length: 30\n"
        "  model: {hidden_size: 8}\n  train: {epochs: 3, steps_per_epoch: 40, batch_size: 8}\n"
        "  elastic: {nproc_per_node: 2}\n"
    )
    steps = prometheus_server.wait_for(
        "max_over_time(mlkube_lstm_steps_total[10m])",
        lambda r: len(r) == 2 and all(float(s["value"][1]) == 120 for s in r),
    )
    assert sorted(s["metric"]["rank"] for s in steps) == ["0", "1"]
    for name in (
        "mlkube_lstm_train_loss",
        "mlkube_lstm_sequences_per_second",
        "mlkube_lstm_epoch",
        "mlkube_lstm_restarts",
    ):
        assert len(prometheus_server.query(f"max_over_time({name}[10m])")) == 2, name
    assert json.loads(run.stage_file("deep").read_text())["training"]["steps"] == 120


def test_workers_move_one_port_up_only_under_a_driver_that_holds_the_same_port(monkeypatch):
    from mlkube.trainer.exporters import TAKEN_PORT_ENV, worker_port

    monkeypatch.delenv(TAKEN_PORT_ENV, raising=False)
    assert [worker_port(9400, r) for r in (0, 1)] == [9400, 9401]
    monkeypatch.setenv(TAKEN_PORT_ENV, "9400")
    assert [worker_port(9400, r) for r in (0, 1)] == [9401, 9402]
    assert worker_port(9500, 0) == 9500


def test_lstm_metric_names_pass_promtool(tmp_path):
    from prometheus_client import generate_latest

    from mlkube.trainer.lstm.exporter import MetricsHook
    from mlkube.trainer.lstm.train import StepInfo

    hook = MetricsHook(rank=0, checkpoints=tmp_path)
    hook(StepInfo(step=1, total_steps=2, epoch=1, loss=0.5, samples=8, seconds=0.1, validation_nse=0.3))
    check = subprocess.run(
        [shutil.which("promtool"), "check", "metrics"],
        check=False,
        input=generate_latest(hook.registry),
        capture_output=True,
    )
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()

"""`mlkube archive`, `mlkube serve` and `mlkube predict` as a user runs them (subprocesses, real
TorchServe)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import MLKUBE, ROOT
from tests.serving_fixtures import RUN_ID, make_run, serve_spec

pytestmark = pytest.mark.integration


def test_archive_prints_one_archive_per_model(run_cli, tmp_path):
    run = make_run(tmp_path / "runs")
    done = run_cli("archive", run, check=True)
    store = run / "serving" / "model-store"
    assert done.stdout.split() == [str(store / "classical.mar"), str(store / "lstm.mar")]


def test_serve_prints_a_working_curl_line_then_predict_answers_and_stop_ends_it(run_cli, tmp_path):
    run = make_run(tmp_path / "runs", serve=serve_spec())
    key_file = run / "serving" / "key_file.json"
    relative = run.relative_to(tmp_path)  # as a user types it, from the folder run_cli works in
    try:
        served = run_cli("serve", relative, "--detach", check=True)
        assert str(key_file) in served.stdout
        assert all(entry["key"] not in served.stdout for entry in json.loads(key_file.read_text()).values())
        curl = next(line.strip() for line in served.stdout.splitlines() if line.strip().startswith("curl "))
        answer = json.loads(
            subprocess.run(["bash", "-c", curl], capture_output=True, text=True, check=True).stdout
        )
        assert (answer["model"], len(answer["predictions"])) == ("classical", 1)
        predicted = run_cli("predict", relative, "--model", "lstm", check=True)
        assert json.loads(predicted.stdout)["version"] == RUN_ID
        (tmp_path / "empty.json").write_text('{"instances": []}')
        refused = run_cli("predict", relative, "--model", "lstm", "--input", "empty.json")
        assert (
            refused.returncode == 2
            and 'lstm: HTTP 400: "instances" must be a non-empty list' in refused.stderr
        )
        again = run_cli("serve", relative, "--detach")
        assert (again.returncode, "already serves" in again.stderr) == (2, True)
        # a new inference key, asked over the management socket with the API key; predict reads it again
        old = json.loads(key_file.read_text())["inference"]["key"]
        renewed = run_cli("serve", relative, "--renew-key", "inference", check=True)
        assert "renewed the inference key" in renewed.stdout and old not in renewed.stdout
        assert json.loads(key_file.read_text())["inference"]["key"] != old
        assert json.loads(run_cli("predict", relative, "--model", "lstm", check=True).stdout)["predictions"]
        private = Path(json.loads((run / "serving" / "server.json").read_text())["management_socket"]).parent
        assert private.is_dir()
    finally:
        stopped = run_cli("serve", relative, "--stop")
    assert "stopped TorchServe" in stopped.stdout
    assert not (run / "serving" / "server.json").exists() and not key_file.exists()
    assert not private.exists()  # the management socket's private folder goes with the server
    refused = run_cli("predict", relative, "--model", "lstm")
    assert (refused.returncode, "no TorchServe runs" in refused.stderr) == (2, True)
    no_server = run_cli("serve", relative, "--renew-key", "inference")
    assert (no_server.returncode, "there is no key to renew" in no_server.stderr) == (2, True)


def test_serve_refuses_weights_failing_the_integrity_check_in_the_worker_until_re_archived(run_cli, tmp_path):
    """An archive whose weights differ from its model.json's SHA-256 (made outside `mlkube archive`)."""
    from mlkube.serving.archive import ARCHIVES_JSON, archive_model
    from mlkube.trainer.artifacts import read_model_card
    from mlkube.trainer.run import atomic_write_json

    run = make_run(tmp_path / "runs", serve=serve_spec())
    card = read_model_card(run / "models" / "classical")
    forged = shutil.copytree(run / "models" / "classical", tmp_path / "forged")
    (forged / card.weights).write_bytes(b"other weights")
    store = run / "serving" / "model-store"
    record = archive_model(forged, card, store / "classical.mar", RUN_ID)
    atomic_write_json(store / ARCHIVES_JSON, {"classical": record})

    done = run_cli("serve", run, "--model", "classical", "--detach")
    assert done.returncode == 2
    assert "TorchServe refused to load a model: integrity check failed" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (run / "serving" / "server.json").exists()

    # Re-archived as the fix says, the model serves (the earlier refusal in the appended log is not read
    # again).
    run_cli("archive", run, "--model", "classical", "--force", check=True)
    try:
        run_cli("serve", run, "--model", "classical", "--detach", check=True)
    finally:
        run_cli("serve", run, "--stop", check=True)


def test_serve_stays_attached_and_stops_the_server_on_sigterm(tmp_path):
    from mlkube.serving.server import running_server

    run = make_run(tmp_path / "runs", serve=serve_spec())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    cli = subprocess.Popen(
        [*MLKUBE, "serve", str(run)],
        cwd=tmp_path,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        for line in cli.stdout:  # until the instructions are printed (or the command ended)
            if line.startswith("try it:"):
                break
        server = running_server(run / "serving")
        assert server is not None, cli.stderr.read()
        cli.send_signal(signal.SIGTERM)
        cli.wait(timeout=60)
    finally:
        cli.kill()
        leftover = running_server(run / "serving")
        if leftover is not None:
            leftover.stop()
    assert cli.returncode == 0 and leftover is None
    assert not server.alive()

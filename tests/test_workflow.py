"""The whole workflow as a user runs it: the README's quickstart end to end (serving included), and a run
interrupted in each stage (SIGINT or SIGKILL) that `--resume` completes, ending with the same files as an
uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_tcp_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]

# A small run that goes through every stage: iris spot-check and search, a short LSTM on synthetic basins.
MINI = """seed: 5
data: {name: iris}
classical:
  holdout: {test_size: 0.2}
  models: [LDA, KNN, CART]
  cv: {scheme: stratified, folds: 4}
  search: {algorithm: grid, space: {KNN: {n_neighbors: [3, 9]}}}
lstm:
  data: {name: synthetic, synthetic_sites: 4, synthetic_years: 3}
  sequence_length: 30
  model: {hidden_size: 8}
  train: {epochs: 2, steps_per_epoch: 10, batch_size: 8, checkpoint_every: 5}
  elastic: {nproc_per_node: 2}
"""
# Fields that hold times, durations or Ray node ids (they differ between any two runs), and the LSTM's record
# of where its training was resumed (an interrupted run says so; its weights and scores are still compared).
VOLATILE = {
    "fit_time",
    "fit_times",
    "node",
    "created",
    "start_time",
    "end_time",
    "updated",
    "seconds",
    "samples_per_second",
    "sequences_per_second",
    "time",
    "wall_time",
    "hostname",
    "segments",
    "restarts",
    "signature",  # the model card's HMAC covers `created`
}
SKIPPED = ("env.json", "timings.json", "status.json", "report.html", "stages.json")


def _mlkube(*args, cwd: Path, env: dict, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "mlkube.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kwargs,
    )


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _results(run_dir: Path) -> dict[str, object]:
    """Every result file of a run: JSON without its volatile fields, anything else as bytes."""
    out = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if (
            not path.is_file()
            or rel.parts[0] in ("checkpoints", "logs", "serving", "tmp")
            or rel.name in SKIPPED
        ):
            continue
        out[str(rel)] = _strip(json.loads(path.read_text())) if path.suffix == ".json" else path.read_bytes()
    return out


@pytest.fixture(scope="module")
def workflow_env(ray_cluster):
    return {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": ray_cluster.address}


@pytest.fixture(scope="module")
def reference(workflow_env, tmp_path_factory):
    """The mini run, uninterrupted."""
    folder = tmp_path_factory.mktemp("reference")
    (folder / "spec.yaml").write_text(MINI)
    proc = _mlkube("run", "spec.yaml", "--run-id", "w", cwd=folder, env=workflow_env)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return folder / "runs" / "w"


STAGES = ["prepare", "evaluate", "improve", "deep", "present"]
# Two chains interrupt every stage once each; between them every stage meets both signals.
CHAINS = {"int-first": [signal.SIGINT, signal.SIGKILL] * 3, "kill-first": [signal.SIGKILL, signal.SIGINT] * 3}


def _interrupt_in(proc, stage: str, sig) -> None:
    """Wait until `proc` starts `stage` (for deep: until training steps), then signal its whole process
    group."""
    for line in proc.stderr:
        if f"] {stage} …" in line:
            break
    if stage == "deep":
        for line in proc.stderr:
            if "step " in line:
                break
    os.killpg(proc.pid, sig)
    proc.communicate(timeout=120)


@pytest.mark.parametrize("chain", CHAINS)
def test_a_run_interrupted_in_every_stage_resumes_to_the_same_results(
    chain, reference, workflow_env, tmp_path
):
    (tmp_path / "spec.yaml").write_text(MINI)
    run_dir = tmp_path / "runs" / "w"
    proc = _mlkube("run", "spec.yaml", "--run-id", "w", cwd=tmp_path, env=workflow_env)
    for stage, sig in zip(STAGES, CHAINS[chain], strict=False):
        _interrupt_in(proc, stage, sig)
        done = json.loads((run_dir / "stages.json").read_text())["done"]
        assert done == STAGES[: STAGES.index(stage)], f"{sig.name} in {stage}"
        proc = _mlkube("run", "spec.yaml", "--resume", "w", cwd=tmp_path, env=workflow_env)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert all(f"{stage}: done earlier, skipped" in err for stage in STAGES[:-1])
    assert json.loads((run_dir / "stages.json").read_text())["done"] == STAGES
    assert not [p for p in run_dir.rglob("*") if ".tmp-" in p.name]
    assert _results(run_dir) == _results(reference)


def test_the_quickstart_runs_end_to_end_and_ends_with_a_live_prediction(workflow_env, tmp_path):
    """The README's main job (examples/quickstart.yaml with --serve), on free ports."""
    ports = [free_tcp_port() for _ in range(2)]
    spec = (ROOT / "examples" / "quickstart.yaml").read_text()
    spec += f"serve: {{inference_port: {ports[0]}, metrics_port: {ports[1]}}}\n"
    (tmp_path / "quickstart.yaml").write_text(spec)
    proc = _mlkube("run", "quickstart.yaml", "--serve", "--run-id", "q", cwd=tmp_path, env=workflow_env)
    out, err = proc.communicate(timeout=900)
    run_dir = tmp_path / "runs" / "q"
    try:
        assert proc.returncode == 0, err
        lines = out.splitlines()
        predictions = {
            line.split()[2]: json.loads(line.split(": ", 1)[1])
            for line in lines
            if line.startswith("prediction from")
        }
        assert predictions["classical"]["predictions"][0] in ("setosa", "versicolor", "virginica")
        assert predictions["lstm"]["target"] == "QObs(mm/d)" and len(predictions["lstm"]["predictions"]) == 1
        assert lines[-1] == f"report: {run_dir / 'report.html'}"
        board = json.loads((run_dir / "leaderboard.json").read_text())
        assert board["best"]["holdout_score"] is not None
        assert "climatology" in {r["model"] for r in board["deep"]["rows"]}
        watched = subprocess.run(
            [sys.executable, "-m", "mlkube.cli", "watch", "q", "--once"],
            cwd=tmp_path,
            env=workflow_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert "(finished)" in watched and "LSTM: step " in watched and '"finished":' in watched
    finally:
        subprocess.run(
            [sys.executable, "-m", "mlkube.cli", "serve", str(run_dir), "--stop"],
            env=workflow_env,
            capture_output=True,
            timeout=120,
            check=False,
        )

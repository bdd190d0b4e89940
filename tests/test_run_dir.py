"""The run directory: atomic writes, resume, finished runs never rewritten, and a SIGKILL mid-stage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.run import Run, atomic_path, atomic_write_json, remove_partial_files

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.unit
def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"v": 2, "trunc')
        raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


@pytest.mark.unit
def test_partial_files_of_a_killed_writer_are_removed_on_resume(tmp_path):
    run = Run.start("seed: 1\n", tmp_path, run_id="r")
    leftover = run.path / "stages" / ".evaluate.json.tmp-abc.json"
    leftover.parent.mkdir()
    leftover.write_text("{")
    assert remove_partial_files(run.path) == [leftover] and not leftover.exists()


@pytest.mark.unit
def test_an_existing_run_needs_resume_and_the_same_spec(tmp_path):
    Run.start("seed: 1\n", tmp_path, run_id="r")
    with pytest.raises(MlkubeError, match="already exists"):
        Run.start("seed: 1\n", tmp_path, run_id="r")
    with pytest.raises(MlkubeError, match="spec differs"):
        Run.start("seed: 2\n", tmp_path, run_id="r", resume=True)
    with pytest.raises(MlkubeError, match="no such run"):
        Run.start("seed: 1\n", tmp_path, run_id="other", resume=True)
    assert Run.start("seed: 1\n", tmp_path, run_id="r", resume=True).path == tmp_path / "r"


@pytest.mark.unit
def test_a_finished_run_is_never_rewritten(tmp_path):
    with Run.start("seed: 1\n", tmp_path, run_id="r") as run:
        run.write_env(seed=1, end=True)
    with pytest.raises(MlkubeError, match="finished and is never rewritten"):
        Run.start("seed: 1\n", tmp_path, run_id="r", resume=True)


@pytest.mark.unit
def test_run_ids_cannot_escape_the_run_folder(tmp_path):
    with pytest.raises(MlkubeError, match="may hold only"):
        Run.start("seed: 1\n", tmp_path, run_id="../evil")


SLOW_SPEC = """seed: 2
data: {name: breast_cancer}
classical:
  holdout: {test_size: 0.2}
  models: [LR, RF, GBM, SVM, KNN, CART]
  cv: {scheme: repeated, folds: 5, repeats: 2}
"""


def _final_files(run_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in run_dir.rglob("*")
        if p.is_file() and ".tmp-" not in p.name
    }


@pytest.mark.integration
def test_sigkill_mid_stage_leaves_no_partial_file_and_resume_completes(ray_cluster, tmp_path):
    (tmp_path / "spec.yaml").write_text(SLOW_SPEC)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": ray_cluster.address}
    cmd = [sys.executable, "-m", "mlkube.cli", "run", "spec.yaml"]
    proc = subprocess.Popen(
        [*cmd, "--run-id", "k"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    for line in proc.stderr:  # kill once the spot-check trials are running
        if "evaluate: trial 1/" in line:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    run_dir = tmp_path / "runs" / "k"
    for name, data in _final_files(run_dir).items():  # every file under a final name is whole
        if name.endswith(".json"):
            json.loads(data)
    assert json.loads((run_dir / "stages.json").read_text())["done"] == ["prepare"]
    assert not (run_dir / "leaderboard.json").exists()

    done = subprocess.run(
        [*cmd, "--resume", "k"],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "prepare: done earlier, skipped" in done.stderr
    assert json.loads((run_dir / "stages.json").read_text())["done"] == [
        "prepare",
        "evaluate",
        "improve",
        "present",
    ]
    assert not [p for p in run_dir.rglob("*") if ".tmp-" in p.name]

    whole = subprocess.run(
        [*cmd, "--run-id", "w"],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert whole.returncode == 0, whole.stderr
    resumed, uninterrupted = (
        json.loads((tmp_path / "runs" / r / "leaderboard.json").read_text()) for r in ("k", "w")
    )

    def strip(board):
        return [(r["model"], r["scores"]) for r in board["rows"]]

    assert strip(resumed) == strip(uninterrupted)
    assert resumed["best"]["holdout_score"] == uninterrupted["best"]["holdout_score"]


@pytest.mark.integration
def test_run_and_show_from_the_command_line(ray_cluster, run_cli):
    env = {"RAY_ADDRESS": ray_cluster.address}
    run = run_cli("run", ROOT / "examples" / "iris.yaml", "--run-id", "t", env=env, check=True)
    assert "report: " in run.stdout and "leaderboard: " in run.stdout
    shown = run_cli("show", "t", check=True).stdout
    assert "best: " in shown and "LDA" in shown
    watched = run_cli("watch", "t", check=True).stdout  # a finished run: one look, then exit
    assert "(finished)" in watched and "stages done: prepare" in watched and '"finished": 6' in watched
    again = run_cli("run", ROOT / "examples" / "iris.yaml", "--run-id", "t", env=env)
    assert again.returncode == 2 and "already exists" in again.stderr
    finished = run_cli("run", ROOT / "examples" / "iris.yaml", "--resume", "t", env=env)
    assert finished.returncode == 2 and "finished and is never rewritten" in finished.stderr

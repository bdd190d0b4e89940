"""One writer per run: the run directory's flock'd writer lock refuses a second writer (naming the holder), is
free at once when its holder is killed, stays taken while a child of a killed writer lives; unusable run
folders and run ids are messages, not tracebacks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.run import MAX_RUN_ID, Run

ROOT = Path(__file__).resolve().parents[1]
MLKUBE = [sys.executable, "-m", "mlkube.cli"]
SPEC = "seed: 1\n"
IRIS = """seed: 3
data: {name: iris}
classical:
  models: [LR, CART]
  cv: {scheme: kfold, folds: 3}
"""

# A writer in a process of its own: takes run `r` under argv[1], says so, then waits (optionally in a child
# that inherits the lock, as torchrun does) until it is killed.
WRITER = """
import subprocess, sys, time
from pathlib import Path
from mlkube.trainer.run import Run
run = Run.start("seed: 1\\n", Path(sys.argv[1]), run_id="r", resume=(Path(sys.argv[1]) / "r").exists())
if sys.argv[2] == "child":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], pass_fds=run.writer_fds)
    print(child.pid, flush=True)
else:
    print("locked", flush=True)
time.sleep(600)
"""


def start_writer(root: Path, mode: str = "alone") -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), mode],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def cli(
    *args: object, cwd: Path, env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*MLKUBE, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def _gone(pid: int) -> bool:
    """The process has exited (a zombie holds no descriptors)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


# ------------------------------------------------------------------------------------------ the lock itself
@pytest.mark.unit
def test_a_second_writer_of_a_run_is_refused_naming_the_holder(tmp_path):
    with Run.start(SPEC, tmp_path, run_id="r"):
        with pytest.raises(MlkubeError, match="being written by") as refused:
            Run.start(SPEC, tmp_path, run_id="r", resume=True)
        message = str(refused.value)
        assert f"pid {os.getpid()} on host {socket.gethostname()} since 20" in message
        assert "`mlkube run`" in message and "wait for it to finish, or stop it" in refused.value.fix
        with pytest.raises(MlkubeError, match="being written by"):
            Run.start(SPEC, tmp_path, run_id="r")  # a new run of the same id: refused before "already exists"
    assert Run.start(SPEC, tmp_path, run_id="r", resume=True).id == "r"  # released: free again


@pytest.mark.unit
def test_a_writer_in_another_process_blocks_the_run_until_it_is_killed(tmp_path):
    writer, said = start_writer(tmp_path)
    try:
        assert said == "locked"
        with pytest.raises(MlkubeError, match=f"pid {writer.pid} on host"):
            Run.start(SPEC, tmp_path, run_id="r", resume=True)
    finally:
        kill(writer)
    with Run.start(SPEC, tmp_path, run_id="r", resume=True) as run:  # at once: the kernel freed the lock
        assert f'"pid": {os.getpid()}' in run.lock_file.read_text()


@pytest.mark.unit
def test_a_killed_writers_child_keeps_the_run_locked_and_is_named(tmp_path):
    writer, child_pid = start_writer(tmp_path, "child")
    kill(writer)
    try:
        with pytest.raises(MlkubeError, match=f"pid {writer.pid} has exited, and a process it started"):
            Run.start(SPEC, tmp_path, run_id="r", resume=True)
    finally:
        os.kill(int(child_pid), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not _gone(int(child_pid)) and time.monotonic() < deadline:
        time.sleep(0.05)  # until the kernel has closed the orphan's descriptors
    assert Run.start(SPEC, tmp_path, run_id="r", resume=True).id == "r"


@pytest.mark.unit
def test_report_is_refused_while_a_run_writes(tmp_path):
    writer, _ = start_writer(tmp_path / "runs")
    try:
        refused = cli("report", "r", cwd=tmp_path, timeout=120)
    finally:
        kill(writer)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"run 'r' is being written by `mlkube run` (pid {writer.pid}" in refused.stderr


@pytest.mark.unit
def test_serve_is_refused_while_a_run_writes_and_archives_nothing(tmp_path):
    """Archiving writes the run's serving folder: a half-written run is never archived or served."""
    writer, _ = start_writer(tmp_path / "runs")
    try:
        refused = cli("serve", "r", "--detach", cwd=tmp_path, timeout=120)
    finally:
        kill(writer)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"run 'r' is being written by `mlkube run` (pid {writer.pid}" in refused.stderr
    assert not (tmp_path / "runs" / "r" / "serving").exists()


# ----------------------------------------------------------------------------------- run ids and run_dir
@pytest.mark.unit
@pytest.mark.parametrize(
    "run_id", ["x" * 300, "x" * (MAX_RUN_ID + 1), "é" * 65], ids=["300", "cap+1", "130 bytes in 65 letters"]
)
def test_a_run_id_longer_than_the_cap_is_refused_by_its_length(tmp_path, run_id):
    with pytest.raises(MlkubeError, match=f"bytes long; at most {MAX_RUN_ID} are allowed"):
        Run.start(SPEC, tmp_path, run_id=run_id)
    assert list(tmp_path.iterdir()) == []
    at_the_cap = run_id.encode()[:MAX_RUN_ID].decode(errors="ignore")
    assert Run.start(SPEC, tmp_path, run_id=at_the_cap).path.is_dir()


@pytest.mark.unit
def test_a_300_character_run_id_is_a_message_on_the_command_line(tmp_path):
    (tmp_path / "spec.yaml").write_text(IRIS)
    long_id = "r" * 300
    for args in (("run", "spec.yaml", "--run-id", long_id), ("run", "spec.yaml", "--resume", long_id)):
        done = cli(*args, cwd=tmp_path, timeout=120)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "300 bytes long; at most 128" in done.stderr
    shown = cli("show", long_id, cwd=tmp_path, timeout=120)
    assert shown.returncode == 2 and "Traceback" not in shown.stderr and "no run at" in shown.stderr


@pytest.mark.unit
@pytest.mark.parametrize("where", ["a file", "below a file"])
def test_a_run_dir_that_is_a_file_is_a_message_naming_it(tmp_path, where):
    (tmp_path / "taken").write_text("not a folder")
    run_dir = tmp_path / "taken" if where == "a file" else tmp_path / "taken" / "runs"
    (tmp_path / "spec.yaml").write_text(f"{IRIS}run_dir: {run_dir}\n")
    done = cli("run", "spec.yaml", "--run-id", "r", cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"run_dir '{run_dir}' cannot hold run folder 'r': {tmp_path / 'taken'} is a file" in done.stderr
    assert "set `run_dir` in the spec to a folder this user can write" in done.stderr


@pytest.mark.unit
def test_an_unwritable_run_dir_is_a_message_naming_it(tmp_path):
    run_dir = Path("/sys/mlkube-runs")  # sysfs: nobody, root included, may create a folder there
    with pytest.raises(MlkubeError, match="run_dir '/sys/mlkube-runs' cannot hold run folder 'r'") as refused:
        Run.start(SPEC, run_dir, run_id="r")
    assert "not permitted" in str(refused.value) or "denied" in str(refused.value)


# ------------------------------------------------------------------------------- real runs, real commands
def _wait_for_lock(lock: Path, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        if lock.exists() and lock.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"the run never took its lock (exit {proc.poll()})")


@pytest.mark.integration
def test_two_runs_of_one_id_started_together_one_finishes_one_is_refused(ray_cluster, tmp_path):
    (tmp_path / "spec.yaml").write_text(IRIS)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": ray_cluster.address}
    runs = [
        subprocess.Popen(
            [*MLKUBE, "run", "spec.yaml", "--run-id", "x"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outcomes = sorted((proc.wait(timeout=600), proc.pid, proc.communicate()[1]) for proc in runs)
    (finished, winner, _), (refused, _, message) = outcomes
    assert (finished, refused) == (0, 2), message
    assert f"run 'x' is being written by `mlkube run` (pid {winner} on host" in message
    assert "Traceback" not in message


@pytest.mark.integration
def test_resume_and_report_are_refused_while_the_run_writes(ray_cluster, tmp_path):
    (tmp_path / "spec.yaml").write_text(IRIS)
    env = {"RAY_ADDRESS": ray_cluster.address}
    first = subprocess.Popen(
        [*MLKUBE, "run", "spec.yaml", "--run-id", "x"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_lock(tmp_path / "runs" / "x" / "writer.lock", first)
    resumed = cli("run", "spec.yaml", "--resume", "x", cwd=tmp_path, env=env)
    reported = cli("report", "x", cwd=tmp_path)
    assert first.wait(timeout=600) == 0
    for refused in (resumed, reported):
        assert refused.returncode == 2 and f"being written by `mlkube run` (pid {first.pid}" in refused.stderr
    done = Run.open(tmp_path / "runs" / "x").done_stages
    assert done == ["prepare", "evaluate", "improve", "present"]  # each stage ran once, by the one writer

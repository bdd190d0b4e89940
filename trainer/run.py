"""The run directory `runs/<run-id>/`: the only place results are written.

Every write is atomic (a temp file in the same folder, then `os.replace`), so a killed process never leaves a
partial file under a final name. `stages.json` records which stages finished; `--resume` continues from there,
and a finished run is never rewritten.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import platform
import secrets
import socket
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from mlkube.trainer.errors import MlkubeError

TMP_MARK = ".tmp-"
MAX_RUN_ID = 128  # bytes: a file name may hold 255, and the id also names rendezvous and archives
# The models a run makes (`models/<name>/`): the best classical pipeline and the LSTM.
CLASSICAL_MODEL = "classical"
LSTM_MODEL = "lstm"
LIBRARIES = (
    "numpy",
    "pandas",
    "scikit-learn",
    "ray",
    "torch",
    "numba",
    "optuna",
    "pydantic",
    "skops",
    "torchserve",
    "torch-model-archiver",
    "kubernetes",
    "matplotlib",
)


# ----------------------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_path(final: Path | str) -> Iterator[Path]:
    """Yield a temp path beside `final`; on success it is renamed onto `final`, on error removed.

    For libraries that write files themselves (savefig, torch.save, skops.dump).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}{TMP_MARK}", suffix=final.suffix, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~_umask())  # mkstemp makes 0600; results are read by other users and containers
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(final: Path | str, data: bytes) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def atomic_write_text(final: Path | str, text: str) -> Path:
    return atomic_write_bytes(final, text.encode())


def atomic_write_json(final: Path | str, obj: Any) -> Path:
    return atomic_write_text(final, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (Path, dt.date)):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


_REQUIRED = object()


def read_json(path: Path | str, default: Any = _REQUIRED) -> Any:
    """The JSON in `path`; `default` instead when the file does not exist (when one is given)."""
    path = Path(path)
    if default is not _REQUIRED and not path.exists():
        return default
    return json.loads(path.read_text())


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remove_partial_files(folder: Path) -> list[Path]:
    """Delete temp files left by a killed writer; return what was removed."""
    removed = [p for p in folder.rglob(f".*{TMP_MARK}*") if p.is_file()]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


# ------------------------------------------------------------------------------------------------ the run
def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus 4 random hex digits."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


class Run:
    """One run directory. Create with `Run.start` (new or resumed) or open a finished one with `Run.open`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.id = self.path.name
        self._lock: WriterLock | None = None

    # -- the layout: every place in a run directory is named here, and only here
    @property
    def spec_file(self) -> Path:
        """The resolved spec the run started with (every default filled in)."""
        return self.path / "spec.yaml"

    @property
    def env_file(self) -> Path:
        """Library versions, seed, data hashes, host, start and end times."""
        return self.path / "env.json"

    @property
    def stages_file(self) -> Path:
        """Which stages finished, in order (`{"done": [...]}`)."""
        return self.path / "stages.json"

    def stage_file(self, stage: str) -> Path:
        """The plain-data result of one stage (`stages/<stage>.json`)."""
        return self.path / "stages" / f"{stage}.json"

    @property
    def timings_file(self) -> Path:
        """Seconds per finished stage."""
        return self.path / "timings.json"

    @property
    def status_file(self) -> Path:
        """The running tuning stage's live counts (trials running, finished, failed; best score)."""
        return self.path / "status.json"

    @property
    def leaderboard_file(self) -> Path:
        return self.path / "leaderboard.json"

    @property
    def cv_scores_file(self) -> Path:
        """One row per model and fold."""
        return self.path / "cv_scores.csv"

    @property
    def basin_scores_file(self) -> Path:
        """The deep stage's test scores: one row per model and site, every hydrological metric."""
        return self.path / "basin_scores.csv"

    @property
    def basin_cv_scores_file(self) -> Path:
        """The basin_cv stage's scores: one row per held-out site (its fold) and per metric, beside gauged."""
        return self.path / "basin_cv_scores.csv"

    def basin_fold(self, index: int) -> Path:
        """One fold of the cross-validation over sites: fold.json (its sites), its model and checkpoints."""
        return self.path / "basin_cv" / f"fold-{index}"

    def ensemble_member(self, index: int) -> Path:
        """One seed of the LSTM ensemble: its model, training record and checkpoints."""
        return self.path / "ensemble" / f"member-{index}"

    @property
    def report_file(self) -> Path:
        """The self-contained HTML report."""
        return self.path / "report.html"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    @property
    def models(self) -> Path:
        return self.path / "models"

    def relative(self, path: Path) -> str:
        """A place in the run as the run's own records name it: relative to the run folder."""
        return str(path.relative_to(self.path))

    def model_dir(self, name: str) -> Path:
        """One model's artifact folder (`models/<name>/`: the weights and model.json)."""
        return self.models / name

    @property
    def checkpoints(self) -> Path:
        """The LSTM's training checkpoints (rank 0 writes them; every worker resumes from the newest)."""
        return self.path / "checkpoints"

    @property
    def prepared_lstm(self) -> Path:
        """The LSTM's series and statistics, prepared once by the prepare stage."""
        return self.path / "prepared" / "lstm.npz"

    @property
    def lstm_log(self) -> Path:
        """torchrun's output (every worker's lines) across the run's launches."""
        return self.path / "logs" / "lstm.log"

    @property
    def serving(self) -> Path:
        """The local TorchServe's folder: its configuration, model store, keys, logs."""
        return self.path / "serving"

    @property
    def model_store(self) -> Path:
        """The run's TorchServe archives (`<model>.mar`)."""
        return self.serving / "model-store"

    # -- creation / resume
    @classmethod
    def start(cls, spec_yaml: str, run_root: Path, run_id: str | None = None, resume: bool = False) -> Run:
        """Create `run_root/<run_id>/`, or reopen it with `resume=True` (same spec required).

        The run comes back holding its writer lock (`with Run.start(...) as run:` releases it): the checks and
        the first writes happen under the lock, so two writers can never both pass them.
        """
        run_id = run_id or new_run_id()
        check_run_id(run_id)
        run = cls(Path(run_root) / run_id)
        if resume and not run._exists():
            raise MlkubeError(
                f"cannot resume run {run_id!r}: no such run under {run_root}", "check the id with `ls runs/`"
            )
        _make_folder(run.path, run_root)
        run.acquire("run")
        try:
            run._create_or_reopen(spec_yaml, resume)
        except BaseException:
            run.release()
            raise
        return run

    def _create_or_reopen(self, spec_yaml: str, resume: bool) -> None:
        if self.spec_file.exists():
            if not resume:
                raise MlkubeError(
                    f"run {self.id!r} already exists at {self.path}",
                    f"continue it with `--resume {self.id}`, or pick another --run-id",
                )
            self._check_resumable(spec_yaml)
            remove_partial_files(self.path)
            return
        if resume:
            raise MlkubeError(
                f"cannot resume run {self.id!r}: no such run at {self.path}", "check the id with `ls runs/`"
            )
        atomic_write_text(self.spec_file, spec_yaml)
        atomic_write_json(self.stages_file, {"done": []})

    @classmethod
    def open(cls, ref: str | Path, run_root: Path = Path("runs")) -> Run:
        """Open an existing run by path or by id under `run_root`."""
        for run in (cls(Path(ref)), cls(Path(run_root) / str(ref))):
            if run._exists():
                return run
        raise MlkubeError(
            f"no run at {ref!r} (looked in {Path(ref)} and {Path(run_root) / str(ref)})",
            "give a run folder or an id under runs/",
        )

    def _exists(self) -> bool:
        try:
            return self.spec_file.exists()
        except OSError:  # a name too long for the file system is no run either
            return False

    # -- one writer per run
    @property
    def lock_file(self) -> Path:
        """The writer lock: `flock`ed by the one process writing the run, holding its pid, host and start."""
        return self.path / "writer.lock"

    def acquire(self, command: str) -> Run:
        """Take the run's writer lock for `command` (refused, naming the holder, while another process holds
        it); `with run:` or `release()` gives it back, and the kernel frees it when this process dies."""
        if self._lock is None:
            self._lock = WriterLock.take(self, command)
        return self

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @property
    def writer_fds(self) -> tuple[int, ...]:
        """File descriptors a child that writes in the run inherits (`pass_fds`): the lock then stays taken
        until the child is gone too, even when this process is killed first."""
        return () if self._lock is None else (self._lock.fd,)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _check_resumable(self, spec_yaml: str) -> None:
        if self.finished:
            raise MlkubeError(
                f"run {self.id!r} is finished and is never rewritten", "start a new run (another --run-id)"
            )
        saved = self.spec_file.read_text()
        if saved != spec_yaml:
            raise MlkubeError(
                f"the spec differs from the one run {self.id!r} started with ({self.spec_file})",
                "resume with the same spec, or start a new run",
            )

    # -- stage bookkeeping
    @property
    def done_stages(self) -> list[str]:
        return read_json(self.stages_file, {"done": []})["done"]

    def is_done(self, stage: str) -> bool:
        return stage in self.done_stages

    def mark_done(self, stage: str) -> None:
        done = self.done_stages
        if stage not in done:
            atomic_write_json(self.stages_file, {"done": [*done, stage]})

    @property
    def finished(self) -> bool:
        return read_json(self.env_file, {}).get("end_time") is not None

    # -- env.json
    def write_env(self, seed: int, data_hash: str | None = None, end: bool = False, **extra: Any) -> None:
        """Write env.json (versions, seed, data hash, host, start/end times), keeping the first start time."""
        env = read_json(self.env_file, {})
        env.setdefault("start_time", now_iso())
        env.update(
            {
                "run_id": self.id,
                "seed": seed,
                "hostname": socket.gethostname(),
                "platform": platform.platform(),
                "versions": library_versions(),
                "end_time": now_iso() if end else None,
            }
        )
        if data_hash is not None:
            env["data_hash"] = data_hash
        env.update(extra)
        atomic_write_json(self.env_file, env)


def check_run_id(run_id: str) -> None:
    """A run id names one folder: letters, digits, '-', '_' and '.', at most MAX_RUN_ID bytes."""
    if not run_id.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise MlkubeError(
            f"run id {run_id!r} may hold only letters, digits, '-', '_' and '.'", "pick another --run-id"
        )
    if len(run_id.encode()) > MAX_RUN_ID:
        raise MlkubeError(
            f"run id {run_id[:40]!r}… is {len(run_id.encode())} bytes long; at most {MAX_RUN_ID} are allowed",
            "pick a shorter --run-id",
        )


def _make_folder(path: Path, run_root: Path) -> None:
    """Create the run's folder, or say why `run_dir` cannot hold it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    except OSError as err:
        raise MlkubeError(
            f"run_dir {str(run_root)!r} cannot hold run folder {path.name!r}: {_why(err, path)}",
            "set `run_dir` in the spec to a folder this user can write (or create it)",
        ) from None


def _why(err: OSError, path: Path) -> str:
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            return f"{parent} is a file, not a folder"
    return f"{err.strerror} ({err.filename or path})"


class WriterLock:
    """One writer per run: an exclusive `fcntl.flock` on `Run.lock_file`. The kernel drops the lock when the
    holder's last descriptor closes (its death included), so a killed writer's run can be resumed at once;
    what the file says (pid, host, start, command) only names the holder in the refusal."""

    def __init__(self, fd: int):
        self.fd = fd

    @classmethod
    def take(cls, run: Run, command: str) -> WriterLock:
        try:
            fd = os.open(run.lock_file, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise MlkubeError(
                f"cannot open the lock of run {run.id!r} ({run.lock_file}): {err.strerror}",
                "run it as a user who may write the run folder",
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _holder(fd)
            os.close(fd)
            raise MlkubeError(
                f"run {run.id!r} is being written by {who}", "wait for it to finish, or stop it"
            ) from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": now_iso(), "command": command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        return cls(fd)

    def release(self) -> None:
        if self.fd >= 0:
            os.ftruncate(self.fd, 0)  # a held lock always names its holder; a free one names nobody
            os.close(self.fd)
            self.fd = -1

    __del__ = release  # a Run dropped without `with` frees its run (as its process's death would)


def _holder(fd: int) -> str:
    """Who holds the lock, in words, from the lock file's record."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0))
        pid, host = int(holder["pid"]), str(holder["host"])
        words = f"`mlkube {holder['command']}` (pid {pid} on host {host} since {holder['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process (it is starting; its record is not written yet)"
    if host == socket.gethostname() and not _alive(pid):
        words += f"; pid {pid} has exited, and a process it started (torchrun) still holds the lock: stop it"
    return words


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

"""Run artifact → TorchServe model archive: `models/<name>/` → `serving/model-store/<name>.mar`.

Each archive holds the framework's handler, model.json and the weights (every member's, for an LSTM
ensemble), with the run id as its version. The model's SHA-256 is checked before packing, and each archive's
own SHA-256 is recorded in `model-store/archives.json`, which the server checks before it loads anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mlkube.serving.handlers import handler_for
from mlkube.trainer.artifacts import MODEL_JSON, read_model_card
from mlkube.trainer.card import ModelCard
from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.run import Run, atomic_path, atomic_write_json, read_json, sha256_file

ARCHIVES_JSON = "archives.json"


def model_store(run: Run) -> Path:
    return run.model_store


def model_names(run: Run, names: list[str] | None = None) -> list[str]:
    """The run's model folders (those with a model.json), or the `names` asked for, checked to exist."""
    found = sorted(p.parent.name for p in run.models.glob(f"*/{MODEL_JSON}"))
    if not found:
        raise MlkubeError(
            f"run {run.id} has no models under {run.models}",
            f"finish it with `mlkube run SPEC --resume {run.id}`",
        )
    unknown = [n for n in names or [] if n not in found]
    if unknown:
        raise MlkubeError(f"run {run.id} has no model {unknown}", f"choose from {found}")
    return names or found


def archive_run(run: Run, names: list[str] | None = None, force: bool = False) -> list[Path]:
    """Archive the run's models (all, or `names`); without `force`, an archive up to date with its model is
    kept."""
    records = read_archives(run)
    paths = []
    for name in model_names(run, names):
        card = read_model_card(run.model_dir(name))  # refuses weights whose SHA-256 differs from the card's
        record = records.get(name, {})
        mar = model_store(run) / f"{name}.mar"
        if force or record.get("model_sha256") != card.sha256 or not mar.is_file():
            records[name] = archive_model(run.model_dir(name), card, mar, version=run.id)
            atomic_write_json(model_store(run) / ARCHIVES_JSON, records)
        paths.append(mar)
    return paths


def archive_model(folder: Path, card: ModelCard, mar: Path, version: str) -> dict[str, Any]:
    """Pack one model folder into `mar` (atomically) with torch-model-archiver; return its archives.json
    record."""
    handler, _ = handler_for(card.framework)
    with tempfile.TemporaryDirectory(prefix="mlkube-archive-") as tmp:
        # The archiver stages files in $TMPDIR/<model name>: a private TMPDIR keeps concurrent archivers
        # apart.
        command = [
            sys.executable,
            "-m",
            "model_archiver.model_packaging",
            "--model-name",
            mar.stem,
            "--version",
            version,
            "--handler",
            str(handler),
            "--serialized-file",
            str(folder / card.weights),
            "--extra-files",
            ",".join(str(folder / name) for name in [MODEL_JSON, *extra_weights(card)]),
            "--export-path",
            tmp,
        ]
        done = subprocess.run(
            command, check=False, capture_output=True, text=True, env={**os.environ, "TMPDIR": tmp}
        )
        if done.returncode != 0:
            raise MlkubeError(
                f"torch-model-archiver failed for {folder}: {done.stderr.strip()[-500:]}",
                "check that torch-model-archiver is installed (`make install`)",
            )
        with atomic_path(mar) as partial:
            shutil.move(Path(tmp) / f"{mar.stem}.mar", partial)
    return {
        "file": mar.name,
        "sha256": sha256_file(mar),
        "version": version,
        "framework": card.framework,
        "model_sha256": card.sha256,
    }


def extra_weights(card: ModelCard) -> list[str]:
    """The weights files beside the card's `weights` that the model loads too (an ensemble's other
    members)."""
    return [name for name, _ in card.weight_files()[1:]]


def read_archives(run: Run) -> dict[str, Any]:
    path = model_store(run) / ARCHIVES_JSON
    return read_json(path) if path.is_file() else {}


def verify_archives(run: Run, names: list[str]) -> None:
    """Refuse an archive whose SHA-256 differs from the one recorded when it was made."""
    records = read_archives(run)
    for name in names:
        mar = model_store(run) / f"{name}.mar"
        if name not in records or not mar.is_file():
            raise MlkubeError(
                f"no archive of model {name!r} in {model_store(run)}",
                f"make it with `mlkube archive {run.path}`",
            )
        if sha256_file(mar) != records[name]["sha256"]:
            raise MlkubeError(
                f"integrity check failed for {mar}: its SHA-256 differs from {ARCHIVES_JSON}'s",
                "the archive was changed; "
                f"re-create it with `mlkube archive {run.path} --model {name} --force`",
            )

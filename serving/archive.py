"""Run artifact → TorchServe model archive: `models/<name>/` → `serving/model-store/<name>.mar`.

Each archive holds model.json and the weights (every member's, for an LSTM ensemble) and no code: its
manifest names the framework's handler as the installed module, and its version is the run id. The model's
SHA-256 is checked before packing, and each archive's own SHA-256 is recorded in `model-store/archives.json`.
Before a start, `stage_archives` checks each archive against the model's signed card and writes a copy of the
checked files into the server's private folder: TorchServe serves that copy, never the runs volume's file.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import shutil
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO

from mlkube.serving.handlers import handler_for
from mlkube.trainer.artifacts import MODEL_JSON, read_model_card
from mlkube.trainer.card import ModelCard
from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.run import Run, atomic_path, atomic_write_json, read_json, sha256_file

ARCHIVES_JSON = "archives.json"
MANIFEST = "MAR-INF/MANIFEST.json"
MAX_JSON_BYTES = 16 * 2**20  # an archive's model.json and manifest: far beyond any card
# archives.json's `format` of archives without code: older ones (the handler's source inside) are made anew
FORMAT = 2


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
        if (
            force
            or (record.get("model_sha256"), record.get("format")) != (card.sha256, FORMAT)
            or not mar.is_file()
        ):
            records[name] = archive_model(run.model_dir(name), card, mar, version=run.id)
            atomic_write_json(model_store(run) / ARCHIVES_JSON, records)
        paths.append(mar)
    return paths


def archive_model(folder: Path, card: ModelCard, mar: Path, version: str) -> dict[str, Any]:
    """Pack one model folder into `mar` (atomically): the manifest, model.json and the weights, no code;
    return its archives.json record. Written with zipfile, not torch-model-archiver, which packs the
    handler's source into every archive."""
    with atomic_path(mar) as partial, zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(MANIFEST, json.dumps(manifest(mar.stem, card, version), indent=2))
        for name in [MODEL_JSON, *(weights for weights, _ in card.weight_files())]:
            z.write(folder / name, name)
    return {
        "file": mar.name,
        "sha256": sha256_file(mar),
        "version": version,
        "framework": card.framework,
        "model_sha256": card.sha256,
        "format": FORMAT,
    }


def manifest(name: str, card: ModelCard, version: str) -> dict[str, Any]:
    """An archive's MAR-INF/MANIFEST.json, with what TorchServe 0.12 requires of one. The handler is the
    installed module (`mlkube.serving.handlers.<x>`), which the worker imports by that name."""
    handler, _ = handler_for(card.framework)
    return {
        "createdOn": datetime.datetime.now().strftime("%d/%m/%Y %H:%M:%S"),
        "runtime": "python",
        "model": {
            "modelName": name,
            "serializedFile": card.weights,
            "handler": handler,
            "modelVersion": version,
        },
        "archiverVersion": "mlkube",
    }


def read_archives(run: Run) -> dict[str, Any]:
    path = model_store(run) / ARCHIVES_JSON
    return read_json(path) if path.is_file() else {}


def stage_archives(run: Run, names: list[str], store: Path) -> None:
    """Check each archive against the model's signed card and write what TorchServe serves into `store` (a
    new folder in the server's private folder): a fresh archive of exactly the checked files.

    Refused, naming the archive and the file: an archive whose SHA-256 differs from archives.json's; one
    that holds anything but MAR-INF/MANIFEST.json, model.json and the weights files the signed card names
    (a .py file, a folder: TorchServe unpacks an archive onto its worker's sys.path, ahead of the installed
    packages); a manifest that names another handler or weights; an entry larger than it can be. archives.json
    sits on the runs volume beside the archives, so the contents are what counts. The copy is written from
    what Python read, so TorchServe's Java unzip (which reads local headers, not the central directory)
    sees nothing else, and a change on the volume after the check reaches no worker."""
    records = read_archives(run)
    store.mkdir(mode=0o700)
    for name in names:
        mar = model_store(run) / f"{name}.mar"
        if name not in records or not mar.is_file():
            raise MlkubeError(
                f"no archive of model {name!r} in {model_store(run)}",
                f"make it with `mlkube archive {run.path}`",
            )
        card = read_model_card(run.model_dir(name))  # signed: its weights' names are the ones to expect
        with open(mar, "rb") as source:
            digest = hashlib.sha256()
            for block in iter(lambda: source.read(1 << 20), b""):
                digest.update(block)
            if digest.hexdigest() != records[name]["sha256"]:
                raise MlkubeError(
                    f"integrity check failed for {mar}: its SHA-256 differs from {ARCHIVES_JSON}'s",
                    "the archive was changed; "
                    f"re-create it with `mlkube archive {run.path} --model {name} --force`",
                )
            source.seek(0)
            copy_checked(source, mar, card, run, store / mar.name)


def copy_checked(source: BinaryIO, mar: Path, card: ModelCard, run: Run, copy: Path) -> None:
    """Write to `copy` the entries of the archive `source` (read from `mar`) once checked (stage_archives)."""
    name = mar.stem
    fix = (
        "the archive was changed on the runs volume (check who can write it); "
        f"re-create it with `mlkube archive {run.path} --model {name} --force`"
    )
    folder = run.model_dir(name)
    limits = {
        MANIFEST: MAX_JSON_BYTES,
        MODEL_JSON: MAX_JSON_BYTES,
        **{weights: (folder / weights).stat().st_size for weights, _ in card.weight_files()},
    }
    try:
        with zipfile.ZipFile(source) as z:
            entries = z.infolist()
            found = [entry.filename for entry in entries]
            unexpected = sorted(set(found) - set(limits)) or sorted({n for n in found if found.count(n) > 1})
            if unexpected:
                more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
                raise MlkubeError(
                    f"{mar} holds {unexpected[0]!r}{more}: an archive of model {name!r} holds only "
                    f"{sorted(limits)}, once each",
                    fix,
                )
            missing = sorted(set(limits) - set(found))
            if missing:
                raise MlkubeError(f"{mar} lacks {missing[0]!r} of model {name!r}", fix)
            for entry in entries:
                if entry.file_size > limits[entry.filename] or entry.flag_bits & 0x1:
                    raise MlkubeError(
                        f"{mar}: {entry.filename!r} is encrypted or holds {entry.file_size} bytes, more than "
                        f"its {limits[entry.filename]}",
                        fix,
                    )
            written = json.loads(z.read(MANIFEST))
            expected = manifest(name, card, run.id)
            if (
                not isinstance(written, dict)
                or set(written) - set(expected)
                or (written.get("runtime"), written.get("model")) != ("python", expected["model"])
            ):
                raise MlkubeError(
                    f"{mar}: {MANIFEST} is not the manifest of model {name!r} "
                    f"(expected {json.dumps(expected['model'])})",
                    fix,
                )
            with zipfile.ZipFile(copy, "x") as out:
                out.writestr(MANIFEST, json.dumps(expected, indent=2))
                for entry in entries:
                    if entry.filename != MANIFEST:
                        with z.open(entry) as src, out.open(entry.filename, "w", force_zip64=True) as dst:
                            shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError) as err:
        raise MlkubeError(f"{mar} is not a readable model archive: {err}", fix) from None

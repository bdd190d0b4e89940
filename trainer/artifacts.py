"""The model artifact contract: `models/<name>/{weights file, model.json}`.

model.json carries everything needed at inference: framework (`sklearn` | `torch`), task, feature names and order,
target, classes, preprocessing stats (means, stds, window length), metrics, library versions, the weights file name and
its SHA-256. TorchServe handlers read only this contract (and check the hash before loading).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.run import (
    atomic_path,
    atomic_write_json,
    library_versions,
    now_iso,
    read_json,
    sha256_file,
)

MODEL_JSON = "model.json"
REQUIRED_KEYS = ("name", "framework", "task", "features", "target", "weights", "sha256")
# skops loads only types from these packages; anything else in a file is refused.
SKOPS_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")


def write_model_json(folder: Path, meta: dict[str, Any]) -> Path:
    """Complete `meta` with versions, time and the weights' hash, check it, and write model.json atomically."""
    folder = Path(folder)
    weights = folder / meta["weights"]
    meta = {**meta, "sha256": sha256_file(weights), "versions": library_versions(), "created": now_iso()}
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ValueError(f"model.json lacks {missing}")
    return atomic_write_json(folder / MODEL_JSON, meta)


def read_model_json(folder: Path, verify: bool = True) -> dict[str, Any]:
    """Read model.json; with `verify`, refuse weights whose SHA-256 differs from the recorded one."""
    folder = Path(folder)
    path = folder / MODEL_JSON
    if not path.is_file():
        raise MlkubeError(
            f"no {MODEL_JSON} in {folder}", "point at a models/<name>/ folder of a finished run"
        )
    meta = read_json(path)
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise MlkubeError(f"{path} lacks the keys {missing}", "re-create the model with `mlkube run`")
    if verify:
        verify_weights(folder, meta)
    return meta


def verify_weights(folder: Path, meta: dict[str, Any]) -> Path:
    weights = Path(folder) / meta["weights"]
    if not weights.is_file():
        raise MlkubeError(f"weights file {weights} is missing", "re-create the model with `mlkube run`")
    actual = sha256_file(weights)
    if actual != meta["sha256"]:
        raise MlkubeError(
            f"integrity check failed for {weights}: SHA-256 {actual[:12]}… differs from model.json's {meta['sha256'][:12]}…",
            "the file was changed or truncated; re-create the model, never edit it by hand",
        )
    return weights


def save_sklearn_model(folder: Path, pipeline: Any, meta: dict[str, Any]) -> Path:
    """Save a fitted scikit-learn pipeline with skops (never bare pickle) and its model.json."""
    import skops.io as sio

    folder = Path(folder)
    with atomic_path(folder / "model.skops") as tmp:
        tmp.write_bytes(canonical_skops(sio.dumps(pipeline)))
    return write_model_json(folder, {**meta, "framework": "sklearn", "weights": "model.skops"})


def canonical_skops(data: bytes) -> bytes:
    """The same skops archive with Python object ids renumbered by first appearance and fixed zip times, so the same
    fitted pipeline always gives the same bytes (and the same SHA-256 in model.json)."""
    import io
    import re
    import zipfile

    source = zipfile.ZipFile(io.BytesIO(data))
    schema = source.read("schema.json").decode()
    ids: dict[str, str] = {}
    for match in re.finditer(r'"__id__": (\d+)|"(\d+)\.npy"', schema):
        ids.setdefault(match.group(1) or match.group(2), str(len(ids) + 1))

    def renumber(text: str) -> str:
        text = re.sub(r'("__id__": )(\d+)', lambda m: m.group(1) + ids[m.group(2)], text)
        return re.sub(r'"(\d+)\.npy"', lambda m: f'"{ids[m.group(1)]}.npy"', text)

    def new_name(name: str) -> str:
        stem = name.removesuffix(".npy")
        return f"{ids[stem]}.npy" if name.endswith(".npy") and stem in ids else name

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as target:
        for name in sorted(
            source.namelist(), key=lambda n: (new_name(n) == "schema.json", len(new_name(n)), new_name(n))
        ):
            payload = renumber(schema).encode() if name == "schema.json" else source.read(name)
            target.writestr(zipfile.ZipInfo(new_name(name), date_time=(1980, 1, 1, 0, 0, 0)), payload)
    return out.getvalue()


def load_sklearn_model(folder: Path) -> tuple[Any, dict[str, Any]]:
    """Load a pipeline saved by `save_sklearn_model`, trusting only scikit-learn/NumPy/SciPy types."""
    import skops.io as sio

    meta = read_model_json(folder)
    weights = Path(folder) / meta["weights"]
    types = sio.get_untrusted_types(file=weights)
    refused = [t for t in types if not t.startswith(SKOPS_TRUSTED_PREFIXES)]
    if refused:
        raise MlkubeError(
            f"{weights} holds types outside scikit-learn/NumPy/SciPy: {refused}",
            "only load models mlkube wrote",
        )
    return sio.load(weights, trusted=types), meta

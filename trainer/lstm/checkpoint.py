"""Training checkpoints in `<run dir>/checkpoints/`: written by rank 0, atomically, with an integrity check.

A file is `MAGIC`, the SHA-256 of the payload, the payload's length (8 bytes, little-endian), then the payload
(a `torch.save` of plain data and tensors, loaded back with `weights_only=True`). A file cut short or changed
on disk fails the check and the previous complete checkpoint is used. The newest `KEEP` files are kept.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlkube.trainer.run import atomic_write_bytes

MAGIC = b"MLKCKPT1"
HEADER = len(MAGIC) + 32 + 8
KEEP = 3
NAME = re.compile(r"step-(\d{9})\.ckpt")


def checkpoint_path(folder: Path, step: int) -> Path:
    return Path(folder) / f"step-{step:09d}.ckpt"


def save_checkpoint(folder: Path, step: int, state: dict[str, Any]) -> Path:
    """Write `state` as the checkpoint of `step` and delete all but the newest KEEP checkpoints."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = MAGIC + hashlib.sha256(payload).digest() + len(payload).to_bytes(8, "little")
    path = atomic_write_bytes(checkpoint_path(folder, step), header + payload)
    for old in checkpoints(folder)[KEEP:]:
        old.unlink(missing_ok=True)
    return path


def checkpoints(folder: Path) -> list[Path]:
    """The checkpoint files of `folder`, newest (highest step) first."""
    found = [p for p in Path(folder).glob("step-*.ckpt") if NAME.fullmatch(p.name)]
    return sorted(found, key=lambda p: p.name, reverse=True)


def read_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The state saved in `path`; ValueError when the file is incomplete or changed."""
    import torch

    blob = Path(path).read_bytes()
    if len(blob) < HEADER or not blob.startswith(MAGIC):
        raise ValueError(f"{path.name} has no complete header ({len(blob)} bytes)")
    digest, length, payload = (
        blob[len(MAGIC) : len(MAGIC) + 32],
        int.from_bytes(blob[HEADER - 8 : HEADER], "little"),
        blob[HEADER:],
    )
    if len(payload) != length:
        raise ValueError(f"{path.name} is truncated: {len(payload)} of {length} payload bytes")
    if hashlib.sha256(payload).digest() != digest:
        raise ValueError(f"{path.name} fails its SHA-256 check")
    return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)


def latest_checkpoint(
    folder: Path, map_location: Any = "cpu", warn: Callable[[str], None] = print
) -> tuple[dict[str, Any] | None, Path | None]:
    """The newest complete checkpoint (state, path), skipping damaged ones with a warning; (None, None) if
    none."""
    for path in checkpoints(folder):
        try:
            return read_checkpoint(path, map_location), path
        except (ValueError, OSError) as err:
            warn(f"checkpoint {err}; trying the previous one")
    return None, None

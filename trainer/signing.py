"""The model card's signature: HMAC-SHA256 with a key that training and serving hold, and no one else.

A card's SHA-256 of its weights proves nothing on its own: whoever writes the weights writes the card too.
The signature over the card (which covers that SHA-256) does, as long as the key stays with mlkube: the key
file named by `MLKUBE_SIGNING_KEY_FILE` (on the cluster, a Secret mounted in training and serving pods) or,
when unset, `~/.config/mlkube/signing.key`, which training creates on first use (32 random bytes, mode 0600).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from mlkube.trainer.errors import MlkubeError

KEY_ENV = "MLKUBE_SIGNING_KEY_FILE"
DEFAULT_KEY_FILE = "~/.config/mlkube/signing.key"
KEY_BYTES = 32  # of a key training creates
MIN_KEY_BYTES = 16  # a shorter key (an empty Secret, a typo) is refused


def key_file() -> Path:
    """The signing key's file: `MLKUBE_SIGNING_KEY_FILE`, or the default in the user's home (absolute)."""
    return Path(os.environ.get(KEY_ENV) or DEFAULT_KEY_FILE).expanduser().resolve()


def signing_key(create: bool = False) -> bytes:
    """The key's bytes; with `create`, the default key file is made when it does not exist yet (a key file
    named by `MLKUBE_SIGNING_KEY_FILE` never is: on a cluster it is a mounted Secret)."""
    path = key_file()
    if not path.is_file():
        if create and not os.environ.get(KEY_ENV):
            _create_key(path)
        else:
            raise MlkubeError(f"the signing key {path} does not exist ({_which()})", _key_fix())
    key = path.read_bytes()
    if len(key) < MIN_KEY_BYTES:
        raise MlkubeError(
            f"the signing key {path} holds {len(key)} bytes, fewer than {MIN_KEY_BYTES}", _key_fix()
        )
    return key


def _create_key(path: Path) -> None:
    """32 random bytes, mode 0600, in place at once (a key another process created first is kept)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(KEY_BYTES))
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # never replaces an existing key, unlike a rename
    finally:
        os.unlink(tmp)


def canonical(fields: dict[str, Any]) -> bytes:
    """The bytes a signature covers: the fields as JSON with sorted keys and no spaces."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(fields: dict[str, Any], key: bytes) -> str:
    """HMAC-SHA256 (hex) of `fields` (a card without its signature, as JSON data)."""
    return hmac.new(key, canonical(fields), hashlib.sha256).hexdigest()


def verify(card_file: Path, fields: dict[str, Any]) -> None:
    """Refuse a card (`fields`: its JSON data) that is unsigned or not signed with this machine's key."""
    fields = dict(fields)
    signature = fields.pop("signature", None)
    if not isinstance(signature, str):
        raise MlkubeError(
            f"{card_file} is not signed; serving loads only models whose card training signed with the "
            f"signing key {key_file()} ({_which()})",
            _retrain_fix(),
        )
    if not hmac.compare_digest(signature, sign(fields, signing_key())):
        raise MlkubeError(
            f"{card_file}: the signature does not match the signing key {key_file()} ({_which()}): the "
            "card (or its weights' SHA-256) was changed, or another key signed it",
            _retrain_fix(),
        )


def _which() -> str:
    return f"from {KEY_ENV}" if os.environ.get(KEY_ENV) else f"the default; {KEY_ENV} is unset"


def _key_fix() -> str:
    return (
        f"point {KEY_ENV} at the key file training used (on the cluster the chart mounts the signing "
        "Secret's `key` at /etc/mlkube/signing/key), or unset it to use the default, which training creates"
    )


def _retrain_fix() -> str:
    return (
        f"re-create the model with `mlkube run` where {KEY_ENV} names the same key as here (serving's); a "
        "model written by anyone else is never loaded"
    )

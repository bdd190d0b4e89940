"""The model artifact contract: `models/<name>/{weights file, model.json}`.

model.json is the model card (`trainer.card`): everything needed at inference, typed. Training writes it
here, through the card's model, atomically, with the weights' SHA-256 and signed (`trainer.signing`); handlers
read it here, and a card that lacks a field, has an unknown one or a wrong type is refused naming the file and
the field, as is one its signature does not fit. TorchServe handlers read only this contract (and check the
signature and the hash before loading). A skops file loads only if every type in it is one that mlkube's model
zoo produces (`trainer.classical.trust`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar, overload

from pydantic import ValidationError

from mlkube.trainer import signing
from mlkube.trainer.card import CARDS, ModelCard, SklearnCard
from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.run import (
    _json_default,
    atomic_path,
    atomic_write_json,
    library_versions,
    now_iso,
    read_json,
    sha256_file,
)

MODEL_JSON = "model.json"
RECREATE = "re-create the model with `mlkube run` (training writes model.json; never edit it by hand)"
Card = TypeVar("Card", bound=ModelCard)


def write_model_card(folder: Path, card_type: type[Card], fields: dict[str, Any]) -> Card:
    """Complete `fields` with the weights' hash, versions and time, validate them as `card_type` and write
    model.json atomically. A field that does not fit the card is a bug of the caller (ValidationError)."""
    folder = Path(folder)
    stamp = {"sha256": sha256_file(folder / fields["weights"]), "versions": library_versions()}
    card = card_type.model_validate({**fields, **stamp, "created": now_iso()})
    # signed as JSON data, exactly what a reader gets back (NumPy scores turned into numbers)
    data = json.loads(json.dumps(card.model_dump(exclude={"signature"}), default=_json_default))
    signature = signing.sign(data, signing.signing_key(create=True))
    atomic_write_json(folder / MODEL_JSON, {**data, "signature": signature})
    return card.model_copy(update={"signature": signature})


@overload
def read_model_card(folder: Path, verify: bool = True) -> ModelCard: ...
@overload
def read_model_card(folder: Path, verify: bool = True, *, expected: type[Card]) -> Card: ...
@overload
def read_model_card(folder: Path, verify: bool, expected: type[Card]) -> Card: ...
def read_model_card(folder: Path, verify: bool = True, expected: type[ModelCard] = ModelCard) -> ModelCard:
    """The typed card of a model folder (a SklearnCard or an LstmCard), refused unless it is an `expected`;
    with `verify` (for loading it: never skip it there), refuse a card that is unsigned or whose signature
    the signing key does not give, and weights whose SHA-256 differs from the card's."""
    folder = Path(folder)
    path = folder / MODEL_JSON
    if not path.is_file():
        raise MlkubeError(
            f"no {MODEL_JSON} in {folder}", "point at a models/<name>/ folder of a finished run"
        )
    try:
        raw = read_json(path)
    except ValueError as err:
        raise MlkubeError(f"{path} is not valid JSON: {err}", RECREATE) from None
    framework = raw.get("framework") if isinstance(raw, dict) else None
    if framework not in CARDS:
        raise MlkubeError(f"{path}: framework {framework!r} is not one of {sorted(CARDS)}", RECREATE)
    try:
        card = CARDS[framework].model_validate(raw)
    except ValidationError as err:
        raise MlkubeError(f"{path}: {'; '.join(map(_problem, err.errors()))}", RECREATE) from None
    if not isinstance(card, expected):
        raise MlkubeError(
            f"{path} is a {framework} model, not a {expected.__name__}", "load it with its handler"
        )
    if verify:
        signing.verify(path, raw)
        verify_weights(folder, card)
    return card


def _problem(error: Any) -> str:
    """One pydantic error as `field.path: what is wrong`."""
    field = ".".join(str(part) for part in error["loc"]) or "<top level>"
    if error["type"] == "missing":
        return f"{field} is missing"
    if error["type"] == "extra_forbidden":
        return f"{field} is not a field of the card"
    return f"{field}: {str(error['msg']).removeprefix('Value error, ')} (got {error['input']!r:.60})"


def verify_weights(folder: Path, card: ModelCard) -> Path:
    """The weights file of `card`, after checking it (and an ensemble's every member) against the card's
    SHA-256."""
    for name, expected in card.weight_files():
        weights = Path(folder) / name
        if not weights.is_file():
            raise MlkubeError(f"weights file {weights} is missing", RECREATE)
        actual = sha256_file(weights)
        if actual != expected:
            raise MlkubeError(
                f"integrity check failed for {weights}: SHA-256 {actual[:12]}… differs from "
                f"model.json's {expected[:12]}…",
                "the file was changed or truncated; re-create the model, never edit it by hand",
            )
    return Path(folder) / card.weights


def save_sklearn_model(folder: Path, pipeline: Any, fields: dict[str, Any]) -> SklearnCard:
    """Save a fitted scikit-learn pipeline with skops (never bare pickle) and its card (`fields`: those of
    SklearnCard that the saving does not fill in)."""
    import skops.io as sio

    folder = Path(folder)
    with atomic_path(folder / "model.skops") as tmp:
        tmp.write_bytes(canonical_skops(sio.dumps(pipeline)))
    return write_model_card(folder, SklearnCard, {**fields, "weights": "model.skops"})


def canonical_skops(data: bytes) -> bytes:
    """The same skops archive with Python object ids renumbered by first appearance and fixed zip times, so
    the same fitted pipeline always gives the same bytes (and the same SHA-256 in model.json)."""
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


def load_sklearn_model(folder: Path, trusted: frozenset[str]) -> tuple[Any, SklearnCard]:
    """Load a pipeline saved by `save_sklearn_model`, refusing a file that holds any type outside `trusted`
    (for mlkube's models: `trainer.classical.trust.trusted_skops_types()`, what its zoo produces), whatever
    its card says."""
    import skops.io as sio

    card = read_model_card(folder, expected=SklearnCard)
    weights = Path(folder) / card.weights
    types = skops_types(weights)
    refused = sorted(types - trusted)
    if refused:
        raise MlkubeError(
            f"{weights} holds types that mlkube's model zoo does not produce: {refused}",
            "serve only pipelines that `mlkube run` trained; a file with other types is never loaded",
        )
    return sio.load(weights, trusted=sorted(types)), card


def skops_types(weights: Path) -> set[str]:
    """Every type (module.name) that loading the skops file would build or call, trusted by skops or not,
    from its schema (nothing is loaded)."""
    import zipfile

    from skops.io._audit import Node, get_tree
    from skops.io._utils import LoadContext

    try:
        with zipfile.ZipFile(weights) as archive:
            schema = json.loads(archive.read("schema.json"))
            tree = get_tree(schema, LoadContext(src=archive, protocol=schema["protocol"]), trusted=None)
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as err:
        raise MlkubeError(f"{weights} is not a skops file: {err}", RECREATE) from None
    found: set[str] = set()
    pending: list[Any] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, Node):
            found.add(f"{node.module_name}.{node.class_name}")
            pending.extend(node.children.values())
        elif isinstance(node, (list, tuple)):
            pending.extend(node)
        elif isinstance(node, dict):
            pending.extend(node.values())
        elif isinstance(node, type):
            found.add(f"{node.__module__}.{node.__name__}")
    return found

"""A trial's LSTM settings: the spec's `lstm` section with dotted-path overrides (Ray Tune trial configs), and
the spec the deep stage trains after a search (`best_spec`: the best trial's configuration, read from the
search stage's result, the one record of it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mlkube.trainer.errors import MlkubeError

STAGE = "search_lstm"  # the search stage's name (stages/search_lstm.json)
RESERVED = ("seed", "sites", "model_dir")  # trial config keys that are not lstm fields


def apply_overrides(lstm, overrides: dict[str, Any]):
    """`lstm` (an LstmSpec) with each dotted path of `overrides` set, validated as the spec is."""
    from pydantic import ValidationError

    data = lstm.model_dump()
    for path, value in overrides.items():
        *sections, name = path.split(".")
        node = data
        for part in sections:
            if not isinstance(node.get(part), dict):
                raise MlkubeError(f"trial config {path!r}: lstm has no section {part!r}", _FIX_PATH)
            node = node[part]
        if name not in node:
            raise MlkubeError(f"trial config {path!r}: lstm has no field {path!r}", _FIX_PATH)
        node[name] = value.item() if isinstance(value, np.generic) else value
    try:
        return type(lstm).model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"lstm.{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})" for e in err.errors()
        )
        raise MlkubeError(f"trial config {overrides}: {problems}", "give values the spec accepts") from None


_FIX_PATH = (
    "name a field of the lstm section by its dotted path, e.g. train.learning_rate or model.hidden_size"
)


def trial_spec(spec, config: dict[str, Any]):
    """The spec a trial trains: the run's spec with the config's lstm fields and seed."""
    lstm = apply_overrides(spec.lstm, {k: v for k, v in config.items() if k not in RESERVED})
    return spec.model_copy(update={"lstm": lstm, "seed": int(config.get("seed", spec.seed))})


def best_spec(spec, run_path: Path):
    """The spec the deep stage trains: with `lstm.search`, the best trial's configuration applied (read from
    stages/search_lstm.json, the one record of it); else the spec itself. Also returns the applied config."""
    from mlkube.trainer.run import Run, read_json

    if spec.lstm is None or spec.lstm.search is None:
        return spec, None
    path = Run(run_path).stage_file(STAGE)
    if not path.is_file():
        raise MlkubeError(
            f"lstm.search is set but the run has no {STAGE} result ({path})",
            f"run the {STAGE} stage first (mlkube run SPEC --resume RUN)",
        )
    config = read_json(path)["best"]["config"]
    return trial_spec(spec, config), config


def search_extremes(lstm) -> list[tuple[dict[str, Any], Any]]:
    """The hardest settings `lstm.search.space` may give a trial (and then the deep stage): its smallest
    batch and its longest sequence, as (overrides, lstm with them and no search) pairs, checked before any
    trial."""
    from mlkube.trainer.spec import LSTM_SEARCHABLE

    if lstm.search is None:
        return []
    overrides: dict[str, Any] = {}
    for key, pick in (("batch_size", min), ("sequence_length", max)):
        axis = lstm.search.space.get(key)
        if axis is not None:
            overrides[LSTM_SEARCHABLE[key]] = pick(_candidates(axis))
    plain = lstm.model_copy(update={"search": None})
    return [(overrides, apply_overrides(plain, overrides))] if overrides else []


def _candidates(axis: Any) -> list[Any]:
    """The values an integer axis may give: a list's or choice's values, randint's lo and hi - 1."""
    if isinstance(axis, list):
        return axis
    ((kind, values),) = axis.items()
    return values if kind == "choice" else [values[0], values[1] - 1]

"""The LSTM's data in a run: loaded and gap-filled once by the prepare stage, saved as `prepared/lstm.npz` with the
training-period statistics, and read back by every training worker and by the deep stage.

A worker started on a cluster (`mlkube submit --kind elastic`) may find no prepared file: it then loads the data
from the spec itself, which gives the same arrays (loading is deterministic).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlkube.trainer.preprocess import Statistics
from mlkube.trainer.run import atomic_path
from mlkube.trainer.tsdata import TimeSeriesData

PREPARED = Path("prepared") / "lstm.npz"
NAME_FIELDS = ("sites", "dynamic_inputs", "static_inputs")


@dataclass(frozen=True)
class Prepared:
    """The raw series (variables' units), their training-period statistics, and the data hash."""

    data: TimeSeriesData
    stats: Statistics
    data_hash: str


def prepare(spec, run_path: Path | None = None) -> Prepared:
    """Load `spec.lstm.data`, fit the statistics, and save both under `run_path` (when given)."""
    from mlkube.trainer.preprocess import fit_statistics
    from mlkube.trainer.tsdata import load_timeseries

    data = load_timeseries(spec.lstm, spec.preprocess, spec.seed)
    prepared = Prepared(data, fit_statistics(data, spec.preprocess), data.data_hash())
    if run_path is not None:
        save_prepared(Path(run_path) / PREPARED, prepared)
    return prepared


def load_prepared(spec, run_path: Path) -> Prepared:
    """The run's prepared data, or (no prepared file) the data loaded from the spec."""
    path = Path(run_path) / PREPARED
    return read_prepared(path) if path.is_file() else prepare(spec)


def summary(prepared: Prepared) -> dict[str, Any]:
    """What the prepare stage records about the series (stages/prepare.json, key `lstm`)."""
    data = prepared.data
    return {
        "sites": list(data.sites),
        "days": len(data.dates),
        "dynamic_inputs": list(data.dynamic_inputs),
        "static_inputs": list(data.static_inputs),
        "target": data.target_name,
        "periods": {p: [str(d) for d in data.period_dates(p)] for p in data.periods},
        "missing_target_fraction": float(np.isnan(data.target).mean()),
        "file": str(PREPARED),
    }


def save_prepared(path: Path, prepared: Prepared) -> Path:
    data, stats = prepared.data, prepared.stats
    arrays = {
        f"data_{f.name}": _array(getattr(data, f.name))
        for f in dataclasses.fields(data)
        if f.name != "periods"
    }
    arrays |= {f"stats_{f.name}": np.asarray(getattr(stats, f.name)) for f in dataclasses.fields(stats)}
    arrays["periods"] = np.array([[name, lo, hi] for name, (lo, hi) in data.periods.items()], dtype=object)
    arrays["data_hash"] = np.asarray(prepared.data_hash)
    with atomic_path(path) as tmp:
        np.savez(tmp, **{k: (v.astype(str) if v.dtype == object else v) for k, v in arrays.items()})
    return path


def read_prepared(path: Path) -> Prepared:
    with np.load(path, allow_pickle=False) as npz:
        fields = {
            k.removeprefix("data_"): npz[k] for k in npz.files if k.startswith("data_") and k != "data_hash"
        }
        stats = {k.removeprefix("stats_"): npz[k] for k in npz.files if k.startswith("stats_")}
        periods = {str(name): (int(lo), int(hi)) for name, lo, hi in npz["periods"]}
        data_hash = str(npz["data_hash"])
    fields |= {k: tuple(str(v) for v in fields[k]) for k in NAME_FIELDS} | {
        "target_name": str(fields["target_name"])
    }
    data = TimeSeriesData(**fields, periods=periods)
    stats = {k: (v.item() if v.ndim == 0 else v) for k, v in stats.items()}
    return Prepared(data, Statistics(**stats), data_hash)


def _array(value: Any) -> np.ndarray:
    return np.asarray(value, dtype=str) if isinstance(value, (tuple, str)) else np.asarray(value)

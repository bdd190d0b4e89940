"""The LSTM's data in a run: loaded, gap-filled and checked once by the prepare stage, saved with the
training-period statistics (`Run.prepared_lstm`), and read back by every training worker and the deep stage.

A worker started on a cluster (`mlkube submit --kind elastic`) may find no prepared file: it then loads the
data from the spec itself, which gives the same arrays (loading is deterministic).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlkube.trainer.preprocess import Statistics, fill_series, fit_statistics
from mlkube.trainer.run import Run, atomic_path
from mlkube.trainer.series import TimeSeriesData

if TYPE_CHECKING:
    from mlkube.trainer.spec import LstmSpec, PreprocessSpec

NAME_FIELDS = ("sites", "dynamic_inputs", "static_inputs")


@dataclass(frozen=True)
class Prepared:
    """The raw series (variables' units), their training-period statistics, and the data hash."""

    data: TimeSeriesData
    stats: Statistics
    data_hash: str
    seconds: float = 0.0  # reading the files, filling the gaps and fitting the statistics took (0: read back)


# the series `mlkube run` prepared to check its spec, held for its prepare stage (one entry; see `prepare`)
_CHECKED: dict[str, Prepared] = {}


def prepare(spec, run_path: Path | None = None, keep: bool = False) -> Prepared:
    """Load `spec.lstm.data` with its gaps filled, fit the statistics, and save both in the run at `run_path`
    (when given). `keep`: hold the result for the next `prepare` of the same spec in this process, which takes
    it instead of parsing the files again (`mlkube run` checks its spec, then its prepare stage saves the
    series: 2 s each at 671 basins); `load_prepared` lets it go."""
    key = json.dumps(
        [spec.seed, spec.lstm.model_dump(mode="json"), spec.preprocess.model_dump(mode="json")],
        sort_keys=True,
    )
    prepared = _CHECKED.pop(key, None)
    if prepared is None:
        start = time.perf_counter()
        data = load_filled(spec.lstm, spec.preprocess, spec.seed)
        stats = fit_statistics(data, spec.preprocess)
        prepared = Prepared(data, stats, data.data_hash(), round(time.perf_counter() - start, 3))
    _CHECKED.clear()
    if keep:
        _CHECKED[key] = prepared
    if run_path is not None:
        save_prepared(Run(run_path).prepared_lstm, prepared)
    return prepared


def load_filled(lstm: LstmSpec, preprocess: PreprocessSpec, seed: int) -> TimeSeriesData:
    """The series of `lstm.data`, checked against the spec, with gaps of up to `preprocess.fill_max_gap` days
    filled, and with a target to train on and to score in every period."""
    from mlkube.trainer.series import load_timeseries  # the loaders (pandas): not in a worker's start-up
    from mlkube.trainer.series.checks import check_target_not_input, check_targets

    data = fill_series(load_timeseries(lstm, seed), preprocess.fill_max_gap, preprocess.device)
    check_targets(data)  # after filling: filled days count as targets
    check_target_not_input(data, lstm.horizon)
    return data


def load_prepared(spec, run_path: Path) -> Prepared:
    """The run's prepared data, or (no prepared file) the data loaded from the spec."""
    _CHECKED.clear()  # the run's file is the prepared data from here on
    path = Run(run_path).prepared_lstm
    return read_prepared(path) if path.is_file() else prepare(spec)


def select_sites(data: TimeSeriesData, sites: tuple[str, ...]) -> TimeSeriesData:
    """The same series for `sites` only, in that order (every one a site of `data`)."""
    rows = [data.sites.index(site) for site in sites]
    return dataclasses.replace(
        data,
        dynamic=np.ascontiguousarray(data.dynamic[rows]),
        static=np.ascontiguousarray(data.static[rows]),
        target=np.ascontiguousarray(data.target[rows]),
        sites=tuple(sites),
    )


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
        "seconds": prepared.seconds,  # reading, gap filling and statistics (in `mlkube run`'s checks)
        "file": str(Run(Path()).prepared_lstm),  # relative to the run directory
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
        # Any: savez's typed **kwds would otherwise also be matched against its allow_pickle (a bool)
        saved: dict[str, Any] = {k: (v.astype(str) if v.dtype == object else v) for k, v in arrays.items()}
        np.savez(tmp, **saved)
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

"""The built-in time-series sources by name, the source a spec names, and the loader that reads and checks
it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.series import checks
from mlkube.trainer.series.camels import CAMELS_SAMPLE_PERIODS, camels_source, is_camels
from mlkube.trainer.series.contract import Source, TimeSeriesData
from mlkube.trainer.series.synthetic import synthetic_source
from mlkube.trainer.series.tables import read_site_folder, read_table, table_source

if TYPE_CHECKING:
    from mlkube.trainer.spec import LstmSpec, TimeSeriesDataSpec

DATASETS = Path(__file__).parents[1] / "datasets"  # the data sets shipped in trainer/datasets/

# `lstm.data.name` → its source, given the data spec and the run's seed
BUILTIN_SOURCES: dict[str, Callable[[TimeSeriesDataSpec, int], Source]] = {
    "camels_us_sample": lambda spec, seed: camels_source(
        DATASETS / "camels_us_sample", "camels_us_sample", CAMELS_SAMPLE_PERIODS
    ),
    "synthetic": lambda spec, seed: synthetic_source(spec.synthetic_sites, spec.synthetic_years, seed),
}


def load_timeseries(lstm: LstmSpec, seed: int) -> TimeSeriesData:
    """Read `lstm.data` and check it against the spec: sites, variables, attributes, periods, lengths.

    The series stay raw (NaN where missing; the targets are checked once gaps are filled, by
    `checks.check_targets`). The date axis keeps `sequence_length + horizon - 2` days before the earliest
    period where the data have them, so that the first day of every period can be predicted from a full input
    sequence. `seed` seeds `synthetic`.
    """
    spec = lstm.data
    source = open_source(spec, seed)
    sites = checks.choose_sites(spec.sites, source)
    target = checks.choose_variable(spec.target or source.target_default, source, "target")
    static_inputs, static = checks.choose_attributes(spec.static_inputs, source, sites)
    dynamic_inputs = checks.choose_dynamic(spec.dynamic_inputs, source, target, static_inputs)
    dates, values = source.read(sites, [*dynamic_inputs, target])
    periods = checks.choose_periods(spec, source, dates)
    first, last = checks.check_lengths(lstm, periods, dates)
    return TimeSeriesData(
        dynamic=np.ascontiguousarray(values[:, first:last, :-1]),
        static=static,
        target=np.ascontiguousarray(values[:, first:last, -1]),
        dates=dates[first:last],
        sites=tuple(sites),
        dynamic_inputs=tuple(dynamic_inputs),
        static_inputs=tuple(static_inputs),
        target_name=target,
        periods={name: (lo - first, hi - first) for name, (lo, hi) in periods.items()},
    )


def open_source(spec: TimeSeriesDataSpec, seed: int) -> Source:
    """The source `spec` names: a built-in (`name`) or the user's files (`path`)."""
    if spec.name is not None:
        return BUILTIN_SOURCES[spec.name](spec, seed)
    if spec.path is None:
        raise ValueError(
            "lstm.data: give `name` or `path` (the spec defaults `name` when `path` is not given)"
        )
    return path_source(Path(spec.path))


def path_source(path: Path) -> Source:
    """The user's files at `path`: a CAMELS-US folder, a folder of one table per site, or one table."""
    if not path.exists():
        raise MlkubeError(
            f"lstm.data.path: {path} does not exist",
            "give a CAMELS-US folder, a folder of one CSV/Parquet per site, or a CSV/Parquet/NetCDF table",
        )
    if path.is_dir() and is_camels(path):
        return camels_source(path, str(path))
    if path.is_dir():
        return table_source(read_site_folder(path), str(path))
    return table_source(read_table(path), str(path))

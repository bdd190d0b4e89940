"""CAMELS-US (Newman et al. 2015; Addor et al. 2017): Daymet forcings, USGS streamflow and the attribute
tables, read from any folder that holds them at any depth (so the full download with its HUC sub-folders works
unchanged).

The shipped sample is described in trainer/datasets/camels_us_sample/README.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.series.contract import SiteSeries, Source, stack_site_series

FORCING_SUFFIX = "_lump_cida_forcing_leap.txt"
STREAMFLOW_SUFFIX = "_streamflow_qc.txt"
ATTRIBUTE_FILES = tuple(
    f"camels_{part}" for part in ("clim", "geol", "hydro", "name", "soil", "topo", "vege")
)
CAMELS_TARGET = "QObs(mm/d)"
CAMELS_DYNAMIC = ("prcp(mm/day)", "srad(W/m2)", "tmax(C)", "tmin(C)", "vp(Pa)", "dayl(s)")
CAMELS_SAMPLE_PERIODS = {
    "train": ("2000-01-01", "2001-06-30"),
    "validation": ("2001-07-01", "2001-12-31"),
    "test": ("2002-01-01", "2002-12-31"),
}
MISSING = -999.0  # CAMELS marks missing values with it
CUBIC_FOOT = 0.0283168  # m3


def is_camels(root: Path) -> bool:
    """Whether the folder `root` holds a Daymet forcing file at any depth."""
    return next(root.rglob(f"*{FORCING_SUFFIX}"), None) is not None


def camels_source(root: Path, name: str, periods: dict[str, tuple[str, str]] | None = None) -> Source:
    """The CAMELS-US layout under `root`, at any depth: Daymet forcings, USGS streamflow, attribute tables."""
    forcings = _gauge_files(root, FORCING_SUFFIX)
    streamflows = _gauge_files(root, STREAMFLOW_SUFFIX)
    sites = sorted(forcings.keys() & streamflows.keys())
    if not sites:
        raise MlkubeError(
            f"{name}: no gauge has both a *{FORCING_SUFFIX} and a *{STREAMFLOW_SUFFIX} file",
            "point lstm.data.path at the CAMELS-US folder that holds basin_mean_forcing and usgs_streamflow",
        )

    def read(chosen: list[str], variables: list[str]) -> tuple[np.ndarray, np.ndarray]:
        from concurrent.futures import ThreadPoolExecutor

        def site(gauge: str) -> SiteSeries:
            return _camels_site(forcings[gauge], streamflows[gauge])

        with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:  # the parser frees the GIL
            series = dict(zip(chosen, pool.map(site, chosen), strict=True))
        return stack_site_series(series, variables, name)

    _, forcing_variables = _forcing_header(forcings[sites[0]])
    return Source(
        name,
        sites,
        [*forcing_variables, CAMELS_TARGET],
        _camels_attributes(root),
        read,
        CAMELS_DYNAMIC,
        CAMELS_TARGET,
        periods,
    )


def _gauge_files(root: Path, suffix: str) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(root.rglob(f"*{suffix}")):
        gauge = path.name.removesuffix(suffix)
        if gauge in files:
            raise MlkubeError(f"gauge {gauge} has two files: {files[gauge]} and {path}", "remove one copy")
        files[gauge] = path
    return files


def _forcing_header(path: Path) -> tuple[float, list[str]]:
    """Basin area (m2, the third header line) and the variable names of a Daymet forcing file."""
    with open(path) as fh:
        lines = [fh.readline() for _ in range(4)]
    return float(lines[2]), lines[3].split()[4:]


def _camels_site(forcing: Path, streamflow: Path) -> SiteSeries:
    """One gauge's forcings and streamflow (converted from cfs to mm/day over the basin) on the forcing's
    days; NaN where the streamflow has no record or a value is marked missing."""
    from mlkube.trainer.series.text import read_columns

    area, variables = _forcing_header(forcing)
    columns = 4 + len(variables)  # Year Mnth Day Hr, then the variables
    table, fields = read_columns(forcing, columns, skip_lines=4)
    _check_fields(forcing, fields, columns, "Year Mnth Day Hr and the header's variables")
    dates = _days(table[:, 0], table[:, 1], table[:, 2], forcing)
    if (np.diff(dates) <= np.timedelta64(0, "D")).any():
        raise MlkubeError(f"{forcing}: the days are not in order, or one is listed twice", "sort the file")
    values = np.empty((len(dates), len(variables) + 1), np.float32)  # as stacked: half the memory held
    values[:, :-1] = np.where(table[:, 4:] == MISSING, np.nan, table[:, 4:])
    flow, fields = read_columns(streamflow, 5)  # gauge, year, month, day, cfs (then the quality flag)
    _check_fields(streamflow, np.minimum(fields, 5), 5, "gauge, year, month, day and streamflow")
    cfs = np.where(flow[:, 4] >= 0, flow[:, 4], np.nan)  # -999: missing
    flow_days = _days(flow[:, 1], flow[:, 2], flow[:, 3], streamflow)
    at = np.searchsorted(dates, flow_days)
    matched = at < len(dates)
    matched[matched] = dates[at[matched]] == flow_days[matched]
    values[:, -1] = np.nan
    values[at[matched], -1] = cfs[matched] * CUBIC_FOOT * 86400 * 1000 / area
    return SiteSeries(dates, values, (*variables, CAMELS_TARGET))


def _check_fields(path: Path, fields: np.ndarray, columns: int, what: str) -> None:
    wrong = np.flatnonzero(fields != columns)
    if len(wrong):
        raise MlkubeError(
            f"{path}: data row {wrong[0] + 1} has {fields[wrong[0]]} fields, expected {columns} ({what})",
            "repair or remove the file (CAMELS-US's own files have one day per line)",
        )


def _days(year: np.ndarray, month: np.ndarray, day: np.ndarray, path: Path) -> np.ndarray:
    """datetime64[D] of year, month and day columns (floats as parsed), refusing a row that is no date."""
    with np.errstate(invalid="ignore"):
        ymd = np.stack([year, month, day]).astype(np.int64)
    months = (ymd[0] - 1970) * 12 + ymd[1] - 1
    dates = months.astype("datetime64[M]").astype("datetime64[D]") + (ymd[2] - 1)
    bad = ~np.isfinite(np.stack([year, month, day])).all(axis=0) | (ymd[1] < 1) | (ymd[1] > 12)
    bad |= (ymd[2] < 1) | (dates.astype("datetime64[M]").astype(np.int64) != months)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise MlkubeError(
            f"{path}: data row {row + 1} ({year[row]:g} {month[row]:g} {day[row]:g}) is not a date",
            "repair or remove the file",
        )
    return dates


def _camels_attributes(root: Path) -> pd.DataFrame:
    files = [p for p in sorted(root.rglob("camels_*.txt")) if p.stem in ATTRIBUTE_FILES]
    tables = [
        pd.read_csv(p, sep=";", dtype={"gauge_id": str}, encoding_errors="replace").set_index("gauge_id")
        for p in files
    ]
    return pd.concat(tables, axis=1) if tables else pd.DataFrame()

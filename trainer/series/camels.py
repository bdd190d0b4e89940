"""CAMELS-US (Newman et al. 2015; Addor et al. 2017): Daymet forcings, USGS streamflow and the attribute
tables, read from any folder that holds them at any depth (so the full download with its HUC sub-folders works
unchanged).

The shipped sample is described in trainer/datasets/camels_us_sample/README.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.series.contract import Source, stack_sites

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
        return stack_sites({s: _camels_site(forcings[s], streamflows[s]) for s in chosen}, variables, name)

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


def _camels_site(forcing: Path, streamflow: Path) -> pd.DataFrame:
    """One gauge's forcings and streamflow (converted from cfs to mm/day over the basin) on the forcing's
    days; NaN where the streamflow has no record."""
    area, _ = _forcing_header(forcing)
    frame = pd.read_csv(forcing, sep=r"\s+", skiprows=3)
    frame.index = _dates(frame["Year"], frame["Mnth"], frame["Day"])
    frame = frame.drop(columns=["Year", "Mnth", "Day", "Hr"]).mask(lambda f: f == MISSING)
    flow = pd.read_csv(
        streamflow, sep=r"\s+", header=None, usecols=[1, 2, 3, 4], names=["y", "m", "d", "cfs"]
    )
    cfs = flow["cfs"].where(flow["cfs"] >= 0)  # -999: missing
    mm_per_day = pd.Series(
        (cfs * CUBIC_FOOT * 86400 * 1000 / area).to_numpy(), index=_dates(flow.y, flow.m, flow.d)
    )
    return frame.join(mm_per_day.rename(CAMELS_TARGET), how="left")


def _camels_attributes(root: Path) -> pd.DataFrame:
    files = [p for p in sorted(root.rglob("camels_*.txt")) if p.stem in ATTRIBUTE_FILES]
    tables = [
        pd.read_csv(p, sep=";", dtype={"gauge_id": str}, encoding_errors="replace").set_index("gauge_id")
        for p in files
    ]
    return pd.concat(tables, axis=1) if tables else pd.DataFrame()


def _dates(year: pd.Series, month: pd.Series, day: pd.Series) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(pd.DataFrame({"year": year, "month": month, "day": day})))

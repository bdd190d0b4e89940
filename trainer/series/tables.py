"""The user's own tables: one long CSV/Parquet table with `site` and `date` columns, a folder of one
CSV/Parquet file per site (the file name is the site), or a NetCDF file with `site` and `date` dimensions
(needs xarray).

Numeric columns are daily variables; columns constant within every site are the static attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.series.camels import FORCING_SUFFIX
from mlkube.trainer.series.contract import Source, stack_sites

TABLE_READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    ".csv": pd.read_csv,
    ".parquet": pd.read_parquet,
}
KEYS = ("site", "date")


def read_table(path: Path) -> pd.DataFrame:
    """One long table from a CSV, Parquet or NetCDF file."""
    if path.suffix == ".nc":
        return _read_netcdf(path)
    if path.suffix not in TABLE_READERS:
        raise MlkubeError(
            f"lstm.data.path: cannot read {path.name} (a {path.suffix or 'suffix-less'} file)",
            "give a .csv, .parquet or .nc table, or a folder",
        )
    return TABLE_READERS[path.suffix](path)


def _read_netcdf(path: Path) -> pd.DataFrame:
    try:
        import xarray as xr
    except ImportError:
        raise MlkubeError(
            f"reading {path} (NetCDF) needs xarray",
            "pip install xarray netCDF4, or convert the file to Parquet",
        ) from None
    with xr.open_dataset(path) as ds:
        if not set(KEYS) <= set(ds.dims):
            raise MlkubeError(
                f"{path} has dimensions {list(ds.dims)}, not `site` and `date`",
                "rename its dimensions to site and date",
            )
        return ds.to_dataframe().reset_index()


def read_site_folder(root: Path) -> pd.DataFrame:
    """One long table from a folder of one CSV/Parquet file per site (the file name, without suffix, is the
    site)."""
    files = [p for p in sorted(root.iterdir()) if p.suffix in TABLE_READERS]
    if not files:
        raise MlkubeError(
            f"lstm.data.path: {root} holds neither CAMELS-US files (*{FORCING_SUFFIX}) nor .csv/.parquet "
            "files",
            "point it at a CAMELS-US folder or a folder of one table per site",
        )
    return pd.concat([TABLE_READERS[p.suffix](p).assign(site=p.stem) for p in files], ignore_index=True)


def table_source(table: pd.DataFrame, name: str) -> Source:
    """A long table (`site`, `date`, variables...): numeric columns are daily variables, columns constant
    within every site are static attributes (and no default input)."""
    missing = [k for k in KEYS if k not in table.columns]
    if missing:
        raise MlkubeError(
            f"{name} has no column {missing}; it has {list(table.columns)}",
            "name the site column `site` and the day column `date`",
        )
    try:
        table = table.assign(
            site=table["site"].astype(str), date=pd.to_datetime(table["date"]).dt.normalize()
        )
    except (ValueError, TypeError) as exc:
        raise MlkubeError(
            f"{name}: the `date` column holds something that is not a date ({exc})",
            "write dates as YYYY-MM-DD",
        ) from None
    variables = [c for c in table.columns if c not in KEYS and pd.api.types.is_numeric_dtype(table[c])]
    by_site = {site: frame.set_index("date") for site, frame in table.groupby("site", sort=True)}

    def read(chosen: list[str], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return stack_sites({s: by_site[s] for s in chosen}, names, name)

    attributes = _constant_columns(table)
    dynamic = tuple(v for v in variables if v not in attributes.columns)
    return Source(name, list(by_site), variables, attributes, read, dynamic)


def _constant_columns(table: pd.DataFrame) -> pd.DataFrame:
    per_site = table.groupby("site", sort=True)
    constant = [c for c in table.columns if c not in KEYS and (per_site[c].nunique(dropna=False) <= 1).all()]
    return per_site[constant].first()

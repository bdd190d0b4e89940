"""The time-series contract: `TimeSeriesData` (what every loader returns), `Source` (what a data set offers)
and `PERIODS`."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mlkube.trainer.errors import MlkubeError

if TYPE_CHECKING:
    import pandas as pd

PERIODS = ("train", "validation", "test")


@dataclass(frozen=True, eq=False)
class TimeSeriesData:
    """Daily series of many sites on one date axis, in the variables' units (named in the variable names)."""

    dynamic: np.ndarray  # [sites, days, n_dynamic] float32, NaN where missing
    static: np.ndarray  # [sites, n_static] float32
    target: np.ndarray  # [sites, days] float32, NaN where missing
    dates: np.ndarray  # [days] datetime64[D], consecutive days
    sites: tuple[str, ...]
    dynamic_inputs: tuple[str, ...]
    static_inputs: tuple[str, ...]
    target_name: str
    # train / validation / test → [first day, last day + 1), indices into dates
    periods: dict[str, tuple[int, int]]

    def period_dates(self, period: str) -> tuple[dt.date, dt.date]:
        """First and last date (inclusive) of `period`."""
        lo, hi = self.periods[period]
        return as_date(self.dates[lo]), as_date(self.dates[hi - 1])

    def data_hash(self) -> str:
        """SHA-256 of the arrays, dates, names and periods: the data a run trained on, for env.json."""
        digest = hashlib.sha256()
        for array in (self.dynamic, self.static, self.target, self.dates):
            digest.update(np.ascontiguousarray(array).tobytes())
        names = [self.sites, self.dynamic_inputs, self.static_inputs, self.target_name, self.periods]
        digest.update(json.dumps(names, sort_keys=True).encode())
        return digest.hexdigest()


# sites, variables → dates [days] datetime64[D], values [sites, days, variables] float32
Reader = Callable[[list[str], list[str]], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Source:
    """What a data set offers, and how to read the chosen part of it."""

    name: str  # how errors call it: a built-in's name or a path
    sites: list[str]
    variables: list[str]  # daily variables
    attributes: pd.DataFrame  # static attributes, one row per site (index)
    read: Reader
    dynamic_default: tuple[str, ...]
    target_default: str | None = None
    periods_default: dict[str, tuple[str, str]] | None = None


def stack_sites(
    frames: dict[str, pd.DataFrame], variables: list[str], name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-site frames (indexed by date) as a `Reader`'s dates and [sites, days, variables] float32, on the
    days all sites cover."""
    import pandas as pd

    first = max(f.index.min() for f in frames.values())
    last = min(f.index.max() for f in frames.values())
    if first > last:
        raise MlkubeError(
            f"{name}: the chosen sites share no day", "choose sites whose records overlap in time"
        )
    dates = pd.date_range(first, last, freq="D")
    values = np.empty((len(frames), len(dates), len(variables)), np.float32)
    for i, (site, frame) in enumerate(frames.items()):
        if frame.index.has_duplicates:
            raise MlkubeError(f"{name}: site {site} lists a date twice", "keep one row per site and date")
        absent = [v for v in variables if v not in frame.columns]
        if absent:
            raise MlkubeError(f"{name}: site {site} has no {absent}", "give every site the same variables")
        values[i] = frame.reindex(dates)[variables].to_numpy(np.float32)
    return dates.to_numpy().astype("datetime64[D]"), values


@dataclass(frozen=True)
class SiteSeries:
    """One site's daily series as read: dates [days] datetime64[D] and values [days, variables]."""

    dates: np.ndarray
    values: np.ndarray
    variables: tuple[str, ...]


def stack_site_series(
    series: dict[str, SiteSeries], variables: list[str], name: str
) -> tuple[np.ndarray, np.ndarray]:
    """`stack_sites` for series read as arrays: a `Reader`'s dates and [sites, days, variables] float32 on the
    days all sites cover, NaN on a day a site lacks."""
    first = max(s.dates.min() for s in series.values())
    last = min(s.dates.max() for s in series.values())
    if first > last:
        raise MlkubeError(
            f"{name}: the chosen sites share no day", "choose sites whose records overlap in time"
        )
    dates = np.arange(first, last + 1)
    values = np.full((len(series), len(dates), len(variables)), np.nan, np.float32)
    for i, (site, s) in enumerate(series.items()):
        ordered = (np.diff(s.dates) > np.timedelta64(0, "D")).all()  # then no day twice (the usual case)
        if not ordered and len(np.unique(s.dates)) != len(s.dates):
            raise MlkubeError(f"{name}: site {site} lists a date twice", "keep one row per site and date")
        absent = [v for v in variables if v not in s.variables]
        if absent:
            raise MlkubeError(f"{name}: site {site} has no {absent}", "give every site the same variables")
        shared = (s.dates >= first) & (s.dates <= last)
        columns = [s.variables.index(v) for v in variables]
        values[i, (s.dates[shared] - first).astype(np.int64)] = s.values[shared][:, columns]
    return dates, values


def as_date(day: np.datetime64) -> dt.date:
    """A numpy day as a `datetime.date`."""
    return day.astype("datetime64[D]").astype(dt.date)

"""The checks of a spec's `lstm.data` against a source: the sites, variables and attributes it chooses, its
periods and their lengths, and the targets each period needs. Errors name the field and what to choose."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.series.contract import PERIODS, Source, TimeSeriesData, as_date

if TYPE_CHECKING:
    from mlkube.trainer.spec import LstmSpec, TimeSeriesDataSpec

# train and validation fractions of the days when a data set has no default periods
DEFAULT_SPLIT = (0.5, 0.25)
SPLIT_HINT = "make them disjoint: a model must not be scored on days it trained on"


def listing(names: list[str], limit: int = 30) -> str:
    """The first `limit` names, comma separated, and how many there are in all when more."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, … ({len(names)} in all)"


def choose_sites(requested: list[str] | None, source: Source) -> list[str]:
    """The requested sites (default: all of the source's), each known to the source."""
    if requested is None:
        return list(source.sites)
    known = set(source.sites)
    unknown = [s for s in requested if s not in known]
    if unknown:
        raise MlkubeError(
            f"lstm.data.sites: unknown site(s) {unknown} in {source.name}",
            f"choose from: {listing(source.sites)}",
        )
    return list(requested)


def choose_variable(name: str | None, source: Source, field: str) -> str:
    """`name` among the source's daily variables; `prcp` also finds `prcp(mm/day)`."""
    if name is None:
        raise MlkubeError(
            f"lstm.data.{field}: {source.name} has no default {field}",
            f"name one of: {listing(source.variables)}",
        )
    if name in source.variables:
        return name
    matches = [v for v in source.variables if v.split("(")[0] == name]
    if len(matches) != 1:
        raise MlkubeError(
            f"lstm.data.{field}: unknown variable {name!r} in {source.name}",
            f"choose from: {listing(source.variables)}",
        )
    return matches[0]


def choose_dynamic(requested: list[str] | None, source: Source, target: str, static: list[str]) -> list[str]:
    """The requested dynamic inputs, else the source's defaults less the target and the static inputs."""
    if requested is not None:
        return [choose_variable(name, source, "dynamic_inputs") for name in requested]
    return [v for v in source.dynamic_default if v != target and v not in static]


def choose_attributes(names: list[str], source: Source, sites: list[str]) -> tuple[list[str], np.ndarray]:
    """The static attributes [sites, attributes] float32: numeric, known for every site, finite."""
    table = source.attributes
    numeric = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]
    unknown = [n for n in names if n not in numeric]
    if unknown:
        raise MlkubeError(
            f"lstm.data.static_inputs: unknown or non-numeric attribute(s) {unknown} in {source.name}",
            f"choose from: {', '.join(numeric) or 'none (this source has no attributes)'}",
        )
    absent = [s for s in sites if s not in table.index]
    if names and absent:
        raise MlkubeError(
            f"lstm.data.static_inputs: no attributes for site(s) {listing(absent)} in {source.name}",
            "add them to the attribute tables, or drop those sites or the static inputs",
        )
    values = table.loc[sites, names].to_numpy(np.float32) if names else np.zeros((len(sites), 0), np.float32)
    holes = np.argwhere(~np.isfinite(values))
    if holes.size:
        site, column = holes[0]
        raise MlkubeError(
            f"lstm.data.static_inputs: {names[column]} is missing for site {sites[site]} "
            f"({len(holes)} missing values in all)",
            "drop that attribute or those sites",
        )
    return list(names), np.ascontiguousarray(values)


def choose_periods(spec: TimeSeriesDataSpec, source: Source, dates: np.ndarray) -> dict[str, tuple[int, int]]:
    """Each period as [first, last + 1) day indices: the spec's, else the source's default, else a 50/25/25
    split of the days."""
    chosen = {
        **_default_periods(source, dates),
        **{p: getattr(spec, f"{p}_period") for p in PERIODS if getattr(spec, f"{p}_period") is not None},
    }
    begin, end = as_date(dates[0]), as_date(dates[-1])
    for period, (first, last) in chosen.items():
        if first < begin or last > end:
            raise MlkubeError(
                f"lstm.data.{period}_period: {first}..{last} falls outside the data of "
                f"{source.name} ({begin}..{end} for the chosen sites)",
                "choose dates within that range",
            )
    for (a, (a0, a1)), (b, (b0, b1)) in itertools.combinations(chosen.items(), 2):
        if a0 <= b1 and b0 <= a1:
            raise MlkubeError(
                f"lstm.data.{a}_period ({a0}..{a1}) and {b}_period ({b0}..{b1}) overlap", SPLIT_HINT
            )
    return {p: ((first - begin).days, (last - begin).days + 1) for p, (first, last) in chosen.items()}


def _default_periods(source: Source, dates: np.ndarray) -> dict[str, tuple[dt.date, dt.date]]:
    if source.periods_default is not None:
        return {
            p: (dt.date.fromisoformat(a), dt.date.fromisoformat(b))
            for p, (a, b) in source.periods_default.items()
        }
    cuts = [0, int(len(dates) * DEFAULT_SPLIT[0]), int(len(dates) * sum(DEFAULT_SPLIT)), len(dates)]
    return {
        p: (as_date(dates[lo]), as_date(dates[hi - 1]))
        for p, lo, hi in zip(PERIODS, cuts, cuts[1:], strict=False)
    }


def check_lengths(lstm: LstmSpec, periods: dict[str, tuple[int, int]], dates: np.ndarray) -> tuple[int, int]:
    """Check the train period holds a sequence and every other period has its input history; return the days
    [first, last) to keep."""
    length, history = lstm.sequence_length, lstm.sequence_length + lstm.horizon - 2
    if lstm.train.warmup_days >= length:
        raise MlkubeError(
            f"lstm.train.warmup_days ({lstm.train.warmup_days}) must be below lstm.sequence_length "
            f"({length}): a sequence needs days left to score",
            "lower warmup_days or raise sequence_length",
        )
    lo, hi = periods["train"]
    if length > hi - lo:
        raise MlkubeError(
            f"lstm.sequence_length ({length} days) is longer than lstm.data.train_period ({hi - lo} days)",
            "shorten sequence_length or lengthen train_period",
        )
    for period in ("validation", "test"):
        start = periods[period][0]
        if start < history:
            raise MlkubeError(
                f"lstm.data.{period}_period starts on {as_date(dates[start])}, but its first prediction "
                f"needs {history} days of inputs before it (sequence_length {length}, horizon "
                f"{lstm.horizon}) and the data begin on {as_date(dates[0])}",
                f"start it on or after {as_date(dates[min(history, len(dates) - 1)])}, or "
                "shorten lstm.sequence_length",
            )
    first = max(0, min(lo for lo, _ in periods.values()) - history)
    return first, max(hi for _, hi in periods.values())


def check_targets(data: TimeSeriesData) -> None:
    """Every site needs a finite target in the train period; validation and test need one at some site."""
    lo, hi = data.periods["train"]
    rows = zip(data.sites, data.target[:, lo:hi], strict=True)
    empty = [site for site, row in rows if np.isnan(row).all()]
    if empty:
        first, last = data.period_dates("train")
        raise MlkubeError(
            f"site(s) {listing(empty)} have no valid {data.target_name} in lstm.data.train_period "
            f"({first}..{last})",
            "drop them from lstm.data.sites, or move the train period to days where they have data",
        )
    for period in ("validation", "test"):
        lo, hi = data.periods[period]
        if np.isnan(data.target[:, lo:hi]).all():
            first, last = data.period_dates(period)
            raise MlkubeError(
                f"lstm.data.{period}_period ({first}..{last}) holds no valid {data.target_name} at any "
                "site, so nothing could be scored there",
                "move it to days with observations",
            )


def check_target_not_input(data: TimeSeriesData, horizon: int) -> None:
    """With horizon 1 the last input day is the predicted day: the target among the inputs gives the answer
    away (a perfect, useless model)."""
    if horizon == 1 and data.target_name in data.dynamic_inputs:
        raise MlkubeError(
            f"lstm.data.dynamic_inputs: holds the target {data.target_name!r}, which with horizon 1 is the "
            "very value each sequence predicts",
            f"remove {data.target_name!r} from dynamic_inputs, or forecast ahead (lstm.horizon > 1)",
        )

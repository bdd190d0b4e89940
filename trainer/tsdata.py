"""Multi-site daily time series for the LSTM: CAMELS-US, the user's own tables, and a synthetic bucket model.

`load_timeseries` opens the source the spec names, checks the spec against it (sites, variables, periods, sequence
length), fills short gaps and returns `TimeSeriesData`: contiguous float32 arrays in the variables' own units.

Sources (`lstm.data`):
- `name: camels_us_sample` (the default): 4 real CAMELS-US basins shipped in `trainer/datasets/` (see its README).
- `path`: a CAMELS-US folder (recognised by its `*_lump_cida_forcing_leap.txt` files at any depth, so the full
  download with its HUC sub-folders works unchanged), a folder of one CSV/Parquet file per site (the file name is the
  site), one long CSV/Parquet table with `site` and `date` columns, or a NetCDF file with `site` and `date`
  dimensions (needs xarray). In tables, columns constant within every site are the static attributes.
- `name: synthetic`: a weather generator driving a conceptual bucket model (snow, soil), seeded, any size.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mlkube.trainer.errors import MlkubeError

if TYPE_CHECKING:
    from mlkube.trainer.spec import LstmSpec, PreprocessSpec, TimeSeriesDataSpec

DATASETS = Path(__file__).parent / "datasets"
PERIODS = ("train", "validation", "test")
DEFAULT_SPLIT = (
    0.5,
    0.25,
)  # train and validation fractions of the days when a data set has no default periods
SPLIT_HINT = "make them disjoint: a model must not be scored on days it trained on"

# CAMELS-US (Newman et al. 2015; Addor et al. 2017): see trainer/datasets/camels_us_sample/README.md
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
    periods: dict[
        str, tuple[int, int]
    ]  # train / validation / test → [first day, last day + 1), indices into dates

    def period_dates(self, period: str) -> tuple[dt.date, dt.date]:
        """First and last date (inclusive) of `period`."""
        lo, hi = self.periods[period]
        return _date(self.dates[lo]), _date(self.dates[hi - 1])

    def data_hash(self) -> str:
        """SHA-256 of the arrays, dates, names and periods: the data a run trained on, for env.json."""
        digest = hashlib.sha256()
        for array in (self.dynamic, self.static, self.target, self.dates):
            digest.update(np.ascontiguousarray(array).tobytes())
        names = [self.sites, self.dynamic_inputs, self.static_inputs, self.target_name, self.periods]
        digest.update(json.dumps(names, sort_keys=True).encode())
        return digest.hexdigest()


@dataclass(frozen=True)
class Source:
    """What a data set offers, and how to read the chosen part of it."""

    name: str  # how errors call it: a built-in's name or a path
    sites: list[str]
    variables: list[str]  # daily variables
    attributes: pd.DataFrame  # static attributes, one row per site (index)
    read: Callable[
        [list[str], list[str]], tuple[np.ndarray, np.ndarray]
    ]  # sites, variables → dates, [s, d, v]
    dynamic_default: tuple[str, ...]
    target_default: str | None = None
    periods_default: dict[str, tuple[str, str]] | None = None


# --------------------------------------------------------------------------------------------- entry point
def load_timeseries(lstm: LstmSpec, preprocess: PreprocessSpec, seed: int) -> TimeSeriesData:
    """Read `lstm.data`, check it against the spec, fill gaps of up to `preprocess.fill_max_gap` days.

    The date axis keeps `sequence_length + horizon - 2` days before the earliest period where the data have them,
    so that the first day of every period can be predicted from a full input sequence. `seed` seeds `synthetic`.
    """
    from mlkube.trainer.preprocess import fill_gaps

    spec = lstm.data
    source = open_source(spec, seed)
    sites = _choose_sites(spec.sites, source)
    target = _choose_variable(spec.target or source.target_default, source, "target")
    static_inputs, static = _choose_attributes(spec.static_inputs, source, sites)
    dynamic_inputs = _choose_dynamic(spec.dynamic_inputs, source, target, static_inputs)
    dates, values = source.read(sites, [*dynamic_inputs, target])
    periods = _periods(spec, source, dates)
    first, last = _check_lengths(lstm, periods, dates)
    values = fill_gaps(values[:, first:last], preprocess.fill_max_gap, preprocess.device)
    data = TimeSeriesData(
        dynamic=np.ascontiguousarray(values[:, :, :-1]),
        static=static,
        target=np.ascontiguousarray(values[:, :, -1]),
        dates=dates[first:last],
        sites=tuple(sites),
        dynamic_inputs=tuple(dynamic_inputs),
        static_inputs=tuple(static_inputs),
        target_name=target,
        periods={name: (lo - first, hi - first) for name, (lo, hi) in periods.items()},
    )
    _check_targets(data)
    return data


def open_source(spec: TimeSeriesDataSpec, seed: int) -> Source:
    """The source `spec` names: a built-in (`name`) or the user's files (`path`)."""
    if spec.name is not None:
        return BUILTINS[spec.name](spec, seed)
    return _path_source(Path(spec.path))


def _path_source(path: Path) -> Source:
    if not path.exists():
        raise MlkubeError(
            f"lstm.data.path: {path} does not exist",
            "give a CAMELS-US folder, a folder of one CSV/Parquet per site, or a CSV/Parquet/NetCDF table",
        )
    if path.is_dir() and next(path.rglob(f"*{FORCING_SUFFIX}"), None) is not None:
        return camels_source(path, str(path))
    if path.is_dir():
        return table_source(_read_site_folder(path), str(path))
    return table_source(_read_table(path), str(path))


# ----------------------------------------------------------------------------------------------- CAMELS-US
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
        return _stack({s: _camels_site(forcings[s], streamflows[s]) for s in chosen}, variables, name)

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
    """One gauge's forcings and streamflow (converted from cfs to mm/day over the basin) on the forcing's days;
    NaN where the streamflow has no record."""
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


# ------------------------------------------------------------------------------------------- user tables
TABLE_READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    ".csv": pd.read_csv,
    ".parquet": pd.read_parquet,
}
KEYS = ("site", "date")


def _read_table(path: Path) -> pd.DataFrame:
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


def _read_site_folder(root: Path) -> pd.DataFrame:
    """One long table from a folder of one CSV/Parquet file per site (the file name, without suffix, is the site)."""
    files = [p for p in sorted(root.iterdir()) if p.suffix in TABLE_READERS]
    if not files:
        raise MlkubeError(
            f"lstm.data.path: {root} holds neither CAMELS-US files (*{FORCING_SUFFIX}) nor .csv/.parquet "
            "files",
            "point it at a CAMELS-US folder or a folder of one table per site",
        )
    return pd.concat([TABLE_READERS[p.suffix](p).assign(site=p.stem) for p in files], ignore_index=True)


def table_source(table: pd.DataFrame, name: str) -> Source:
    """A long table (`site`, `date`, variables...): numeric columns are daily variables, columns constant within
    every site are static attributes (and no default input)."""
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
        return _stack({s: by_site[s] for s in chosen}, names, name)

    attributes = _constant_columns(table)
    dynamic = tuple(v for v in variables if v not in attributes.columns)
    return Source(name, list(by_site), variables, attributes, read, dynamic)


def _constant_columns(table: pd.DataFrame) -> pd.DataFrame:
    per_site = table.groupby("site", sort=True)
    constant = [c for c in table.columns if c not in KEYS and (per_site[c].nunique(dropna=False) <= 1).all()]
    return per_site[constant].first()


def _stack(frames: dict[str, pd.DataFrame], variables: list[str], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-site frames (indexed by date) as [sites, days, variables] float32 on the days all sites cover."""
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


# ------------------------------------------------------------------------------------------------ synthetic
SYNTHETIC_FORCINGS = (
    "dayl(s)",
    "prcp(mm/day)",
    "srad(W/m2)",
    "swe(mm)",
    "tmax(C)",
    "tmin(C)",
    "vp(Pa)",
    "wind(m/s)",
    "pet(mm/day)",
)
SYNTHETIC_ATTRIBUTES = ("latitude", "wet_day_prcp", "t_mean", "soil_capacity", "recession", "melt_factor")
SYNTHETIC_START = np.datetime64("2000-01-01")
SYNTHETIC_CHUNK = 256  # sites generated at once (bounds memory; each chunk has its own random stream)


def synthetic_source(n_sites: int, years: int, seed: int) -> Source:
    """`n_sites` sites × `years` years of seeded synthetic weather and the bucket model's streamflow (the truth)."""
    end = (SYNTHETIC_START.astype("datetime64[Y]") + years).astype("datetime64[D]")
    dates = np.arange(SYNTHETIC_START, end)
    chunks = [
        _synthetic_chunk(np.random.default_rng([seed, i]), min(SYNTHETIC_CHUNK, n_sites - lo), dates)
        for i, lo in enumerate(range(0, n_sites, SYNTHETIC_CHUNK))
    ]
    values = np.concatenate([c[0] for c in chunks])
    sites = [f"S{i:05d}" for i in range(n_sites)]
    attributes = pd.DataFrame(
        np.concatenate([c[1] for c in chunks]), index=sites, columns=SYNTHETIC_ATTRIBUTES
    )
    variables = [*SYNTHETIC_FORCINGS, CAMELS_TARGET]

    def read(chosen: list[str], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        rows = [int(s[1:]) for s in chosen]
        return dates, np.ascontiguousarray(values[rows][:, :, [variables.index(n) for n in names]])

    dynamic = tuple(v for v in SYNTHETIC_FORCINGS if v != "swe(mm)")  # swe is the model's snow state
    return Source("synthetic", sites, variables, attributes, read, dynamic, CAMELS_TARGET)


def _synthetic_chunk(
    rng: np.random.Generator, n_sites: int, dates: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Forcings and streamflow [sites, days, forcings + 1] and the attributes [sites, 6] of one chunk of sites."""
    site = {
        "latitude": rng.uniform(25, 50, n_sites),  # degrees north
        "wet_day_prcp": rng.uniform(4, 14, n_sites),  # mm/day, mean on wet days
        "t_mean": rng.uniform(-2, 18, n_sites),  # C, annual mean
        "soil_capacity": rng.uniform(50, 400, n_sites),  # mm
        "recession": rng.uniform(0.01, 0.1, n_sites),  # 1/day
        "melt_factor": rng.uniform(1.5, 4.5, n_sites),  # mm/C/day
    }
    weather = synthetic_weather(rng, site, dates)
    flow = bucket_model(
        weather["prcp(mm/day)"],
        weather["tmax(C)"],
        weather["tmin(C)"],
        weather["pet(mm/day)"],
        site["soil_capacity"],
        site["recession"],
        site["melt_factor"],
    )
    weather["swe(mm)"] = flow["snow"]
    series = [weather[name] for name in SYNTHETIC_FORCINGS] + [flow["q"]]
    return np.stack(series, axis=2).astype(np.float32), np.stack(
        [site[a] for a in SYNTHETIC_ATTRIBUTES], axis=1
    )


def synthetic_weather(
    rng: np.random.Generator, site: dict[str, np.ndarray], dates: np.ndarray
) -> dict[str, np.ndarray]:
    """Daily weather [sites, days]: Markov-chain wet days with gamma amounts, seasonal AR(1) temperature, radiation
    from latitude and day of year (FAO-56), and FAO-56 Penman-Monteith reference evapotranspiration."""
    n_sites, days = len(site["latitude"]), len(dates)
    doy = (dates - dates.astype("datetime64[Y]")).astype(int) + 1
    wet = _markov_wet_days(rng, n_sites, days)
    prcp = wet * rng.gamma(0.7, site["wet_day_prcp"][:, None] / 0.7, (n_sites, days))
    season = -np.cos(2 * np.pi * (doy - 20) / 365.25)
    anomaly = _ar1(rng, n_sites, days, 0.75, 2.0)
    tmean = site["t_mean"][:, None] + rng.uniform(5, 14, n_sites)[:, None] * season + anomaly - 1.5 * wet
    half_range = (rng.uniform(8, 14, n_sites)[:, None] - 4 * wet) / 2
    tmax, tmin = tmean + half_range, tmean - half_range
    dayl, ra = _daylight(np.radians(site["latitude"]), doy)
    rs = ra * np.where(wet, 0.3, 0.7)  # MJ/m2/day at the ground
    wind = rng.uniform(1.5, 4, n_sites)[:, None] * rng.lognormal(0, 0.3, (n_sites, days))
    vp = 1000 * _saturation_kpa(tmin)  # Pa: the dew point is taken as tmin, as Daymet does
    return {
        "dayl(s)": dayl,
        "prcp(mm/day)": prcp,
        "srad(W/m2)": rs * 1e6 / dayl,
        "tmax(C)": tmax,
        "tmin(C)": tmin,
        "vp(Pa)": vp,
        "wind(m/s)": wind,
        "pet(mm/day)": _penman_monteith(tmax, tmin, vp / 1000, rs, 0.75 * ra, wind),
    }


def _markov_wet_days(rng: np.random.Generator, n_sites: int, days: int) -> np.ndarray:
    """Wet (1) or dry (0) days [sites, days] from a two-state Markov chain with per-site probabilities."""
    wet_after_dry, wet_after_wet = rng.uniform(0.15, 0.4, n_sites), rng.uniform(0.5, 0.75, n_sites)
    draws = rng.random((n_sites, days))
    wet = np.zeros((n_sites, days))
    for day in range(1, days):
        wet[:, day] = draws[:, day] < np.where(wet[:, day - 1] > 0, wet_after_wet, wet_after_dry)
    return wet


def _ar1(rng: np.random.Generator, n_sites: int, days: int, rho: float, sigma: float) -> np.ndarray:
    noise = rng.normal(0, sigma * np.sqrt(1 - rho**2), (n_sites, days))
    out = np.zeros((n_sites, days))
    for day in range(1, days):
        out[:, day] = rho * out[:, day - 1] + noise[:, day]
    return out


def _daylight(latitude: np.ndarray, doy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Day length (s) and extraterrestrial radiation (MJ/m2/day) [sites, days] (FAO-56 equations 21-25, 34)."""
    declination = 0.409 * np.sin(2 * np.pi * doy / 365 - 1.39)
    phi, delta = latitude[:, None], declination[None, :]
    sunset = np.arccos(np.clip(-np.tan(phi) * np.tan(delta), -1, 1))
    distance = 1 + 0.033 * np.cos(2 * np.pi * doy / 365)
    ra = (
        24
        * 60
        / np.pi
        * 0.0820
        * distance
        * (sunset * np.sin(phi) * np.sin(delta) + np.cos(phi) * np.cos(delta) * np.sin(sunset))
    )
    return 86400 * sunset / np.pi, ra


def _saturation_kpa(t: np.ndarray) -> np.ndarray:
    """Saturation vapour pressure (kPa) at temperature t (C) (FAO-56 equation 11)."""
    return 0.6108 * np.exp(17.27 * t / (t + 237.3))


def _penman_monteith(tmax, tmin, ea, rs, rso, wind) -> np.ndarray:
    """FAO-56 reference evapotranspiration (mm/day) from temperatures (C), vapour pressure (kPa), radiation
    (MJ/m2/day) and wind (m/s at 2 m); psychrometric constant at sea level."""
    t = (tmax + tmin) / 2
    es = (_saturation_kpa(tmax) + _saturation_kpa(tmin)) / 2
    slope = 4098 * _saturation_kpa(t) / (t + 237.3) ** 2
    gamma = 0.0665
    longwave = (
        4.903e-9
        * ((tmax + 273.16) ** 4 + (tmin + 273.16) ** 4)
        / 2
        * (0.34 - 0.14 * np.sqrt(ea))
        * (1.35 * np.minimum(rs / rso, 1) - 0.35)
    )
    net = 0.77 * rs - longwave
    pet = (0.408 * slope * net + gamma * 900 / (t + 273) * wind * (es - ea)) / (
        slope + gamma * (1 + 0.34 * wind)
    )
    return np.maximum(pet, 0)


def bucket_model(prcp, tmax, tmin, pet, soil_capacity, recession, melt_factor) -> dict[str, np.ndarray]:
    """The synthetic truth: a snow bucket and a soil bucket per site, daily [sites, days], in mm and mm/day.

    Precipitation falls as snow below 0 C and melts at `melt_factor` × mean temperature; rain and melt fill the
    soil, which evaporates pet × fill fraction, spills above `soil_capacity` and drains `recession` of its storage.
    Streamflow q = spill + drainage. Storages start empty (snow) and half full (soil); returns q, et, snow, soil.
    """
    tmean = (tmax + tmin) / 2
    out = {k: np.zeros_like(prcp) for k in ("q", "et", "snow", "soil")}
    snow, soil = np.zeros(prcp.shape[0]), soil_capacity / 2
    for day in range(prcp.shape[1]):
        snowfall = np.where(tmean[:, day] < 0, prcp[:, day], 0.0)
        melt = np.minimum(snow + snowfall, melt_factor * np.maximum(tmean[:, day], 0))
        snow = snow + snowfall - melt
        soil = soil + prcp[:, day] - snowfall + melt
        et = np.minimum(pet[:, day] * soil / soil_capacity, soil)
        spill = np.maximum(soil - et - soil_capacity, 0)
        drainage = recession * (soil - et - spill)
        soil = soil - et - spill - drainage
        for name, value in (("q", spill + drainage), ("et", et), ("snow", snow), ("soil", soil)):
            out[name][:, day] = value
    return out


BUILTINS: dict[str, Callable[[TimeSeriesDataSpec, int], Source]] = {
    "camels_us_sample": lambda spec, seed: camels_source(
        DATASETS / "camels_us_sample", "camels_us_sample", CAMELS_SAMPLE_PERIODS
    ),
    "synthetic": lambda spec, seed: synthetic_source(spec.synthetic_sites, spec.synthetic_years, seed),
}


# ------------------------------------------------------------------------------------------------ the checks
def _listing(names: list[str], limit: int = 30) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, … ({len(names)} in all)"


def _choose_sites(requested: list[str] | None, source: Source) -> list[str]:
    if requested is None:
        return list(source.sites)
    known = set(source.sites)
    unknown = [s for s in requested if s not in known]
    if unknown:
        raise MlkubeError(
            f"lstm.data.sites: unknown site(s) {unknown} in {source.name}",
            f"choose from: {_listing(source.sites)}",
        )
    return list(requested)


def _choose_variable(name: str | None, source: Source, field: str) -> str:
    """`name` among the source's daily variables; `prcp` also finds `prcp(mm/day)`."""
    if name is None:
        raise MlkubeError(
            f"lstm.data.{field}: {source.name} has no default {field}",
            f"name one of: {_listing(source.variables)}",
        )
    if name in source.variables:
        return name
    matches = [v for v in source.variables if v.split("(")[0] == name]
    if len(matches) != 1:
        raise MlkubeError(
            f"lstm.data.{field}: unknown variable {name!r} in {source.name}",
            f"choose from: {_listing(source.variables)}",
        )
    return matches[0]


def _choose_dynamic(requested: list[str] | None, source: Source, target: str, static: list[str]) -> list[str]:
    if requested is not None:
        return [_choose_variable(name, source, "dynamic_inputs") for name in requested]
    return [v for v in source.dynamic_default if v != target and v not in static]


def _choose_attributes(names: list[str], source: Source, sites: list[str]) -> tuple[list[str], np.ndarray]:
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
            f"lstm.data.static_inputs: no attributes for site(s) {_listing(absent)} in {source.name}",
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


def _periods(spec: TimeSeriesDataSpec, source: Source, dates: np.ndarray) -> dict[str, tuple[int, int]]:
    """Each period as [first, last + 1) day indices: the spec's, else the source's default, else a 50/25/25 split."""
    chosen = {
        **_default_periods(source, dates),
        **{p: getattr(spec, f"{p}_period") for p in PERIODS if getattr(spec, f"{p}_period") is not None},
    }
    begin, end = _date(dates[0]), _date(dates[-1])
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
    return {p: (_date(dates[lo]), _date(dates[hi - 1])) for p, lo, hi in zip(PERIODS, cuts, cuts[1:], strict=False)}


def _check_lengths(lstm: LstmSpec, periods: dict[str, tuple[int, int]], dates: np.ndarray) -> tuple[int, int]:
    """Check the train period holds a sequence and every other period has its input history; return the days
    [first, last) to keep."""
    length, history = lstm.sequence_length, lstm.sequence_length + lstm.horizon - 2
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
                f"lstm.data.{period}_period starts on {_date(dates[start])}, but its first prediction needs {history} "
                f"days of inputs before it (sequence_length {length}, horizon {lstm.horizon}) and the data begin "
                f"on {_date(dates[0])}",
                f"start it on or after {_date(dates[min(history, len(dates) - 1)])}, or "
                "shorten lstm.sequence_length",
            )
    first = max(0, min(lo for lo, _ in periods.values()) - history)
    return first, max(hi for _, hi in periods.values())


def _check_targets(data: TimeSeriesData) -> None:
    """Every site needs a finite target in the train period; validation and test need one at some site."""
    lo, hi = data.periods["train"]
    empty = [site for site, row in zip(data.sites, data.target[:, lo:hi], strict=False) if np.isnan(row).all()]
    if empty:
        first, last = data.period_dates("train")
        raise MlkubeError(
            f"site(s) {_listing(empty)} have no valid {data.target_name} in lstm.data.train_period "
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


def _date(day: np.datetime64) -> dt.date:
    return day.astype("datetime64[D]").astype(dt.date)

"""A synthetic data set of any size: a seeded weather generator driving a conceptual bucket model (snow, soil)
whose streamflow is the target, so that the truth is known. `write_camels_us` writes it in CAMELS-US's text
layout, so that a benchmark at any scale reads it through the CAMELS reader (and neuralhydrology's)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from mlkube.trainer.series.camels import (
    CAMELS_TARGET,
    CUBIC_FOOT,
    FORCING_SUFFIX,
    STREAMFLOW_SUFFIX,
)
from mlkube.trainer.series.contract import Source

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
    """`n_sites` sites × `years` years of seeded synthetic weather and the bucket model's streamflow (the
    truth)."""
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


CAMELS_FORCINGS = SYNTHETIC_FORCINGS[:7]  # Daymet's columns, in its order: dayl prcp srad swe tmax tmin vp
HUCS = 18  # the CAMELS-US download's HUC folders; gauge i goes into folder i % HUCS + 1


def write_camels_us(
    folder: Path, n_sites: int, years: int, seed: int, progress: Callable[[str], None] = print
) -> list[str]:
    """`synthetic_source(n_sites, years, seed)` as a CAMELS-US download: basin_mean_forcing/daymet/<huc>/
    <gauge>_lump_cida_forcing_leap.txt (latitude, elevation and an integer area in m2 above the columns),
    usgs_streamflow/<huc>/<gauge>_streamflow_qc.txt (cfs, flag A) and camels_attributes_v2.0/camels_clim.txt
    (the synthetic attributes) and camels_name.txt (huc_02, as neuralhydrology reads it). Gauge ids are 8
    digits; returns them."""
    source = synthetic_source(n_sites, years, seed)
    dates, values = source.read(source.sites, [*CAMELS_FORCINGS, CAMELS_TARGET])
    day = dates.astype("datetime64[D]")
    ymd = np.stack(
        [
            day.astype("datetime64[Y]").astype(int) + 1970,
            day.astype("datetime64[M]").astype(int) % 12 + 1,
            (day - day.astype("datetime64[M]")).astype(int) + 1,
        ],
        axis=1,
    )
    gauges = [f"{i + 1:08d}" for i in range(n_sites)]
    rng = np.random.default_rng([seed, n_sites])
    areas = rng.uniform(1e8, 5e9, n_sites).round()  # m2
    attributes = source.attributes.set_axis(gauges)
    for i, gauge in enumerate(gauges):
        huc = f"{i % HUCS + 1:02d}"
        forcing = folder / "basin_mean_forcing" / "daymet" / huc / f"{gauge}{FORCING_SUFFIX}"
        header = f"{attributes['latitude'].iloc[i]:.4f}\n{rng.uniform(0, 3000):.2f}\n{areas[i]:.0f}\n"
        columns = "Year Mnth Day Hr " + " ".join(CAMELS_FORCINGS)
        _write_rows(forcing, header + columns + "\n", "%d %02d %02d 12" + "\t%.2f" * 7, ymd, values[i, :, :7])
        cfs = values[i, :, 7:] * areas[i] / (CUBIC_FOOT * 86400 * 1000)
        flow = folder / "usgs_streamflow" / huc / f"{gauge}{STREAMFLOW_SUFFIX}"
        _write_rows(flow, "", f"{gauge} %d %02d %02d %.2f A", ymd, cfs)
        if (i + 1) % 100 == 0 or i + 1 == n_sites:
            progress(f"wrote {i + 1}/{n_sites} basins")
    tables = folder / "camels_attributes_v2.0"
    tables.mkdir(parents=True, exist_ok=True)
    attributes.rename_axis("gauge_id").to_csv(tables / "camels_clim.txt", sep=";")
    names = pd.DataFrame({"huc_02": [i % HUCS + 1 for i in range(n_sites)], "gauge_name": gauges}, gauges)
    names.rename_axis("gauge_id").to_csv(tables / "camels_name.txt", sep=";")
    return gauges


def _write_rows(path: Path, header: str, row: str, ymd: np.ndarray, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "\n".join(row % (*date, *v) for date, v in zip(ymd.tolist(), values.tolist(), strict=True))
    path.write_text(header + lines + "\n")


def _synthetic_chunk(
    rng: np.random.Generator, n_sites: int, dates: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Forcings and streamflow [sites, days, forcings + 1] and the attributes [sites, 6] of one chunk of
    sites."""
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
    """Daily weather [sites, days]: Markov-chain wet days with gamma amounts, seasonal AR(1) temperature,
    radiation from latitude and day of year (FAO-56), and FAO-56 Penman-Monteith reference
    evapotranspiration."""
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
    """Day length (s) and extraterrestrial radiation (MJ/m2/day) [sites, days] (FAO-56 equations 21-25,
    34)."""
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

    Precipitation falls as snow below 0 C and melts at `melt_factor` × mean temperature; rain and melt fill
    the soil, which evaporates pet × fill fraction, spills above `soil_capacity` and drains `recession` of its
    storage. Streamflow q = spill + drainage. Storages start empty (snow) and half full (soil); returns q, et,
    snow, soil.
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

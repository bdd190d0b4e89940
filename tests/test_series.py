"""Time-series sources: the shipped CAMELS-US sample read as CAMELS, the full-download layout, user tables,
the synthetic bucket model, gap filling composed with loading, and every user error the spec can run into."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlkube.trainer.errors import MlkubeError, SpecError
from mlkube.trainer.lstm.prepared import load_filled
from mlkube.trainer.series import BUILTIN_SOURCES, DATASETS, load_timeseries
from mlkube.trainer.series.camels import (
    CAMELS_DYNAMIC,
    CAMELS_TARGET,
    CUBIC_FOOT,
    FORCING_SUFFIX,
    STREAMFLOW_SUFFIX,
)
from mlkube.trainer.series.synthetic import SYNTHETIC_ATTRIBUTES, bucket_model, synthetic_source
from mlkube.trainer.spec import TIMESERIES_DATASETS, LstmSpec, PreprocessSpec, parse_spec

SAMPLE = DATASETS / "camels_us_sample"
GAUGES = ("01022500", "01547700", "02064000", "03015500")
pytestmark = pytest.mark.unit


def lstm_section(data: dict | None, **lstm) -> LstmSpec:
    """An `lstm` section given as plain values, validated like a spec."""
    return LstmSpec.model_validate({"data": data or {}, **lstm})


def load(data: dict | None = None, seed: int = 0, **lstm) -> object:
    """The raw series of an `lstm` section (`load_timeseries`)."""
    return load_timeseries(lstm_section(data, **lstm), seed)


def load_and_fill(data: dict | None = None, seed: int = 0, **lstm) -> object:
    """The series as the LSTM trains on them: loaded, gaps filled (default `preprocess`), targets checked."""
    return load_filled(lstm_section(data, **lstm), PreprocessSpec(), seed)


def fails(match: str, data: dict | None = None, **lstm) -> MlkubeError:
    with pytest.raises(MlkubeError, match=match) as caught:
        load_and_fill(data, **lstm)
    return caught.value


@pytest.fixture
def camels_copy(tmp_path) -> Path:
    """A writable copy of the shipped sample."""
    return Path(shutil.copytree(SAMPLE, tmp_path / "camels"))


def edit_lines(path: Path, edit) -> None:
    """Rewrite the data lines of a CAMELS text file: edit(fields) changes the split fields of each line."""
    lines = path.read_text().splitlines()
    head = 4 if path.name.endswith("forcing_leap.txt") else 0
    path.write_text("\n".join(lines[:head] + ["  ".join(edit(line.split())) for line in lines[head:]]) + "\n")


# ---------------------------------------------------------------------------------------- the CAMELS sample
def test_shipped_sample_loads_four_basins_with_its_default_periods():
    data = load()
    assert data.sites == GAUGES
    assert data.dynamic_inputs == CAMELS_DYNAMIC and data.target_name == CAMELS_TARGET
    assert (
        data.dynamic.shape == (4, 1096, 6) and data.target.shape == (4, 1096) and data.static.shape == (4, 0)
    )
    assert all(
        a.dtype == np.float32 and a.flags["C_CONTIGUOUS"] for a in (data.dynamic, data.static, data.target)
    )
    assert str(data.dates[0]) == "2000-01-01" and str(data.dates[-1]) == "2002-12-31"
    assert data.period_dates("train") == (dt.date(2000, 1, 1), dt.date(2001, 6, 30))
    assert data.period_dates("validation") == (dt.date(2001, 7, 1), dt.date(2001, 12, 31))
    assert data.period_dates("test") == (dt.date(2002, 1, 1), dt.date(2002, 12, 31))
    assert np.isfinite(data.target).all()


def test_streamflow_is_converted_from_cubic_feet_per_second_to_mm_per_day():
    data = load({"sites": ["01022500"], "dynamic_inputs": ["prcp"]})
    area_m2 = float(
        (SAMPLE / "forcing_daymet" / "01022500_lump_cida_forcing_leap.txt").read_text().splitlines()[2]
    )
    first_day_cfs = 255.0  # 01022500 2000-01-01 in streamflow/01022500_streamflow_qc.txt
    assert data.target[0, 0] == pytest.approx(first_day_cfs * CUBIC_FOOT * 86400 * 1000 / area_m2, rel=1e-6)
    assert data.dynamic_inputs == ("prcp(mm/day)",)
    assert data.dynamic[0, 2, 0] == pytest.approx(5.50)  # 2000-01-03 precipitation, mm/day


def pandas_camels_site(forcing: Path, streamflow: Path):
    """The reader as it was, a plain pandas reference: one gauge's frame on the forcing's days."""
    import pandas as pd

    def dates(y, m, d):
        return pd.DatetimeIndex(pd.to_datetime(pd.DataFrame({"year": y, "month": m, "day": d})))

    area = float(forcing.read_text().splitlines()[2])
    frame = pd.read_csv(forcing, sep=r"\s+", skiprows=3)
    frame.index = dates(frame["Year"], frame["Mnth"], frame["Day"])
    frame = frame.drop(columns=["Year", "Mnth", "Day", "Hr"]).mask(lambda f: f == -999.0)
    flow = pd.read_csv(
        streamflow, sep=r"\s+", header=None, usecols=[1, 2, 3, 4], names=["y", "m", "d", "cfs"]
    )
    cfs = flow["cfs"].where(flow["cfs"] >= 0)
    q = pd.Series((cfs * CUBIC_FOOT * 86400 * 1000 / area).to_numpy(), index=dates(flow.y, flow.m, flow.d))
    return frame.join(q.rename(CAMELS_TARGET), how="left")


def test_the_camels_reader_reads_what_pandas_reads(camels_copy):
    from mlkube.trainer.series.camels import camels_source

    def edit(path: Path, change) -> None:
        lines = path.read_text().splitlines()
        change(lines)
        path.write_text("\n".join(lines) + "\n")

    def forcing(lines):  # a missing forcing, tab-separated as Daymet's
        lines[14] = "\t".join([*lines[14].split()[:5], "-999.00", *lines[14].split()[6:]])

    def streamflow(lines):  # an unflagged day, a missing one, a blank line
        lines[0] = lines[0].rsplit(" ", 1)[0]
        lines[5] = " ".join([*lines[5].split()[:4], "-999.00", "M"])
        lines.insert(40, "")

    edit(camels_copy / "forcing_daymet" / "02064000_lump_cida_forcing_leap.txt", forcing)
    edit(camels_copy / "streamflow" / "02064000_streamflow_qc.txt", streamflow)
    source = camels_source(camels_copy, "camels")
    variables = [*CAMELS_DYNAMIC, CAMELS_TARGET]
    dates, values = source.read(source.sites, variables)
    for i, site in enumerate(source.sites):
        files = [next(camels_copy.rglob(f"{site}{suffix}")) for suffix in (FORCING_SUFFIX, STREAMFLOW_SUFFIX)]
        expected = pandas_camels_site(*files).reindex(dates.astype("datetime64[ns]"))[variables]
        np.testing.assert_array_equal(values[i], expected.to_numpy(np.float32))
    assert np.isnan(values[source.sites.index("02064000")]).any()


def test_a_synthetic_data_set_written_as_camels_us_reads_back_through_the_camels_reader(tmp_path):
    from mlkube.trainer.series.load import path_source
    from mlkube.trainer.series.synthetic import synthetic_source, write_camels_us

    gauges = write_camels_us(tmp_path, 3, 2, seed=4, progress=lambda line: None)
    source, truth = path_source(tmp_path), synthetic_source(3, 2, seed=4)
    assert source.sites == gauges and set(truth.attributes.columns) <= set(source.attributes.columns)
    variables = [*CAMELS_DYNAMIC, CAMELS_TARGET]
    dates, values = source.read(gauges, variables)
    expected_dates, expected = truth.read(truth.sites, variables)
    np.testing.assert_array_equal(dates, expected_dates)
    np.testing.assert_allclose(values[..., :-1], expected[..., :-1], atol=0.0051)  # written with 2 decimals
    np.testing.assert_allclose(values[..., -1], expected[..., -1], rtol=1e-3, atol=1e-3)


def test_static_attributes_come_from_the_camels_tables():
    data = load({"static_inputs": ["area_gages2", "elev_mean", "p_mean"]})
    np.testing.assert_allclose(data.static[0], [573.6, 92.68, 3.60812594113621], rtol=1e-6)
    assert data.static_inputs == ("area_gages2", "elev_mean", "p_mean")


def test_full_download_layout_with_huc_subfolders_reads_the_same(tmp_path):
    root = tmp_path / "basin_dataset_public_v1p2"
    for folder, target in (
        ("forcing_daymet", "basin_mean_forcing/daymet"),
        ("streamflow", "usgs_streamflow"),
    ):
        for file in (SAMPLE / folder).iterdir():
            huc = tmp_path.joinpath(root, target, f"{GAUGES.index(file.name[:8]) + 1:02d}")
            huc.mkdir(parents=True, exist_ok=True)
            shutil.copy(file, huc)
    shutil.copytree(SAMPLE / "attributes", tmp_path / "camels_attributes_v2.0")
    periods = {
        "train_period": ["2000-01-01", "2001-06-30"],
        "validation_period": ["2001-07-01", "2001-12-31"],
        "test_period": ["2002-01-01", "2002-12-31"],
        "static_inputs": ["elev_mean"],
    }
    shipped, downloaded = load(periods), load({"path": str(tmp_path), **periods})
    assert downloaded.sites == shipped.sites
    assert downloaded.data_hash() == shipped.data_hash()


def test_missing_values_become_nan_and_the_prepared_series_fill_short_gaps(camels_copy):
    def punch(fields):  # 01547700: 2 missing days in January 2000, 10 missing days in March 2000
        day = dt.date(int(fields[1]), int(fields[2]), int(fields[3]))
        gap = dt.date(2000, 1, 10) <= day <= dt.date(2000, 1, 11) or dt.date(2000, 3, 1) <= day <= dt.date(
            2000, 3, 10
        )
        return [*fields[:4], "-999.00", "M"] if gap else fields

    edit_lines(camels_copy / "streamflow" / "01547700_streamflow_qc.txt", punch)
    section = {"path": str(camels_copy), "sites": ["01547700"], "train_period": ["2000-01-01", "2001-06-30"]}
    raw = load(section).target[0]
    assert np.isnan(raw[9:11]).all() and np.isnan(raw[60:70]).all()  # loading leaves every gap
    q = load_and_fill(section).target[0]
    assert np.isnan(q[60:70]).all() and np.isfinite(q[:60]).all()  # the 10-day gap stays (fill_max_gap is 5)
    assert q[9] == pytest.approx(q[8] + (q[11] - q[8]) / 3, rel=1e-6)  # the 2-day gap is a straight line
    assert q[10] == pytest.approx(q[8] + 2 * (q[11] - q[8]) / 3, rel=1e-6)


def test_missing_forcings_marked_minus_999_become_nan(camels_copy):
    def punch(fields):  # precipitation missing for 20 days from 2000-02-01
        late = (int(fields[0]), int(fields[1])) == (2000, 2) and int(fields[2]) <= 20
        return [*fields[:5], "-999.00", *fields[6:]] if late else fields

    edit_lines(camels_copy / "forcing_daymet" / "02064000_lump_cida_forcing_leap.txt", punch)
    data = load({"path": str(camels_copy), "sites": ["02064000"], "dynamic_inputs": ["prcp", "tmax"]})
    assert np.isnan(data.dynamic[0, 31:51, 0]).all() and np.isfinite(data.dynamic[0, :, 1]).all()


# ------------------------------------------------------------------------------------------------ user files
def site_table(site: str, days: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "date": pd.date_range("2010-01-01", periods=days).strftime("%Y-%m-%d"),
            "rain": rng.gamma(1, 3, days),
            "temp": rng.normal(10, 5, days),
            "flow": rng.gamma(1, 2, days),
            "area": 100.0 + seed,
            "kind": "forest",
        }
    )


@pytest.mark.parametrize("layout", ["csv folder", "parquet folder", "long csv", "long parquet"])
def test_user_tables_in_every_layout_give_the_same_data(tmp_path, layout):
    tables = {site: site_table(site, seed=i) for i, site in enumerate(("a", "b", "c"))}
    suffix = ".parquet" if "parquet" in layout else ".csv"
    write = {".csv": lambda t, p: t.to_csv(p, index=False), ".parquet": lambda t, p: t.to_parquet(p)}[suffix]
    if "folder" in layout:
        for site, table in tables.items():
            write(table, tmp_path / f"{site}{suffix}")
        path = tmp_path
    else:
        path = tmp_path / f"all{suffix}"
        write(pd.concat([t.assign(site=s) for s, t in tables.items()]), path)
    data = load({"path": str(path), "target": "flow", "static_inputs": ["area"]}, sequence_length=30)
    assert data.sites == ("a", "b", "c") and data.dynamic_inputs == ("rain", "temp")
    np.testing.assert_allclose(data.target[1], tables["b"]["flow"], rtol=1e-6)
    np.testing.assert_array_equal(data.static[:, 0], [100, 101, 102])
    assert data.periods == {"train": (0, 200), "validation": (200, 300), "test": (300, 400)}
    assert load({"path": str(path), "target": "flow"}, sequence_length=30).dynamic_inputs == ("rain", "temp")


def test_netcdf_without_xarray_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "xarray", None)  # as if not installed
    (tmp_path / "data.nc").write_bytes(b"")
    error = fails("needs xarray", {"path": str(tmp_path / "data.nc"), "target": "q"})
    assert "pip install xarray" in error.fix


# -------------------------------------------------------------------------------------------------- synthetic
def synthetic_run(sites: int, years: int, seed: int) -> tuple[dict, pd.DataFrame, dict]:
    """A synthetic source's series by name (float64), its attributes, and the bucket model re-run on its
    forcings."""
    source = synthetic_source(n_sites=sites, years=years, seed=seed)
    _, values = source.read(source.sites, source.variables)
    series = {name: values[:, :, i].astype(np.float64) for i, name in enumerate(source.variables)}
    site = source.attributes
    truth = bucket_model(
        series["prcp(mm/day)"],
        series["tmax(C)"],
        series["tmin(C)"],
        series["pet(mm/day)"],
        site["soil_capacity"].to_numpy(),
        site["recession"].to_numpy(),
        site["melt_factor"].to_numpy(),
    )
    return series, site, truth


def test_synthetic_target_is_the_bucket_model_of_its_own_forcings():
    series, site, truth = synthetic_run(3, 2, seed=5)
    np.testing.assert_allclose(series[CAMELS_TARGET], truth["q"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(series["swe(mm)"], truth["snow"], rtol=1e-4, atol=1e-3)
    assert list(site.columns) == list(SYNTHETIC_ATTRIBUTES)


def test_bucket_model_closes_the_water_balance():
    series, site, truth = synthetic_run(4, 3, seed=1)
    capacity = site["soil_capacity"].to_numpy()
    storage_change = truth["snow"][:, -1] + truth["soil"][:, -1] - capacity / 2
    inflow, outflow = series["prcp(mm/day)"].sum(axis=1), (truth["q"] + truth["et"]).sum(axis=1)
    np.testing.assert_allclose(inflow, outflow + storage_change, rtol=1e-9)
    assert (truth["q"] >= 0).all() and (truth["soil"] <= capacity[:, None] + 1e-9).all()
    assert (truth["snow"] > 0).any()  # some sites are cold enough for snow


def test_synthetic_data_follow_the_seed():
    spec = {"name": "synthetic", "synthetic_sites": 3, "synthetic_years": 3}
    first, again, other = load(spec, seed=1), load(spec, seed=1), load(spec, seed=2)
    assert first.data_hash() == again.data_hash() != other.data_hash()
    assert first.dynamic.shape == (3, 1096, 8) and "swe(mm)" not in first.dynamic_inputs


def test_data_hash_changes_with_one_value():
    data = load()
    before = data.data_hash()
    data.target[2, 100] += 0.5
    assert data.data_hash() != before


def test_every_data_set_name_the_spec_allows_has_a_source():
    assert set(BUILTIN_SOURCES) == set(TIMESERIES_DATASETS)


def test_loading_a_series_imports_neither_preprocessing_nor_numba():
    code = (
        "import sys; from mlkube.trainer.series import load_timeseries; "
        "from mlkube.trainer.spec import LstmSpec; "
        "load_timeseries(LstmSpec.model_validate({'data': {'name': 'synthetic', 'synthetic_sites': 2, "
        "'synthetic_years': 2}}), 0); "
        "print(sorted(m for m in sys.modules if m == 'numba' or m.startswith('mlkube.trainer.preprocess')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------------------------ user errors
def test_unknown_site_lists_the_available_ones():
    error = fails(r"unknown site\(s\) \['01013500'\]", {"sites": ["01013500", "01022500"]})
    assert all(g in error.fix for g in GAUGES)


def test_unknown_variable_lists_the_available_ones():
    error = fails("lstm.data.dynamic_inputs: unknown variable 'rain'", {"dynamic_inputs": ["prcp", "rain"]})
    assert "prcp(mm/day)" in error.fix and "swe(mm)" in error.fix
    fails("lstm.data.target: unknown variable 'discharge'", {"target": "discharge"})


def test_unknown_or_non_numeric_attribute_lists_the_numeric_ones():
    error = fails(
        r"attribute\(s\) \['geol_1st_class', 'size'\]", {"static_inputs": ["geol_1st_class", "size"]}
    )
    assert "area_gages2" in error.fix and "geol_1st_class" not in error.fix


def test_overlapping_periods_are_refused():
    fails(
        r"train_period \(2000-01-01..2001-06-30\) and validation_period \(2001-06-01..2001-12-31\) overlap",
        {"validation_period": ["2001-06-01", "2001-12-31"]},
    )


def test_a_period_outside_the_data_is_refused():
    error = fails(
        r"test_period: 2002-01-01..2003-06-30 falls outside the data",
        {"test_period": ["2002-01-01", "2003-06-30"]},
    )
    assert "2000-01-01..2002-12-31" in error.message


def test_a_sequence_longer_than_the_train_period_is_refused():
    fails(
        r"lstm.sequence_length \(600 days\) is longer than lstm.data.train_period \(547 days\)",
        sequence_length=600,
    )


def test_a_warm_up_as_long_as_the_sequence_is_refused_while_loading():
    fails(
        r"lstm.train.warmup_days \(90\) must be below lstm.sequence_length \(90\)",
        sequence_length=90,
        train={"warmup_days": 90},
    )


def test_the_target_among_the_inputs_is_refused_for_a_same_day_prediction_only():
    error = fails(
        "dynamic_inputs: holds the target 'QObs", {"dynamic_inputs": ["prcp", "QObs"]}, sequence_length=30
    )
    assert "lstm.horizon > 1" in error.fix
    ahead = load_and_fill({"dynamic_inputs": ["prcp", "QObs"]}, sequence_length=30, horizon=2)
    assert ahead.target_name in ahead.dynamic_inputs  # yesterday's flow to forecast tomorrow's is fair


def test_a_validation_period_without_input_history_is_refused():
    error = fails(
        "validation_period starts on 2000-03-01, but its first prediction needs 364 days",
        {
            "train_period": ["2001-01-01", "2002-06-30"],
            "validation_period": ["2000-03-01", "2000-12-31"],
            "test_period": ["2002-07-01", "2002-12-31"],
        },
    )
    assert "2000-12-30" in error.fix


def test_a_site_without_target_in_the_train_period_is_named(camels_copy):
    def blank_2000(fields):
        return [*fields[:4], "-999.00", "M"] if fields[1] in ("2000", "2001") else fields

    edit_lines(camels_copy / "streamflow" / "02064000_streamflow_qc.txt", blank_2000)
    fails(
        r"site\(s\) 02064000 have no valid QObs\(mm/d\) in lstm.data.train_period", {"path": str(camels_copy)}
    )


def test_a_period_without_any_observed_target_is_refused():
    # 01022500 has forcings for 2003 but streamflow only to 2002: the days load, with the target missing
    error = fails(
        r"test_period \(2003-01-01..2003-12-31\) holds no valid QObs\(mm/d\) at any site",
        {"sites": ["01022500"], "test_period": ["2003-01-01", "2003-12-31"]},
    )
    assert "observations" in error.fix


def test_a_missing_static_attribute_names_the_site(camels_copy):
    table = camels_copy / "attributes" / "camels_topo.txt"
    table.write_text(
        table.read_text().replace("01547700;41.05951;-77.60583;353.57", "01547700;41.05951;-77.60583;")
    )
    fails(
        "elev_mean is missing for site 01547700", {"path": str(camels_copy), "static_inputs": ["elev_mean"]}
    )


def test_file_errors_say_what_to_give(tmp_path):
    fails("does not exist", {"path": str(tmp_path / "nowhere")})
    fails("holds neither CAMELS-US files", {"path": str(tmp_path)})
    pd.DataFrame({"when": ["2000-01-01"], "q": [1.0]}).to_csv(tmp_path / "t.csv", index=False)
    fails(r"has no column \['site', 'date'\]", {"path": str(tmp_path / "t.csv"), "target": "q"})
    site_table("a").assign(site="a").to_csv(tmp_path / "long.csv", index=False)
    fails("has no default target", {"path": str(tmp_path / "long.csv")})
    (tmp_path / "x.xlsx").write_text("")
    fails("cannot read x.xlsx", {"path": str(tmp_path / "x.xlsx")})


def test_camels_folder_without_streamflow_is_refused(camels_copy):
    shutil.rmtree(camels_copy / "streamflow")
    fails("no gauge has both", {"path": str(camels_copy)})


@pytest.mark.parametrize(
    "section, problem",
    [
        ("{name: synthetic, path: /data}", "give `name`"),
        ("{sites: [01022500]}", "quote site ids"),
        ("{sites: ['01022500', '01022500']}", "lists a site twice"),
        ("{train_period: [2001-01-01, 2000-01-01]}", "the start date comes after the end date"),
    ],
)
def test_spec_errors_of_the_data_section(section, problem):
    with pytest.raises(SpecError, match=problem):
        parse_spec(f"lstm: {{data: {section}}}")


def test_path_alone_means_no_builtin():
    spec = parse_spec("lstm: {data: {path: /data/camels}}")
    assert spec.lstm.data.name is None and parse_spec("lstm: {}").lstm.data.name == "camels_us_sample"

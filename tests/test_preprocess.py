"""The Numba kernels (CPU twins here, CUDA twins under the simulator) against the NumPy reference, and the API
the LSTM trainer uses: statistics, standardisation, gap filling, the batch sampler."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.preprocess import (
    BatchSampler,
    destandardize_target,
    fill_gaps,
    fill_series,
    fit_statistics,
    period_batch,
    resolve_device,
    standardize,
)
from mlkube.trainer.preprocess.bodies import LOG_OFFSET
from mlkube.trainer.series import TimeSeriesData
from mlkube.trainer.spec import PreprocessSpec

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.unit


def series_with_gaps(seed: int = 0, sites: int = 5, days: int = 80, variables: int = 3) -> np.ndarray:
    """Random float32 values [sites, days, variables] with ~30% NaN, in runs of every length."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(sites, days, variables)).astype(np.float32)
    values[rng.random(values.shape) < 0.3] = np.nan
    return values


def kernel_cases(seed: int = 0) -> dict[str, tuple]:
    """One argument tuple per kernel call, covering the flags (log, inverse, horizon shift, warm-up)."""
    rng = np.random.default_rng(seed)
    values = series_with_gaps(seed)
    mean, std = rng.normal(size=(5, 3)), rng.uniform(0.5, 2, size=(5, 3))
    full = np.nan_to_num(values)
    static = rng.normal(size=(5, 2)).astype(np.float32)
    return {
        "site_moments": (values, 10, 70),
        "scale": (values, mean, std, False, False),
        "scale log": (np.abs(values), mean, std, True, False),
        "scale inverse log": (values, mean, std, True, True),
        "fill_gaps": (values, 3),
        "window_validity": (
            np.ascontiguousarray(values[:, :, :2]),
            np.ascontiguousarray(values[:, :, 2]),
            3,
            50,
            12,
            2,
            4,
        ),
        "gather": (
            np.ascontiguousarray(full[:, :, :2]),
            static,
            np.ascontiguousarray(full[:, :, 2]),
            rng.integers(0, 5, 7),
            rng.integers(0, 60, 7),
            12,
            2,
        ),
    }


def as_tuple(result) -> tuple:
    return result if isinstance(result, tuple) else (result,)


@pytest.mark.parametrize("case", list(kernel_cases()))
def test_cpu_kernel_equals_numpy_reference(case):
    from mlkube.trainer.preprocess import cpu, reference

    args = kernel_cases()[case]
    name = case.split()[0]
    for got, want in zip(
        as_tuple(getattr(cpu, name)(*args)), as_tuple(getattr(reference, name)(*args)), strict=True
    ):
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)


SIMULATOR_CHECK = """
import json, numpy as np
from mlkube.trainer.preprocess import BatchSampler, cpu, fit_statistics, gpu, reference
from mlkube.trainer.spec import PreprocessSpec
from tests.test_preprocess import as_tuple, kernel_cases, make_data

import os
EXACT = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"  # a real GPU may fuse multiply-adds: float32 rounding

def host(a):
    return a if isinstance(a, np.ndarray) else a.copy_to_host()

def equal(x, y):
    if not np.issubdtype(x.dtype, np.floating):
        return np.array_equal(x, y)
    if EXACT:
        return np.array_equal(x, y, equal_nan=True)
    return x.shape == y.shape and np.allclose(x, y, rtol=1e-5, atol=1e-6, equal_nan=True)

def same(a, b):
    pairs = zip(as_tuple(a), as_tuple(b), strict=True)
    return all(equal(np.asarray(host(x)), np.asarray(host(y))) for x, y in pairs)

report = {}
for case, args in kernel_cases(1).items():
    name = case.split()[0]
    twin = getattr(gpu, name)(*args)
    report[case] = same(twin, getattr(cpu, name)(*args)) and same(twin, getattr(reference, name)(*args))
data = make_data()
cuda, cpu_ = (BatchSampler(data, 10, 0, horizon=2, device=d).batch(3, 6) for d in ("cuda", "cpu"))
report["sampler"] = same((cuda.x, cuda.y, cuda.site), (cpu_.x, cpu_.y, cpu_.site))
on_gpu, on_cpu = (fit_statistics(data, PreprocessSpec(device=d, log_target=True)) for d in ("cuda", "cpu"))
fields = on_cpu.__dataclass_fields__
report["statistics"] = all(equal(*(np.asarray(getattr(s, f)) for s in (on_gpu, on_cpu))) for f in fields)
print(json.dumps(report))
"""


def test_cuda_twins_equal_cpu_and_reference_under_the_simulator():
    check_cuda_twins({"NUMBA_ENABLE_CUDASIM": "1"})


@pytest.mark.gpu
def test_cuda_twins_equal_cpu_and_reference_on_the_gpu():
    """The same kernels compiled for and run on the real device (float results to 1e-5: the device may fuse
    multiply-adds)."""
    check_cuda_twins({"NUMBA_ENABLE_CUDASIM": "0"})


def check_cuda_twins(variables: dict[str, str]) -> None:
    env = {**os.environ, **variables, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", SIMULATOR_CHECK],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(report) == {*kernel_cases(), "sampler", "statistics"}
    assert [case for case, equal in report.items() if not equal] == [], (
        "CUDA twin differs from the CPU one or NumPy"
    )


# ---------------------------------------------------------------------------------------------- gap filling
def test_fill_gaps_interpolates_short_gaps_and_leaves_long_ones():
    nan = np.nan
    series = np.array([nan, 1, nan, nan, 4, nan, nan, nan, nan, 9, 10, nan], np.float32)[None, :, None]
    filled = fill_gaps(series, max_gap=3)[0, :, 0]
    np.testing.assert_array_equal(filled, [nan, 1, 2, 3, 4, nan, nan, nan, nan, 9, 10, nan])
    np.testing.assert_array_equal(fill_gaps(series, max_gap=4)[0, 5:9, 0], [5, 6, 7, 8])


def test_fill_gaps_with_zero_max_gap_changes_nothing():
    values = series_with_gaps()
    np.testing.assert_array_equal(fill_gaps(values, 0), values)


def test_fill_series_fills_the_dynamic_inputs_and_the_target_alike():
    data = make_data(missing=0.3)
    data.dynamic[1, 10:12, 0] = np.nan
    filled = fill_series(data, max_gap=2)
    np.testing.assert_array_equal(filled.dynamic, fill_gaps(data.dynamic, 2))
    np.testing.assert_array_equal(filled.target, fill_gaps(data.target[:, :, None], 2)[:, :, 0])
    assert np.isnan(data.target).sum() > np.isnan(filled.target).sum()
    assert filled.sites == data.sites and filled.periods == data.periods


# ----------------------------------------------------------------------------------------------- statistics
def make_data(
    seed: int = 0, sites: int = 4, days: int = 120, dynamic: int = 3, static: int = 2, missing: float = 0.1
) -> TimeSeriesData:
    """A small TimeSeriesData: train days [0, 60), validation [60, 90), test [90, 120)."""
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(sites, days, dynamic)).astype(np.float32) * 3 + 10
    target = rng.gamma(1.0, 2.0, size=(sites, days)).astype(np.float32)
    target[rng.random(target.shape) < missing] = np.nan
    return TimeSeriesData(
        dynamic=inputs,
        static=rng.normal(size=(sites, static)).astype(np.float32),
        target=target,
        dates=np.datetime64("2000-01-01") + np.arange(days),
        sites=tuple(f"s{i}" for i in range(sites)),
        dynamic_inputs=tuple(f"x{i}" for i in range(dynamic)),
        static_inputs=tuple(f"a{i}" for i in range(static)),
        target_name="q",
        periods={"train": (0, 60), "validation": (60, 90), "test": (90, 120)},
    )


def test_global_statistics_pool_every_site_of_the_training_period_only():
    data = make_data()
    stats = fit_statistics(data, PreprocessSpec())
    train = data.dynamic[:, :60].reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(stats.dynamic_mean, np.repeat(train.mean(axis=0)[None], 4, axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.dynamic_std[0], train.std(axis=0), rtol=1e-12)
    np.testing.assert_allclose(
        stats.target_mean, np.nanmean(data.target[:, :60].astype(np.float64)), rtol=1e-12
    )
    np.testing.assert_allclose(stats.static_mean, data.static.astype(np.float64).mean(axis=0), rtol=1e-6)


def test_statistics_ignore_the_validation_and_test_periods():
    data = make_data()
    shifted = dataclasses.replace(data, dynamic=data.dynamic.copy(), target=data.target.copy())
    shifted.dynamic[:, 60:] += 1000
    shifted.target[:, 60:] *= 50
    before, after = fit_statistics(data, PreprocessSpec()), fit_statistics(shifted, PreprocessSpec())
    np.testing.assert_array_equal(before.dynamic_mean, after.dynamic_mean)
    np.testing.assert_array_equal(before.target_std, after.target_std)


def test_per_site_statistics_and_log_target():
    data = make_data()
    stats = fit_statistics(data, PreprocessSpec(normalization="per_site", log_target=True))
    np.testing.assert_allclose(
        stats.dynamic_mean, data.dynamic[:, :60].astype(np.float64).mean(axis=1), rtol=1e-12
    )
    log_q = np.log(data.target[:, :60].astype(np.float64) + LOG_OFFSET)
    # the log-transformed target is float32, like the data the statistics standardise
    np.testing.assert_allclose(stats.target_mean, np.nanmean(log_q, axis=1), rtol=1e-6)
    np.testing.assert_allclose(stats.target_std, np.nanstd(log_q, axis=1), rtol=1e-6)
    np.testing.assert_allclose(stats.target_site_std, 1.0)
    assert np.array(stats.to_json()["dynamic_mean"]).shape == (4, 3)


def test_a_constant_variable_is_only_centred():
    data = make_data()
    data.dynamic[:, :, 1] = 7.0
    stats = fit_statistics(data, PreprocessSpec())
    assert stats.dynamic_std[0, 1] == 1.0
    np.testing.assert_array_equal(standardize(data, stats).dynamic[:, :, 1], 0.0)


def test_per_site_statistics_need_a_finite_value_for_each_site():
    data = make_data()
    data.dynamic[2, :60, 0] = np.nan
    with pytest.raises(MlkubeError, match="x0 has no finite value in the training period at site s2"):
        fit_statistics(data, PreprocessSpec(normalization="per_site"))


@pytest.mark.parametrize("log_target", [False, True])
def test_standardize_then_destandardize_gives_back_the_target(log_target):
    data = make_data()
    stats = fit_statistics(data, PreprocessSpec(log_target=log_target))
    scaled = standardize(data, stats)
    train = scaled.dynamic[:, :60].reshape(-1, 3)
    np.testing.assert_allclose(train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=0), 1, atol=1e-5)
    assert scaled.dynamic.dtype == np.float32 and scaled.target.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(destandardize_target(scaled.target, stats), data.target, rtol=1e-5, atol=1e-5)
    rows = np.array([3, 1])
    np.testing.assert_allclose(
        destandardize_target(scaled.target[rows], stats, sites=rows), data.target[rows], rtol=1e-5, atol=1e-5
    )


def test_model_json_statistics_are_per_variable_lists():
    data = make_data()
    stats = fit_statistics(data, PreprocessSpec()).to_json()
    assert len(stats["dynamic_mean"]) == 3 and len(stats["static_std"]) == 2
    assert isinstance(stats["target_mean"], float) and stats["log_target"] is False


# ------------------------------------------------------------------------------------------------ sampler
def test_same_seed_same_batches_and_another_seed_others():
    data = make_data()
    first, again = BatchSampler(data, 20, seed=3), BatchSampler(data, 20, seed=3)
    other = BatchSampler(data, 20, seed=4)
    a, b, c = first.batch(5, 16), again.batch(5, 16), other.batch(5, 16)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.start, b.start)
    assert not np.array_equal(a.start, c.start) or not np.array_equal(a.site, c.site)
    assert not np.array_equal(first.batch(6, 16).start, a.start)


@pytest.mark.parametrize("world_size", [2, 3])
def test_workers_split_the_global_batch_whatever_their_number(world_size):
    sampler = BatchSampler(make_data(), 20, seed=0)
    whole = sampler.batch(7, 16)
    parts = [sampler.batch(7, 16, rank, world_size) for rank in range(world_size)]
    np.testing.assert_array_equal(np.concatenate([p.x for p in parts]), whole.x)
    np.testing.assert_array_equal(np.concatenate([p.y for p in parts]), whole.y, strict=True)
    np.testing.assert_array_equal(np.concatenate([p.site for p in parts]), whole.site)


def test_batch_holds_inputs_statics_and_the_target_horizon_days_later():
    data = make_data()
    batch = BatchSampler(data, 10, seed=1, horizon=3).batch(0, 8)
    assert batch.x.shape == (8, 10, 5) and batch.x.flags["C_CONTIGUOUS"] and batch.x.dtype == np.float32
    for i, (site, start) in enumerate(zip(batch.site, batch.start, strict=False)):
        np.testing.assert_array_equal(batch.x[i, :, :3], data.dynamic[site, start : start + 10])
        np.testing.assert_array_equal(batch.x[i, :, 3:], np.broadcast_to(data.static[site], (10, 2)))
        np.testing.assert_array_equal(batch.y[i], data.target[site, start + 2 : start + 12])
        assert start + 12 <= 60  # every target day lies in the train period


def test_sampler_skips_windows_without_a_scored_target_or_with_missing_inputs():
    data = make_data(missing=0.0)
    data.target[0, :] = np.nan  # site 0: nothing to score
    data.target[1, :40] = np.nan  # site 1: finite targets only from day 40
    data.dynamic[2, 30, 1] = np.nan  # site 2: one missing input day
    sampler = BatchSampler(data, 10, seed=0, warmup_days=4, period="train")
    batch = sampler.batch(0, 2000)
    assert 0 not in batch.site
    assert (
        batch.start[batch.site == 1] >= 31
    ).all()  # a finite target among the scored days [start + 4, start + 10)
    starts_2 = batch.start[batch.site == 2]
    assert not ((starts_2 <= 30) & (starts_2 + 10 > 30)).any()
    assert np.isfinite(batch.x).all()
    assert sampler.windows == 20 + (51 - 10) + 51  # sites 1, 2, 3 of the 51 starts in 60 train days


def test_sampler_state_dict_resumes_and_refuses_other_settings():
    data = make_data()
    sampler = BatchSampler(data, 20, seed=2)
    sampler.batch(11, 4)
    resumed = BatchSampler(data, 20, seed=2)
    resumed.load_state_dict(sampler.state_dict())
    assert resumed.step == 12
    with pytest.raises(MlkubeError, match="differs from this run's"):
        BatchSampler(data, 20, seed=9).load_state_dict(sampler.state_dict())


def test_sampler_without_any_valid_window_is_a_user_error():
    data = make_data()
    data.target[:, :60] = np.nan
    with pytest.raises(MlkubeError, match="no window of 20 days"):
        BatchSampler(data, 20, seed=0)
    with pytest.raises(MlkubeError, match="warmup_days"):
        BatchSampler(make_data(), 20, seed=0, warmup_days=20)


def test_period_batch_covers_the_period_with_a_full_history():
    data = make_data()
    batch = period_batch(data, "validation", sequence_length=25, horizon=2)
    assert batch.history == 24 and batch.x.shape == (4, 24 + 30, 5)
    np.testing.assert_array_equal(batch.y[:, batch.history :], data.target[:, 60:90])
    np.testing.assert_array_equal(batch.x[:, -1, :3], data.dynamic[:, 88])


# ---------------------------------------------------------------------------------------------- device choice
def test_cuda_without_a_gpu_is_a_user_error_and_auto_falls_back(monkeypatch):
    from numba import cuda

    monkeypatch.setattr(cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(MlkubeError, match="preprocess.device is cuda"):
        resolve_device("cuda")


def test_importing_the_data_modules_does_not_import_numba():
    code = "import sys, mlkube.trainer.series, mlkube.trainer.preprocess; print('numba' in sys.modules)"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout.strip() == "False", proc.stderr

"""Benchmark: the Numba preprocessing kernels against their plain NumPy reference, ratios measured in one run.

Synthetic data (mlkube.trainer.series.synthetic): 500 sites × 15 years × 10 daily variables (9 forcings and
the streamflow target), with gaps punched into them, 6 static attributes. The pipeline is the one `prepare`
runs: gap filling (up to 5 days), training-period statistics, standardisation, then 10,000 training windows of
365 days (validity of every window, then gathering in batches of 500). Each stage is timed for the NumPy
reference and the Numba CPU kernels on 1 thread and on all of Numba's threads (2 here), after a warm-up whose
time (JIT compilation, or loading the on-disk cache) is reported apart.

    .venv/bin/python benchmarks/preprocess.py            # add --sites 50 for a quick run

Where Numba sees a CUDA GPU, the CUDA twins (trainer/preprocess/gpu.py) run the same pipeline on it too, in
the same interleaved repeats (the code path can be tried on the simulator: NUMBA_ENABLE_CUDASIM=1 with
--sites 2 --years 1 --windows 20; its times mean nothing).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from types import ModuleType

import numpy as np

from mlkube.trainer.series.synthetic import synthetic_source

MAX_GAP = 5  # days
SEQUENCE_LENGTH = 365  # days
BATCH = 500  # windows gathered per call


def make_data(sites: int, years: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Daily values [sites, days, 10] and static attributes [sites, 6], with gaps as in gauged records: short
    runs (1-5 days) in every variable, and runs of 1-30 days in the streamflow (the last variable)."""
    source = synthetic_source(sites, years, seed)
    _, values = source.read(source.sites, source.variables)
    rng = np.random.default_rng(seed)
    for var, longest, runs in [(v, MAX_GAP, 0.002) for v in range(values.shape[2] - 1)] + [(-1, 30, 0.004)]:
        for site, day in zip(*np.nonzero(rng.random(values.shape[:2]) < runs), strict=False):
            values[site, day : day + rng.integers(1, longest + 1), var] = np.nan
    return values, np.ascontiguousarray(source.attributes.to_numpy(np.float32))


def run_pipeline(
    k: ModuleType, values: np.ndarray, static: np.ndarray, windows: int, seed: int, device: str = "cpu"
) -> dict[str, float]:
    """Seconds per stage of the preprocessing pipeline, with `k` the kernel module (cpu, reference, or gpu
    with `device` "cuda": NumPy in and out of each stage, as `prepare` calls them, and the gathering from
    arrays copied to the GPU once, as the sampler holds them)."""
    seconds: dict[str, float] = {}

    def timed(stage: str, work: Callable):
        start = time.perf_counter()
        result = work()
        seconds[stage] = time.perf_counter() - start
        return result

    train_days = values.shape[1] * 2 // 3
    filled = timed("gap filling", lambda: k.fill_gaps(values, MAX_GAP))
    dynamic, target = np.ascontiguousarray(filled[:, :, :-1]), np.ascontiguousarray(filled[:, :, -1:])
    moments = timed(
        "statistics", lambda: (k.site_moments(dynamic, 0, train_days), k.site_moments(target, 0, train_days))
    )
    (_, d_mean, d_m2), (_, t_mean, t_m2) = moments
    d_std, t_std = (np.where(m2 > 0, np.sqrt(m2 / train_days), 1.0) for m2 in (d_m2, t_m2))
    dynamic, target = timed(
        "standardisation",
        lambda: (k.scale(dynamic, d_mean, d_std, False, False), k.scale(target, t_mean, t_std, True, False)),
    )
    target = np.ascontiguousarray(target[:, :, 0])
    starts = train_days - SEQUENCE_LENGTH + 1
    valid = timed(
        "window validity", lambda: k.window_validity(dynamic, target, 0, starts, SEQUENCE_LENGTH, 0, 0)
    )
    chosen = np.random.default_rng(seed).choice(np.flatnonzero(valid), windows)
    sites, offsets = np.divmod(chosen, starts)

    def gather() -> None:  # one batch at a time, dropped before the next, as a training loop does
        from mlkube.trainer.preprocess.device import on_device

        arrays = on_device((dynamic, static, target), device)
        for i in range(0, windows, BATCH):
            k.gather(*arrays, sites[i : i + BATCH], offsets[i : i + BATCH], SEQUENCE_LENGTH, 0)
        if device == "cuda":
            from numba import cuda

            cuda.synchronize()  # the batches are the GPU's until then

    timed(f"gather {windows} windows", gather)
    seconds["total"] = sum(seconds.values())
    return seconds


def warm_up(cpu: ModuleType, values: np.ndarray, static: np.ndarray) -> tuple[float, str]:
    """Seconds for the first call of every kernel on a small slice, and whether it compiled or loaded the
    cache."""
    start = time.perf_counter()
    run_pipeline(cpu, np.ascontiguousarray(values[:2, :800]), np.ascontiguousarray(static[:2]), 2, 0)
    seconds = time.perf_counter() - start
    kernels = [cpu.fill_gaps, cpu.site_moments, cpu.scale, cpu.window_validity, cpu.gather]
    misses = sum(sum(k.stats.cache_misses.values()) for k in kernels)
    return seconds, "compiled (cache miss)" if misses else "loaded from the on-disk cache"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=500)
    parser.add_argument("--years", type=int, default=15)
    parser.add_argument("--windows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import numba

    from mlkube.trainer.preprocess import cpu, reference

    values, static = make_data(args.sites, args.years, args.seed)
    print(
        f"data: {values.shape[0]} sites × {values.shape[1]} days × {values.shape[2]} variables, "
        f"{static.shape[1]} static attributes, {np.isnan(values).mean():.1%} missing; "
        f"{args.windows} windows of {SEQUENCE_LENGTH} days in batches of {BATCH}"
    )
    warm, how = warm_up(cpu, values, static)
    print(f"JIT warm-up: {warm:.2f} s ({how}); not counted below")

    from numba import cuda

    threads = numba.get_num_threads()
    runs: dict[str, list[dict[str, float]]] = {"numpy": [], "1": [], str(threads): []}
    if cuda.is_available():  # the CUDA twins on the device (or the simulator: NUMBA_ENABLE_CUDASIM=1)
        from mlkube.trainer.preprocess import gpu

        runs["cuda"] = []
        warm = time.perf_counter()
        run_pipeline(
            gpu, np.ascontiguousarray(values[:2, :800]), np.ascontiguousarray(static[:2]), 2, 0, "cuda"
        )
        print(
            "CUDA twins, first call of each (compilation or cache, context): "
            f"{time.perf_counter() - warm:.2f} s"
        )
    for _ in range(args.repeats):  # interleaved, so that load from other processes hits every variant alike
        runs["numpy"].append(run_pipeline(reference, values, static, args.windows, args.seed))
        for n in (1, threads):
            numba.set_num_threads(n)
            runs[str(n)].append(run_pipeline(cpu, values, static, args.windows, args.seed))
        if "cuda" in runs:
            runs["cuda"].append(run_pipeline(gpu, values, static, args.windows, args.seed, "cuda"))
    best = {
        name: {stage: min(r[stage] for r in results) for stage in results[0]}
        for name, results in runs.items()
    }
    numpy_s, one, many = best["numpy"], best["1"], best[str(threads)]
    print(
        f"best of {args.repeats} runs, seconds\n"
        f"{'stage':<22}{'NumPy':>8}{'Numba 1 thr':>13}{f'Numba {threads} thr':>13}"
        f"{'speed-up 1 thr':>16}{f'speed-up {threads} thr':>16}{f'1→{threads} thr':>10}"
    )
    for stage in numpy_s:
        print(
            f"{stage:<22}{numpy_s[stage]:>8.3f}{one[stage]:>13.3f}{many[stage]:>13.3f}"
            f"{numpy_s[stage] / one[stage]:>15.1f}×{numpy_s[stage] / many[stage]:>15.1f}×"
            f"{one[stage] / many[stage]:>9.2f}×"
        )
    if "cuda" in best:
        device = (
            "the CUDA simulator" if numba.config.ENABLE_CUDASIM else cuda.get_current_device().name.decode()
        )
        print(f"\nCUDA twins on {device} (host arrays in and out of each stage), seconds")
        print(f"{'stage':<22}{'CUDA':>8}{f'vs Numba {threads} thr':>18}{'vs NumPy':>10}")
        for stage, seconds in best["cuda"].items():
            print(
                f"{stage:<22}{seconds:>8.3f}{many[stage] / seconds:>17.1f}×{numpy_s[stage] / seconds:>9.1f}×"
            )


if __name__ == "__main__":
    main()

"""Benchmark: the LSTM against neuralhydrology's CudaLSTM, ratios measured in one run, repeats interleaved.

1. The shipped CAMELS-US sample, one configuration for both (6 Daymet inputs, 6 static attributes, hidden 64,
   270-day sequences, batch 256, NSE loss, the last day of each sequence scored, `--steps` steps, CPU):
   sequences per second of the training steps (best / median), start-up from the command to the first step,
   and the test period's median NSE, for neuralhydrology (with `--with-neuralhydrology`), mlkube with 1 worker
   in each network setting (`input_layer` on and off), with 1 worker in bfloat16 autocast
   (`lstm.train.cpu_precision`, where the CPU runs it natively), and with 2 workers. Each run is a fresh
   process (`mlkube run SPEC`: prepare, torchrun, scores; neuralhydrology's trainer and tester).
2. `--scale SITES YEARS` (e.g. 671 20): the synthetic data set written in the CAMELS-US text layout
   (trainer.series.synthetic.write_camels_us, cached in build/bench/), read by both: loading before the first
   step, `--scale-steps` training steps, and the peak memory of the whole run (the summed RSS of the process
   tree, sampled every 0.1 s): neuralhydrology's trainer and tester; `mlkube run` with 1 worker, with the
   baselines and without.
3. GPU (where CUDA exists): forward + backward of the network with cuDNN and with cuDNN disabled.

neuralhydrology is never a dependency of mlkube: `--with-neuralhydrology` installs it from PyPI into its own
virtual environment (build/nh-venv, with the CPU torch pin of constraints.txt) on first use.

    .venv/bin/python benchmarks/lstm.py --with-neuralhydrology --repeats 3
    .venv/bin/python benchmarks/lstm.py --with-neuralhydrology --repeats 1 --scale 671 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "build" / "bench"
NH_VENV = ROOT / "build" / "nh-venv"
NH_VERSION = "1.13.0"
NH = f"neuralhydrology {NH_VERSION} CudaLSTM"
DYNAMIC = ["dayl(s)", "prcp(mm/day)", "srad(W/m2)", "tmax(C)", "tmin(C)", "vp(Pa)"]
SAMPLE_STATIC = ["p_mean", "pet_mean", "aridity", "frac_snow", "elev_mean", "area_gages2"]
SYNTHETIC_STATIC = ["latitude", "wet_day_prcp", "t_mean", "soil_capacity", "recession", "melt_factor"]
SAMPLE_PERIODS = {
    "train": ("2000-01-01", "2001-06-30"),
    "validation": ("2001-07-01", "2001-12-31"),
    "test": ("2002-01-01", "2002-12-31"),
}
SEQUENCE, BATCH, HIDDEN, DROPOUT, FORGET_BIAS, LEARNING_RATE = 270, 256, 64, 0.4, 3.0, 1e-3
SETTINGS = {  # mlkube's network settings (lstm.model; cpu_precision goes to lstm.train)
    "CudaLSTM": {"input_layer": False, "initial_forget_bias": FORGET_BIAS},
    "input layer": {"input_layer": True, "initial_forget_bias": FORGET_BIAS},
}
BFLOAT16 = {**SETTINGS["CudaLSTM"], "cpu_precision": "bfloat16"}  # where the CPU runs it natively

# --------------------------------------------------------------------------------------- neuralhydrology
NH_DRIVER = '''
"""neuralhydrology's own trainer, timed: argv = config, launch time (unix s), steps, result file, and
"test" to score the test period with its tester (minutes at 671 basins) or "no-test"."""
import json, math, sys, time
from pathlib import Path

from neuralhydrology.evaluation import get_tester
from neuralhydrology.training.basetrainer import BaseTrainer
from neuralhydrology.utils.config import Config


class Enough(Exception):
    pass


config, launched, steps, out = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
cfg = Config(config)
trainer = BaseTrainer(cfg)
trainer.initialize_training()
per_epoch = len(trainer.loader)
cfg.update_config({"epochs": math.ceil(steps / per_epoch), "save_weights_every": 10**6})
clock = {"first": None, "last_end": None, "seconds": 0.0, "steps": 0, "epoch_start": True}


def before(module, args):
    now = time.time()
    if clock["first"] is None:
        clock["first"] = now
    if clock["steps"] >= steps:
        raise Enough
    clock["start"] = now if clock["epoch_start"] or clock["last_end"] is None else clock["last_end"]
    clock["epoch_start"] = False


def after(optimizer, args, kwargs):
    now = time.time()
    clock["seconds"] += now - clock["start"]
    clock["steps"] += 1
    clock["last_end"] = now


train_epoch = trainer._train_epoch


def epoch(epoch):
    clock["epoch_start"] = True
    train_epoch(epoch=epoch)


trainer._train_epoch = epoch
hooks = [trainer.model.register_forward_pre_hook(before), trainer.optimizer.register_step_post_hook(after)]
try:
    trainer.train_and_validate()
except Enough:
    pass
for hook in hooks:
    hook.remove()
nse = []
if sys.argv[5] == "test":
    tester = get_tester(cfg, cfg.run_dir, "test", init_model=False)
    results = tester.evaluate(save_results=False, metrics=["NSE"], model=trainer.model)
    nse = sorted(r["1D"]["NSE"] for r in results.values() if math.isfinite(r["1D"]["NSE"]))
out.write_text(json.dumps({
    "startup": clock["first"] - launched,
    "seq_per_s": clock["steps"] * cfg.batch_size / clock["seconds"],
    "steps": clock["steps"],
    "test_nse": nse[(len(nse) - 1) // 2] if nse else None,
}))
'''


def nh_python() -> Path:
    """build/nh-venv/bin/python with neuralhydrology, installed on first use."""
    python = NH_VENV / "bin" / "python"
    probe = [str(python), "-c", "import neuralhydrology"]
    if python.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return python
    print(f"installing neuralhydrology {NH_VERSION} into {NH_VENV} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(NH_VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-c", str(ROOT / "constraints.txt"), "torch"]
        + [f"neuralhydrology=={NH_VERSION}"],
        check=True,
    )
    return python


def nh_layout(camels: Path, folder: Path) -> Path:
    """The data in neuralhydrology's CAMELS-US layout (basin_mean_forcing/daymet, usgs_streamflow,
    camels_attributes_v2.0), as links to the shipped sample's folders."""
    folder.mkdir(parents=True, exist_ok=True)
    links = {
        folder / "basin_mean_forcing" / "daymet": camels / "forcing_daymet",
        folder / "usgs_streamflow": camels / "streamflow",
        folder / "camels_attributes_v2.0": camels / "attributes",
    }
    for link, target in links.items():
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(target)
    return folder


def nh_config(
    folder: Path, data: Path, basins: list[str], static: list[str], periods: dict, steps: int, seed: int = 0
):
    """A neuralhydrology run configuration of the benchmark's network and training."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "basins.txt").write_text("\n".join(basins) + "\n")

    def day(text: str) -> str:
        y, m, d = text.split("-")
        return f"{d}/{m}/{y}"

    config = {
        "experiment_name": "bench",
        "run_dir": str(folder / "runs"),
        **{f"{p}_basin_file": str(folder / "basins.txt") for p in ("train", "validation", "test")},
        **{f"{p}_start_date": day(periods[p][0]) for p in ("train", "validation", "test")},
        **{f"{p}_end_date": day(periods[p][1]) for p in ("train", "validation", "test")},
        "device": "cpu",
        "validate_every": None,
        "metrics": ["NSE"],
        "model": "cudalstm",
        "head": "regression",
        "output_activation": "linear",
        "hidden_size": HIDDEN,
        "initial_forget_bias": FORGET_BIAS,
        "output_dropout": DROPOUT,
        "optimizer": "Adam",
        "loss": "NSE",
        "learning_rate": {0: LEARNING_RATE},
        "batch_size": BATCH,
        "epochs": 1,
        "clip_gradient_norm": 1,
        "predict_last_n": 1,
        "seq_length": SEQUENCE,
        "num_workers": 0,
        "log_interval": 10**6,
        "log_tensorboard": False,
        "log_n_figures": 0,
        "save_weights_every": 10**6,
        "dataset": "camels_us",
        "data_dir": str(data),
        "forcings": ["daymet"],
        "dynamic_inputs": DYNAMIC,
        "target_variables": ["QObs(mm/d)"],
        "clip_targets_to_zero": ["QObs(mm/d)"],
        "static_attributes": static,
        "seed": seed,
    }
    import yaml

    path = folder / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_nh(python: Path, config: Path, steps: int, test: bool = True) -> dict:
    """One neuralhydrology training (a fresh process): start-up, sequences/s, test NSE (`test`), peak
    memory."""
    driver, out = config.parent / "driver.py", config.parent / "result.json"
    driver.write_text(NH_DRIVER)
    out.unlink(missing_ok=True)
    command = [str(python), str(driver), str(config), str(time.time()), str(steps), str(out)]
    command.append("test" if test else "no-test")
    peak = run_measured(command, cwd=config.parent)
    return {**json.loads(out.read_text()), "peak_gb": peak}


# ------------------------------------------------------------------------------------------------- mlkube
def mlkube_spec(
    data: dict, static: list[str], steps: int, workers: int, setting: dict, baselines=(), seed: int = 0
) -> str:
    import yaml

    setting = dict(setting)
    precision = setting.pop("cpu_precision", "float32")
    spec = {
        "seed": seed,
        "lstm": {
            "data": {**data, "dynamic_inputs": DYNAMIC, "static_inputs": static},
            "sequence_length": SEQUENCE,
            "model": {"hidden_size": HIDDEN, "dropout": DROPOUT, **setting},
            "train": {
                "epochs": 1,
                "steps_per_epoch": steps,
                "batch_size": BATCH,
                "learning_rate": LEARNING_RATE,
                "loss": "nse",
                "warmup_days": SEQUENCE - 1,  # neuralhydrology's predict_last_n: 1
                "checkpoint_every": steps,
                "clip_grad_norm": 1.0,
                "cpu_precision": precision,
            },
            "elastic": {"nproc_per_node": workers},
            "baselines": list(baselines),
        },
    }
    return yaml.safe_dump(spec)


def mlkube_run(root: Path, spec_text: str) -> dict:
    """`mlkube run SPEC` (a fresh process: prepare, torchrun, test scores, the spec's baselines): start-up
    from the command to the first step, its prepare stage, sequences/s, test NSE, peak memory."""
    from mlkube.trainer.run import Run, read_json

    root.mkdir(parents=True)
    (root / "spec.yaml").write_text(spec_text + f"run_dir: {root / 'runs'}\n")
    start = time.time()
    command = [
        str(Path(sys.executable).parent / "mlkube"),
        "run",
        str(root / "spec.yaml"),
        "--run-id",
        "bench",
    ]
    peak = run_measured(command)
    run = Run(root / "runs" / "bench")
    deep, prepared = read_json(run.stage_file("deep")), read_json(run.stage_file("prepare"))["lstm"]
    record = deep["training"]
    return {
        "startup": record["segments"][-1]["first_step_at"] - start,
        "prepare": prepared["seconds"],  # reading, gap filling, statistics (once per run)
        "seq_per_s": record["samples_per_second"],
        "test_nse": deep["models"]["lstm"]["median"]["nse"],
        "torch_threads": record["torch_threads"],
        "peak_gb": peak,
        "wall": time.time() - start,
    }


# ------------------------------------------------------------------------------------------ measurement
def run_measured(command: list[str], **options) -> float:
    """Run `command` to its end; the peak of its process tree's summed RSS (GB, sampled every 0.1 s)."""
    import psutil

    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **options)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not done.wait(0.1):
            try:
                tree = [root, *root.children(recursive=True)]
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                continue

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    err, _ = proc.communicate()
    done.set()
    watcher.join()
    if proc.returncode:
        raise RuntimeError(f"{command[:3]} failed ({proc.returncode}):\n{err[-3000:]}")
    return peak[0] / 1e9


def row(label: str, runs: list[dict], base: list[dict] | None) -> str:
    """A table row: sequences/s best / median, the median's ratio to `base`'s, start-up, test NSE."""
    rates, startups = [r["seq_per_s"] for r in runs], [r["startup"] for r in runs]
    nse = statistics.median(r["test_nse"] for r in runs)
    ratio = f"{statistics.median(rates) / median(base, 'seq_per_s'):.2f}×" if base else "-"
    return (
        f"| {label} | {max(rates):.0f} / {statistics.median(rates):.0f} | {ratio} | "
        f"{min(startups):.1f} / {statistics.median(startups):.1f} s | {nse:.3f} |"
    )


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def sample_benchmark(steps: int, repeats: int, with_nh: bool) -> None:
    from mlkube.trainer.series.load import DATASETS

    camels = DATASETS / "camels_us_sample"
    sites = sorted(p.name.split("_")[0] for p in (camels / "streamflow").iterdir())
    runs: dict[str, list[dict]] = {}
    from mlkube.trainer.lstm.train import cpu_bfloat16

    cases = {f"mlkube 1 worker, {name}": (1, setting) for name, setting in SETTINGS.items()} | {
        "mlkube 2 workers, CudaLSTM": (2, SETTINGS["CudaLSTM"])
    }
    if cpu_bfloat16():
        cases["mlkube 1 worker, CudaLSTM, bfloat16 autocast"] = (1, BFLOAT16)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if with_nh:
            python = nh_python()
            data = nh_layout(camels, folder / "nh-data")
        for repeat in range(repeats):  # repeat r: seed r on both sides (the test NSE is a median over seeds)
            if with_nh:
                nh = nh_config(
                    folder / f"nh-{repeat}", data, sites, SAMPLE_STATIC, SAMPLE_PERIODS, steps, repeat
                )
                runs.setdefault(NH, []).append(run_nh(python, nh, steps))
            for index, (label, (workers, setting)) in enumerate(cases.items()):
                text = mlkube_spec(
                    {"name": "camels_us_sample"}, SAMPLE_STATIC, steps, workers, setting, seed=repeat
                )
                runs.setdefault(label, []).append(mlkube_run(folder / f"{repeat}-{index}", text))
            print(
                f"repeat {repeat + 1}/{repeats}: " + json.dumps({k: v[-1] for k, v in runs.items()}),
                flush=True,
            )
    base = runs.get(NH)
    print(
        f"\n1. shipped CAMELS-US sample ({len(sites)} basins), {steps} steps × {BATCH} sequences of "
        f"{SEQUENCE} days, hidden {HIDDEN}, NSE loss, last day scored, "
        f"CPU ({len(os.sched_getaffinity(0))} cores), {repeats} interleaved repeats (repeat r: seed r on "
        "both sides; test NSE: the median over them)\n"
    )
    print(
        "| | sequences/s (best / median) | vs neuralhydrology (median) | start-up to the first step "
        "(best / median) | test median NSE |"
    )
    print("|---|---|---|---|---|")
    for label, results in runs.items():
        print(row(label, results, base if label != NH else None))
    lone, pair = runs["mlkube 1 worker, CudaLSTM"], runs["mlkube 2 workers, CudaLSTM"]
    scaling = median(pair, "seq_per_s") / median(lone, "seq_per_s")
    print(
        f"\nmlkube's start-up: its prepare step {median(lone, 'prepare'):.1f} s (median), then torchrun; "
        f"a lone worker trained on {lone[0]['torch_threads']} torch threads, each of 2 workers on "
        f"{pair[0]['torch_threads']}; 2 workers vs 1: {scaling:.2f}×"
    )
    if base:
        speed = median(lone, "seq_per_s") / median(base, "seq_per_s")
        start, nh_start = median(lone, "startup"), median(base, "startup")
        print(
            f"goals: 1 worker ≥ 1.2× neuralhydrology's sequences/s: {speed:.2f}× ({met(speed >= 1.2)}); "
            f"start-up ≤ neuralhydrology's: {start:.1f} s vs {nh_start:.1f} s ({met(start <= nh_start)}); "
            f"test NSE ≥ neuralhydrology's: {median(lone, 'test_nse'):.3f} vs {median(base, 'test_nse'):.3f} "
            f"({met(median(lone, 'test_nse') >= median(base, 'test_nse'))})"
        )


def met(goal: bool) -> str:
    return "met" if goal else "not met"


def scale_benchmark(sites: int, years: int, steps: int, with_nh: bool) -> None:
    from mlkube.trainer.series.synthetic import write_camels_us

    folder = BENCH / f"camels_us_{sites}x{years}"
    if not (folder / "camels_attributes_v2.0" / "camels_name.txt").exists():
        print(
            f"writing the synthetic data set, {sites} basins × {years} years, to {folder} (once)", flush=True
        )
        write_camels_us(folder, sites, years, seed=0)
    gauges = sorted(p.name.split("_")[0] for p in (folder / "usgs_streamflow").rglob("*.txt"))
    third = 2000 + years // 2
    periods = {
        "train": ("2000-01-01", f"{third - 1}-12-31"),
        "validation": (f"{third}-01-01", f"{third + (years - years // 2) // 2 - 1}-12-31"),
        "test": (f"{third + (years - years // 2) // 2}-01-01", f"{2000 + years - 1}-12-31"),
    }
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        if with_nh:
            config = nh_config(Path(tmp) / "nh", folder, gauges, SYNTHETIC_STATIC, periods, steps)
            results["neuralhydrology"] = run_nh(nh_python(), config, steps, test=False)
            print("neuralhydrology: " + json.dumps(results["neuralhydrology"]), flush=True)
        data = {"path": str(folder)} | {f"{p}_period": list(periods[p]) for p in periods}
        for label, baselines in (("mlkube", ["climatology", "Ridge", "GBM"]), ("mlkube, no baselines", [])):
            text = mlkube_spec(data, SYNTHETIC_STATIC, steps, 1, SETTINGS["CudaLSTM"], baselines)
            results[label] = mlkube_run(Path(tmp) / f"mlkube-{len(baselines)}", text)
            print(f"{label}: " + json.dumps(results[label]), flush=True)
    print(f"\n2. synthetic CAMELS-US text layout, {sites} basins × {years} years, {steps} steps, 1 worker\n")
    print("| | loading before the first step | training, sequences/s | peak memory of the run | test NSE |")
    print("|---|---|---|---|---|")
    for label, r in results.items():
        load = f"{r['startup']:.1f} s" + (f" (prepare {r['prepare']:.1f} s)" if "prepare" in r else "")
        nse = "-" if r["test_nse"] is None else f"{r['test_nse']:.3f}"  # neuralhydrology's tester: skipped
        print(f"| {label} | {load} | {r['seq_per_s']:.0f} | {r['peak_gb']:.2f} GB | {nse} |")
    ours = results["mlkube"]
    goals = f"goals: prepare ≤ 3 s: {ours['prepare']:.1f} s ({met(ours['prepare'] <= 3)})"
    if "neuralhydrology" in results:
        theirs = results["neuralhydrology"]
        goals += (
            f"; peak memory (with the baselines) ≤ neuralhydrology's: {ours['peak_gb']:.2f} vs "
            f"{theirs['peak_gb']:.2f} GB ({met(ours['peak_gb'] <= theirs['peak_gb'])}); sequences/s "
            f"{ours['seq_per_s'] / theirs['seq_per_s']:.2f}× neuralhydrology's"
        )
    print(goals)


def gpu(steps: int) -> None:
    import torch

    if not torch.cuda.is_available():
        print("3. GPU: skipped (torch.cuda.is_available() is False on this machine)")
        return
    from mlkube.trainer.card import Architecture
    from mlkube.trainer.lstm.model import build_model

    shape = Architecture(
        n_dynamic=6,
        n_static=6,
        hidden_size=HIDDEN,
        num_layers=1,
        dropout=0.0,
        static_embedding=None,
        **SETTINGS["CudaLSTM"],
    )
    net = build_model(shape).cuda()
    x = torch.randn(BATCH, SEQUENCE, 12, device="cuda")
    rates = {}
    for label, enabled in (("cuDNN", True), ("no cuDNN", False)):
        with torch.backends.cudnn.flags(enabled=enabled):
            for warm in (True, False):
                torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(5 if warm else steps):
                    net(x, days=1).sum().backward()
                torch.cuda.synchronize()
            rates[label] = steps * len(x) / (time.perf_counter() - start)
    print(
        f"3. GPU {torch.cuda.get_device_name()}: cuDNN {rates['cuDNN']:.0f} seq/s, without "
        f"{rates['no cuDNN']:.0f} seq/s, ratio {rates['cuDNN'] / rates['no cuDNN']:.1f}×"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=240, help="training steps per run on the sample")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats on the sample")
    parser.add_argument(
        "--with-neuralhydrology", action="store_true", help="install (once) and run neuralhydrology too"
    )
    parser.add_argument("--scale", nargs=2, type=int, metavar=("SITES", "YEARS"), help="also part 2")
    parser.add_argument("--scale-steps", type=int, default=50, help="training steps at scale")
    parser.add_argument("--no-sample", action="store_true", help="skip part 1")
    args = parser.parse_args()
    if not args.no_sample:
        sample_benchmark(args.steps, args.repeats, args.with_neuralhydrology)
    if args.scale:
        scale_benchmark(*args.scale, args.scale_steps, args.with_neuralhydrology)
    gpu(args.steps)


if __name__ == "__main__":
    main()

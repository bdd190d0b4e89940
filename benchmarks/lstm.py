"""Benchmark: the LSTM's training loop, its elastic scaling and its skill, ratios measured in one run.

1. Loop overhead: mlkube's training loop (`Trainer.fit`: sampler, masked NSE loss, clipping, schedule, hooks,
   a checkpoint every `checkpoint_every` steps, validation every epoch) against a bare PyTorch loop (the same
   network, the same batches from the same sampler, Adam, masked MSE, nothing else), in this process, one
   worker. Sequences per second over the whole loop.
2. Elastic scaling: the same training under torchrun with 1 and with 2 gloo workers (sequences per second of
   the training steps, and the wall time with torchrun's start-up).
Parts 1 and 2 interleave their repeats and report the best of each: on a machine shared with other work, the
fastest repeat is the one least disturbed by it.
3. Skill: `examples/hydrology.yaml` end to end (prepare + deep stage, 2 workers): test-period median NSE of
   the LSTM and of the baselines on the shipped CAMELS-US sample.
4. GPU (where CUDA exists): forward + backward of the network with cuDNN and with cuDNN disabled.

    .venv/bin/python benchmarks/lstm.py                 # add --repeats 1 --no-skill for a quick run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mlkube.trainer.spec import Spec, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[1]
# The spec's defaults (camels_us_sample, 365 days, hidden 64, global batch 64), shortened to `steps` steps.
SPEC = (
    "seed: 0\nlstm: {{train: {{epochs: {epochs}, steps_per_epoch: 50}}, "
    "elastic: {{nproc_per_node: {workers}}}}}\n"
)


def bench_spec(steps: int, workers: int = 1) -> Spec:
    return parse_spec(SPEC.format(epochs=max(1, steps // 50), workers=workers))


def bare_loop(spec: Spec, prepared, steps: int) -> float:
    """Sequences per second of a plain PyTorch loop over the same batches as mlkube's."""
    import torch

    from mlkube.trainer.lstm.model import architecture, build_model
    from mlkube.trainer.preprocess import BatchSampler, standardize

    lstm = spec.lstm
    data = standardize(prepared.data, prepared.stats)
    torch.manual_seed(spec.seed)
    net = build_model(architecture(lstm, data))
    optimizer = torch.optim.Adam(net.parameters(), lr=lstm.train.learning_rate)
    sampler = BatchSampler(data, lstm.sequence_length, spec.seed, horizon=lstm.horizon)
    start = time.perf_counter()
    for step in range(steps):
        batch = sampler.batch(step, lstm.train.batch_size)
        x, y = torch.from_numpy(batch.x), torch.from_numpy(batch.y)
        scored = ~torch.isnan(y)
        loss = ((net(x) - y.nan_to_num()) ** 2 * scored).sum() / scored.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * lstm.train.batch_size / (time.perf_counter() - start)


def mlkube_loop(spec: Spec, prepared, steps: int) -> float:
    """Sequences per second of `Trainer.fit` (checkpoints and validation included)."""
    from mlkube.trainer.lstm.train import Trainer

    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(
            spec.lstm, spec.seed, prepared, checkpoints=Path(folder), hooks=(lambda info: None,)
        )
        start = time.perf_counter()
        trainer.fit()
        return steps * spec.lstm.train.batch_size / (time.perf_counter() - start)


def loop_overhead(steps: int, repeats: int) -> None:
    from mlkube.trainer.lstm.prepared import prepare

    spec = bench_spec(steps)
    steps = spec.lstm.train.epochs * spec.lstm.train.steps_per_epoch
    prepared = prepare(spec)
    bare_loop(spec, prepared, 3)  # warm-up: JIT of the sampler's kernels, torch's first calls
    runs = {"bare": [], "mlkube": []}
    for _ in range(repeats):
        runs["bare"].append(bare_loop(spec, prepared, steps))
        runs["mlkube"].append(mlkube_loop(spec, prepared, steps))
    bare, ours = (max(runs[k]) for k in ("bare", "mlkube"))
    print(
        f"1. loop ({steps} steps × {spec.lstm.train.batch_size} sequences of "
        f"{spec.lstm.sequence_length} days, "
        f"best of {repeats}): bare PyTorch {bare:.0f} seq/s, mlkube {ours:.0f} seq/s, ratio {ours / bare:.2f}"
    )


def elastic_scaling(steps: int, repeats: int) -> None:
    rates: dict[int, list[float]] = {1: [], 2: []}
    walls: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as root:
        for repeat in range(repeats):
            for workers in (1, 2):
                rate, wall = torchrun_training(Path(root) / f"{workers}-{repeat}", bench_spec(steps, workers))
                rates[workers].append(rate)
                walls[workers].append(wall)
    for workers in (1, 2):
        print(
            f"2. torchrun, {workers} worker(s), best of {repeats}: {max(rates[workers]):.0f} seq/s "
            f"in the training steps, {min(walls[workers]):.1f} s wall with start-up"
        )
    print(f"   2 vs 1 workers: {max(rates[2]) / max(rates[1]):.2f}×")


def torchrun_training(root: Path, spec: Spec) -> tuple[float, float]:
    """(sequences per second of the training steps, wall seconds) of one torchrun training."""
    from mlkube.torchrun import launch
    from mlkube.trainer.lstm.elastic import TRAINING_RECORD
    from mlkube.trainer.lstm.prepared import prepare
    from mlkube.trainer.progress import Progress
    from mlkube.trainer.run import LSTM_MODEL, Run, read_json

    run = Run.start(spec.to_yaml(), root, run_id="bench")
    prepare(spec, run.path)
    start = time.perf_counter()
    launch(spec.lstm.elastic, run, Progress(quiet=True))
    record = read_json(run.model_dir(LSTM_MODEL) / TRAINING_RECORD)
    return record["samples_per_second"], time.perf_counter() - start


def skill() -> None:
    from mlkube.pipeline import run_pipeline
    from mlkube.trainer.progress import Progress
    from mlkube.trainer.run import Run, read_json

    spec = load_spec(ROOT / "examples" / "hydrology.yaml")
    with tempfile.TemporaryDirectory() as root:
        run = Run.start(spec.to_yaml(), Path(root), run_id="hydrology")
        run_pipeline(spec, run, Progress(quiet=True))
        deep = read_json(run.stage_file("deep"))
    ranking = ", ".join(f"{r['model']} {r['median_nse']:.3f}" for r in deep["ranking"])
    print(
        f"3. examples/hydrology.yaml, test period {deep['dates'][0]}..{deep['dates'][1]}, median NSE over "
        f"{len(deep['sites'])} sites: {ranking}"
    )


def gpu(steps: int) -> None:
    import torch

    if not torch.cuda.is_available():
        print("4. GPU: skipped (torch.cuda.is_available() is False on this machine)")
        return
    from mlkube.trainer.lstm.model import build_model

    spec = bench_spec(steps).lstm
    net = build_model(
        {
            "n_dynamic": 6,
            "n_static": 0,
            "hidden_size": spec.model.hidden_size,
            "num_layers": 1,
            "dropout": 0.0,
            "static_embedding": None,
        }
    ).cuda()
    x = torch.randn(spec.train.batch_size, spec.sequence_length, 6, device="cuda")
    rates = {}
    for label, enabled in (("cuDNN", True), ("no cuDNN", False)):
        with torch.backends.cudnn.flags(enabled=enabled):
            for warm in (True, False):
                torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(5 if warm else steps):
                    net(x).sum().backward()
                torch.cuda.synchronize()
            rates[label] = steps * len(x) / (time.perf_counter() - start)
    print(
        f"4. GPU {torch.cuda.get_device_name()}: cuDNN {rates['cuDNN']:.0f} seq/s, without "
        f"{rates['no cuDNN']:.0f} seq/s, ratio {rates['cuDNN'] / rates['no cuDNN']:.1f}×"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--steps", type=int, default=50, help="training steps per measurement (multiple of 50)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats of parts 1 and 2")
    parser.add_argument("--no-skill", action="store_true", help="skip the hydrology.yaml run (part 3)")
    args = parser.parse_args()
    loop_overhead(args.steps, args.repeats)
    elastic_scaling(args.steps, args.repeats)
    if not args.no_skill:
        skill()
    gpu(args.steps)


if __name__ == "__main__":
    main()

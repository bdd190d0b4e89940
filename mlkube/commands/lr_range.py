"""`mlkube lr-range SPEC`: the learning-rate range test of the spec's LSTM (trainer/lstm/lr_range.py): the
curve as JSON and a figure in a folder of its own, and the suggested rate printed."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.progress import Progress
from mlkube.trainer.run import atomic_write_json
from mlkube.trainer.spec import load_spec


def cmd_lr_range(args: argparse.Namespace) -> int:
    from mlkube.pipeline import check_inputs
    from mlkube.trainer.lstm.figures import lr_range_curve
    from mlkube.trainer.lstm.lr_range import check_bounds, range_test
    from mlkube.trainer.lstm.prepared import prepare

    spec = load_spec(args.spec)
    if not spec.runs_lstm:
        raise MlkubeError(f"{args.spec}: the spec trains no LSTM", "add an lstm section (lstm.data)")
    check_bounds(args.steps, args.min, args.max)
    check_inputs(spec)
    out = Path(args.out)
    progress = Progress(quiet=args.quiet)
    assert spec.lstm is not None  # runs_lstm
    progress.say("lr-range: loading and preparing the series …")
    prepared = prepare(spec)
    every = max(1, args.steps // 10)

    def say(step: int, rate: float, loss: float) -> None:
        if step % every == 0 or step == args.steps:
            progress.say(f"lr-range: step {step}/{args.steps}, learning rate {rate:.3g}, loss {loss:.4g}")

    curve = range_test(spec.lstm, spec.seed, prepared, args.steps, args.min, args.max, say).record()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "lr_range.json", {"spec": str(args.spec), "steps": args.steps, **curve})
    figure = lr_range_curve(curve, out / "lr_range.png")
    stop = " (the loss diverged: the test stopped early)" if curve["diverged"] else ""
    suggested = curve["suggested"]
    if suggested:
        print(f"suggested learning rate: {suggested:.3g}{stop}")
    else:
        print(f"no suggestion: the smoothed loss never fell{stop}")
    print(f"curve: {out / 'lr_range.json'}\nfigure: {figure}")
    return 0

"""The stage pipeline: prepare → evaluate → improve → deep → present (→ serve), in one run directory.

Each stage is one line in STAGES: a name, whether the spec enables it, and its function ("module:function", imported
on use). A stage writes its outputs atomically and is marked done in stages.json only when it finished, so
`--resume` skips finished stages and redoes the interrupted one.
"""

from __future__ import annotations

import argparse
import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from trainer.errors import MlkubeError
from trainer.progress import Progress
from trainer.run import Run, atomic_write_json, read_json
from trainer.spec import Spec, load_spec

# name, enabled for this spec?, function(ctx)
STAGES: list[tuple[str, Callable[[Spec], bool], str]] = [
    ("prepare", lambda s: s.runs_classical or s.runs_lstm, "mlkube.stages:prepare"),
    ("evaluate", lambda s: s.runs_classical, "trainer.classical.stages:evaluate"),
    ("improve", lambda s: s.runs_classical, "trainer.classical.stages:improve"),
    ("deep", lambda s: s.runs_lstm, "trainer.lstm.stage:deep"),
    ("present", lambda s: True, "mlkube.stages:present"),
]


@dataclass
class StageContext:
    """What a stage gets: the spec, the run directory, a progress printer, and a cache for data loaded once."""

    spec: Spec
    run: Run
    progress: Progress
    cache: dict = field(default_factory=dict)


def enabled_stages(spec: Spec, only: str | None = None) -> list[str]:
    names = [name for name, enabled, _ in STAGES if enabled(spec)]
    if only:
        wanted = [s.strip() for s in only.split(",") if s.strip()]
        unknown = [s for s in wanted if s not in {n for n, _, _ in STAGES}]
        if unknown:
            raise MlkubeError(f"--stages: unknown stage(s) {unknown}", f"choose from {[n for n, _, _ in STAGES]}")
        names = [n for n in names if n in wanted]
    return names


def run_pipeline(spec: Spec, run: Run, progress: Progress, only: str | None = None) -> Run:
    """Run every enabled stage not yet done, then mark the run finished."""
    ctx = StageContext(spec=spec, run=run, progress=progress)
    run.write_env(seed=spec.seed)
    timings = read_json(run.path / "timings.json", {})
    stages = enabled_stages(spec, only)
    for index, name in enumerate(stages, 1):
        if run.is_done(name):
            progress.say(f"[{index}/{len(stages)}] {name}: done earlier, skipped")
            continue
        progress.say(f"[{index}/{len(stages)}] {name} …")
        start = time.perf_counter()
        _stage_function(name)(ctx)
        timings[name] = round(time.perf_counter() - start, 3)
        atomic_write_json(run.path / "timings.json", timings)
        run.mark_done(name)
        progress.say(f"[{index}/{len(stages)}] {name}: done in {timings[name]:.1f} s")
    if only is None:
        run.write_env(seed=spec.seed, end=True)
    return run


def _stage_function(name: str) -> Callable[[StageContext], None]:
    target = next(t for n, _, t in STAGES if n == name)
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


# ------------------------------------------------------------------------------------------- commands
def cmd_validate(args: argparse.Namespace) -> int:
    if args.reference:
        from trainer.spec import reference_markdown

        print(reference_markdown())
        return 0
    if not args.spec:
        raise MlkubeError("validate: no spec given", "mlkube validate SPEC.yaml (or --reference)")
    spec = load_spec(args.spec)
    check_inputs(spec)
    print(f"{args.spec}: valid; stages: {', '.join(enabled_stages(spec))}")
    return 0


def check_inputs(spec: Spec) -> None:
    """Checks that need the data (files exist, columns, model names and params): before any work starts."""
    if spec.runs_classical:
        from trainer.classical.stages import check_classical

        check_classical(spec)


def cmd_run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    check_inputs(spec)
    run_root = spec.run_dir if spec.run_dir.is_absolute() else Path.cwd() / spec.run_dir
    run = Run.start(spec.to_yaml(), run_root, run_id=args.resume or args.run_id, resume=bool(args.resume))
    progress = Progress(quiet=args.quiet)
    progress.say(f"run {run.id}: {run.path}")
    run_pipeline(spec, run, progress, only=args.stages)
    if (run.path / "leaderboard.json").exists():
        print(f"leaderboard: {run.path / 'leaderboard.json'}")
    if args.serve:
        serve_and_predict(run, spec, progress)
    print(f"report: {run.path / 'report.html'}")
    return 0


def serve_and_predict(run: Run, spec: Spec, progress: Progress) -> None:
    """Archive the run's models, start TorchServe (it keeps running), and print one prediction per model."""
    import json

    from serving.server import describe, serve_run

    progress.say("serve: archiving the models and starting TorchServe …")
    server = serve_run(run, spec.serve)
    for name in server.models:
        answer = server.predict(name, server.example(name).read_bytes())
        print(f"prediction from {name} (request {server.example(name)}): {json.dumps(answer)}")
    print(describe(server))
    print(f"stop it with: mlkube serve {run.path} --stop")


def cmd_show(args: argparse.Namespace) -> int:
    from trainer.report import leaderboard_table

    print(leaderboard_table(_leaderboard(Run.open(args.run))))
    return 0


def _leaderboard(run: Run) -> dict:
    path = run.path / "leaderboard.json"
    if not path.exists():
        raise MlkubeError(f"run {run.id} has no leaderboard yet", f"finish it with `mlkube run SPEC --resume {run.id}`")
    return read_json(path)


def cmd_report(args: argparse.Namespace) -> int:
    """Rebuild leaderboard.json, the figures and report.html of a run from its stages' results."""
    from trainer.report import present

    run = Run.open(args.run)
    present(run)
    print(f"report: {run.path / 'report.html'}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from trainer.report import compare

    first, second = Run.open(args.run), Run.open(args.other)
    print(compare(_leaderboard(first), _leaderboard(second), (first.id, second.id)))
    return 0

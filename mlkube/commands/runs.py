"""`mlkube run/validate/show/report/compare`: a spec through the stage pipeline, and a run's results."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlkube.pipeline import check_inputs, enabled_stages, run_pipeline
from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.progress import Progress
from mlkube.trainer.run import Run, read_json
from mlkube.trainer.spec import Spec, load_spec


def cmd_validate(args: argparse.Namespace) -> int:
    if args.reference:
        from mlkube.trainer.spec import reference_markdown

        print(reference_markdown())
        return 0
    if not args.spec:
        raise MlkubeError("validate: no spec given", "mlkube validate SPEC.yaml (or --reference)")
    spec = load_spec(args.spec)
    check_inputs(spec)
    print(f"{args.spec}: valid; stages: {', '.join(enabled_stages(spec))}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    check_inputs(spec)
    run_root = spec.run_dir if spec.run_dir.is_absolute() else Path.cwd() / spec.run_dir
    run_id, resume = args.resume or args.run_id, bool(args.resume)
    enabled_stages(spec, args.stages)  # an unknown --stages name is refused before the run exists
    # the run's writer lock is held from the first check to the last write (one writer per run)
    with Run.start(spec.to_yaml(), run_root, run_id=run_id, resume=resume) as run:
        progress = Progress(quiet=args.quiet)
        progress.say(f"run {run.id}: {run.path}")
        run_pipeline(spec, run, progress, only=args.stages)
        if run.leaderboard_file.exists():
            print(f"leaderboard: {run.leaderboard_file}")
        if args.serve:
            serve_and_predict(run, spec, progress)
    print(f"report: {run.report_file}")
    return 0


def serve_and_predict(run: Run, spec: Spec, progress: Progress) -> None:
    """Archive the run's models, start TorchServe (it keeps running), and print one prediction per model."""
    import json

    from mlkube.serving.server import describe, serve_run

    progress.say("serve: archiving the models and starting TorchServe …")
    server = serve_run(run, spec.serve)
    for name in server.models:
        answer = server.predict(name, server.example(name).read_bytes())
        print(f"prediction from {name} (request {server.example(name)}): {json.dumps(answer)}")
    print(describe(server))
    print(f"stop it with: mlkube serve {run.path} --stop")


def cmd_show(args: argparse.Namespace) -> int:
    from mlkube.trainer.report import leaderboard_table

    print(leaderboard_table(_leaderboard(Run.open(args.run))))
    return 0


def _leaderboard(run: Run) -> dict:
    path = run.leaderboard_file
    if not path.exists():
        raise MlkubeError(
            f"run {run.id} has no leaderboard yet", f"finish it with `mlkube run SPEC --resume {run.id}`"
        )
    return read_json(path)


def cmd_report(args: argparse.Namespace) -> int:
    """Rebuild leaderboard.json, the figures and report.html of a run from its stages' results."""
    from mlkube.trainer.report import present

    with Run.open(args.run).acquire("report") as run:  # refused while a run writes
        present(run)
    print(f"report: {run.report_file}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from mlkube.trainer.report import compare

    first, second = Run.open(args.run), Run.open(args.other)
    print(compare(_leaderboard(first), _leaderboard(second), (first.id, second.id)))
    return 0

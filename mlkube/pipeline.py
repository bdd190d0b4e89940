"""The stage pipeline: prepare → evaluate → improve → search_lstm → deep → present (→ serve), in one run
directory.

Each stage is one line in STAGES: a name, whether the spec enables it, and its function ("module:function",
imported on use). A stage writes its outputs atomically and is marked done in stages.json only when it
finished, so `--resume` skips finished stages and redoes the interrupted one.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.progress import Progress
from mlkube.trainer.run import Run, atomic_write_json, read_json
from mlkube.trainer.spec import Spec

# name, enabled for this spec?, function(ctx)
STAGES: list[tuple[str, Callable[[Spec], bool], str]] = [
    ("prepare", lambda s: s.runs_classical or s.runs_lstm, "mlkube.stages:prepare"),
    ("evaluate", lambda s: s.runs_classical, "mlkube.trainer.classical.stages:evaluate"),
    ("improve", lambda s: s.runs_classical, "mlkube.trainer.classical.stages:improve"),
    (
        "search_lstm",
        lambda s: s.runs_lstm and s.lstm is not None and s.lstm.search is not None,
        "mlkube.trainer.lstm.search:search_stage",
    ),
    ("deep", lambda s: s.runs_lstm, "mlkube.stages:deep"),
    (
        "basin_cv",
        lambda s: s.runs_lstm and s.lstm is not None and s.lstm.cv is not None,
        "mlkube.trainer.lstm.basin_cv:basin_cv",
    ),
    ("present", lambda s: True, "mlkube.stages:present"),
]


@dataclass
class StageContext:
    """What a stage gets: the spec, the run directory and a progress printer."""

    spec: Spec
    run: Run
    progress: Progress


def enabled_stages(spec: Spec, only: str | None = None) -> list[str]:
    names = [name for name, enabled, _ in STAGES if enabled(spec)]
    if only:
        wanted = [s.strip() for s in only.split(",") if s.strip()]
        unknown = [s for s in wanted if s not in {n for n, _, _ in STAGES}]
        if unknown:
            raise MlkubeError(
                f"--stages: unknown stage(s) {unknown}", f"choose from {[n for n, _, _ in STAGES]}"
            )
        names = [n for n in names if n in wanted]
    return names


def run_pipeline(spec: Spec, run: Run, progress: Progress, only: str | None = None) -> Run:
    """Run every enabled stage not yet done, then mark the run finished."""
    ctx = StageContext(spec=spec, run=run, progress=progress)
    run.write_env(seed=spec.seed)
    timings = read_json(run.timings_file, {})
    stages = enabled_stages(spec, only)
    for index, name in enumerate(stages, 1):
        if run.is_done(name):
            progress.say(f"[{index}/{len(stages)}] {name}: done earlier, skipped")
            continue
        progress.say(f"[{index}/{len(stages)}] {name} …")
        start = time.perf_counter()
        _stage_function(name)(ctx)
        timings[name] = round(time.perf_counter() - start, 3)
        atomic_write_json(run.timings_file, timings)
        run.mark_done(name)
        progress.say(f"[{index}/{len(stages)}] {name}: done in {timings[name]:.1f} s")
    if only is None:
        run.write_env(seed=spec.seed, end=True)
    return run


def _stage_function(name: str) -> Callable[[StageContext], None]:
    target = next(t for n, _, t in STAGES if n == name)
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def check_inputs(spec: Spec) -> None:
    """Every check that needs only the spec and the data, run by `mlkube validate` and by `mlkube run` before
    it creates the run directory: the classical data, task, models, params, metric, scheme and folds; the
    LSTM's series (sites, variables, periods and lengths, targets), its training set-up (windows, batch
    vs workers, GPUs) and its cross-validation over sites (folds vs sites or groups, global statistics).
    The series and the classical data are loaded here once: the prepare stage of the same process takes
    them."""
    if spec.runs_classical:
        from mlkube.trainer.classical.stages import check_classical

        check_classical(spec)
    if spec.runs_lstm:
        from mlkube.trainer.lstm.prepared import prepare
        from mlkube.trainer.lstm.stage import check_training

        assert spec.lstm is not None  # runs_lstm says so
        prepared = prepare(spec, keep=True)  # the prepare stage of `mlkube run` takes it from there
        check_training(spec.lstm, prepared)
        if spec.lstm.cv is not None:
            from mlkube.trainer.lstm.basin_cv import check_cv

            check_cv(spec, prepared.data.sites)

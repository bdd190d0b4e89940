"""Ray Tune over the LSTM: one trial is one training of the existing `Trainer` in one Ray worker process
(world size 1), reported to Tune at the end of every epoch with its median validation NSE and a checkpoint, so
ASHA can stop weak trials by epoch and a trial whose process died resumes from its last epoch
(`max_failures`).

The trainable (`lstm_trainable`, wrapped by `trainable`) is general, for the search stage and for any other
set of independent LSTM trainings run as Tune trials (basin folds, seed ensembles):

- data: `TrialData(spec, prepared, threads)`, put in Ray's object store once (`tune.with_parameters`): the
  run's spec (its `lstm` section is every trial's starting point), the prepared series
  (`prepared.load_prepared`) and the torch threads of a trial (its CPUs).
- config (Tune's param space, plain values or Tune samplers):
  - any `lstm` field by its dotted path under `lstm`: `"train.learning_rate"`, `"model.hidden_size"`,
    `"sequence_length"` … (validated as the spec validates it: a wrong path or value fails the trial with the
    path named);
  - `"seed"`: the trial's seed (default: the spec's);
  - `"sites"`: the sites it trains and validates on (default: all); their training-period statistics are
    refitted on these sites alone, so held-out sites leave no trace in the trial;
  - `"model_dir"`: a folder where the trial writes its model at the end (model.pt, model.json with its
    test-period scores on its sites, training.json as the deep stage writes them; `model.load_lstm_model`
    reads it back); default: no model is written.
- every epoch it reports: `validation_nse` (median over its sites; -inf when undefined), `score` (the NSE of
  the weights it would keep: the best epoch's under early stopping, else the last), `epoch`, `epochs`,
  `curve` (validation NSE per epoch so far, None where undefined), `train_loss`, `learning_rate`,
  `stopped_early` (patience), `segments` (its (re)starts: `from_step` > 0 after a retry), `node`, `pid`.

`run_trials(name, param_space, data, settings, progress, storage)` runs one experiment and returns one row
per trial (`trial_row`); `settings` is classical.search's `SearchSettings` (`grace_folds` counts epochs here).
The search stage (`search_stage`, stages/search_lstm.json) searches `lstm.search.space`; `best_spec` gives the
spec with the best trial's configuration applied, which the deep stage's driver and every torchrun worker use.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.lstm.overrides import STAGE, trial_spec
from mlkube.trainer.lstm.overrides import best_spec as best_spec  # re-exported: the deep stage's spec
from mlkube.trainer.lstm.prepared import Prepared, select_sites
from mlkube.trainer.progress import Progress
from mlkube.trainer.spec import LSTM_SEARCHABLE

STATE_FILE = "trainer.pt"  # the trainer's state_dict in a trial's Tune checkpoint
FIGURES = {"lr_nse": "lstm_search_lr.png", "curves": "lstm_search_curves.png"}


@dataclass
class TrialData:
    """What every trial shares, put in the object store once."""

    spec: Any  # the run's Spec
    prepared: Prepared
    threads: int = 1  # torch threads of one trial (its CPUs)


# ------------------------------------------------------------------------------------------ configs
def site_subset(prepared: Prepared, sites: Sequence[str], preprocess) -> Prepared:
    """The prepared data of `sites` alone, with training-period statistics refitted on them."""
    from mlkube.trainer.preprocess import fit_statistics

    data = prepared.data
    unknown = [s for s in sites if s not in data.sites]
    if unknown or not sites:
        raise MlkubeError(f"trial sites {list(sites)}: not in the data: {unknown}", "choose among data.sites")
    subset = select_sites(data, tuple(sites))
    return Prepared(subset, fit_statistics(subset, preprocess), subset.data_hash())


# ------------------------------------------------------------------------------------------ the trial
def lstm_trainable(config: dict[str, Any], data: TrialData) -> None:
    """One training, reported to Tune every epoch (see the module docstring)."""
    # One Numba thread beside torch's (as the torchrun workers: a Numba pool spinning against torch slowed
    # training 20-fold); effective when this worker process has not imported Numba yet.
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
    import ray
    import torch
    from ray import tune

    from mlkube.trainer.lstm.train import Trainer, Worker

    spec = trial_spec(data.spec, config)
    prepared = data.prepared
    if config.get("sites"):
        prepared = site_subset(prepared, config["sites"], spec.preprocess)
    torch.set_num_threads(max(1, data.threads))
    gpu = bool(ray.get_gpu_ids()) and torch.cuda.is_available()  # Ray sets CUDA_VISIBLE_DEVICES to its GPU
    report = _EpochReport(ray.get_runtime_context().get_node_id())
    trainer = Trainer(
        spec.lstm,
        spec.seed,
        prepared,
        Worker(device="cuda:0" if gpu else "cpu"),
        checkpoints=None,
        hooks=(report,),
    )
    report.trainer = trainer
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            trainer.load_state_dict(
                torch.load(Path(folder) / STATE_FILE, map_location=trainer.device, weights_only=True)
            )
    state = trainer.fit()
    if config.get("model_dir"):
        from mlkube.trainer.lstm.elastic import write_model

        folder = Path(config["model_dir"])
        write_model(trainer, prepared, folder, state, folder=folder, extra={"trial_config": config})


class _EpochReport:
    """The trainer's hook: at each epoch's end, report the epoch and a checkpoint of the whole trainer."""

    def __init__(self, node: str):
        self.node = node
        self.trainer: Any = None  # set once the trainer exists

    def __call__(self, info) -> None:
        if info.validation_nse is None:
            return
        import torch
        from ray import tune

        trainer = self.trainer
        state = trainer.state
        curve = [h["validation_nse"] for h in state.history]
        keeps_best = bool(trainer.train.early_stopping_patience)
        score = state.best_nse if keeps_best else info.validation_nse
        metrics = {
            "validation_nse": float(info.validation_nse),
            "score": float(score),
            "epoch": info.epoch,
            "epochs": trainer.train.epochs,
            "curve": curve,
            "train_loss": state.history[-1]["train_loss"],
            "learning_rate": state.history[-1]["learning_rate"],
            "stopped_early": state.stopped,
            "best_epoch": state.best_epoch,
            "segments": [dict(s) for s in state.segments],
            "node": self.node,
            "pid": os.getpid(),
        }
        with tempfile.TemporaryDirectory(prefix="mlkube-trial-") as folder:
            torch.save(trainer.state_dict(), Path(folder) / STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def trainable(data: TrialData, cpu: float, gpu: float):
    """The Tune trainable with its data and the resources one trial holds."""
    from ray import tune

    return tune.with_resources(tune.with_parameters(lstm_trainable, data=data), {"cpu": cpu, "gpu": gpu})


# ------------------------------------------------------------------------------------------ running
def run_trials(
    name: str,
    param_space: dict[str, Any],
    data: TrialData,
    settings,
    progress: Progress,
    storage: Path,
    callbacks: Sequence[Any] = (),
) -> list[dict[str, Any]]:
    """One Tune experiment over `param_space`; one row per trial (`trial_row`), in trial order. `settings`:
    classical.search.SearchSettings (grace_folds counts epochs); trial checkpoints live under `storage`."""
    from ray import tune

    from mlkube.trainer.classical.search import _progress_callback, _scheduler, _search_alg, quiet_tune
    from mlkube.trainer.exporters import tune_metrics

    quiet_tune()
    tune_metrics(settings.metrics_port)
    epochs = data.spec.lstm.train.epochs
    n_trials = settings.trials if settings.algorithm != "grid" else 1
    shown = _progress_callback(
        name, progress, settings, epochs, describe=describe_config, score="score", unit="epochs"
    )
    tuner = tune.Tuner(
        trainable(data, settings.cpu, settings.gpu),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric="validation_nse",
            mode="max",
            num_samples=n_trials,
            search_alg=_search_alg(settings, data.spec.seed),
            scheduler=_scheduler(settings, epochs),
            max_concurrent_trials=settings.max_concurrent,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(storage.resolve()),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[shown, _epoch_lines(name, progress), *callbacks],
        ),
    )
    results = tuner.fit()
    rows = [trial_row(results[i], epochs) for i in range(len(results))]  # ResultGrid's order varies
    first = min((r["trial"] for r in rows), default=0)  # Tune counts from 0 (variants) or 1 (searchers)
    return sorted(({**r, "trial": r["trial"] - first} for r in rows), key=lambda r: r["trial"])


def describe_config(config: dict[str, Any]) -> str:
    """A trial's searched settings, short: `learning_rate 0.0031 optimizer sgd`."""
    short = {v: k for k, v in LSTM_SEARCHABLE.items()}
    parts = [f"{short.get(k, k)} {_short(v)}" for k, v in config.items() if k not in ("sites", "model_dir")]
    return " ".join(parts)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _epoch_lines(name: str, progress: Progress):
    """Progress lines while trials train (the shared callback speaks at their ends): a trial's validation NSE
    at its first epoch and at every quarter of its epochs."""
    from ray import tune

    class EpochLines(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            epoch, every = result["epoch"], max(1, result["epochs"] // 4)
            if epoch > 1 and epoch % every:
                return
            progress.say(
                f"{name}: trial {_counter(trial.experiment_tag)} epoch {result['epoch']}/{result['epochs']} "
                f"validation NSE {result['validation_nse']:.3f}"
            )

    return EpochLines()


def _counter(experiment_tag: str) -> int:
    """Tune's creation counter of a trial, the start of its experiment tag (`3_train.learning_rate=…`)."""
    return int(experiment_tag.split("_", 1)[0])


def _trial_number(result) -> int:
    """The trial's creation counter: from its results, or (none reported) its folder's name, which Tune makes
    `<trainable>_<trial id>_<experiment tag>_<date>`."""
    import re

    tag = (result.metrics or {}).get("experiment_tag")
    if tag:
        return _counter(tag)
    found = re.match(r"\w+?_(?:[0-9a-f]{5}_\d{5}|[0-9a-f]{8})_(\d+)", Path(result.path).name)
    return int(found.group(1)) if found else -1


def trial_row(result, epochs: int) -> dict[str, Any]:
    """A trial: its config, per-epoch validation NSE, status (finished | early_stopped (patience) |
    stopped_by_asha | failed), score, restarts and where it ran."""
    last = result.metrics or {}
    curve = [_finite(v) for v in last.get("curve", [])]
    if result.error:
        status = "failed"
    elif len(curve) >= epochs:
        status = "finished"
    else:
        status = "early_stopped" if last.get("stopped_early") else "stopped_by_asha"
    row = {
        "trial": _trial_number(result),
        "config": {k: _plain(v) for k, v in result.config.items()},
        "status": status,
        "epochs": len(curve),
        "curve": curve,
        "score": _finite(last.get("score")),
        "best_epoch": last.get("best_epoch"),
        "segments": last.get("segments", []),
        "node": last.get("node"),
    }
    if result.error:
        row["error"] = _error_text(result.error)
    return row


def _error_text(error: BaseException) -> str:
    """The trial's own exception (its `Error: ` line and what follows, e.g. mlkube's fix), not Ray's wrapping
    traceback."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for i in range(len(lines) - 1, -1, -1):
        if "Error: " in lines[i]:
            return " ".join([lines[i].split("Error: ", 1)[1], *lines[i + 1 :]])[:500]
    return lines[-1][:500] if lines else type(error).__name__


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


# ------------------------------------------------------------------------------------------ the stage
def search_stage(ctx) -> None:
    """Stage search_lstm: search `lstm.search.space` on Ray, one trial per configuration; write every trial,
    the best and the figures to stages/search_lstm.json. The deep stage then trains the best (`best_spec`)."""
    from mlkube.trainer.classical.search import connect_ray, release_ray, tune_space
    from mlkube.trainer.lstm.prepared import load_prepared
    from mlkube.trainer.run import atomic_write_json

    spec, run = ctx.spec, ctx.run
    search = spec.lstm.search
    prepared = load_prepared(spec, run.path)
    space = tune_space(search.space, search.algorithm, "lstm.search.space")
    param_space = {LSTM_SEARCHABLE[key]: axis for key, axis in space.items()}
    storage = run.path / "tune"
    shutil.rmtree(storage, ignore_errors=True)  # an interrupted attempt's trials: the stage starts over
    connect_ray(spec.cluster.ray_address, spec.cluster.num_cpus, ctx.progress)
    try:
        ctx.progress.say(
            f"LSTM search: {search.algorithm}, "
            f"{search.trials if search.algorithm != 'grid' else 'every'} trial(s) × {spec.lstm.train.epochs} "
            f"epochs, scheduler {search.scheduler}"
        )
        rows = run_trials(
            STAGE,
            param_space,
            TrialData(spec, prepared, threads=max(1, int(search.resources_per_trial.cpu))),
            search_settings(spec, status_path=str(run.status_file)),
            ctx.progress,
            storage,
        )
    finally:
        release_ray()  # the deep stage trains under torchrun: give Ray's CPUs back
        shutil.rmtree(storage, ignore_errors=True)
    ranked = rank(rows)
    if not ranked or ranked[0]["status"] not in ("finished", "early_stopped"):
        failed = [r for r in rows if r["status"] == "failed"]
        why = f": {failed[0]['error']}" if failed else ""
        raise MlkubeError(f"no LSTM search trial finished ({len(failed)} failed{why})", "read the run's log")
    best = ranked[0]
    figures = draw(run, rows, spec.lstm.train.learning_rate)
    atomic_write_json(
        run.stage_file(STAGE),
        {
            "algorithm": search.algorithm,
            "scheduler": search.scheduler,
            "space": search.space,
            "epochs": spec.lstm.train.epochs,
            "trials": rows,
            "best": best,
            "figures": figures,
        },
    )
    ctx.progress.say(
        f"LSTM search: best trial {best['trial']} {describe_config(best['config'])} "
        f"validation NSE {best['score']:.3f}"
    )


def search_settings(spec, status_path: str | None = None):
    """classical.search.SearchSettings of `lstm.search` (grace_folds: ASHA's grace in epochs)."""
    from mlkube.trainer.classical.search import SearchSettings

    s = spec.lstm.search
    same = ("algorithm", "trials", "scheduler", "max_concurrent", "max_failures")  # spelled alike in both
    return SearchSettings(
        **{name: getattr(s, name) for name in same},
        grace_folds=s.grace_epochs,
        cpu=s.resources_per_trial.cpu,
        gpu=s.resources_per_trial.gpu,
        metrics_port=spec.metrics.port,
        status_path=status_path,
    )


def rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trials that trained to their end (all epochs, or stopped by their own patience) by score, best first;
    then those ASHA stopped, then failed ones; ties by trial number."""
    order = {"finished": 0, "early_stopped": 0, "stopped_by_asha": 1, "failed": 2}
    return sorted(
        rows,
        key=lambda r: (
            order[r["status"]],
            -(r["score"] if r["score"] is not None else -math.inf),
            r["trial"],
        ),
    )


def draw(run, rows: list[dict[str, Any]], default_lr: float) -> dict[str, str]:
    """figures/lstm_search_lr.png and figures/lstm_search_curves.png."""
    from mlkube.trainer.lstm.figures import search_curves, search_learning_rates

    search_learning_rates(rows, default_lr, run.figures / FIGURES["lr_nse"])
    search_curves(rows, run.figures / FIGURES["curves"])
    return {name: run.relative(run.figures / file) for name, file in FIGURES.items()}

"""Ray Tune for scikit-learn: one trial = (model, params); each fold is one reported step, so a scheduler
(ASHA) can stop weak trials after a few folds. The data and the folds go to the object store once
(`tune.with_parameters`).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np

from mlkube.trainer.classical import zoo
from mlkube.trainer.classical.encode import Encoding
from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.progress import Progress
from mlkube.trainer.spec import SAMPLERS

_owned_ray = False  # True when this process started the local Ray (and so shuts it down)


class _QuietRay(TypedDict):
    """`ray.init` keywords that keep Ray's own logging out of the progress lines."""

    logging_level: int
    log_to_driver: bool


# ------------------------------------------------------------------------------------------------ ray
def connect_ray(ray_address: str | None, num_cpus: int | None, progress: Progress) -> None:
    """Join `ray_address` / $RAY_ADDRESS (a KubeRay cluster), or start a local Ray on this machine's CPUs."""
    global _owned_ray
    import ray

    if ray.is_initialized():
        return
    address = ray_address or os.environ.get("RAY_ADDRESS")
    quiet: _QuietRay = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address:
        progress.say(f"joining the Ray cluster at {address}")
        _join_ray(address, quiet, progress)
    else:
        from mlkube.trainer.classical.reaper import children, start_reaper

        before = children()
        # "local": a Ray of this process's own, even when another runs on this machine (another mlkube run,
        # a `ray start`): ray.init() would join that one, and refuse num_cpus
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **quiet)
        _owned_ray = True
        start_reaper(children() - before)  # what ray.init started dies with this process, however it dies
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    progress.say(f"Ray: {len(nodes)} node(s), {int(ray.cluster_resources().get('CPU', 0))} CPU(s)")


JOIN_ATTEMPTS = 3  # a Ray Client server that failed to start its session for us (a busy head) gets two more


def _join_ray(address: str, quiet: _QuietRay, progress: Progress) -> None:
    """ray.init on a cluster's address; a session the head's Ray Client server failed to start
    (ConnectionAbortedError: its per-client server died while starting, seen on a loaded head) is asked for
    again; a cluster that cannot be joined is a user-facing error naming the address, not a traceback."""
    import ray

    for attempt in range(1, JOIN_ATTEMPTS + 1):
        try:
            ray.init(address=address, **quiet)
            return
        except ConnectionAbortedError as err:
            if attempt == JOIN_ATTEMPTS:
                raise _unjoinable(address, err) from None
            progress.say(f"the Ray cluster at {address} refused the session ({_last_line(err)}); again")
            time.sleep(5 * attempt)
        except ConnectionError as err:
            raise _unjoinable(address, err) from None


def _unjoinable(address: str, err: BaseException) -> MlkubeError:
    return MlkubeError(
        f"could not join the Ray cluster at {address}: {_last_line(err)}",
        "check that its head is up and reachable from here (ray:// is the Ray Client port, 10001; the "
        "head's logs ray_client_server*.err say why a session failed), or unset cluster.ray_address / "
        "RAY_ADDRESS to run on a local Ray",
    )


def _last_line(err: BaseException) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(err).__name__


def release_ray() -> None:
    """Shut down the local Ray this process started (never a cluster it joined)."""
    global _owned_ray
    import ray

    if _owned_ray and ray.is_initialized():
        ray.shutdown()
    _owned_ray = False


# ----------------------------------------------------------------------------------------- the trial
@dataclass
class Step:
    """One reported step of a trial: a fold (label like "3" or "outer2/inner1") with its index arrays."""

    label: str
    train: np.ndarray
    test: np.ndarray


@dataclass
class TrialData:
    """Everything a trial needs, put in the object store once."""

    X: Any  # np.ndarray, or a DataFrame of typed columns (with `encoding`)
    y: np.ndarray
    steps: list[Step]
    task: str
    metric: str
    scaler: str
    impute: str
    n_classes: int
    seed: int
    fixed_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    parallel_folds: bool = False
    cpus_per_fold: float = 1
    metrics: list[str] = field(
        default_factory=list
    )  # every reported scorer, `metric` (the ranking one) first
    encoding: Encoding | None = None
    reduce: dict[str, Any] = field(default_factory=dict)  # preprocess.reduce, e.g. {"pca": 2}

    def __post_init__(self) -> None:
        self.metrics = [self.metric, *(m for m in self.metrics if m != self.metric)]


def fit_and_score(pipeline, X, y, train, test, metrics: list[str]) -> tuple[dict[str, float | None], float]:
    """Fit a clone on `train`, score it on `test` with every scorer of `metrics` (scikit-learn's multi-metric
    scoring; the first ranks); ({metric: score}, fit seconds). A non-finite ranking score is an error; another
    non-finite score is None."""
    from sklearn.base import clone
    from sklearn.metrics import check_scoring
    from sklearn.utils import _safe_indexing

    model = clone(pipeline)
    start = time.perf_counter()
    model.fit(_safe_indexing(X, train), y[train])
    fit_time = time.perf_counter() - start
    scored = check_scoring(model, scoring=list(metrics))(model, _safe_indexing(X, test), y[test])
    scores = {m: float(scored[m]) if math.isfinite(scored[m]) else None for m in metrics}
    if scores[metrics[0]] is None:
        raise FloatingPointError(
            f"{metrics[0]} is {scored[metrics[0]]} (the model's predictions are not finite)"
        )
    return scores, fit_time


def ranking_score(scores: dict[str, float | None], metric: str) -> float:
    """The ranking metric's score of a fold (fit_and_score refuses a fold where it is undefined)."""
    score = scores[metric]
    if score is None:
        raise ValueError(f"{metric} is undefined")
    return score


def trial_plan(config: dict[str, Any], data: TrialData) -> zoo.ModelPlan:
    """A trial's model plan: the spec's fixed params under the trial's searched ones."""
    params = {**data.fixed_params.get(config["model"], {}), **config.get("params", {})}
    return zoo.plan(config["model"], data.task, params, data.scaler, data.n_classes, data.seed, data.reduce)


def trial_pipeline(plan: zoo.ModelPlan, data: TrialData):
    """The unfitted pipeline of a plan on the trial data (its imputation and column encoding)."""
    return zoo.build_pipeline(plan, data.impute, data.encoding)


def _fold_results(pipeline, data: TrialData) -> Iterator[tuple[str, dict[str, float | None], float]]:
    if not data.parallel_folds:
        for step in data.steps:
            yield (step.label, *fit_and_score(pipeline, data.X, data.y, step.train, step.test, data.metrics))
        return
    import ray

    remote = ray.remote(num_cpus=data.cpus_per_fold)(fit_and_score)
    X, y = ray.put(data.X), ray.put(data.y)
    futures = [remote.remote(pipeline, X, y, s.train, s.test, data.metrics) for s in data.steps]
    try:
        for step, future in zip(data.steps, futures, strict=False):
            yield (step.label, *ray.get(future))
    finally:
        for future in futures:
            ray.cancel(future)


def fold_trainable(config: dict[str, Any], data: TrialData) -> None:
    """The Tune trainable: walk the folds, report each score (and the running mean) as one step."""
    import ray
    from ray import tune

    pipeline = trial_pipeline(trial_plan(config, data), data)
    node = ray.get_runtime_context().get_node_id()
    scores, labels, fit_times = [], [], []
    per_metric: dict[str, list[float | None]] = {m: [] for m in data.metrics}
    for label, fold_scores, fit_time in _fold_results(pipeline, data):
        score = ranking_score(fold_scores, data.metric)
        scores.append(score)
        labels.append(label)
        fit_times.append(fit_time)
        for m, value in fold_scores.items():
            per_metric[m].append(value)
        # the history rides along, so the last result holds the whole trial (no per-result files needed)
        tune.report(
            {
                "score": score,
                "mean_score": float(np.mean(scores)),
                "fold": label,
                "node": node,
                "scores": list(scores),
                "folds": list(labels),
                "fit_times": list(fit_times),
                "metric_scores": {m: list(v) for m, v in per_metric.items()},
            }
        )


# ------------------------------------------------------------------------------------- search spaces
def tune_space(space: dict[str, Any], algorithm: str, where: str) -> dict[str, Any]:
    """Spec search space → Ray Tune: lists are grid axes (grid) or choices (random, tpe); dicts are
    samplers."""
    from ray import tune

    out = {}
    for param, value in space.items():
        if isinstance(value, list):
            out[param] = tune.grid_search(value) if algorithm == "grid" else tune.choice(value)
        elif isinstance(value, dict) and len(value) == 1 and next(iter(value)) in SAMPLERS:
            if algorithm == "grid":
                raise MlkubeError(
                    f"{where}.{param}: grid search needs a list of values, not {value}",
                    "give a list, or use algorithm: random or tpe",
                )
            kind, args = next(iter(value.items()))
            out[param] = tune.choice(args) if kind == "choice" else getattr(tune, kind)(*args)
        else:
            raise MlkubeError(
                f"{where}.{param}: {value!r} is not a search axis",
                "give a list of values, or one of {loguniform|uniform|randint: [lo, hi]}, {choice: [...]}",
            )
    return out


def grid_size(space: dict[str, Any]) -> int:
    return math.prod(len(v) for v in space.values() if isinstance(v, list)) if space else 1


# ----------------------------------------------------------------------------------------- running
@dataclass
class SearchSettings:
    algorithm: str = "grid"  # grid | random | tpe
    trials: int = 1
    scheduler: str = "none"  # none | asha
    grace_folds: int = 1
    max_concurrent: int | None = None
    cpu: float = 1
    gpu: float = 0
    max_failures: int = 1
    metrics_port: int | None = None  # the driver's Prometheus exporter (metrics.port); None: off
    status_path: str | None = None  # status.json for `mlkube watch`; None: none


def quiet_tune() -> None:
    """Tune's settings for mlkube's experiments (before Tune is imported)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's tables would drown the progress lines
    os.environ.setdefault(
        "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1"
    )  # rows come from the last result, not files
    os.environ.setdefault(
        "TUNE_DISABLE_SIGINT_HANDLER", "1"
    )  # Ctrl-C stops the run (resumable), not just the trials


def run_trials(
    name: str, param_space: dict[str, Any], data: TrialData, settings: SearchSettings, progress: Progress
) -> list[dict[str, Any]]:
    """Run one Tune experiment and return one row per trial (see `trial_row`)."""
    quiet_tune()
    from ray import tune

    from mlkube.trainer.exporters import tune_metrics

    tune_metrics(settings.metrics_port)  # start the exporter before the first trial
    trainable = tune.with_resources(
        tune.with_parameters(fold_trainable, data=data), _trial_resources(settings, data)
    )
    n_trials = settings.trials if settings.algorithm != "grid" else 1
    with tempfile.TemporaryDirectory(prefix="mlkube-tune-") as storage:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric="mean_score",
                mode="max",
                num_samples=n_trials,
                search_alg=_search_alg(settings, data.seed),
                scheduler=_scheduler(settings, len(data.steps)),
                max_concurrent_trials=settings.max_concurrent,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage,
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=settings.max_failures),
                callbacks=[_progress_callback(name, progress, settings, len(data.steps))],
            ),
        )
        results = tuner.fit()
        # ResultGrid is indexable but declares no __iter__
        attempts = settings.max_failures + 1  # Tune retries a failed trial max_failures times
        return [trial_row(results[i], data, attempts) for i in range(len(results))]


def _trial_resources(settings: SearchSettings, data: TrialData):
    """What one trial reserves: its own CPUs, or, with parallel folds, a small head plus one bundle per fold
    task (as many as the cluster's CPUs allow), so the fold tasks run inside the trial's placement group."""
    from ray import tune

    if not data.parallel_folds:
        return {"cpu": settings.cpu, "gpu": settings.gpu}
    import ray

    head = 0.01  # the trial itself only waits for its fold tasks; Ray refuses an empty bundle
    free = ray.cluster_resources().get("CPU", 1) - head
    fold_tasks = max(1, min(len(data.steps), int(free // settings.cpu)))
    bundle = {"CPU": settings.cpu, "GPU": settings.gpu} if settings.gpu else {"CPU": settings.cpu}
    return tune.PlacementGroupFactory([{"CPU": head}] + [bundle] * fold_tasks)


def _search_alg(settings: SearchSettings, seed: int):
    if settings.algorithm == "tpe":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=seed)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=seed, max_concurrent=settings.max_concurrent or 0)


def _scheduler(settings: SearchSettings, n_steps: int):
    if settings.scheduler != "asha" or n_steps <= settings.grace_folds:
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="training_iteration", max_t=n_steps, grace_period=settings.grace_folds, reduction_factor=2
    )


def _progress_callback(
    name: str,
    progress: Progress,
    settings: SearchSettings,
    n_steps: int,
    describe: Callable[[dict[str, Any]], str] | None = None,
    score: str = "mean_score",
    unit: str = "folds",
):
    """Progress lines, the exporter's counters and status.json, from Tune's trial events (in the driver).
    `describe` shows a trial's config (default: model and params), `score` is the result's key shown and
    tracked as the best, `unit` what a reported step is (n_steps of them make a finished trial).

    The callback is pickled with the Tuner's state, so it holds only plain data; the exporter is looked up at
    call time.
    """
    from ray import tune

    from mlkube.trainer.exporters import tune_metrics
    from mlkube.trainer.run import atomic_write_json, now_iso

    class TrialProgress(tune.Callback):
        def __init__(self):
            self.counts = {"running": 0, "finished": 0, "failed": 0, "early_stopped": 0}
            self.folds = 0
            self.best: float | None = None

        def on_trial_start(self, iteration, trials, trial, **info):
            self.counts["running"] += 1
            if (metrics := tune_metrics(settings.metrics_port)) is not None:
                metrics.trial_started()
            self._write_status(trials)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.folds += 1
            if (metrics := tune_metrics(settings.metrics_port)) is not None:
                metrics.fold_scored()

        def on_trial_complete(self, iteration, trials, trial, **info):
            last = trial.last_result or {}
            folds_done = last.get("training_iteration", 0)
            state = "finished" if folds_done >= n_steps else "early_stopped"
            label = "mean" if score == "mean_score" else score.replace("_", " ")
            self._ended(
                trials,
                trial,
                state,
                last.get(score),
                f"{label} {last.get(score, float('nan')):.4f} ({folds_done} {unit})",
            )

        def on_trial_error(self, iteration, trials, trial, **info):
            self._ended(trials, trial, "failed", None, "FAILED")

        def _ended(self, trials, trial, state: str, mean: float | None, what: str) -> None:
            self.counts["running"] -= 1
            self.counts[state] += 1
            if state == "finished" and mean is not None and (self.best is None or mean > self.best):
                self.best = mean
            if (metrics := tune_metrics(settings.metrics_port)) is not None:
                metrics.trial_ended(state, mean)
            ended = sum(self.counts[s] for s in ("finished", "failed", "early_stopped"))
            config = trial.config
            shown = describe(config) if describe else f"{config['model']} {config.get('params') or ''}"
            progress.say(f"{name}: trial {ended}/{len(trials)} {shown} {what}")
            self._write_status(trials)

        def _write_status(self, trials) -> None:
            if settings.status_path:
                atomic_write_json(
                    settings.status_path,
                    {
                        "stage": name,
                        "trials": {**self.counts, "total": len(trials)},
                        "folds": self.folds,
                        "best": self.best,
                        "updated": now_iso(),
                    },
                )

    return TrialProgress()


def trial_row(result, data: TrialData, attempts: int = 1) -> dict[str, Any]:
    """A leaderboard row: model, params, mean, std, per-fold scores, fit time, node, status (and error).
    A trial whose Ray worker was lost on each of its `attempts` (its node died or was cut off) is a failed row
    that names the node, like any other failed trial: the other trials are scored and the run goes on."""
    config = result.config
    plan = trial_plan(config, data)
    last = result.metrics or {}
    scores = [float(x) for x in last.get("scores", [])]
    fit_times = last.get("fit_times", [])
    status = "failed" if result.error else ("ok" if len(scores) == len(data.steps) else "early_stopped")
    row = {
        "model": config["model"],
        "params": plan.describe(),
        "mean": float(np.mean(scores)) if scores else None,
        "std": float(np.std(scores)) if scores else None,
        "scores": scores,
        "folds": list(last.get("folds", [])),
        "fit_time": float(np.mean(fit_times)) if fit_times else None,
        "node": last.get("node"),
        "status": status,
        "metrics": metric_summary(last.get("metric_scores", {})),
    }
    if result.error:
        lost = lost_worker(result.error)
        if lost is not None:
            row["node"] = row["node"] or lost["node"]
            tries = f"{attempts} attempts" if attempts > 1 else "1 attempt"
            row["error"] = (
                f"its Ray worker on node {lost['where']} was lost ({lost['what']}) on the last of {tries}; "
                "raise classical.max_failures to retry more, and check that node"
            )
        else:
            row["error"] = _error_message(result.error)
    return row


def lost_worker(error: BaseException) -> dict[str, str] | None:
    """For a trial that failed because its Ray worker (the trial's actor) was lost: the node it ran on
    (hostname and address, as the GCS's actor and node tables record them), and what happened to it; None
    for any other error (the trial's own exception)."""
    import ray
    from ray.exceptions import ActorUnavailableError, RayActorError

    if not isinstance(error, RayActorError):
        return None
    node_id, address = None, "an unknown address"
    try:  # the GCS's actor table (ray.util.state needs the dashboard, which a local Ray runs without)
        actor = ray._private.state.actors(actor_id=error.actor_id) if error.actor_id else {}
        node_id, address = actor["Address"]["NodeID"], actor["Address"]["IPAddress"]
    except Exception:  # the actor's record is gone with its cluster: say what the error says
        pass
    node: dict[str, Any] = next((n for n in ray.nodes() if n["NodeID"] == node_id), {}) if node_id else {}
    where = f"{node.get('NodeManagerHostname', '?')} ({address})" if node else address
    if node and not node.get("Alive"):
        what = "the node is dead" + (
            "" if isinstance(error, ActorUnavailableError) else f": {_error_message(error)}"
        )
    elif isinstance(error, ActorUnavailableError):
        what = "unreachable: " + _error_message(error)
    else:
        what = "the worker process died: " + _error_message(error)
    return {"node": node_id or "", "where": where, "what": what}


def metric_summary(per_metric: dict[str, list[float | None]]) -> dict[str, dict[str, Any]]:
    """Per metric: its fold scores and their mean and std (None when a fold's score is undefined)."""
    out = {}
    for m, values in per_metric.items():
        defined = [v for v in values if v is not None]
        complete = bool(values) and len(defined) == len(values)
        out[m] = {
            "mean": float(np.mean(defined)) if complete else None,
            "std": float(np.std(defined)) if complete else None,
            "scores": list(values),
        }
    return out


def _error_message(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    lines = [line for line in text if line.strip()]
    return lines[-1][:500] if lines else type(error).__name__


def rank(rows: list[dict[str, Any]], model_order: list[str]) -> list[dict[str, Any]]:
    """Best first: finished trials by mean (ties: spec order), then early-stopped, then failed."""
    status_order = {"ok": 0, "early_stopped": 1, "failed": 2}

    def key(row):
        mean = row["mean"] if row["mean"] is not None else -math.inf
        return (
            status_order[row["status"]],
            -mean,
            model_order.index(row["model"]),
            repr(sorted(row["params"].items())),
        )

    return sorted(rows, key=key)

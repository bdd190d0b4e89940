"""Independent trainings of one LSTM configuration (the folds of `lstm.cv`, the members of `lstm.ensemble`),
run side by side as Ray Tune trials of the search's trainable (`trainer.lstm.search`): one trial per job, a
grid over the jobs' folders, each trial its own seed, sites and model folder, on the run's Ray (a local one,
or the cluster's KubeRay). Each trial is one worker process (world size 1); a trial whose process dies is
retried from its last epoch's checkpoint (`max_failures`), and a job whose folder already holds its model is
not trained again (a resumed run).

Why Ray trials and not the elastic launcher: jobs are many small independent trainings, and Ray packs them
over every node's CPUs and GPUs at once and retries each alone; torch elastic trains one large model over a
fixed group of workers (its DDP gains nothing for a model one worker trains at full speed) and would run the
jobs one after another or need a rendezvous per job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlkube.trainer.errors import MlkubeError

STORAGE = "tune"  # Tune's trial checkpoints, under the stage's folder of the run


@dataclass(frozen=True)
class Job:
    """One training: its seed, the sites it trains on (None: all) and the folder of its model."""

    name: str  # fold-0, member-2
    seed: int
    folder: Path  # model.pt, model.json (the card, with its statistics) and training.json
    sites: tuple[str, ...] | None = None

    @property
    def done(self) -> bool:
        from mlkube.trainer.artifacts import MODEL_JSON
        from mlkube.trainer.lstm.elastic import TRAINING_RECORD

        return (self.folder / MODEL_JSON).is_file() and (self.folder / TRAINING_RECORD).is_file()


def job_space(jobs: list[Job]) -> dict[str, Any]:
    """Tune's param space: a grid over the jobs' folders, each trial's seed and sites drawn from its folder
    (every other setting is the spec's)."""
    from ray import tune

    seeds = {str(j.folder): j.seed for j in jobs}
    sites = {str(j.folder): list(j.sites) if j.sites else None for j in jobs}
    return {
        "model_dir": tune.grid_search(list(seeds)),
        "seed": tune.sample_from(lambda s: seeds[s["config"]["model_dir"]]),
        "sites": tune.sample_from(lambda s: sites[s["config"]["model_dir"]]),
    }


def run_jobs(
    name: str,
    jobs: list[Job],
    spec,
    prepared,
    storage: Path,
    progress,
    max_concurrent: int | None = None,
) -> None:
    """Train every job not done yet as a Tune trial of `spec`'s configuration (the deep stage's: the search's
    best where there is one) on `prepared`; MlkubeError naming the jobs that failed."""
    from mlkube.trainer.classical.search import SearchSettings, connect_ray
    from mlkube.trainer.lstm.search import TrialData, run_trials

    todo = [job for job in jobs if not job.done]
    if not todo:
        return
    connect_ray(spec.cluster.ray_address, spec.cluster.num_cpus, progress)
    resources = spec.lstm.search.resources_per_trial if spec.lstm.search is not None else None
    cpu, gpu = (resources.cpu, resources.gpu) if resources is not None else (1.0, 0.0)
    settings = SearchSettings(
        algorithm="grid", cpu=cpu, gpu=gpu, max_concurrent=max_concurrent, metrics_port=spec.metrics.port
    )
    data = TrialData(spec, prepared, threads=max(1, int(cpu)))
    progress.say(f"{name}: {len(todo)} training(s) as Ray Tune trials ({', '.join(j.name for j in todo)})")
    rows = run_trials(name, job_space(todo), data, settings, progress, storage)
    failed = [row for row in rows if row["status"] == "failed"]
    missing = [job.name for job in todo if not job.done]
    if failed or missing:
        errors = "; ".join(row.get("error", "") for row in failed)
        raise MlkubeError(
            f"{name}: training(s) {missing} did not finish: {errors or 'no model written'}",
            "see the error above; resume the run with `mlkube run SPEC --resume RUN` once it is fixed",
        )

"""Seed ensembles (`lstm.ensemble: N`): N trainings of one configuration with seeds seed .. seed + N - 1, each
a job of its own (`trainer.lstm.jobs`: Ray Tune trials side by side); the deep stage scores, archives and
serves their mean.

The ensemble's model folder `models/lstm/` holds every member's state dict (`member-<k>.pt`) and one card
(`trainer.card.LstmCard` with `members`: each member's seed, file, SHA-256 and own scores), signed like a
single model's card; every member's weights are checked against it before loading. The mean is taken in the
target's units, after each member's inverse target transform (Kratzert et al. 2019 averaged discharge).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mlkube.trainer.artifacts import read_model_card, write_model_card
from mlkube.trainer.card import EnsembleMember, LstmCard
from mlkube.trainer.lstm.elastic import TRAINING_RECORD
from mlkube.trainer.lstm.evaluate import score
from mlkube.trainer.lstm.jobs import STORAGE, Job, run_jobs
from mlkube.trainer.lstm.prepared import Prepared, load_prepared
from mlkube.trainer.run import LSTM_MODEL, atomic_write_bytes, atomic_write_json, read_json
from mlkube.trainer.spec import SEED_MAX

PERIOD = "test"
MEMBER_WEIGHTS = "member-{}.pt"
# the card fields an ensemble sets itself (the rest it takes from its first member)
CARD_OWN = ("sha256", "versions", "created", "signature", "weights", "members", "metrics", "name")


def member_seeds(seed: int, n: int) -> list[int]:
    """The members' seeds: seed, seed + 1, ... (wrapping at 2**32)."""
    return [(seed + k) % (SEED_MAX + 1) for k in range(n)]


def member_name(seed: int) -> str:
    """A member's model name in the deep stage's scores and figures."""
    return f"lstm seed {seed}"


def member_jobs(run, seed: int, n: int) -> list[Job]:
    """One training job per member, each in its own folder of the run."""
    return [Job(f"member-{k}", s, run.ensemble_member(k)) for k, s in enumerate(member_seeds(seed, n))]


def train_ensemble(ctx) -> None:
    """The deep stage's training under `lstm.ensemble` > 1: every member as a Ray Tune trial (side by side),
    then the ensemble's model folder `models/lstm/` assembled from them."""
    from mlkube.trainer.lstm.overrides import best_spec

    spec, run = best_spec(ctx.spec, ctx.run.path)[0], ctx.run
    prepared = load_prepared(spec, run.path)
    jobs = member_jobs(run, spec.seed, spec.lstm.ensemble)
    run_jobs("ensemble", jobs, spec, prepared, run.ensemble_member(0).parent / STORAGE, ctx.progress)
    sims = [simulate_members(job.folder, prepared, spec.lstm, PERIOD)["lstm"] for job in jobs]
    test = score(mean_prediction(sims), prepared.data, PERIOD, spec.lstm.horizon)
    metrics = {"period": PERIOD, "median": test["median"], "mean": test["mean"]}
    assemble(run.model_dir(LSTM_MODEL), jobs, metrics)
    write_training_record(run.model_dir(LSTM_MODEL), jobs)
    members = ", ".join(_median_nse(read_model_card(job.folder).metrics) for job in jobs)
    ctx.progress.say(f"ensemble of {len(jobs)}: test median NSE {_median_nse(test)} (members {members})")


def assemble(folder: Path, jobs: list[Job], metrics: dict[str, Any]) -> LstmCard:
    """The ensemble's model folder (`folder`: models/<name>/, the name it is served under) from its trained
    members: their weights copied beside one signed card that lists them, with `metrics` (the ensemble's own
    scores)."""
    cards = [read_model_card(job.folder, expected=LstmCard) for job in jobs]  # checks each member's SHA-256
    first = cards[0]
    for job, card in zip(jobs[1:], cards[1:], strict=True):
        if (card.architecture, card.preprocessing) != (first.architecture, first.preprocessing):
            raise ValueError(f"ensemble member {job.folder} differs from the first in network or statistics")
    members = []
    for k, (job, card) in enumerate(zip(jobs, cards, strict=True)):
        name = MEMBER_WEIGHTS.format(k)
        atomic_write_bytes(folder / name, (job.folder / card.weights).read_bytes())
        members.append(EnsembleMember(seed=job.seed, weights=name, sha256=card.sha256, metrics=card.metrics))
    fields = {**first.model_dump(exclude=set(CARD_OWN)), "name": folder.name, "metrics": metrics}
    return write_model_card(folder, LstmCard, {**fields, "weights": members[0].weights, "members": members})


def write_training_record(folder: Path, jobs: list[Job]) -> None:
    """The ensemble's training.json: each member's record with its seed, the first member's at the top
    level (its history drives the training figure)."""
    records = [{"seed": job.seed, **read_json(job.folder / TRAINING_RECORD)} for job in jobs]
    atomic_write_json(folder / TRAINING_RECORD, {**records[0], "ensemble": len(jobs), "members": records})


def load_lstm_members(folder: Path, device: str = "cpu") -> tuple[list[Any], LstmCard]:
    """Every network of a model folder (one, or an ensemble's members in order) with its checked card."""
    import torch

    from mlkube.trainer.lstm.model import build_model

    card = read_model_card(folder, expected=LstmCard)  # verifies the signature and every weights file
    nets = []
    for weights, _ in card.weight_files():
        net = build_model(card.architecture)
        net.load_state_dict(torch.load(Path(folder) / weights, map_location=device, weights_only=True))
        nets.append(net.to(device).eval())
    return nets, card


def simulate_members(folder: Path, prepared: Prepared, lstm, period: str) -> dict[str, np.ndarray]:
    """{"lstm": the model's target [sites, period days]} — for an ensemble the members' mean in the target's
    units — and each member's own under `member_name(seed)`."""
    from mlkube.trainer.lstm.evaluate import simulate
    from mlkube.trainer.preprocess import standardize

    nets, card = load_lstm_members(folder)
    standardized = standardize(prepared.data, prepared.stats)
    sims = [
        simulate(net, standardized, prepared.stats, period, lstm.sequence_length, lstm.horizon)
        for net in nets
    ]
    members = {member_name(m.seed): sim for m, sim in zip(card.members or [], sims, strict=False)}
    return {"lstm": mean_prediction(sims), **members}


def mean_prediction(sims: list[np.ndarray]) -> np.ndarray:
    """The members' mean, day by day (NaN where the members are not scored: the same days for all)."""
    return np.mean(np.stack(sims), axis=0)


def _median_nse(scores: dict[str, Any]) -> str:
    value = scores["median"]["nse"]
    return "-" if value is None else f"{value:.3f}"

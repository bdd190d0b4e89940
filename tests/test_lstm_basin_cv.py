"""The cross-validation over basins (stage basin_cv) and a seed ensemble (the deep stage), each training a Ray
Tune trial of its own on the session's real Ray cluster, on the shipped CAMELS-US sample with a tiny network:
leave-one-basin-out folds whose held-out basins never reach training nor its statistics (asserted from the
run's own records), their scores pooled beside the gauged model's, and an ensemble scored, archived and
answering as the mean of its members."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytestmark = pytest.mark.integration
SEED = 3
SPEC = f"""
seed: {SEED}
lstm:
  sequence_length: 30
  model: {{hidden_size: 8, initial_forget_bias: 0}}
  train: {{epochs: 2, steps_per_epoch: 4, batch_size: 8, learning_rate: 0.01}}
  baselines: [climatology]
  cv: {{}}            # kfold, one fold per site: leave-one-basin-out
  ensemble: 2
"""
SITES = ("01022500", "01547700", "02064000", "03015500")


@pytest.fixture(scope="module")
def cv_run(ray_cluster, tmp_path_factory):
    from mlkube.pipeline import check_inputs, run_pipeline
    from mlkube.trainer.progress import Progress
    from mlkube.trainer.run import Run
    from mlkube.trainer.spec import parse_spec

    spec = parse_spec(SPEC)
    check_inputs(spec)
    with Run.start(spec.to_yaml(), tmp_path_factory.mktemp("cv") / "runs", run_id="cv") as run:
        return run_pipeline(spec, run, Progress(quiet=True))


def folds(run) -> list[dict]:
    return [json.loads((run.basin_fold(k) / "fold.json").read_text()) for k in range(len(SITES))]


def test_leave_one_basin_out_holds_each_basin_out_once(cv_run):
    records = folds(cv_run)
    assert sorted(site for r in records for site in r["test_sites"]) == sorted(SITES)
    for record in records:
        assert len(record["test_sites"]) == 1
        assert sorted(record["train_sites"] + record["test_sites"]) == sorted(SITES)


def test_a_folds_held_out_basin_never_reaches_its_training_nor_its_statistics(cv_run):
    from mlkube.trainer.artifacts import read_model_card
    from mlkube.trainer.lstm.prepared import read_prepared
    from mlkube.trainer.lstm.search import site_subset
    from mlkube.trainer.spec import PreprocessSpec

    prepared = read_prepared(cv_run.prepared_lstm)
    everything = site_subset(prepared, SITES, PreprocessSpec()).stats.to_json()
    for record in folds(cv_run):
        folder = cv_run.basin_fold(record["fold"])
        trained = json.loads((folder / "training.json").read_text())
        card = read_model_card(folder)
        assert trained["sites"] == record["train_sites"]  # what the trial's data held, recorded by the trial
        assert not set(trained["sites"]) & set(record["test_sites"])
        own = site_subset(prepared, tuple(record["train_sites"]), PreprocessSpec())
        assert card.data_hash == own.data_hash  # it trained on exactly its training basins' series
        statistics = own.stats.to_json()
        for key in ("dynamic_mean", "dynamic_std", "target_mean", "target_std"):
            assert record["statistics"][key] == statistics[key] == getattr(card.preprocessing, key)
            assert statistics[key] != everything[key]  # the held-out basin would have moved them


def test_pooled_and_per_fold_scores_sit_beside_the_gauged_scores_of_the_same_basins(cv_run):
    from mlkube.trainer.lstm.scores import METRICS

    result = json.loads(cv_run.stage_file("basin_cv").read_text())
    deep = json.loads(cv_run.stage_file("deep").read_text())
    assert list(result["pooled"]["sites"]) == list(SITES)
    held_out_nse = [f["sites"][s]["nse"] for f in result["folds"] for s in f["test_sites"]]
    assert result["pooled"]["median"]["nse"] == pytest.approx(np.median(held_out_nse))
    assert set(result["pooled"]["median"]) == set(METRICS)
    gauged = result["gauged"]
    assert gauged["model"] == f"lstm seed {SEED}"  # the deep stage's model of the folds' seed
    assert gauged["sites"] == {s: deep["models"][gauged["model"]]["sites"][s] for s in SITES}
    with cv_run.basin_cv_scores_file.open() as f:
        rows = list(csv.DictReader(f))
    assert (
        [r["setting"] for r in rows].count("ungauged")
        == len(SITES)
        == [r["setting"] for r in rows].count("gauged")
    )
    assert set(METRICS) <= set(rows[0])
    board = json.loads(cv_run.leaderboard_file.read_text())["basin_cv"]
    assert [r["setting"] for r in board["rows"]] == ["ungauged", "gauged"] + ["fold"] * len(SITES)
    report = cv_run.report_file.read_text()
    assert "Cross-validation over basins" in report and 'alt="basin_cv_nse_cdf"' in report


def test_the_ensemble_is_scored_as_the_mean_of_its_members_beside_each_member(cv_run):
    from mlkube.trainer.artifacts import read_model_card
    from mlkube.trainer.lstm.ensemble import member_name, simulate_members
    from mlkube.trainer.lstm.evaluate import score
    from mlkube.trainer.lstm.prepared import read_prepared
    from mlkube.trainer.spec import parse_spec

    deep = json.loads(cv_run.stage_file("deep").read_text())
    card = read_model_card(cv_run.model_dir("lstm"))
    assert [m.seed for m in card.members] == [SEED, SEED + 1]
    assert {"lstm", member_name(SEED), member_name(SEED + 1)} <= {r["model"] for r in deep["ranking"]}
    prepared, lstm = read_prepared(cv_run.prepared_lstm), parse_spec(SPEC).lstm
    members = [simulate_members(cv_run.ensemble_member(k), prepared, lstm, "test")["lstm"] for k in (0, 1)]
    mean = score(np.mean(members, axis=0), prepared.data, "test")["sites"]
    for site in SITES:
        assert deep["models"]["lstm"]["sites"][site]["nse"] == pytest.approx(mean[site]["nse"], rel=1e-9)
    assert card.metrics["median"]["nse"] == pytest.approx(deep["models"]["lstm"]["median"]["nse"], rel=1e-9)


def test_the_trained_ensemble_answers_the_mean_of_its_members_answers(cv_run):
    from mlkube.serving.handlers import InProcess
    from mlkube.serving.handlers.lstm_handler import LstmHandler
    from mlkube.trainer.artifacts import read_model_card

    card = read_model_card(cv_run.model_dir("lstm"))
    body = json.dumps(LstmHandler.example(card)).encode()
    [(status, answer)] = InProcess(cv_run.model_dir("lstm"))([body])
    assert status == 200, answer
    members = [InProcess(cv_run.ensemble_member(k))([body])[0][1]["predictions"] for k in (0, 1)]
    np.testing.assert_allclose(answer["predictions"], np.mean(members, axis=0), rtol=1e-12)


def test_a_rerun_basin_cv_stage_scores_the_trained_folds_again_without_training_them(cv_run):
    """A resumed run redoes an interrupted stage: folds whose model is written are not trained again."""
    from mlkube.pipeline import StageContext
    from mlkube.trainer.lstm.basin_cv import basin_cv
    from mlkube.trainer.progress import Progress
    from mlkube.trainer.run import sha256_file
    from mlkube.trainer.spec import parse_spec

    def fold_models() -> list[tuple[str, int]]:
        return [
            (
                sha256_file(cv_run.basin_fold(k) / "model.pt"),
                (cv_run.basin_fold(k) / "model.pt").stat().st_mtime_ns,
            )
            for k in range(len(SITES))
        ]

    def experiments() -> list[str]:  # what Ray Tune wrote for the stage: its experiments and their trials
        tune = cv_run.path / "basin_cv" / "tune"
        return sorted(str(p.relative_to(tune)) for p in tune.rglob("*") if p.is_dir())

    before, tuned = fold_models(), experiments()
    scores = json.loads(cv_run.stage_file("basin_cv").read_text())
    basin_cv(StageContext(parse_spec(SPEC), cv_run, Progress(quiet=True)))
    assert fold_models() == before and experiments() == tuned
    assert json.loads(cv_run.stage_file("basin_cv").read_text())["pooled"] == scores["pooled"]


def test_regions_held_out_beside_the_torchrun_trained_model(ray_cluster, run_spec):
    """scheme group over CAMELS' hydrologic regions (huc_02: one region per shipped basin), beside the deep
    stage's single model trained under torchrun by two workers."""
    spec = SPEC.replace("cv: {}", "cv: {scheme: group, groups: huc_02}").replace(
        "ensemble: 2", "ensemble: 1\n  elastic: {nproc_per_node: 2}"
    )
    run = run_spec(spec.replace("epochs: 2, steps_per_epoch: 4", "epochs: 1, steps_per_epoch: 3"))
    training = json.loads((run.model_dir("lstm") / "training.json").read_text())
    assert training["world_size"] == 2 and training["sites"] == list(SITES)
    result = json.loads(run.stage_file("basin_cv").read_text())
    assert result["scheme"] == "group" and result["gauged"]["model"] == "lstm"
    assert sorted(tuple(f["test_sites"]) for f in result["folds"]) == [(s,) for s in SITES]
    for record in folds(run):
        trained = json.loads((run.basin_fold(record["fold"]) / "training.json").read_text())
        assert trained["sites"] == record["train_sites"] and not set(trained["sites"]) & set(
            record["test_sites"]
        )

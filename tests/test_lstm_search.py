"""lstm.search: the spec refuses spaces a trial could not train; with real Ray Tune (the session's two-node
cluster) and real torchrun, a tiny search on the shipped CAMELS-US sample whose ASHA stops weak trials by
epoch, whose best configuration the deep stage then trains elastically; same seed, same trials and scores; a
trial whose process is killed resumes from its last epoch's checkpoint and ends exactly where an unbroken one
ends."""

from __future__ import annotations

import os
import signal

import pytest

from mlkube.trainer.errors import MlkubeError, SpecError
from mlkube.trainer.spec import parse_spec
from tests.conftest import ROOT

TINY = """
seed: 4
preprocess: {log_target: true}
lstm:
  data: {name: camels_us_sample}
  sequence_length: 30
  model: {hidden_size: 8, initial_forget_bias: 0}
  train: {epochs: 4, steps_per_epoch: 10, batch_size: 16, learning_rate: 0.01}
  elastic: {nproc_per_node: 2}
  baselines: [climatology]
"""


# ------------------------------------------------------------------------------------------ the spec
def search_spec(space: str, extra: str = "") -> str:
    return TINY + f"  search:\n    space: {space}\n" + extra


@pytest.mark.unit
@pytest.mark.parametrize(
    ("space", "extra", "message"),
    [
        ("{hidden_sise: [8]}", "", "lstm.search.space.hidden_sise .*'hidden_sise' is not searchable: choose"),
        ("{hidden_size: {uniform: [4, 16]}}", "", "hidden_size: uniform draws fractions.*randint"),
        ("{learning_rate: {loguniform: [0, 0.1]}}", "", "learning_rate .*needs 0 < lo < hi"),
        ("{learning_rate: {uniform: [0.1, 0.01]}}", "", "learning_rate .*needs lo < hi"),
        ("{optimizer: [adam, rmsprop]}", "", "optimizer: 'rmsprop' is not a valid optimizer"),
        ("{dropout: {uniform: [0, 1]}}", "", "dropout: 1.0 is not a valid dropout: .*less than 1"),
        ("{momentum: [0.9, 1.5]}", "", "momentum: 1.5 is not a valid momentum"),
        ("{batch_size: {randint: [0, 8]}}", "", "batch_size: 0 is not a valid batch_size"),
        ("{sequence_length: [1]}", "", "sequence_length: 1 is not a valid sequence_length"),
        ("{schedule: [cosine, linear]}", "", "schedule: 'linear' is not a valid schedule"),
        (
            "{learning_rate: {loguniform: [0.001, 0.1]}}",
            "    algorithm: grid\n",
            "learning_rate: grid search takes a list of values",
        ),
        ("{}", "    grace_epochs: 0\n", "lstm.search.grace_epochs .*greater than or equal to 1"),
    ],
)
def test_a_space_a_trial_could_not_train_is_refused_naming_the_field(space, extra, message):
    with pytest.raises(SpecError, match=message) as refused:
        parse_spec(search_spec(space, extra))
    assert "lstm.search" in str(refused.value)


@pytest.mark.unit
def test_a_good_space_passes_and_trial_configs_override_lstm_fields_by_dotted_path():
    from mlkube.trainer.lstm.overrides import trial_spec

    spec = parse_spec(
        search_spec(
            "{learning_rate: {loguniform: [0.0001, 0.1]}, optimizer: [adam, adamw, sgd], momentum: [0.9], "
            "hidden_size: {randint: [4, 17]}, dropout: {uniform: [0, 0.5]}, "
            "schedule: {choice: [none, cosine]}}"
        )
    )
    assert spec.lstm.search.scheduler == "asha" and spec.lstm.search.algorithm == "random"
    tried = trial_spec(
        spec, {"train.optimizer": "sgd", "model.hidden_size": 12, "sequence_length": 40, "seed": 9}
    )
    assert (tried.lstm.train.optimizer, tried.lstm.model.hidden_size, tried.lstm.sequence_length) == (
        "sgd",
        12,
        40,
    )
    assert tried.seed == 9 and spec.lstm.model.hidden_size == 8  # the run's spec is untouched
    with pytest.raises(MlkubeError, match="lstm has no field 'model.hiden_size'"):
        trial_spec(spec, {"model.hiden_size": 12})
    with pytest.raises(MlkubeError, match=r"lstm.train.learning_rate: Input should be greater than 0"):
        trial_spec(spec, {"train.learning_rate": -1.0})


@pytest.mark.unit
def test_the_optimiser_is_the_one_the_spec_names_with_its_momentum():
    import torch

    from mlkube.trainer.lstm.train import make_optimizer

    train = parse_spec(TINY).lstm.train
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert type(make_optimizer(params, train)) is torch.optim.Adam
    sgd = make_optimizer(params, train.model_copy(update={"optimizer": "sgd", "momentum": 0.9}))
    assert type(sgd) is torch.optim.SGD and sgd.param_groups[0]["momentum"] == 0.9
    assert type(make_optimizer(params, train.model_copy(update={"optimizer": "adamw"}))) is torch.optim.AdamW


# ------------------------------------------------------------------------------------------ real runs
ASHA_SEARCH = """  search:
    algorithm: grid
    scheduler: asha
    grace_epochs: 1
    max_concurrent: 1
    space: {learning_rate: [0.01, 0.00001], optimizer: [adam, sgd], momentum: [0.9]}
"""


@pytest.fixture(scope="module")
def searched(ray_cluster, tmp_path_factory):
    """The tiny search run through the pipeline (prepare, search_lstm, deep under torchrun, present)."""
    from mlkube.pipeline import check_inputs, run_pipeline
    from mlkube.trainer.progress import Progress
    from mlkube.trainer.run import Run

    spec = parse_spec(TINY + ASHA_SEARCH)
    check_inputs(spec)
    with Run.start(spec.to_yaml(), tmp_path_factory.mktemp("search") / "runs", run_id="s") as run:
        return run_pipeline(spec, run, Progress(quiet=True))


@pytest.mark.integration
def test_asha_stops_weak_trials_by_epoch_and_the_deep_stage_trains_the_best_elastically(searched):
    from mlkube.trainer.run import read_json

    result = read_json(searched.stage_file("search_lstm"))
    trials = result["trials"]
    assert len(trials) == 4  # the grid: 2 rates × 2 optimisers
    by_status = {s: [t for t in trials if t["status"] == s] for s in ("finished", "stopped_by_asha")}
    assert by_status["stopped_by_asha"], [(t["config"], t["curve"]) for t in trials]
    assert by_status["finished"]
    for t in by_status["stopped_by_asha"]:
        assert 1 <= t["epochs"] < 4 and len(t["curve"]) == t["epochs"]
    for t in by_status["finished"]:
        assert t["epochs"] == 4 and all(v is not None for v in t["curve"])
    best = result["best"]
    assert best["status"] == "finished"
    assert best["score"] == max(t["score"] for t in by_status["finished"])
    assert best["config"]["train.learning_rate"] == 0.01  # 1e-5 barely moves a network in 40 steps

    training = read_json(searched.model_dir("lstm") / "training.json")
    assert training["search_config"] == best["config"]
    assert training["world_size"] == 2  # torchrun's two workers
    assert training["history"][0]["learning_rate"] == best["config"]["train.learning_rate"]
    card = read_json(searched.model_dir("lstm") / "model.json")
    assert card["metrics"]["median"]["nse"] is not None
    deep = read_json(searched.stage_file("deep"))
    assert deep["training"]["search_config"] == best["config"]

    board = read_json(searched.leaderboard_file)
    assert [t["trial"] for t in board["lstm_search"]["trials"]] == [t["trial"] for t in trials]
    html = searched.report_file.read_text()
    assert "LSTM search" in html and "stopped by ASHA" in html
    for figure in result["figures"].values():
        assert (searched.path / figure).stat().st_size > 10_000


RETRY_SPACE = "{learning_rate: {loguniform: [0.001, 0.03]}, optimizer: [adam, sgd], momentum: [0.9]}"


def search_directly(tmp_path, name: str, callbacks=()):
    """The search's trainable run as the stage runs it (3 random trials, two at a time on the two nodes)."""
    from mlkube.trainer.classical.search import tune_space
    from mlkube.trainer.lstm.prepared import prepare
    from mlkube.trainer.lstm.search import TrialData, run_trials, search_settings
    from mlkube.trainer.progress import Progress
    from mlkube.trainer.spec import LSTM_SEARCHABLE

    spec = parse_spec(
        search_spec(
            RETRY_SPACE, "    trials: 3\n    scheduler: none\n    max_concurrent: 2\n    max_failures: 1\n"
        )
    )
    space = tune_space(spec.lstm.search.space, "random", "lstm.search.space")
    return run_trials(
        name,
        {LSTM_SEARCHABLE[k]: v for k, v in space.items()},
        TrialData(spec, prepare(spec)),
        search_settings(spec),
        Progress(quiet=True),
        tmp_path / name,
        callbacks,
    )


@pytest.mark.integration
def test_same_seed_same_trials_and_a_killed_trial_resumes_from_its_checkpoint_to_the_same_end(
    ray_cluster, tmp_path
):
    from ray import tune

    class KillOnce(tune.Callback):
        """SIGKILL the process of trial 0 once, when Tune has registered its second epoch's checkpoint."""

        def __init__(self):
            self.killed: list[int] = []

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            last = trial.last_result
            if not self.killed and trial.trial_id.endswith("_00000") and last["epoch"] == 2:
                self.killed.append(last["pid"])
                os.kill(last["pid"], signal.SIGKILL)

    unbroken = search_directly(tmp_path, "unbroken")
    killer = KillOnce()
    broken = search_directly(tmp_path, "broken", [killer])
    assert killer.killed

    assert [t["config"] for t in broken] == [t["config"] for t in unbroken]  # same seed, same trials
    assert len({t["config"]["train.learning_rate"] for t in unbroken}) == 3
    assert all(t["status"] == "finished" for t in unbroken + broken)
    # same seed, same scores: bit for bit on CPU, the killed trial included
    assert [t["curve"] for t in broken] == [t["curve"] for t in unbroken]
    resumed = broken[0]["segments"]
    assert [s["from_step"] for s in resumed] == [0, 20]  # restarted at epoch 2's checkpoint (10 steps each)
    assert all(len(t["segments"]) == 1 for t in unbroken + broken[1:])


@pytest.mark.unit
def test_the_example_search_spec_validates():
    from mlkube.trainer.spec import load_spec

    spec = load_spec(ROOT / "examples" / "hydrology_search.yaml")
    assert spec.lstm.search is not None and "learning_rate" in spec.lstm.search.space


@pytest.mark.unit
@pytest.mark.parametrize(
    ("space", "message"),
    [
        (
            "{batch_size: [1, 16]}",
            r"lstm.search.space allows \{'train.batch_size': 1\}.*smaller than the number",
        ),
        (
            "{sequence_length: {randint: [30, 5000]}}",
            r"allows \{'sequence_length': 4999\}.*no window of 4999 days",
        ),
    ],
)
def test_a_space_whose_trials_could_not_train_on_this_data_is_refused_before_any_trial(space, message):
    from mlkube.pipeline import check_inputs

    with pytest.raises(MlkubeError, match=message):
        check_inputs(parse_spec(search_spec(space)))


@pytest.mark.integration
def test_a_trial_that_cannot_train_is_a_failed_row_naming_why(ray_cluster, tmp_path):
    from mlkube.trainer.lstm.prepared import prepare
    from mlkube.trainer.lstm.search import TrialData, run_trials, search_settings
    from mlkube.trainer.progress import Progress

    spec = parse_spec(search_spec("{}", "    trials: 1\n    max_failures: 0\n"))
    rows = run_trials(
        "failing",
        {
            "model.hiden_size": 4
        },  # a trial config from code (folds, ensembles) is checked when the trial starts
        TrialData(spec, prepare(spec)),
        search_settings(spec),
        Progress(quiet=True),
        tmp_path / "failing",
    )
    assert [(r["trial"], r["status"]) for r in rows] == [(0, "failed")]
    assert "lstm has no field 'model.hiden_size'" in rows[0]["error"] and rows[0]["curve"] == []

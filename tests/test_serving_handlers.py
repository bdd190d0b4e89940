"""The TorchServe handlers called in this process exactly as a worker calls them (TorchServe's own context
object)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.serving_fixtures import (
    expected_lstm,
    forcing_windows,
    iris_instances,
    iris_pipeline,
    lstm_network,
    lstm_series,
    lstm_statistics,
    make_run,
)

pytestmark = pytest.mark.unit


def body(instances) -> bytes:
    return json.dumps({"instances": instances}).encode()


def test_sklearn_handler_answers_like_the_pipeline_with_class_names(classical):
    pipeline, meta, data = iris_pipeline()
    rows = data.iloc[::10]
    [(status, answer)] = classical([body(iris_instances(rows))])
    assert status == 200
    assert (answer["model"], answer["version"]) == ("classical", "v1")
    assert answer["predictions"] == [meta["classes"][c] for c in pipeline.predict(rows)]
    probabilities = np.array([[p[name] for name in meta["classes"]] for p in answer["probabilities"]])
    np.testing.assert_allclose(probabilities, pipeline.predict_proba(rows), atol=1e-12)


def test_lstm_handler_standardises_with_saved_statistics_and_returns_raw_units(lstm, lstm_dir):
    instances = forcing_windows(3)
    [(status, answer)] = lstm([body(instances)])
    assert status == 200
    assert (answer["target"], answer["horizon"]) == ("QObs(mm/d)", 1)
    np.testing.assert_allclose(answer["predictions"], expected_lstm(lstm_dir, instances), rtol=1e-6)


def test_lstm_handler_undoes_the_target_transform_its_card_names(tmp_path):
    from mlkube.serving.handlers import InProcess
    from mlkube.trainer.card import TargetTransform
    from mlkube.trainer.lstm.model import save_lstm_model
    from mlkube.trainer.preprocess.bodies import LOG_OFFSET

    instances = forcing_windows(3, seed=8)
    answers = {}
    for kind, offset in (("log", LOG_OFFSET), ("log", 0.5), ("none", 0.0)):
        network, fields = lstm_network()
        transform = TargetTransform(kind=kind, offset=offset)
        fields["preprocessing"] = fields["preprocessing"].model_copy(update={"target_transform": transform})
        folder = tmp_path / f"{kind}-{offset}"
        save_lstm_model(folder, network, fields)
        [(status, answer)] = InProcess(folder)([body(instances)])
        assert status == 200, answer
        answers[kind, offset] = np.array(answer["predictions"])
    trained = answers["log", LOG_OFFSET]
    np.testing.assert_allclose(answers["log", 0.5], trained + LOG_OFFSET - 0.5, rtol=1e-12)
    np.testing.assert_allclose(np.exp(answers["none", 0.0]) - LOG_OFFSET, trained, rtol=1e-12)


def test_regressor_and_classifier_without_probabilities_answer_plain_predictions(tmp_path):
    from sklearn.datasets import load_diabetes, load_iris
    from sklearn.linear_model import Ridge
    from sklearn.svm import SVC  # a zoo model (SVM) without predict_proba

    from mlkube.serving.handlers import InProcess
    from mlkube.trainer.artifacts import save_sklearn_model

    diabetes, iris = load_diabetes(), load_iris()
    species = iris.target_names[iris.target]  # fitted on the labels themselves
    cases = {
        "regression": (Ridge().fit(diabetes.data, diabetes.target), diabetes),
        "classification": (SVC().fit(iris.data, species), iris),
    }
    for task, (model, data) in cases.items():
        features = list(data.feature_names)
        fields = {"name": task, "task": task, "features": features, "target": "y", "estimator": "any"}
        save_sklearn_model(tmp_path / task, model, fields)
        instance = dict(zip(features, data.data[0].tolist(), strict=True))
        [(status, answer)] = InProcess(tmp_path / task)([body([instance])])
        assert status == 200 and "probabilities" not in answer
        assert answer["predictions"] == model.predict(data.data[:1]).tolist()


def test_lstm_without_static_inputs_takes_only_dynamic_windows(tmp_path):
    from mlkube.serving.handlers import InProcess
    from mlkube.trainer.lstm.model import save_lstm_model

    network, fields = lstm_network(data=lstm_series(static=False))
    assert fields["architecture"].n_static == 0
    save_lstm_model(tmp_path, network, fields)
    handler = InProcess(tmp_path)
    [window] = forcing_windows(1)
    static = window.pop("static")
    [(status, answer)] = handler([body([window])])
    assert status == 200 and len(answer["predictions"]) == 1
    [(status, answer)] = handler([body([{**window, "static": static}])])
    assert status == 400 and "has unknown ['static']" in answer["error"]


@pytest.fixture
def sharded(run_path, monkeypatch):
    """The LSTM handler of a worker that may use 2 CPUs (torch's thread count restored afterwards)."""
    import torch

    from mlkube.serving.handlers import InProcess
    from mlkube.serving.handlers.base import WORKER_CPUS_ENV

    threads = torch.get_num_threads()
    monkeypatch.setenv(WORKER_CPUS_ENV, "2")
    try:
        yield InProcess(run_path / "models" / "lstm", version="v1")
    finally:
        torch.set_num_threads(threads)


def test_lstm_runs_a_batch_as_shards_on_the_workers_cpus_with_the_same_predictions(sharded, lstm_dir):
    import threading

    import torch

    handler = sharded.handler
    assert (handler.shards, torch.get_num_threads()) == (2, 1)  # one intra-op thread per shard
    threads = []
    [member] = handler.members  # one network: its own last_day runs on each shard
    model_last_day = member.last_day

    def recording(x):
        threads.append((threading.current_thread().name, len(x)))
        return model_last_day(x)

    member.last_day = recording
    instances = forcing_windows(5, seed=3)
    answers = sharded([body([instance]) for instance in instances])
    assert [status for status, _ in answers] == [200] * 5
    predictions = [a["predictions"][0] for _, a in answers]
    np.testing.assert_allclose(predictions, expected_lstm(lstm_dir, instances), rtol=1e-6)
    # 5 windows: one shard of 3 here, one of 2 on the pool's thread
    assert sorted(n for _, n in threads) == [2, 3]
    assert {name.startswith("mlkube-lstm-shard") for name, _ in threads} == {True, False}
    threads.clear()
    sharded([body(instances[:1])])
    assert [n for _, n in threads] == [1]  # a lone window is not split


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_worker_cpus_value_is_refused_at_load_naming_the_variable(run_path, monkeypatch, value):
    from mlkube.serving.handlers import InProcess
    from mlkube.serving.handlers.base import WORKER_CPUS_ENV
    from mlkube.trainer.errors import MlkubeError

    monkeypatch.setenv(WORKER_CPUS_ENV, value)
    with pytest.raises(MlkubeError, match=f"{WORKER_CPUS_ENV}='{value}' is not a whole number of CPUs"):
        InProcess(run_path / "models" / "lstm")


@pytest.fixture(scope="module")
def per_site(tmp_path_factory):
    """An LSTM with per-site statistics for the fixture's three sites, and those statistics."""
    from mlkube.serving.handlers import InProcess
    from mlkube.trainer.lstm.model import save_lstm_model

    stats = lstm_statistics(normalization="per_site")
    network, fields = lstm_network(stats=stats)
    folder = tmp_path_factory.mktemp("per_site")
    save_lstm_model(folder, network, fields)
    return InProcess(folder), folder, stats


def test_lstm_with_per_site_statistics_standardises_each_window_with_its_site(per_site):
    handler, folder, stats = per_site
    [window] = forcing_windows(1, seed=6)
    sites = list(lstm_series().sites)
    instances = [{**window, "site": site} for site in sites]
    [(status, answer)] = handler([body(instances)])
    assert status == 200, answer
    expected = expected_lstm(folder, instances, stats, sites=range(len(sites)))
    np.testing.assert_allclose(answer["predictions"], expected, rtol=1e-6)
    assert len(set(answer["predictions"])) == len(sites)  # the sites' statistics really differ
    assert handler.handler.fast_rows(body(instances)) is not None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda i: i.pop("site"), "lacks ['site']"),
        (
            lambda i: i.update(site="09999999"),
            "unknown site '09999999'; the model was trained on 3 site(s): s0, s1, s2",
        ),
        (lambda i: i.update(site=1013500), "expected a site id (a string), got number 1013500"),
    ],
)
def test_lstm_with_per_site_statistics_refuses_a_window_without_a_known_site(per_site, change, message):
    handler = per_site[0]
    [window] = forcing_windows(1, seed=7)
    window["site"] = "s0"
    change(window)
    assert handler.handler.fast_rows(body([window])) is None
    [(status, answer)] = handler([body([window])])
    assert status == 400 and message in answer["error"], answer


def test_a_model_trained_with_per_site_statistics_names_its_sites_and_each_site_gets_its_own(tmp_path):
    from mlkube.serving.handlers import InProcess
    from mlkube.trainer.lstm.model import artifact_meta, build_model, save_lstm_model
    from mlkube.trainer.preprocess import fit_statistics
    from mlkube.trainer.spec import LstmSpec, PreprocessSpec
    from tests.test_preprocess import make_data

    data = make_data()
    stats = fit_statistics(data, PreprocessSpec(normalization="per_site"))
    fields = artifact_meta(LstmSpec(sequence_length=20), data, stats, {"nse": 0.5})
    assert fields["preprocessing"].sites == list(data.sites)
    save_lstm_model(tmp_path, build_model(fields["architecture"]).eval(), fields)
    handler = InProcess(tmp_path)
    window = {
        "dynamic": {
            name: data.dynamic[2, :20, j].astype(float).tolist() for j, name in enumerate(data.dynamic_inputs)
        },
        "static": {name: float(data.static[2, j]) for j, name in enumerate(data.static_inputs)},
    }
    answers = handler([body([{**window, "site": site}]) for site in data.sites])
    assert [status for status, _ in answers] == [200] * len(data.sites)
    # one set of statistics each
    assert len({answer["predictions"][0] for _, answer in answers}) == len(data.sites)


def test_lstm_with_per_site_statistics_but_no_site_ids_is_refused_at_load_naming_the_fix(per_site, tmp_path):
    import shutil

    from mlkube.serving.handlers import InProcess
    from mlkube.trainer.errors import MlkubeError
    from mlkube.trainer.run import atomic_write_json, read_json

    folder = shutil.copytree(per_site[1], tmp_path / "lstm")
    card = read_json(folder / "model.json")
    del card["preprocessing"]["sites"]
    atomic_write_json(folder / "model.json", card)
    with pytest.raises(
        MlkubeError, match="preprocessing: normalization per_site needs `sites`(.|\n)*re-create"
    ):
        InProcess(folder)


def test_one_bad_request_in_a_batch_gets_400_and_the_others_their_predictions(lstm, lstm_dir):
    good, other = forcing_windows(1, seed=2), forcing_windows(2, seed=3)
    answers = lstm([body(good), b"{not json", body(other)])
    assert [status for status, _ in answers] == [200, 400, 200]
    assert "not valid JSON" in answers[1][1]["error"]
    np.testing.assert_allclose(answers[0][1]["predictions"], expected_lstm(lstm_dir, good), rtol=1e-6)
    np.testing.assert_allclose(answers[2][1]["predictions"], expected_lstm(lstm_dir, other), rtol=1e-6)


def _set(path: tuple, value):
    def change(instance):
        *parents, last = path
        target = instance
        for key in parents:
            target = target[key]
        target[last] = value

    return change


# One change to a valid window each, and what the 400 must say. The LSTM's fast path (simdjson) must hand
# every one of them to the checked path, which names the problem.
LSTM_BAD = {
    "short window": (lambda i: i["dynamic"]["prcp"].pop(), "sequence_length = 30 daily values, got 29"),
    "long window": (lambda i: i["dynamic"]["prcp"].append(1.0), "got 31"),
    "window not a list": (_set(("dynamic", "prcp"), 3.0), "got number"),
    "null in a window": (_set(("dynamic", "tmax", 3), None), "tmax[3]: expected a number, got null"),
    "boolean in a window": (_set(("dynamic", "tmax", 0), True), "tmax[0]: expected a number, got boolean"),
    "string in a window": (_set(("dynamic", "srad", 5), "1.5"), "srad[5]: expected a number, got string"),
    "NaN in a window": (_set(("dynamic", "prcp", 7), float("nan")), "NaN is not allowed"),
    "infinity in a window": (_set(("dynamic", "prcp", 7), float("inf")), "Infinity is not allowed"),
    "missing input": (lambda i: i["dynamic"].pop("tmax"), "lacks ['tmax']"),
    "unknown input": (_set(("dynamic", "snow"), [0.0] * 30), "has unknown ['snow']"),
    "missing static": (lambda i: i.pop("static"), "lacks ['static']"),
    "missing static attribute": (lambda i: i["static"].pop("area"), "lacks ['area']"),
    "unknown static attribute": (_set(("static", "slope"), 1.0), "has unknown ['slope']"),
    "string static attribute": (_set(("static", "area"), "big"), "expected a number, got string"),
    "unknown key in an instance": (_set(("site",), "01013500"), "has unknown ['site']"),
}


@pytest.mark.parametrize("case", LSTM_BAD)
def test_lstm_fast_path_hands_every_bad_window_to_the_checks_that_name_it(lstm, case):
    change, message = LSTM_BAD[case]
    [instance] = forcing_windows(1, seed=4)
    change(instance)
    raw = body([instance])
    assert lstm.handler.fast_rows(raw) is None
    [(status, answer)] = lstm([raw])
    assert status == 400 and message in answer["error"], answer


def _text(instance) -> str:
    return json.dumps({"instances": [instance]})


# Bodies json.dumps of a changed window cannot write, or that simdjson's arrays of doubles could misread.
LSTM_BAD_BODIES = {
    "window of one-value arrays": (
        lambda i: _text(_with(i, ("dynamic", "prcp"), [[v] for v in i["dynamic"]["prcp"]])),
        "prcp[0]: expected a number, got array",
    ),
    "one-value window": (lambda i: _text(_with(i, ("dynamic", "prcp"), [5.0])), "got 1 values"),
    "null static": (lambda i: _text(_with(i, ("static",), None)), "expected an object"),
    "boolean static attribute": (lambda i: _text(_with(i, ("static", "area"), False)), "got boolean"),
    "number beyond float range": (
        lambda i: _text(i).replace(str(i["dynamic"]["srad"][2]), "1e400", 1),
        "every value must be a finite number",
    ),
    "a name twice, one missing": (lambda i: _text(i).replace('"tmax"', '"prcp"'), "lacks ['tmax']"),
    "instances not a list": (lambda i: json.dumps({"instances": i}), "must be a non-empty list"),
    "no instances": (lambda i: json.dumps({"instances": []}), "must be a non-empty list"),
    "a second key in the body": (lambda i: _text(i)[:-1] + ', "x": [1]}', "unknown key(s) ['x']"),
    "trailing text": (lambda i: _text(i) + " x", "not valid JSON"),
}


def _with(instance: dict, path: tuple, value) -> dict:
    changed = json.loads(json.dumps(instance))
    _set(path, value)(changed)
    return changed


@pytest.mark.parametrize("case", LSTM_BAD_BODIES)
def test_lstm_fast_path_hands_every_odd_body_to_the_checks_that_name_it(lstm, case):
    make, message = LSTM_BAD_BODIES[case]
    [instance] = forcing_windows(1, seed=4)
    raw = make(instance).encode()
    assert lstm.handler.fast_rows(raw) is None
    [(status, answer)] = lstm([raw])
    assert status == 400 and message in answer["error"], answer


def test_lstm_fast_path_leaves_a_repeated_name_to_the_checked_path_which_keeps_the_last(lstm):
    [instance] = forcing_windows(1, seed=4)
    later = [v + 1 for v in instance["dynamic"]["prcp"]]
    dynamic = (
        json.dumps(instance["dynamic"])[:-1] + ', "prcp": ' + json.dumps(later) + "}"
    )  # prcp, tmax, srad, prcp
    raw = '{"instances": [{"dynamic": ' + dynamic + ', "static": ' + json.dumps(instance["static"]) + "}]}"
    assert raw.count('"prcp"') == 2 and lstm.handler.fast_rows(raw.encode()) is None
    [(status, answer)] = lstm([raw.encode()])
    assert status == 200
    assert (
        answer["predictions"]
        == lstm([body([_with(instance, ("dynamic", "prcp"), later)])])[0][1]["predictions"]
    )


def test_lstm_fast_path_reads_valid_windows_exactly_like_the_checked_path(lstm):
    instances = forcing_windows(4, seed=5)
    instances[1]["dynamic"]["prcp"] = [
        round(v) for v in instances[1]["dynamic"]["prcp"]
    ]  # integers are numbers
    instances[2] = {
        "static": instances[2]["static"],
        "dynamic": dict(reversed(instances[2]["dynamic"].items())),
    }
    raw = body(instances)
    fast = lstm.handler.fast_rows(raw)
    assert fast is not None
    np.testing.assert_array_equal(fast, lstm.handler.rows(json.loads(raw)["instances"]))


def test_a_batch_of_only_bad_requests_is_answered_without_calling_the_model(classical):
    answers = classical([b"[]", body([])])
    assert [status for status, _ in answers] == [400, 400]


def test_handler_refuses_weights_that_fail_the_integrity_check(tmp_path):
    from mlkube.serving.handlers import InProcess
    from mlkube.trainer.errors import MlkubeError

    folder = make_run(tmp_path) / "models" / "lstm"
    weights = folder / "model.pt"
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(MlkubeError, match="integrity check failed"):
        InProcess(folder)


def test_example_requests_are_valid_for_their_model(classical, lstm, per_site):
    from mlkube.serving.handlers import handler_for

    for model in (classical, lstm, per_site[0]):
        card = model.handler.card
        [(status, answer)] = model([json.dumps(handler_for(card.framework)[1].example(card)).encode()])
        assert status == 200 and len(answer["predictions"]) == 1


def _lstm_with(change) -> bytes:
    [instance] = forcing_windows(1, seed=5)
    change(instance)
    return body([instance])


LSTM_ATTACKS = {
    "2 KB of nested brackets": (
        b'{"instances": [' + b"[" * 1100 + b"]" * 1100 + b"]}",
        "nests JSON too deeply",
    ),
    "nested brackets in a window": (
        _lstm_with(lambda i: i["dynamic"]["prcp"].__setitem__(0, json.loads("[" * 900 + "]" * 900))),
        "expected a number, got array",
    ),
    "2^70 in a window": (
        _lstm_with(lambda i: i["dynamic"]["prcp"].__setitem__(2, 2**70)),
        "prcp[2]: the integer 1180591620717411303424 does not fit in 64 bits",
    ),
    "-2^70 as a static attribute": (
        _lstm_with(lambda i: i["static"].__setitem__("area", -(2**70))),
        "static.area: the integer -1180591620717411303424 does not fit in 64 bits",
    ),
    "1e308 in a window (inf inside the model)": (
        _lstm_with(lambda i: i["dynamic"]["tmax"].__setitem__(0, 1e308)),
        "instance 0.dynamic.tmax[0]: 1e+308 is outside what the model can take",
    ),
    "-1e308 as a static attribute": (
        _lstm_with(lambda i: i["static"].__setitem__("elev_mean", -1e308)),
        "instance 0.static.elev_mean: -1e+308 is outside what the model can take",
    ),
    "1e6 mm/day of rain (finite, but a saturated network would answer it)": (
        _lstm_with(lambda i: i["dynamic"]["prcp"].__setitem__(5, 1e6)),
        "instance 0.dynamic.prcp[5]: 1e+06 is outside what the model can take: more than 1000 standard "
        "deviations from the training data's mean",
    ),
}


@pytest.mark.parametrize("attack", LSTM_ATTACKS)
def test_an_lstm_request_the_fast_path_cannot_take_gets_400_and_its_batch_mates_their_answers(
    lstm, lstm_dir, attack
):
    bad, message = LSTM_ATTACKS[attack]
    good = forcing_windows(3, seed=6)
    answers = lstm([body(good[:1]), bad, body(good[1:])])
    assert [status for status, _ in answers] == [200, 400, 200]
    assert message in answers[1][1]["error"]
    predicted = answers[0][1]["predictions"] + answers[2][1]["predictions"]
    np.testing.assert_allclose(predicted, expected_lstm(lstm_dir, good), atol=1e-6)


SKLEARN_ATTACKS = {
    "1e308 (inf after scaling)": (1e308, "instance 0: the model's answer is not a finite number"),
    "-1e200 (finite all through)": (-1e200, ""),  # a finite, if absurd, answer: no NaN in it
    "2^70": (2**70, "does not fit in 64 bits"),
}


@pytest.mark.parametrize("attack", SKLEARN_ATTACKS)
def test_a_tabular_request_outside_what_the_model_takes_never_gets_nan_and_spoils_no_batch(classical, attack):
    value, message = SKLEARN_ATTACKS[attack]
    row = {
        "sepal length (cm)": 5.9,
        "sepal width (cm)": 3.0,
        "petal length (cm)": 5.1,
        "petal width (cm)": 1.8,
    }
    good = body([row])
    answers = classical([good, body([{**row, "petal width (cm)": value}]), good])
    alone = classical([good])[0]
    for status, answer in (answers[0], answers[2]):
        assert (status, answer["predictions"], set(answer)) == (
            alone[0],
            alone[1]["predictions"],
            set(alone[1]),
        )
        # a batch's BLAS path may differ from a lone row's in the last bit (seen on some CPUs)
        [probabilities], [expected] = answer["probabilities"], alone[1]["probabilities"]
        assert probabilities == pytest.approx(expected, rel=1e-12, abs=1e-300)
    status, answer = answers[1]
    assert (status, answer.get("error", "")) == ((400, answer.get("error")) if message else (200, ""))
    assert message in answer.get("error", "")


def test_no_answer_holds_nan_or_infinity(classical, lstm):
    """Every answer of both handlers parses as strict JSON (NaN refused), whatever the inputs' size."""
    row = {
        "sepal length (cm)": 5.9,
        "sepal width (cm)": 3.0,
        "petal length (cm)": 5.1,
        "petal width (cm)": 1.8,
    }
    tabular = [body([{**row, "sepal width (cm)": v}]) for v in (1e308, -1e308, 1e300, 1e154, 1e-308)]
    windows = [
        _lstm_with(lambda i, v=v: i["dynamic"]["srad"].__setitem__(-1, v)) for v in (1e308, 1e38, 1e30)
    ]
    for handler, bodies in ((classical, tabular), (lstm, windows)):
        statuses = [status for status, _ in handler(bodies)]  # InProcess parses the answers strictly
        assert set(statuses) <= {200, 400} and 400 in statuses


def test_lstm_inputs_within_a_thousand_spreads_of_the_training_mean_are_answered_beyond_refused(
    lstm, lstm_dir
):
    """The range check takes the card's statistics: 999 spreads from the mean is answered (a finite number),
    1001 is refused in both protocols, naming the input, the day and the training data's mean and spread."""
    from mlkube.trainer.artifacts import read_model_card

    p = read_model_card(lstm_dir).preprocessing
    mean, std = p.dynamic_mean[0], p.dynamic_std[0]  # the first dynamic input, global statistics
    name = p.dynamic_inputs[0]
    near, far = (
        _lstm_with(lambda i, k=k: i["dynamic"][name].__setitem__(3, mean + k * std)) for k in (999, 1001)
    )
    (near_status, _), (far_status, far_answer) = lstm([near, far])
    assert (near_status, far_status) == (200, 400)
    assert f"instance 0.dynamic.{name}[3]:" in far_answer["error"]
    assert f"({mean:.4g} ± {std:.4g})" in far_answer["error"]


# ------------------------------------------------------------------ raw columns: strings, booleans, ISO dates
@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """The typed-table model (categorical, boolean and date columns; unknown categories refused) in-process,
    with its pipeline and data."""
    from mlkube.serving.handlers import InProcess
    from tests.serving_fixtures import tables_model

    folder = tmp_path_factory.mktemp("tables")
    pipeline, data = tables_model(folder / "model", folder)
    return InProcess(folder / "model", version="v1"), pipeline, data


def _instances(data, rows) -> list[dict]:
    from mlkube.trainer.columns import json_value

    return [
        {name: json_value(data.X[name].iloc[i], kind) for name, kind in data.column_types.items()}
        for i in rows
    ]


def test_a_typed_table_model_takes_raw_strings_booleans_and_iso_dates_like_its_pipeline(tables):
    model, pipeline, data = tables
    instances = _instances(data, range(0, 90, 7))
    assert {type(v) for v in instances[0].values()} == {float, str, bool}
    [(status, answer)] = model([body(instances)])
    assert status == 200, answer
    expected = pipeline.predict(data.X.iloc[list(range(0, 90, 7))])
    assert answer["predictions"] == [data.class_names[c] for c in expected]


def test_the_card_lists_every_column_with_its_type_and_categories_and_a_real_example_row(tables):
    from mlkube.serving.handlers.sklearn_handler import SklearnHandler

    model, _, data = tables
    card = model.handler.card
    assert [(c.name, c.type) for c in card.columns] == list(data.column_types.items())
    assert next(c for c in card.columns if c.name == "colour").categories == ["blue", "green", "red"]
    example = SklearnHandler.example(card)["instances"][0]
    assert example in _instances(data, range(data.n_rows)) and example["colour"] in ("red", "blue", "green")
    [(status, answer)] = model([body([example])])
    assert status == 200 and len(answer["predictions"]) == 1


TYPED_BAD = {
    "unknown category": (
        {"colour": "purple"},
        "feature 'colour': string \"purple\" is not allowed; it takes a string, one of "
        "['blue', 'green', 'red']",
    ),
    "number for a category": (
        {"colour": 1.5},
        "feature 'colour': number 1.5 is not allowed; it takes a string",
    ),
    "not a date": (
        {"joined": "01/02/2024"},
        "feature 'joined': string \"01/02/2024\" is not allowed; it takes an ISO",
    ),
    "number for a date": ({"joined": 20240102}, "feature 'joined': number 20240102 is not allowed"),
    "text for a boolean": (
        {"member": "maybe"},
        "feature 'member': string \"maybe\" is not allowed; it takes true",
    ),
    "text for a number": ({"size": "9,5"}, "feature 'size': expected a number, got string"),
}


@pytest.mark.parametrize("case", TYPED_BAD)
def test_a_value_a_column_cannot_take_gets_400_naming_the_column_and_what_it_accepts(tables, case):
    model, _, data = tables
    change, message = TYPED_BAD[case]
    good = _instances(data, [0])[0]
    [(status, answer), (ok, _)] = model([body([{**good, **change}]), body([good])])
    assert (status, ok) == (400, 200)
    assert message in answer["error"], answer["error"]


def test_an_oip_request_takes_bytes_for_categories_and_dates(tables):
    model, pipeline, data = tables
    rows = _instances(data, range(5))
    datatypes = {"numeric": "FP64", "boolean": "FP64", "categorical": "BYTES", "date": "BYTES"}
    inputs = [
        {
            "name": name,
            "shape": [5],
            "datatype": datatypes[kind],
            "data": [float(r[name]) if kind == "boolean" else r[name] for r in rows],
        }
        for name, kind in data.column_types.items()
    ]
    [(status, answer)] = model([json.dumps({"inputs": inputs}).encode()])
    assert status == 200, answer
    expected = [data.class_names[c] for c in pipeline.predict(data.X.iloc[:5])]
    assert answer["outputs"][0]["data"] == expected
    inputs[1] = {**inputs[1], "datatype": "FP64", "data": [1.0] * 5}
    [(status, answer)] = model([json.dumps({"inputs": inputs}).encode()])
    assert status == 400 and "input 'colour': datatype FP64 is not allowed; it takes BYTES" in answer["error"]

"""The TorchServe handlers called in this process exactly as a worker calls them (TorchServe's own context object)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.serving_fixtures import expected_lstm, forcing_windows, iris_instances, iris_pipeline, make_run

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def classical(run_path):
    from serving.handlers import InProcess

    return InProcess(run_path / "models" / "classical", version="v1")


@pytest.fixture(scope="module")
def lstm(run_path):
    from serving.handlers import InProcess

    return InProcess(run_path / "models" / "lstm", version="v1")


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


def test_lstm_handler_standardises_with_saved_statistics_and_returns_raw_units(lstm):
    instances = forcing_windows(3)
    [(status, answer)] = lstm([body(instances)])
    assert status == 200
    assert (answer["target"], answer["horizon"]) == ("QObs(mm/d)", 1)
    np.testing.assert_allclose(answer["predictions"], expected_lstm(instances), rtol=1e-6)


def test_regressor_and_classifier_without_probabilities_answer_plain_predictions(tmp_path):
    from sklearn.datasets import load_diabetes, load_iris
    from sklearn.linear_model import Ridge
    from sklearn.svm import LinearSVC

    from serving.handlers import InProcess
    from trainer.artifacts import save_sklearn_model

    diabetes, iris = load_diabetes(), load_iris()
    species = iris.target_names[iris.target]  # fitted on the labels themselves
    cases = {"regression": (Ridge().fit(diabetes.data, diabetes.target), diabetes),
             "classification": (LinearSVC().fit(iris.data, species), iris)}
    for task, (model, data) in cases.items():
        features = list(data.feature_names)
        save_sklearn_model(tmp_path / task, model, {"name": task, "task": task, "features": features, "target": "y"})
        [(status, answer)] = InProcess(tmp_path / task)([body([dict(zip(features, data.data[0].tolist()))])])
        assert status == 200 and "probabilities" not in answer
        assert answer["predictions"] == model.predict(data.data[:1]).tolist()


def test_lstm_without_static_inputs_takes_only_dynamic_windows(tmp_path):
    from serving.handlers import InProcess
    from tests.serving_fixtures import lstm_network
    from trainer.lstm.model import build_model, save_lstm_model

    _, meta = lstm_network()
    meta["architecture"]["n_static"] = 0
    meta["preprocessing"].update(static_inputs=[], static_mean=[], static_std=[])
    save_lstm_model(tmp_path, build_model(meta["architecture"]), meta)
    handler = InProcess(tmp_path)
    [window] = forcing_windows(1)
    static = window.pop("static")
    [(status, answer)] = handler([body([window])])
    assert status == 200 and len(answer["predictions"]) == 1
    [(status, answer)] = handler([body([{**window, "static": static}])])
    assert status == 400 and "has unknown ['static']" in answer["error"]


def test_lstm_with_per_site_statistics_is_refused_at_load_naming_the_fix(tmp_path):
    from serving.handlers import InProcess
    from tests.serving_fixtures import lstm_network
    from trainer.errors import MlkubeError
    from trainer.lstm.model import save_lstm_model

    network, meta = lstm_network()
    meta["preprocessing"]["normalization"] = "per_site"
    save_lstm_model(tmp_path, network, meta)
    with pytest.raises(MlkubeError, match="per_site normalization(.|\n)*preprocess.normalization: global"):
        InProcess(tmp_path)


def test_one_bad_request_in_a_batch_gets_400_and_the_others_their_predictions(lstm):
    good, other = forcing_windows(1, seed=2), forcing_windows(2, seed=3)
    answers = lstm([body(good), b"{not json", body(other)])
    assert [status for status, _ in answers] == [200, 400, 200]
    assert "not valid JSON" in answers[1][1]["error"]
    np.testing.assert_allclose(answers[0][1]["predictions"], expected_lstm(good), rtol=1e-6)
    np.testing.assert_allclose(answers[2][1]["predictions"], expected_lstm(other), rtol=1e-6)


def test_a_batch_of_only_bad_requests_is_answered_without_calling_the_model(classical):
    answers = classical([b"[]", body([])])
    assert [status for status, _ in answers] == [400, 400]


def test_handler_refuses_weights_that_fail_the_integrity_check(tmp_path):
    from serving.handlers import InProcess
    from trainer.errors import MlkubeError

    folder = make_run(tmp_path) / "models" / "lstm"
    weights = folder / "model.pt"
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(MlkubeError, match="integrity check failed"):
        InProcess(folder)


def test_example_requests_are_valid_for_their_model(run_path, classical, lstm):
    from serving.handlers import handler_for
    from trainer.artifacts import read_model_json

    for name, model in (("classical", classical), ("lstm", lstm)):
        meta = read_model_json(run_path / "models" / name)
        [(status, answer)] = model([json.dumps(handler_for(meta["framework"])[1].example(meta)).encode()])
        assert status == 200 and len(answer["predictions"]) == 1

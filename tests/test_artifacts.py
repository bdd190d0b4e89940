"""The model artifact contract: the typed card (model.json) round-trips and refuses what does not fit it;
skops weights with a SHA-256 in the card, same model → same bytes, trusted types."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlkube.trainer.artifacts import load_sklearn_model, read_model_card, save_sklearn_model
from mlkube.trainer.classical.trust import trusted_skops_types
from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.run import atomic_write_json, read_json

pytestmark = pytest.mark.unit
META = {
    "name": "classical",
    "task": "classification",
    "features": ["a", "b", "c", "d"],
    "target": "species",
    "estimator": "RF",
}


class Doubler(BaseEstimator, TransformerMixin):
    """A user-defined step: not a type the loader trusts."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return 2 * X


def _fitted(*steps):
    X, y = load_iris(return_X_y=True)
    return make_pipeline(*steps, RandomForestClassifier(n_estimators=4, random_state=0)).fit(X, y), X


def test_the_same_fitted_pipeline_gives_the_same_bytes_and_predictions(tmp_path):
    digests = []
    for name in ("a", "b"):
        pipeline, X = _fitted(StandardScaler())
        save_sklearn_model(tmp_path / name, pipeline, META)
        model, meta = load_sklearn_model(tmp_path / name, trusted_skops_types())
        np.testing.assert_array_equal(model.predict_proba(X), pipeline.predict_proba(X))
        digests.append(meta.sha256)
    assert digests[0] == digests[1]
    assert (tmp_path / "a" / "model.skops").read_bytes() == (tmp_path / "b" / "model.skops").read_bytes()


def test_changed_weights_fail_the_integrity_check(tmp_path):
    pipeline, _ = _fitted(StandardScaler())
    save_sklearn_model(tmp_path, pipeline, META)
    weights = tmp_path / "model.skops"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(MlkubeError, match="integrity check failed"):
        load_sklearn_model(tmp_path, trusted_skops_types())


def test_types_outside_sklearn_numpy_scipy_are_refused(tmp_path):
    pipeline, _ = _fitted(Doubler())
    save_sklearn_model(tmp_path, pipeline, META)
    with pytest.raises(MlkubeError, match="Doubler"):
        load_sklearn_model(tmp_path, trusted_skops_types())


@pytest.fixture
def lstm_folder(tmp_path):
    from mlkube.trainer.lstm.model import save_lstm_model
    from tests.serving_fixtures import lstm_network

    network, fields = lstm_network()
    save_lstm_model(tmp_path, network, fields)
    return tmp_path


def test_cards_read_back_as_the_typed_cards_training_wrote(tmp_path, lstm_folder):
    from mlkube.trainer.card import LstmCard, SklearnCard
    from mlkube.trainer.lstm.model import load_lstm_model
    from mlkube.trainer.preprocess.bodies import LOG_OFFSET

    pipeline, _ = _fitted(StandardScaler())
    written = save_sklearn_model(tmp_path / "classical", pipeline, META)
    assert read_model_card(tmp_path / "classical") == written and isinstance(written, SklearnCard)
    _, card = load_lstm_model(lstm_folder)
    assert isinstance(card, LstmCard) and card == LstmCard.model_validate(
        read_json(lstm_folder / "model.json")
    )
    transform = card.preprocessing.target_transform
    assert (transform.kind, transform.offset) == ("log", LOG_OFFSET)  # the training kernels' offset


def _edit_card(folder, change) -> None:
    card = read_json(folder / "model.json")
    change(card)
    atomic_write_json(folder / "model.json", card)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["preprocessing"].pop("horizon"), "preprocessing.horizon is missing"),
        (lambda c: c["architecture"].update(hidden_size="big"), "architecture.hidden_size: Input should be"),
        (lambda c: c["preprocessing"]["target_transform"].update(kind="sqrt"), "target_transform.kind"),
        (lambda c: c["preprocessing"].update(log_target=True), "preprocessing.log_target is not a field"),
        (lambda c: c["preprocessing"]["dynamic_mean"].pop(), "dynamic_mean has shape (2,), expected (3,)"),
        (lambda c: c.update(weights="../model.pt"), "weights: String should match pattern"),
        (lambda c: c.update(framework="onnx"), "framework 'onnx' is not one of ['sklearn', 'torch']"),
    ],
)
def test_a_card_that_does_not_fit_is_refused_naming_the_file_and_the_field(lstm_folder, change, message):
    _edit_card(lstm_folder, change)
    with pytest.raises(MlkubeError) as refused:
        read_model_card(lstm_folder)
    assert str(lstm_folder / "model.json") in str(refused.value) and message in str(refused.value)
    assert "re-create the model" in str(refused.value)


def test_a_folder_without_a_card_is_refused_naming_it(tmp_path):
    with pytest.raises(MlkubeError, match="no model.json in"):
        read_model_card(tmp_path)

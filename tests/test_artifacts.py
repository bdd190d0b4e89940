"""The model artifact contract: skops weights with a SHA-256 in model.json, same model → same bytes, trusted types."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlkube.trainer.artifacts import load_sklearn_model, save_sklearn_model
from mlkube.trainer.errors import MlkubeError

pytestmark = pytest.mark.unit
META = {"name": "classical", "task": "classification", "features": ["a", "b", "c", "d"], "target": "species"}


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
        model, meta = load_sklearn_model(tmp_path / name)
        np.testing.assert_array_equal(model.predict_proba(X), pipeline.predict_proba(X))
        digests.append(meta["sha256"])
    assert digests[0] == digests[1]
    assert (tmp_path / "a" / "model.skops").read_bytes() == (tmp_path / "b" / "model.skops").read_bytes()


def test_changed_weights_fail_the_integrity_check(tmp_path):
    pipeline, _ = _fitted(StandardScaler())
    save_sklearn_model(tmp_path, pipeline, META)
    weights = tmp_path / "model.skops"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(MlkubeError, match="integrity check failed"):
        load_sklearn_model(tmp_path)


def test_types_outside_sklearn_numpy_scipy_are_refused(tmp_path):
    pipeline, _ = _fitted(Doubler())
    save_sklearn_model(tmp_path, pipeline, META)
    with pytest.raises(MlkubeError, match="Doubler"):
        load_sklearn_model(tmp_path)

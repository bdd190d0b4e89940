"""TorchServe handler for a scikit-learn pipeline (`models/classical/`), loaded with skops, trusted types
only.

Request:  {"instances": [{"<feature>": <number>, ...}, ...]}  every feature of the card's `features`, by name
Response: {"model": "classical", "version": "<run id>", "predictions": [<label or number>, ...],
           "probabilities": [{"<label>": <p>, ...}, ...]}
          (probabilities: classifiers that have predict_proba)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlkube.serving.handlers.base import ModelHandler, check_names, number
from mlkube.trainer.card import SklearnCard


class SklearnHandler(ModelHandler):
    """One row per instance, features in the card's order; `predict` and, for classifiers, `predict_proba`."""

    def load(self, model_dir: Path) -> tuple[Any, SklearnCard]:
        from mlkube.trainer.artifacts import load_sklearn_model
        from mlkube.trainer.classical.trust import trusted_skops_types

        pipeline, card = load_sklearn_model(model_dir, trusted_skops_types())
        self.features = list(card.features)
        self.labels = class_labels(pipeline, card)
        self.probabilities = card.task == "classification" and hasattr(pipeline, "predict_proba")
        # A pipeline fitted on a DataFrame expects its column names back.
        self.named = hasattr(pipeline, "feature_names_in_")
        return pipeline, card

    def rows(self, instances: list[Any]) -> Any:
        import numpy as np

        table = np.empty((len(instances), len(self.features)))
        for i, instance in enumerate(instances):
            check_names(instance, self.features, f"instance {i}")
            table[i] = [number(instance[f], f"instance {i}, feature {f!r}") for f in self.features]
        return table

    def predict(self, batch: Any) -> list[dict[str, Any]]:
        import pandas as pd

        X = pd.DataFrame(batch, columns=self.features) if self.named else batch
        predicted = self.model.predict(X).tolist()
        if self.labels is None:
            return [{"prediction": value} for value in predicted]
        rows = [{"prediction": self.labels[value]} for value in predicted]
        if self.probabilities:
            names = [self.labels[c] for c in self.model.classes_.tolist()]
            for row, p in zip(rows, self.model.predict_proba(X).tolist(), strict=False):
                row["probabilities"] = dict(zip(names, p, strict=False))
        return rows

    def answer(self, outputs: list[dict[str, Any]]) -> dict[str, Any]:
        fields = {"predictions": [row["prediction"] for row in outputs]}
        if self.probabilities:
            fields["probabilities"] = [row["probabilities"] for row in outputs]
        return fields

    @staticmethod
    def example(card: SklearnCard) -> dict[str, Any]:
        return {"instances": [{name: 0.0 for name in card.features}]}


def class_labels(pipeline: Any, card: SklearnCard) -> dict[Any, Any] | None:
    """Class value → label for classifiers (the card's `classes` name the codes 0..k-1), None for
    regressors."""
    if card.task != "classification":
        return None
    classes = pipeline.classes_.tolist()
    names = card.classes
    if names and len(names) == len(classes) and classes == list(range(len(classes))):
        return dict(zip(classes, names, strict=False))
    return {c: c for c in classes}

"""TorchServe handler for a scikit-learn pipeline (`models/classical/`), loaded with skops, trusted types
only.

Request:  {"instances": [{"<feature>": <number>, ...}, ...]}  every feature of the card's `features`, by name
Response: {"model": "classical", "version": "<run id>", "predictions": [<label or number>, ...],
           "probabilities": [{"<label>": <p>, ...}, ...]}
          (probabilities: classifiers that have predict_proba)

Open Inference Protocol: one input per feature, named as the card's `features`, shape [n], a number
datatype; or one tensor "features" of shape [n, <number of features>], the columns in the card's order.
Outputs: the card's `target` (shape [n]: labels as BYTES, or numbers) and, for classifiers with
predict_proba, "probabilities" (FP64, shape [n, classes], its `parameters.classes` naming the columns).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlkube.serving.handlers.base import ModelHandler, TensorSpec, check_names, check_tensors, number
from mlkube.trainer.card import SklearnCard

# The Open Inference Protocol's one-tensor form: all features as the columns of [n, features].
TABLE = "features"
PROBABILITIES = "probabilities"


class SklearnHandler(ModelHandler):
    """One row per instance, features in the card's order; `predict` and, for classifiers, `predict_proba`."""

    platform = "sklearn_skops"

    def load(self, model_dir: Path) -> tuple[Any, SklearnCard]:
        from mlkube.trainer.artifacts import load_sklearn_model
        from mlkube.trainer.classical.trust import trusted_skops_types

        pipeline, card = load_sklearn_model(model_dir, trusted_skops_types())
        self.features = list(card.features)
        self.labels = class_labels(pipeline, card)
        self.probabilities = card.task == "classification" and hasattr(pipeline, "predict_proba")
        # A pipeline fitted on a DataFrame expects its column names back.
        self.named = hasattr(pipeline, "feature_names_in_")
        # the Open Inference Protocol's tensors
        self.columns = [TensorSpec(f, "FP64", (-1,), "one value per instance") for f in self.features]
        self.table = TensorSpec(
            TABLE, "FP64", (-1, len(self.features)), f"one row per instance, the features {self.features}"
        )
        self.class_names = (
            [self.labels[c] for c in pipeline.classes_.tolist()] if self.labels is not None else []
        )
        predictions = TensorSpec(
            card.target, _datatype(list(self.labels.values())) if self.labels else "FP64", (-1,)
        )
        self.outputs = [predictions] + (
            [TensorSpec(PROBABILITIES, "FP64", (-1, len(self.class_names)))] if self.probabilities else []
        )
        return pipeline, card

    def rows(self, instances: list[Any]) -> Any:
        import numpy as np

        table = np.empty((len(instances), len(self.features)))
        for i, instance in enumerate(instances):
            check_names(instance, self.features, f"instance {i}")
            table[i] = [number(instance[f], f"instance {i}, feature {f!r}") for f in self.features]
        return table

    def oip_inputs(self) -> list[TensorSpec]:
        return self.columns

    def oip_outputs(self) -> list[TensorSpec]:
        return self.outputs

    def oip_rows(self, inputs: dict[str, dict[str, Any]]) -> Any:
        import numpy as np

        shape = inputs.get(TABLE, {}).get("shape")
        if len(inputs) == 1 and isinstance(shape, list) and len(shape) == 2:
            return check_tensors(inputs, [self.table], self._takes())[0][TABLE]
        values, _ = check_tensors(inputs, self.columns, self._takes())
        return np.column_stack([values[f] for f in self.features])

    def _takes(self) -> str:
        return (
            f"one input per feature, each [n]: {self.features}, or one input {self.table.describe()} "
            "(n: the instances)"
        )

    def oip_answer(self, outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        n = len(outputs)
        predictions, *probabilities = self.outputs
        tensors: list[dict[str, Any]] = [
            {
                "name": predictions.name,
                "datatype": predictions.datatype,
                "shape": [n],
                "data": [row["prediction"] for row in outputs],
            }
        ]
        if probabilities:
            tensors.append(
                {
                    "name": PROBABILITIES,
                    "datatype": "FP64",
                    "shape": [n, len(self.class_names)],
                    "data": [row["probabilities"][c] for row in outputs for c in self.class_names],
                    "parameters": {"classes": json.dumps(self.class_names)},
                }
            )
        return tensors

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


def _datatype(labels: list[Any]) -> str:
    """The Open Inference Protocol datatype of class labels: BYTES for names, else BOOL, INT64 or FP64."""
    kinds = set(map(type, labels))
    for datatype, allowed in (("BYTES", {str}), ("BOOL", {bool}), ("INT64", {int})):
        if kinds <= allowed:
            return datatype
    return "FP64"

"""TorchServe handler for a scikit-learn pipeline (`models/classical/`), loaded with skops, trusted types
only.

Request:  {"instances": [{"<feature>": <value>, ...}, ...]}  every feature of the card's `features`, by name;
          the value as the card's `columns` type it: numeric a number, categorical a string (one of its
          `categories` where the card's unknown_categories is error), boolean true/false, date an ISO 8601
          string
Response: {"model": "classical", "version": "<run id>", "predictions": [<label or number>, ...],
           "probabilities": [{"<label>": <p>, ...}, ...]}
          (probabilities: classifiers that have predict_proba)

Open Inference Protocol: one input per feature, named as the card's `features`, shape [n], a number
datatype (BYTES for categorical and date columns; a boolean column takes the numbers 0/1); or, when every
feature is numeric, one tensor "features" of shape [n, <number of features>], the columns in the card's
order.
Outputs: the card's `target` (shape [n]: labels as BYTES, or numbers) and, for classifiers with
predict_proba, "probabilities" (FP64, shape [n, classes], its `parameters.classes` naming the columns).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from mlkube.serving.handlers.base import (
    ModelHandler,
    RequestError,
    TensorSpec,
    _excerpt,
    check_names,
    check_tensors,
    json_type,
    number,
)
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
        self.types = card.column_types()
        self.typed = any(kind != "numeric" for kind in self.types.values())
        self.categories = {c.name: c.categories or [] for c in card.columns if c.type == "categorical"}
        self.refuse_unknown = card.unknown_categories == "error"
        self.labels = class_labels(pipeline, card)
        self.probabilities = card.task == "classification" and hasattr(pipeline, "predict_proba")
        # A pipeline fitted on a DataFrame expects its column names back.
        self.named = hasattr(pipeline, "feature_names_in_")
        # the Open Inference Protocol's tensors
        self.columns = [
            TensorSpec(f, OIP_DATATYPES[self.types[f]], (-1,), f"one {self._accepts(f)} per instance")
            for f in self.features
        ]
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
        """[instances, features]: floats, or for a typed table objects (numbers, strings, timestamps)."""
        import numpy as np

        table = np.empty((len(instances), len(self.features)), dtype=object if self.typed else float)
        for i, instance in enumerate(instances):
            check_names(instance, self.features, f"instance {i}")
            table[i] = [self.value(instance[f], f, f"instance {i}, feature {f!r}") for f in self.features]
        return table

    def value(self, value: Any, feature: str, where: str) -> Any:
        """One feature's value as the pipeline takes it, or RequestError naming the column and what it
        accepts."""
        kind = self.types[feature]
        if kind == "numeric":
            return number(value, where)
        if kind == "boolean":
            if isinstance(value, bool) or value in (0, 1):
                return float(value)
        elif kind == "date":
            if isinstance(value, str):
                with contextlib.suppress(ValueError):
                    return _timestamp(value)
        elif isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            category = str(value)
            if not self.refuse_unknown or category in self.categories[feature]:
                return category
        raise RequestError(
            f"{where}: {json_type(value)} {_excerpt(value)} is not allowed; {self._accepts(feature)}"
        )

    def _accepts(self, feature: str) -> str:
        """What a column accepts, for messages and the protocol's tensor descriptions."""
        kind = self.types[feature]
        if kind == "categorical":
            known = self.categories[feature]
            shown = f"{known[:20]}{' …' if len(known) > 20 else ''}"
            return (
                f"it takes a string, one of {shown}"
                if self.refuse_unknown
                else f"it takes a string, e.g. one of {shown}"
            )
        return ACCEPTS[kind]

    def oip_inputs(self) -> list[TensorSpec]:
        return self.columns

    def oip_outputs(self) -> list[TensorSpec]:
        return self.outputs

    def oip_rows(self, inputs: dict[str, dict[str, Any]]) -> Any:
        import numpy as np

        shape = inputs.get(TABLE, {}).get("shape")
        if not self.typed and len(inputs) == 1 and isinstance(shape, list) and len(shape) == 2:
            return check_tensors(inputs, [self.table], self._takes())[0][TABLE]
        values, _ = check_tensors(inputs, self.columns, self._takes())
        if not self.typed:
            return np.column_stack([values[f] for f in self.features])
        columns = [
            [self.value(_plain(v), f, f"input {f!r}[{i}]") for i, v in enumerate(values[f])]
            for f in self.features
        ]
        return np.array(list(zip(*columns, strict=True)), dtype=object)

    def _takes(self) -> str:
        each = f"one input per feature, each [n]: {self.features}"
        if self.typed:
            return f"{each} (n: the instances)"
        return f"{each}, or one input {self.table.describe()} (n: the instances)"

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

    def frame(self, batch: Any) -> Any:
        """The stacked rows as the pipeline was fitted on them: a DataFrame with the columns' dtypes (typed
        tables, or a pipeline fitted on a DataFrame), else the array itself."""
        import pandas as pd

        if not (self.named or self.typed):
            return batch
        X = pd.DataFrame(batch, columns=self.features)
        for name, kind in self.types.items():
            if kind == "date":
                X[name] = pd.to_datetime(X[name])
            elif kind != "categorical":
                X[name] = X[name].astype(float)
        return X

    def predict(self, batch: Any) -> list[dict[str, Any]]:
        X = self.frame(batch)
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
        """A real row of the data (the card's `example`); zeros for a card without one."""
        return {"instances": [card.example or dict.fromkeys(card.features, 0.0)]}


# column type → the Open Inference Protocol datatype of its input, and what it accepts (categorical: its own)
OIP_DATATYPES = {"numeric": "FP64", "boolean": "FP64", "categorical": "BYTES", "date": "BYTES"}
ACCEPTS = {
    "numeric": "it takes a finite number",
    "boolean": "it takes true or false (or 1/0)",
    "date": "it takes an ISO 8601 date string, e.g. 2024-03-01 or 2024-03-01T12:30",
}


def _timestamp(text: str) -> Any:
    """An ISO 8601 date or date-time string as a pandas Timestamp (timezone dropped), or ValueError."""
    import datetime as dt

    import pandas as pd

    parsed = dt.datetime.fromisoformat(text)
    return pd.Timestamp(parsed.replace(tzinfo=None))


def _plain(value: Any) -> Any:
    """A tensor value as JSON would give it (NumPy numbers as Python's)."""
    return value.item() if hasattr(value, "item") else value


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

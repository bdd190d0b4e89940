"""What both TorchServe handlers share: strict JSON parsing, one 4xx answer per bad request, one model call
per batch, and the custom metrics.

TorchServe hands `handle` a batch: one entry per HTTP request (dynamic batching puts several together).
Each request is parsed and checked on its own; a bad one is answered with HTTP 400 and a message naming the
problem, while the good ones of the same batch are predicted together in one call. Nothing a client sends can
kill the worker.

A framework handler subclasses `ModelHandler` and adds `load` (the model and its typed card, via the artifact
contract, which checks the weights' SHA-256), `rows` (one request's instances → an array, or RequestError) and
`predict`/`answer`.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

from mlkube.trainer.card import ModelCard
from mlkube.trainer.errors import MlkubeError

# Custom metrics (declared for TorchServe's Prometheus endpoint in serving/server.py): name → (type,
# unit).
METRICS = {
    "mlkube_predictions_total": ("counter", "count"),  # requests answered with a prediction
    "mlkube_rejected_total": ("counter", "count"),  # requests answered with HTTP 400
    "mlkube_input_rows_total": ("counter", "count"),  # instances (tabular rows or LSTM windows) predicted
    "mlkube_handler_latency_ms": ("histogram", "ms"),  # time in `handle` per batch
}
BAD_REQUEST = 400
# CPUs one worker may use while the server's other models idle (set by `mlkube serve`: CPUs / workers per
# model).
WORKER_CPUS_ENV = "MLKUBE_WORKER_CPUS"


class RequestError(ValueError):
    """A problem with one request: answered with HTTP 400 and this message; the worker keeps serving."""


def parse_body(raw: Any) -> list[Any]:
    """The request's `instances` list, from its raw JSON bytes (NaN and Infinity refused)."""
    if raw is None:
        raise RequestError(
            'empty request: send one JSON object {"instances": [...]} with Content-Type: application/json'
        )
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as err:
        raise RequestError(f"the body is not valid JSON: {err}") from None
    except RecursionError:
        raise RequestError("the body nests JSON too deeply") from None
    if not isinstance(body, dict) or "instances" not in body:
        raise RequestError('the body must be a JSON object {"instances": [...]}')
    extra = sorted(set(body) - {"instances"})
    if extra:
        raise RequestError(f'unknown key(s) {extra} in the body; the only key is "instances"')
    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
        raise RequestError('"instances" must be a non-empty list')
    return instances


def _refuse_constant(name: str) -> float:
    raise RequestError(f"{name} is not allowed: every value must be a finite number")


def number(value: Any, where: str) -> float:
    """A finite float from a JSON value, or RequestError naming `where`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{where}: expected a number, got {json_type(value)} {json.dumps(value)[:40]}")
    try:
        value = float(value)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise RequestError(f"{where}: {value} is not allowed; every value must be a finite number")
    return value


def numbers(values: list, where: str) -> Any:
    """A float array from a JSON list of finite numbers, or RequestError naming `where`."""
    import numpy as np

    if set(map(type, values)) <= {int, float}:  # the fast path; value by value only to name a problem
        with contextlib.suppress(OverflowError):
            array = np.array(values, dtype=float)
            if np.isfinite(array).all():
                return array
    return np.array([number(value, f"{where}[{i}]") for i, value in enumerate(values)])


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (for messages)."""
    names = {bool: "boolean", str: "string", list: "array", dict: "object", type(None): "null"}
    return names.get(type(value), "number")


def check_names(given: dict, expected: list[str], where: str) -> None:
    """Refuse a mapping that lacks or adds names (the message lists what the model takes)."""
    if not isinstance(given, dict):
        raise RequestError(f"{where}: expected an object {{name: value}}, got {json_type(given)}")
    missing = [n for n in expected if n not in given]
    unknown = [n for n in given if n not in expected]
    if missing or unknown:
        parts = ([f"lacks {missing}"] if missing else []) + ([f"has unknown {unknown}"] if unknown else [])
        raise RequestError(f"{where} {' and '.join(parts)}; the model takes {expected}")


def worker_cpus() -> int:
    """WORKER_CPUS_ENV as a number (1 when unset)."""
    import os

    value = os.environ.get(WORKER_CPUS_ENV, "1")
    if not value.isdigit() or int(value) < 1:
        raise MlkubeError(
            f"{WORKER_CPUS_ENV}={value!r} is not a whole number of CPUs", "set it to 1 or more, or unset it"
        )
    return int(value)


class ModelHandler:
    """A TorchServe handler (class entry point): `initialize` once per worker, `handle` once per batch."""

    def __init__(self) -> None:
        self.model: Any = None
        self.card: ModelCard | None = None
        self.header: dict[str, Any] = {}

    # -- what a framework handler provides
    def load(self, model_dir: Path) -> tuple[Any, ModelCard]:
        """The model and its card, loaded through the artifact contract (weights' SHA-256 checked)."""
        raise NotImplementedError

    def rows(self, instances: list[Any]) -> Any:
        """One request's instances as a NumPy array (first axis: instances), or RequestError."""
        raise NotImplementedError

    def fast_rows(self, raw: Any) -> Any:
        """Optional fast path: the rows of a well-formed request straight from its raw bytes, or None for
        anything unusual (then `rows` parses it again and names the problem). It must never accept what `rows`
        refuses."""
        return None

    def predict(self, batch: Any) -> Any:
        """Model outputs for the stacked rows of every good request (first axis: instances)."""
        raise NotImplementedError

    def answer(self, outputs: Any) -> dict[str, Any]:
        """The JSON fields for one request's slice of `predict`'s outputs."""
        raise NotImplementedError

    @staticmethod
    def example(card: Any) -> dict[str, Any]:
        """A valid request for the model that `card` describes."""
        raise NotImplementedError

    # -- TorchServe's entry points
    def initialize(self, context: Any) -> None:
        self.model, self.card = self.load(Path(context.system_properties["model_dir"]))
        manifest = (context.manifest or {}).get("model", {})
        self.header = {"model": self.card.name, "version": manifest.get("modelVersion")}

    def handle(self, data: list[dict], context: Any) -> list[str]:
        """Answer every request of the batch: a JSON string each; bad ones get HTTP 400 through `context`."""
        import numpy as np

        start = time.perf_counter()
        parsed = [self._rows_or_error(request) for request in data]
        good = [rows for rows in parsed if not isinstance(rows, RequestError)]
        outputs = self.predict(np.concatenate(good)) if good else None
        answers, offset = [], 0
        for idx, rows in enumerate(parsed):
            context.set_response_content_type(idx, "application/json")
            if isinstance(rows, RequestError):
                context.set_response_status(BAD_REQUEST, "Bad Request", idx)
                answers.append(json.dumps({"error": str(rows), "code": BAD_REQUEST}))
                continue
            assert outputs is not None  # a good request: `good` is not empty, so it was predicted above
            answers.append(json.dumps({**self.header, **self.answer(outputs[offset : offset + len(rows)])}))
            offset += len(rows)
        self._emit(context, len(good), len(data) - len(good), offset, (time.perf_counter() - start) * 1000)
        return answers

    def _rows_or_error(self, request: dict) -> Any:
        raw = request.get("body", request.get("data"))
        try:
            rows = self.fast_rows(raw)
            return rows if rows is not None else self.rows(parse_body(raw))
        except RequestError as err:
            return err

    def _emit(self, context: Any, answered: int, rejected: int, rows: int, latency_ms: float) -> None:
        from ts.metrics.metric_type_enum import MetricTypes

        values = {
            "mlkube_predictions_total": answered,
            "mlkube_rejected_total": rejected,
            "mlkube_input_rows_total": rows,
            "mlkube_handler_latency_ms": latency_ms,
        }
        for name, value in values.items():
            kind, unit = METRICS[name]
            context.metrics.add_metric(name, value, unit, dimensions=[], metric_type=MetricTypes(kind))

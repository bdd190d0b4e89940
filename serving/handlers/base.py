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
import logging
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
OK, BAD_REQUEST = 200, 400
HTTP_REASONS = {BAD_REQUEST: "Bad Request", 500: "Internal Server Error"}
# The largest integer a request may hold: what simdjson and NumPy's int64 and uint64 take.
MAX_INTEGER = 2**64 - 1
log = logging.getLogger(__name__)
# CPUs one worker may use while the server's other models idle (set by `mlkube serve`: CPUs / workers per
# model).
WORKER_CPUS_ENV = "MLKUBE_WORKER_CPUS"


class RequestFailure(Exception):
    """One request that gets an error answer instead of a prediction (its batch-mates are not affected)."""

    status = 500

    def answer(self) -> tuple[int, str]:
        return self.status, json.dumps({"error": str(self), "code": self.status})


class RequestError(RequestFailure, ValueError):
    """A problem with one request: answered with HTTP 400 and this message; the worker keeps serving."""

    status = BAD_REQUEST


class InternalFailure(RequestFailure):
    """A request the handler failed on (a bug, logged with its trace): HTTP 500 for it alone."""


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
        raise RequestError(f"{where}: expected a number, got {json_type(value)} {_excerpt(value)}")
    if isinstance(value, int) and not -MAX_INTEGER <= value <= MAX_INTEGER:
        raise RequestError(
            f"{where}: the integer {str(value)[:40]} does not fit in 64 bits; every value must be a finite "
            "number (a large one written as a decimal with an exponent, e.g. 1.2e21)"
        )
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

    types = set(map(type, values))
    # the fast path; value by value only to name a problem
    if types <= {int, float} and (int not in types or all(abs(v) <= MAX_INTEGER for v in values)):
        with contextlib.suppress(OverflowError):
            array = np.array(values, dtype=float)
            if np.isfinite(array).all():
                return array
    return np.array([number(value, f"{where}[{i}]") for i, value in enumerate(values)])


def _excerpt(value: Any) -> str:
    """The start of a value as JSON (for messages; a deeply nested value is not written out)."""
    try:
        return json.dumps(value)[:40]
    except RecursionError:
        return "(nested too deeply to show)"


def _finite_json(fields: dict[str, Any]) -> bool:
    try:
        json.dumps(fields, allow_nan=False)
    except ValueError:
        return False
    return True


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
        """Answer every request of the batch: a JSON string each; bad ones get HTTP 400 through `context`.
        Each request is judged alone: whatever one of them does to the parser, the model or the JSON answer
        (an error, a non-finite output) is answered to it, and its batch-mates get their predictions."""
        start = time.perf_counter()
        parsed = [self._rows_or_error(request) for request in data]
        answers = self._answers(parsed)
        for idx, (status, _) in enumerate(answers):
            context.set_response_content_type(idx, "application/json")
            if status != OK:
                context.set_response_status(status, HTTP_REASONS[status], idx)
        good = [rows for rows, (status, _) in zip(parsed, answers, strict=True) if status == OK]
        rows = sum(len(r) for r in good)
        latency_ms = (time.perf_counter() - start) * 1000
        self._emit(context, len(good), len(data) - len(good), rows, latency_ms)
        return [text for _, text in answers]

    def _answers(self, parsed: list[Any]) -> list[tuple[int, str]]:
        """(HTTP status, JSON text) per request: the good ones predicted in one call, or one by one if that
        call fails (so that only the request the model cannot take is refused)."""
        import numpy as np

        good = [rows for rows in parsed if not isinstance(rows, RequestFailure)]
        try:
            outputs = self.predict(np.concatenate(good)) if good else None
        except Exception:  # one request's values can break the whole call: find it
            return [self._answer_alone(rows) for rows in parsed]
        answers, offset = [], 0
        for rows in parsed:
            if isinstance(rows, RequestFailure):
                answers.append(rows.answer())
                continue
            assert outputs is not None  # a good request: `good` is not empty, so it was predicted above
            answers.append(self._answer_json(outputs[offset : offset + len(rows)]))
            offset += len(rows)
        return answers

    def _answer_alone(self, rows: Any) -> tuple[int, str]:
        if isinstance(rows, RequestFailure):
            return rows.answer()
        try:
            outputs = self.predict(rows)
        except (ValueError, ArithmeticError) as err:  # scikit-learn: "Input X contains infinity ..."
            return RequestError(f"the model cannot take these values: {err}").answer()
        except Exception:
            log.exception("the model failed on one request of a batch")
            return InternalFailure(
                "the model failed on this request (the worker's log has the trace)"
            ).answer()
        return self._answer_json(outputs)

    def _answer_json(self, outputs: Any) -> tuple[int, str]:
        """One request's answer as strict JSON; a non-finite output (values far beyond the training data,
        overflowing inside the model) is refused naming the instance, never sent as NaN or Infinity."""
        try:
            return OK, json.dumps({**self.header, **self.answer(outputs)}, allow_nan=False)
        except ValueError:
            bad = next(
                (i for i in range(len(outputs)) if not _finite_json(self.answer(outputs[i : i + 1]))), 0
            )
            return RequestError(
                f"instance {bad}: the model's answer is not a finite number; its values are outside what "
                "the model can take (far beyond the data it was trained on)"
            ).answer()

    def _rows_or_error(self, request: dict) -> Any:
        raw = request.get("body", request.get("data"))
        try:
            rows = self._fast_rows(raw)
            return rows if rows is not None else self.rows(parse_body(raw))
        except RequestFailure as err:
            return err
        except RecursionError:
            return RequestError("the body nests JSON too deeply")
        except Exception:
            log.exception("reading one request of a batch failed")
            return InternalFailure("reading this request failed (the worker's log has the trace)")

    def _fast_rows(self, raw: Any) -> Any:
        """`fast_rows`, or None whenever it fails: its parser refuses what it cannot take (simdjson: nesting
        deeper than 1024, integers beyond 64 bits) and then the checks of `rows` name the problem."""
        try:
            return self.fast_rows(raw)
        except Exception:
            return None

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

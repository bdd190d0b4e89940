"""What both TorchServe handlers share: strict JSON parsing, one 4xx answer per bad request, one model call
per batch, the Open Inference Protocol (KServe v2) besides mlkube's JSON, and the custom metrics.

TorchServe hands `handle` a batch: one entry per HTTP request (dynamic batching puts several together).
Each request is parsed and checked on its own; a bad one is answered with HTTP 400 and a message naming the
problem, while the good ones of the same batch are predicted together in one call. Nothing a client sends can
kill the worker.

A framework handler subclasses `ModelHandler` and adds `load` (the model and its typed card, via the artifact
contract, which checks the weights' SHA-256), `rows` (one request's instances → an array, or RequestError) and
`predict`/`answer`, and for the Open Inference Protocol `oip_inputs`/`oip_outputs` (the model's tensors),
`oip_rows` (a request's checked tensors → the same array as `rows`) and `oip_answer` (outputs → tensors).

A body `{"inputs": [...], "id"?, "parameters"?, "outputs"?}` is an Open Inference Protocol request (what
`POST /v2/models/<m>/infer` carries, and what KServe's TorchServe runtime forwards) and gets its answer
`{"model_name", "model_version", "id"?, "outputs": [...]}`; every other body is read as mlkube's JSON, the
fast path first, exactly as before.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlkube.serving.plugin import METADATA_ENV
from mlkube.trainer.card import ModelCard
from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.run import atomic_write_json

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


def parse_json(raw: Any) -> Any:
    """A request body's JSON (NaN and Infinity refused), or RequestError naming the problem."""
    if raw is None:
        raise RequestError(
            'empty request: send one JSON object {"instances": [...]} with Content-Type: application/json'
        )
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as err:
        raise RequestError(f"the body is not valid JSON: {err}") from None
    except RecursionError:
        raise RequestError("the body nests JSON too deeply") from None


def is_oip(body: Any) -> bool:
    """Whether a parsed body is an Open Inference Protocol request (`inputs`, no `instances`)."""
    return isinstance(body, dict) and "inputs" in body and "instances" not in body


def instances_of(body: Any) -> list[Any]:
    """The `instances` list of a parsed mlkube JSON body, or RequestError."""
    if not isinstance(body, dict) or "instances" not in body:
        raise RequestError(
            'the body must be a JSON object {"instances": [...]} (or an Open Inference Protocol request '
            '{"inputs": [...]})'
        )
    extra = sorted(set(body) - {"instances"})
    if extra:
        raise RequestError(f'unknown key(s) {extra} in the body; the only key is "instances"')
    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
        raise RequestError('"instances" must be a non-empty list')
    return instances


def parse_body(raw: Any) -> list[Any]:
    """The request's `instances` list, from its raw JSON bytes (NaN and Infinity refused)."""
    return instances_of(parse_json(raw))


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


# ------------------------------------------------------------------- the Open Inference Protocol (KServe v2)
# The protocol's tensor datatypes (kserve/kserve: docs/predict-api/v2/required_api.md).
OIP_DATATYPES = (
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64",
    "BYTES",
)  # fmt: skip
# The number datatypes a numeric input takes, with the range of their values (FP64: any finite double).
_FP32_MAX, _FP16_MAX = 3.4028234663852886e38, 65504.0
OIP_NUMBERS: dict[str, tuple[float, float]] = {
    "FP64": (-math.inf, math.inf),
    "FP32": (-_FP32_MAX, _FP32_MAX),
    "FP16": (-_FP16_MAX, _FP16_MAX),
    **{f"INT{bits}": (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) for bits in (64, 32, 16, 8)},
    **{f"UINT{bits}": (0, 2**bits - 1) for bits in (64, 32, 16, 8)},
}
OIP_KEYS = ("id", "parameters", "inputs", "outputs")
OIP_TENSOR_KEYS = ("name", "shape", "datatype", "data", "parameters")


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor of a model in the Open Inference Protocol: `shape` has -1 for the batch (the
    instances, first), `datatype` is FP64 for numbers (an input takes any of OIP_NUMBERS) or BYTES for
    strings."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    what: str = ""  # for messages: what the tensor holds

    def metadata(self) -> dict[str, Any]:
        """The tensor as model metadata (`$metadata_tensor`)."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def shape_text(self) -> str:
        """`[n, 30]` (n: the instances)."""
        return f"[{', '.join('n' if d == -1 else str(d) for d in self.shape)}]"

    def describe(self) -> str:
        """`'prcp' [n, 30]`."""
        return f"{self.name!r} {self.shape_text()}"


@dataclass
class OipRequest:
    """An Open Inference Protocol request, its envelope checked: the inputs by name (each a checked
    `$request_input` object), its `id`, and the outputs it asks for (None: all of them)."""

    inputs: dict[str, dict[str, Any]]
    id: str | None = None
    outputs: list[str] | None = None


def parse_oip(body: dict[str, Any], output_names: list[str]) -> OipRequest:
    """An Open Inference Protocol request's envelope and each input's fields, or RequestError naming the
    problem; the handler then matches the inputs with the model's (`check_tensors`)."""
    unknown = [key for key in body if key not in OIP_KEYS]
    if unknown:
        raise RequestError(
            f"unknown key(s) {unknown} in the Open Inference Protocol request; it takes {list(OIP_KEYS)}"
        )
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(f'"id" must be a string, got {json_type(request_id)} {_excerpt(request_id)}')
    _check_parameters(body.get("parameters"), '"parameters"')
    inputs = body["inputs"]
    if not isinstance(inputs, list) or not inputs:
        raise RequestError(
            '"inputs" must be a non-empty list of tensors {"name", "shape", "datatype", "data"}'
        )
    tensors: dict[str, dict[str, Any]] = {}
    for i, tensor in enumerate(inputs):
        name = _check_tensor(tensor, f"inputs[{i}]")
        if name in tensors:
            raise RequestError(f"input {name!r} is given twice; send each input once")
        tensors[name] = tensor
    return OipRequest(tensors, request_id, _requested_outputs(body.get("outputs"), output_names))


def _check_parameters(parameters: Any, where: str) -> None:
    if parameters is not None and not isinstance(parameters, dict):
        raise RequestError(f"{where} must be an object {{name: value}}, got {json_type(parameters)}")


def _check_tensor(tensor: Any, where: str) -> str:
    """A `$request_input`'s fields (name, datatype, shape, data as an array); its name."""
    if not isinstance(tensor, dict):
        raise RequestError(
            f'{where}: expected a tensor {{"name", "shape", "datatype", "data"}}, got {json_type(tensor)}'
        )
    name = tensor.get("name")
    if not isinstance(name, str):
        raise RequestError(f'{where}: "name" must be a string, got {json_type(name)}')
    where = f"input {name!r}"
    missing = [key for key in OIP_TENSOR_KEYS[:4] if key not in tensor]
    unknown = [key for key in tensor if key not in OIP_TENSOR_KEYS]
    if missing or unknown:
        parts = ([f"lacks {missing}"] if missing else []) + ([f"has unknown {unknown}"] if unknown else [])
        raise RequestError(
            f"{where} {' and '.join(parts)}; a tensor has {list(OIP_TENSOR_KEYS)} (parameters optional)"
        )
    _check_parameters(tensor.get("parameters"), f"{where}: parameters")
    datatype = tensor["datatype"]
    if datatype not in OIP_DATATYPES:
        raise RequestError(
            f"{where}: unknown datatype {_excerpt(datatype)}; the Open Inference Protocol's are "
            f"{', '.join(OIP_DATATYPES)}"
        )
    shape = tensor["shape"]
    if (
        not isinstance(shape, list)
        or not shape
        or not all(type(d) is int and 0 <= d <= MAX_INTEGER for d in shape)
    ):
        raise RequestError(
            f"{where}: shape must be a non-empty list of non-negative integers, got {_excerpt(shape)}"
        )
    if not isinstance(tensor["data"], list):
        raise RequestError(f"{where}: data must be an array, got {json_type(tensor['data'])}")
    return name


def _requested_outputs(outputs: Any, names: list[str]) -> list[str] | None:
    """The output names a request asks for; None (all of them) when it names none."""
    if outputs is None or outputs == []:
        return None
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) and set(o) <= {"name", "parameters"}
        for o in outputs
    ):
        raise RequestError(
            f'"outputs" must be a list of {{"name": <output>}}; the model\'s outputs are {names}'
        )
    asked = [o["name"] for o in outputs]
    unknown = [name for name in asked if name not in names]
    if unknown:
        raise RequestError(
            f'"outputs" asks for unknown output(s) {unknown}; the model\'s outputs are {names}'
        )
    return asked


def check_tensors(
    inputs: dict[str, dict[str, Any]], specs: list[TensorSpec], takes: str
) -> tuple[dict[str, Any], int]:
    """The inputs of a request matched with the model's: each input's values (numbers: a float array of its
    shape; BYTES: a list of strings, row-major) and the number of instances, or RequestError naming the
    input and what the model takes (`takes`). Names, datatypes and shapes are all checked before any
    value is read."""
    names = [spec.name for spec in specs]
    missing = [name for name in names if name not in inputs]
    unknown = [name for name in inputs if name not in names]
    if missing or unknown:
        parts = ([f"lack {missing}"] if missing else []) + ([f"have unknown {unknown}"] if unknown else [])
        raise RequestError(f"the inputs {' and '.join(parts)}; the model takes {takes}")
    first: tuple[str, int] | None = None
    for spec in specs:
        tensor, where = inputs[spec.name], f"input {spec.name!r}"
        datatype, shape = tensor["datatype"], tensor["shape"]
        if spec.datatype == "BYTES" and datatype != "BYTES":
            raise RequestError(f"{where}: datatype {datatype} is not allowed; it takes BYTES ({spec.what})")
        if spec.datatype != "BYTES" and datatype not in OIP_NUMBERS:
            held = " (BYTES holds strings, and the model needs numbers)" if datatype == "BYTES" else ""
            raise RequestError(
                f"{where}: datatype {datatype} is not allowed{held}; it takes numbers: "
                f"{', '.join(OIP_NUMBERS)}"
            )
        if len(shape) != len(spec.shape) or any(
            want not in (-1, got) for want, got in zip(spec.shape, shape, strict=True)
        ):
            raise RequestError(
                f"{where}: shape {shape} does not fit; it takes {spec.shape_text()}"
                f" ({spec.what}; n: the instances)"
            )
        if first is None:
            first = (spec.name, shape[0])
            if not shape[0]:
                raise RequestError(f"{where}: shape {shape} holds no instances; send at least one")
        elif shape[0] != first[1]:
            raise RequestError(
                f"{where}: shape {shape} has {shape[0]} instance(s), but input {first[0]!r} has "
                f"{first[1]}; every input has one row per instance"
            )
    values: dict[str, Any] = {}
    for spec in specs:
        tensor, where = inputs[spec.name], f"input {spec.name!r}"
        flat = _flat_data(tensor["data"], tensor["shape"], where)
        if spec.datatype == "BYTES":
            values[spec.name] = _strings(flat, where)
        else:
            values[spec.name] = tensor_numbers(flat, tensor["datatype"], where).reshape(tensor["shape"])
    assert first is not None  # specs is never empty: every model has an input
    return values, first[1]


def _flat_data(data: list, shape: list[int], where: str) -> list:
    """A tensor's data in row-major order: flat, or nested as its shape (both are the protocol's)."""
    count = math.prod(shape)
    if not any(type(value) is list for value in data):
        if len(data) != count:
            raise RequestError(f"{where}: shape {shape} holds {count} values, but data has {len(data)}")
        return data
    level: list = [data]
    for size in shape:
        if not all(type(item) is list and len(item) == size for item in level):
            raise RequestError(
                f"{where}: data nested in arrays must follow the shape {shape} (or be one flat array of "
                f"{count} values, row-major)"
            )
        level = [value for item in level for value in item]
    return level


def _strings(values: list, where: str) -> list[str]:
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise RequestError(
                f"{where}[{i}]: expected a string (datatype BYTES), got {json_type(value)} {_excerpt(value)}"
            )
    return values


def tensor_numbers(values: list, datatype: str, where: str) -> Any:
    """A float array from a tensor's flat values, each a finite number of `datatype` (integers for INT and
    UINT, within the datatype's range), or RequestError naming the (row-major) position."""
    import numpy as np

    low, high = OIP_NUMBERS[datatype]
    integer = datatype.startswith(("INT", "UINT"))
    types = set(map(type, values))
    # the fast path; value by value only to name a problem
    if types <= ({int} if integer else {int, float}) and (
        int not in types or all(low <= v <= high if integer else abs(v) <= MAX_INTEGER for v in values)
    ):
        with contextlib.suppress(OverflowError):
            array = np.array(values, dtype=float)
            if np.isfinite(array).all() and (
                integer or not len(array) or low <= array.min() <= array.max() <= high
            ):
                return array
    for i, value in enumerate(values):
        at = f"{where}[{i}]"
        if integer and (isinstance(value, bool) or not isinstance(value, int)):
            raise RequestError(
                f"{at}: expected an integer (datatype {datatype}), got {json_type(value)} {_excerpt(value)}"
            )
        if integer and not low <= value <= high:
            raise RequestError(f"{at}: {str(value)[:40]} is outside datatype {datatype} ({low} to {high})")
        number(value, f"{at} (datatype {datatype})")
        if not low <= value <= high:
            raise RequestError(f"{at}: {value} is outside datatype {datatype} (±{high:g})")
    raise AssertionError("tensor_numbers found no problem in values its fast path refused")


class ModelHandler:
    """A TorchServe handler (class entry point): `initialize` once per worker, `handle` once per batch."""

    def __init__(self) -> None:
        self.model: Any = None
        self.card: ModelCard | None = None
        self.header: dict[str, Any] = {}
        self.oip_header: dict[str, Any] = {}

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

    # -- the Open Inference Protocol
    platform = ""  # the model metadata's `platform` ("<project>_<format>")

    def oip_inputs(self) -> list[TensorSpec]:
        """The model's input tensors (model metadata, and the checks of `oip_rows`)."""
        raise NotImplementedError

    def oip_outputs(self) -> list[TensorSpec]:
        """The model's output tensors (model metadata, and the names a request's `outputs` may ask for)."""
        raise NotImplementedError

    def oip_rows(self, inputs: dict[str, dict[str, Any]]) -> Any:
        """One request's input tensors by name (envelope checked) as the array `rows` makes, or RequestError
        naming the input and what is allowed (mostly through `check_tensors`)."""
        raise NotImplementedError

    def oip_answer(self, outputs: Any) -> list[dict[str, Any]]:
        """Every output tensor (`$response_output`) for one request's slice of `predict`'s outputs."""
        raise NotImplementedError

    def metadata(self) -> dict[str, Any]:
        """The model metadata the protocol's `GET /v2/models/<m>` answers (`$metadata_model_response`)."""
        assert self.card is not None  # initialized
        version = self.header.get("version")
        return {
            "name": self.card.name,
            **({"versions": [version]} if version is not None else {}),
            "platform": self.platform,
            "inputs": [spec.metadata() for spec in self.oip_inputs()],
            "outputs": [spec.metadata() for spec in self.oip_outputs()],
        }

    # -- TorchServe's entry points
    def initialize(self, context: Any) -> None:
        self.model, self.card = self.load(Path(context.system_properties["model_dir"]))
        manifest = (context.manifest or {}).get("model", {})
        self.header = {"model": self.card.name, "version": manifest.get("modelVersion")}
        version = manifest.get("modelVersion")
        self.oip_header = {"model_name": self.card.name, **({"model_version": version} if version else {})}
        self.publish_metadata()

    def publish_metadata(self) -> None:
        """Write `metadata()` as `<name>.json` into the folder METADATA_ENV names (set for TorchServe's
        workers; mlkube's frontend plugin answers `GET /v2/models/<name>` with it). Each worker of the model
        writes it, atomically."""
        folder = os.environ.get(METADATA_ENV)
        if folder and self.card is not None:
            atomic_write_json(Path(folder) / f"{self.card.name}.json", self.metadata())

    def handle(self, data: list[dict], context: Any) -> list[str]:
        """Answer every request of the batch: a JSON string each; bad ones get HTTP 400 through `context`.
        Each request is judged alone: whatever one of them does to the parser, the model or the JSON answer
        (an error, a non-finite output) is answered to it, and its batch-mates get their predictions."""
        start = time.perf_counter()
        parsed, oip = (
            zip(*(self._rows_or_error(request) for request in data), strict=True) if data else ((), ())
        )
        answers = self._answers(list(parsed), list(oip))
        for idx, (status, _) in enumerate(answers):
            context.set_response_content_type(idx, "application/json")
            if status != OK:
                context.set_response_status(status, HTTP_REASONS[status], idx)
        good = [rows for rows, (status, _) in zip(parsed, answers, strict=True) if status == OK]
        rows = sum(len(r) for r in good)
        latency_ms = (time.perf_counter() - start) * 1000
        self._emit(context, len(good), len(data) - len(good), rows, latency_ms)
        return [text for _, text in answers]

    def _answers(self, parsed: list[Any], oip: list[OipRequest | None]) -> list[tuple[int, str]]:
        """(HTTP status, JSON text) per request: the good ones predicted in one call, or one by one if that
        call fails (so that only the request the model cannot take is refused). `oip`: each request's Open
        Inference Protocol request, None for mlkube's JSON (the answer is in the request's protocol)."""
        import numpy as np

        good = [rows for rows in parsed if not isinstance(rows, RequestFailure)]
        try:
            outputs = self.predict(np.concatenate(good)) if good else None
        except Exception:  # one request's values can break the whole call: find it
            return [self._answer_alone(rows, request) for rows, request in zip(parsed, oip, strict=True)]
        answers, offset = [], 0
        for rows, request in zip(parsed, oip, strict=True):
            if isinstance(rows, RequestFailure):
                answers.append(rows.answer())
                continue
            assert outputs is not None  # a good request: `good` is not empty, so it was predicted above
            answers.append(self._answer_json(outputs[offset : offset + len(rows)], request))
            offset += len(rows)
        return answers

    def _answer_alone(self, rows: Any, request: OipRequest | None = None) -> tuple[int, str]:
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
        return self._answer_json(outputs, request)

    def _answer_json(self, outputs: Any, request: OipRequest | None = None) -> tuple[int, str]:
        """One request's answer as strict JSON, in its protocol; a non-finite output (values far beyond the
        training data, overflowing inside the model) is refused naming the instance, never sent as NaN or
        Infinity."""
        try:
            if request is None:
                return OK, json.dumps({**self.header, **self.answer(outputs)}, allow_nan=False)
            return OK, json.dumps(self._oip_fields(outputs, request), allow_nan=False)
        except ValueError:
            bad = next(
                (i for i in range(len(outputs)) if not _finite_json(self.answer(outputs[i : i + 1]))), 0
            )
            return RequestError(
                f"instance {bad}: the model's answer is not a finite number; its values are outside what "
                "the model can take (far beyond the data it was trained on)"
            ).answer()

    def _oip_fields(self, outputs: Any, request: OipRequest) -> dict[str, Any]:
        """An Open Inference Protocol answer (`$inference_response`): the outputs the request asks for."""
        tensors = self.oip_answer(outputs)
        if request.outputs is not None:
            tensors = [t for t in tensors if t["name"] in request.outputs]
        request_id = {"id": request.id} if request.id is not None else {}
        return {**self.oip_header, **request_id, "outputs": tensors}

    def _rows_or_error(self, request: dict) -> tuple[Any, OipRequest | None]:
        """A request's rows (or its RequestFailure), and its Open Inference Protocol request (None: mlkube's
        JSON). mlkube's JSON takes the fast path first, as before; only a body it cannot take is parsed."""
        raw = request.get("body", request.get("data"))
        oip = None
        try:
            rows = self._fast_rows(raw)
            if rows is not None:
                return rows, None
            body = parse_json(raw)
            if not is_oip(body):
                return self.rows(instances_of(body)), None
            oip = parse_oip(body, [spec.name for spec in self.oip_outputs()])
            return self.oip_rows(oip.inputs), oip
        except RequestFailure as err:
            return err, oip
        except RecursionError:
            return RequestError("the body nests JSON too deeply"), oip
        except Exception:
            log.exception("reading one request of a batch failed")
            return InternalFailure("reading this request failed (the worker's log has the trace)"), oip

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

"""TorchServe handlers, one per framework of the model contract (the model card's `framework`).

An archive holds no code: its manifest names the handler as the installed module
(`mlkube.serving.handlers.<x>`), which the TorchServe worker imports by that name (serving/archive.py).
`InProcess` calls a handler in this process exactly as a worker does (same TorchServe context object): the
reference for tests and the benchmark.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from mlkube.trainer.artifacts import read_model_card
from mlkube.trainer.errors import MlkubeError

if TYPE_CHECKING:
    from mlkube.serving.handlers.base import ModelHandler

# framework → (module under serving.handlers, handler class)
HANDLERS = {"sklearn": ("sklearn_handler", "SklearnHandler"), "torch": ("lstm_handler", "LstmHandler")}


def handler_for(framework: str) -> tuple[str, type[ModelHandler]]:
    """The handler's module (what an archive's manifest names, for the worker to import) and its class, for a
    model card's `framework`."""
    if framework not in HANDLERS:
        raise MlkubeError(
            f"no TorchServe handler for framework {framework!r}", f"mlkube serves {sorted(HANDLERS)} models"
        )
    module_name, class_name = HANDLERS[framework]
    module = importlib.import_module(f"{__name__}.{module_name}")
    return module.__name__, getattr(module, class_name)


def _module_file(module: ModuleType) -> Path:
    """The file an imported module was loaded from."""
    if module.__file__ is None:
        raise MlkubeError(
            f"module {module.__name__} has no file to load from",
            "install mlkube and TorchServe from their packages",
        )
    return Path(module.__file__)


class InProcess:
    """A model folder's handler, initialised and called in this process the way a TorchServe worker does."""

    def __init__(self, model_dir: Path, version: str = "in-process"):
        from ts.context import Context
        from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

        card = read_model_card(model_dir)
        _, handler_class = handler_for(card.framework)
        metrics = MetricsCacheYamlImpl(
            str(_module_file(importlib.import_module("ts")).parent / "configs" / "metrics.yaml")
        )
        metrics.initialize_cache()
        metrics.model_name = card.name
        manifest = {"model": {"modelName": card.name, "modelVersion": version}}
        self.context = Context(card.name, str(model_dir), manifest, 1, None, "in-process", metrics=metrics)
        self.handler = handler_class()
        self.handler.initialize(self.context)

    def __call__(self, bodies: list[bytes]) -> list[tuple[int, dict[str, Any]]]:
        """(HTTP status, JSON answer) for each request body of one batch (strict JSON: NaN is refused)."""
        from ts.context import RequestProcessor

        self.context.request_processor = [RequestProcessor({}) for _ in bodies]
        self.context.metrics.set_request_ids({i: str(i) for i in range(len(bodies))})
        answers = self.handler.handle([{"body": body} for body in bodies], self.context)
        return [(self.context.get_response_status(i)[0], strict_json(a)) for i, a in enumerate(answers)]

    def metadata(self) -> dict[str, Any]:
        """The model's Open Inference Protocol metadata (what `GET /v2/models/<m>` would answer)."""
        return self.handler.metadata()


def strict_json(text: str | bytes) -> Any:
    """JSON as RFC 8259 has it: NaN and Infinity, which Python's json writes and reads, are refused."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    return json.loads(text, parse_constant=refuse)

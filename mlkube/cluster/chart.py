"""The Helm chart as the one source of truth for cluster objects: chart values from a spec, rendered by Helm's
engine.

`mlkube submit` and `helm install` create the same objects, because submit renders `helm/mlkube/` through the
Helm engine (helm-python-sdk, no helm binary) with values built here from the experiment spec. The chart ships
inside the package (`mlkube/chart/` of the wheel, mapped from `helm/mlkube/` of the source tree).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.spec import ElasticSpec, Spec

PACKAGE = Path(__file__).resolve().parents[1]  # the installed `mlkube` package
# Where the chart is: inside the installed package (wheel, image), or in the source tree (an editable
# install).
CHART_PLACES = (PACKAGE / "chart", PACKAGE.parent / "helm" / "mlkube")
SHARED_CLAIM = "mlkube-runs"
SUBMIT_KINDS = ("ray", "elastic", "serve")
RUN_ID = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
RUN_ID_MAX = 30


@dataclass
class Rendered:
    """The objects a release creates, in apply order, and the NOTES.txt text."""

    objects: list[dict[str, Any]]
    notes: str


def chart_path() -> Path:
    """The chart: $MLKUBE_CHART (another copy of it), else the one mlkube ships."""
    places = (Path(os.environ["MLKUBE_CHART"]),) if os.environ.get("MLKUBE_CHART") else CHART_PLACES
    found = next((path for path in places if (path / "Chart.yaml").is_file()), None)
    if found is None:
        raise MlkubeError(
            f"the mlkube Helm chart is not at {' nor '.join(map(str, places))}",
            "reinstall mlkube (its wheel holds the chart), or set MLKUBE_CHART to a copy of helm/mlkube",
        )
    return found


def release_name(run_id: str) -> str:
    return f"mlkube-{run_id}"


def check_run_id(run_id: str) -> str:
    """Run ids name Kubernetes objects on a cluster: lower-case letters, digits and '-', at most 30
    characters."""
    if len(run_id) > RUN_ID_MAX or not RUN_ID.match(run_id):
        raise MlkubeError(
            f"run id {run_id!r} cannot name Kubernetes objects",
            f"use lower-case letters, digits and '-' (at most {RUN_ID_MAX}, "
            "starting and ending with a letter or digit)",
        )
    return run_id


def split_image(image: str) -> dict[str, str]:
    """`registry:5000/mlkube:1.0` → repository and tag; without a tag, the chart's (its appVersion), never
    `latest`."""
    repository, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return {"repository": image}
    return {"repository": repository, "tag": tag}


def values_for(spec: Spec, kind: str, run_id: str, overrides: Sequence[dict] = ()) -> dict[str, Any]:
    """Chart values that run `spec` as one workload (`ray`, `elastic` or `serve`), then each override merged
    on top."""
    elastic = spec.lstm.elastic if spec.lstm is not None else ElasticSpec()
    values = {
        "runId": run_id,
        **({"image": split_image(spec.cluster.image)} if spec.cluster.image else {}),
        "gpu": spec.cluster.gpu,
        "experiment": spec.model_dump(mode="json"),
        "runs": {"claimName": SHARED_CLAIM},
        "metrics": {"port": spec.metrics.port},
        "ray": {"enabled": kind == "ray"},
        "elastic": {
            "enabled": kind == "elastic",
            "minNodes": elastic.min_nodes,
            "maxNodes": elastic.max_nodes,
            "nprocPerNode": elastic.nproc_per_node,
            "maxRestarts": elastic.max_restarts,
        },
        "serve": {
            "enabled": kind == "serve",
            "ports": {
                "inference": spec.serve.inference_port,
                "metrics": spec.serve.metrics_port,
            },
        },
    }
    for override in overrides:
        values = deep_merge(values, override)
    return values


def deep_merge(base: dict, override: dict) -> dict:
    """`override` on top of `base`, recursing into mappings (as Helm merges values files)."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = (
            deep_merge(merged[key], value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict)
            else value
        )
    return merged


def read_values_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise MlkubeError(
            f"values file not found: {path}", "give a YAML file of chart values (see helm/mlkube/values.yaml)"
        )
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise MlkubeError(
            f"{path}: chart values must be a mapping, got {type(data).__name__}",
            "see helm/mlkube/values.yaml",
        )
    return data


def render(values: dict, release: str, namespace: str, chart: Path | None = None) -> Rendered:
    """Render the chart with Helm's engine; a value the chart's schema or rules reject is a user error."""
    import helm_python as helm

    try:
        with helm.Chart.load(str(chart or chart_path())) as loaded:
            files = loaded.render(values, name=release, namespace=namespace, is_install=True)
    except (helm.HelmValuesError, helm.HelmRenderError) as err:
        raise MlkubeError(
            f"the chart rejected the values: {_helm_message(err)}",
            "fix the value it names (spec or -f values file)",
        ) from None
    notes = "".join(text for path, text in files.items() if path.endswith("NOTES.txt"))
    objects = [
        obj
        for path, text in sorted(files.items())
        if _applied(path)
        for obj in yaml.safe_load_all(text)
        if obj
    ]
    return Rendered(sorted(objects, key=_apply_order), notes)


def _helm_message(err: Exception) -> str:
    """Helm's schema report (`- at '/ray/mode': ...`) as `ray.mode: ...`; a template `fail` without its
    location."""
    text = str(err).strip()
    problems = re.findall(r"^- at '/?([^']*)': (.*)$", text, flags=re.MULTILINE)
    if problems:
        return "; ".join(f"{path.replace('/', '.') or '<top level>'}: {msg}" for path, msg in problems)
    return re.sub(r"^execution error at \([^)]*\): ", "", text)


def _applied(path: str) -> bool:
    """Templates a release applies: not NOTES.txt, not `helm test` pods, not partials."""
    name = Path(path).name
    return "/tests/" not in path and name.endswith((".yaml", ".yml"))


# Storage and configuration before the workloads that mount them.
APPLY_FIRST = ("PersistentVolumeClaim", "ConfigMap", "Secret", "Service")


def _apply_order(obj: dict) -> int:
    kind = obj.get("kind", "")
    return APPLY_FIRST.index(kind) if kind in APPLY_FIRST else len(APPLY_FIRST)

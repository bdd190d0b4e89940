"""Every pod the chart renders, for every kind of workload it can make, is run by a container test: a new
workload (or a renamed one) fails here until a container test runs it and tests/containers.py names the
test."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.containers import RUN_IN_CONTAINERS, WORKLOAD_VARIANTS, chart, workload_pods

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def test_every_pod_the_chart_renders_is_run_by_a_container_test():
    rendered = {pod for values in WORKLOAD_VARIANTS.values() for pod in workload_pods(chart(**values))}
    assert sorted(rendered - RUN_IN_CONTAINERS.keys()) == [], "pods no container test runs"
    assert sorted(RUN_IN_CONTAINERS.keys() - rendered) == [], "named pods the chart no longer renders"


def test_the_container_tests_named_exist():
    for where in set(RUN_IN_CONTAINERS.values()):
        path, name = where.split("::")
        tree = ast.parse((ROOT / path).read_text())
        tests = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert name in tests, f"{where} is not a test"

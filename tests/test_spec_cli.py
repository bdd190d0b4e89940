"""The spec and the `mlkube` command: defaults, readable errors (field, value, fix, YAML line), exit code
2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlkube.cli import main
from mlkube.trainer.errors import SpecError
from mlkube.trainer.spec import Spec, parse_spec, reference_markdown

pytestmark = pytest.mark.unit


def test_three_line_spec_gets_every_default():
    spec = parse_spec("seed: 1\ndata: {name: iris}\n")
    assert spec.classical.cv.scheme == "stratified" and spec.classical.cv.folds == 5
    assert spec.serve.host == "127.0.0.1" and spec.serve.token_auth
    assert spec.runs_classical and not spec.runs_lstm
    assert parse_spec(spec.to_yaml()) == spec  # the resolved spec reads back to the same spec


def test_lstm_section_turns_the_deep_stage_on():
    assert parse_spec("lstm: {sequence_length: 30}\n").runs_lstm


def test_unknown_key_names_the_path_the_line_and_the_allowed_keys():
    with pytest.raises(SpecError) as err:
        parse_spec("seed: 1\ndata: {name: iris}\nclassical:\n  cv: {scheme: kfold, foldz: 3}\n")
    (problem,) = err.value.problems
    assert problem.startswith("classical.cv.foldz (line 4): unknown key")
    assert "folds" in problem


def test_every_problem_is_reported_at_once():
    with pytest.raises(SpecError) as err:
        parse_spec("seed: -1\nrun_dri: x\nclassical: {cv: {folds: 1}}\n")
    paths = sorted(p.split(" ")[0] for p in err.value.problems)
    assert paths == ["classical.cv.folds", "run_dri", "seed"]


BROKEN = {
    "unknown key": ("seed: 1\ndata: {name: iris}\nclasical: {}\n", "clasical (line 3): unknown key"),
    "wrong type": ("seed: one\ndata: {name: iris}\n", "seed (line 1): 'one'"),
    "negative folds": (
        "data: {name: iris}\nclassical: {cv: {folds: -3}}\n",
        "classical.cv.folds (line 2): -3",
    ),
    "unknown built-in": ("data: {name: irises}\n", "data.name (line 1): 'irises'"),
    "unknown model": ("data: {name: iris}\nclassical: {models: [LR, XGB]}\n", "unknown model 'XGB'"),
    "regression model on classes": (
        "data: {name: iris}\nclassical: {models: [SVR]}\n",
        "SVR is a regression model",
    ),
    "bad param value": (
        "data: {name: iris}\nclassical: {models: [KNN], params: {KNN: {n_neighbors: 0}}}\n",
        "classical.params.KNN: The 'n_neighbors' parameter",
    ),
    "bad param name": (
        "data: {name: iris}\nclassical: {models: [SVM], params: {SVM: {gama: auto}}}\n",
        "unknown parameter(s) ['gama']",
    ),
    "missing data file": ("data: {path: nope.csv, target: y}\n", "file not found"),
    "missing target column": ("data: {path: @CSV@, target: label}\n", "column(s) ['label'] not in"),
    "text in a numeric column": (
        "data: {path: @CSV@, target: y, columns: {colour: numeric}}\n",
        "column 'colour' of data.csv is numeric, but holds ['blue', 'red']",
    ),
    "more folds than rows": (
        "data: {name: iris}\nclassical: {cv: {scheme: kfold, folds: 151}}\n",
        "151 folds but only 150 rows",
    ),
    "class smaller than k": (
        "data: {path: @CSV@, target: y, features: [a]}\nclassical: {cv: {folds: 3}}\n",
        "needs ≥ 3 rows of every class",
    ),
    "nested without inner": (
        "data: {name: iris}\nclassical: {cv: {scheme: nested}}\n",
        "needs both `inner` and `outer`",
    ),
    "unknown metric": ("data: {name: iris}\nclassical: {metric: acuracy}\n", "unknown scorer 'acuracy'"),
    "metric of the other task": (
        "data: {name: diabetes}\nclassical: {metric: accuracy}\n",
        "classification metric",
    ),
    "grid with a sampler": (
        "data: {name: iris}\n"
        "classical: {models: [SVM], search: {space: {SVM: {C: {loguniform: [0.1, 10]}}}}}\n",
        "grid search needs a list",
    ),
    "min above max nodes": (
        "lstm: {elastic: {min_nodes: 3, max_nodes: 2}}\n",
        "min_nodes (3) must be ≤ max_nodes (2)",
    ),
    "not YAML": ("data: {name: iris\n", "not valid YAML"),
    "JVM options over two lines": ('serve: {jvm_options: "-Xmx1g\\n-Xms1g"}\n', "serve.jvm_options (line 1)"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_validate_names_the_problem_and_exits_2(case, tmp_path, capsys):
    text, expected = BROKEN[case]
    (tmp_path / "data.csv").write_text("a,colour,y\n1,red,0\n2,blue,0\n3,red,0\n4,blue,1\n5,red,1\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(text.replace("@CSV@", str(tmp_path / "data.csv")))
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err


def test_validate_accepts_the_examples(capsys):
    from pathlib import Path

    for example in sorted(Path(__file__).parents[1].joinpath("examples").glob("*.yaml")):
        assert main(["validate", str(example)]) == 0, capsys.readouterr().err


def test_cli_exit_code_and_no_traceback_in_a_real_process(tmp_path):
    (tmp_path / "bad.yaml").write_text("seed: 1\ndata: {name: iris}\nclassical: {models: [NOPE]}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "mlkube.cli", "validate", "bad.yaml"],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "unknown model 'NOPE'" in proc.stderr and "fix:" in proc.stderr and "Traceback" not in proc.stderr


def test_help_imports_no_heavy_library():
    code = (
        "import sys, mlkube.cli as c\n"
        "try:\n    c.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('ray', 'torch', 'kubernetes', 'sklearn', 'numba', 'ts', 'pydantic')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "usage: mlkube" in out and "HEAVY []" in out


def test_reference_covers_every_field_of_every_section():
    text = reference_markdown()
    for name, field in Spec.model_fields.items():
        assert f"| `{name}` |" in text and field.description in text
    assert "### `classical.cv`" in text and "### `lstm.elastic`" in text


def test_the_spec_reference_in_docs_is_generated_from_the_code():
    from pathlib import Path

    docs = Path(__file__).parents[1] / "docs" / "spec-reference.md"
    assert docs.read_text() == reference_markdown() + "\n", (
        "regenerate: mlkube validate --reference > docs/spec-reference.md"
    )

"""Hostile and careless specs (issue 16, classes 3, 9 and 10): none exhausts the machine, none ends in a
traceback, none is accepted without a word. Each is refused with exit 2 and a message naming the field path,
the bad value and what is allowed."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from mlkube.cli import main
from mlkube.trainer.spec import MAX_DEPTH, MAX_NODES, MAX_SPEC_CHARS, SEED_MAX, parse_spec

pytestmark = pytest.mark.unit

MEMORY_LIMIT = 2 * 1024**3  # bytes of address space for one `mlkube validate`: the bombs wanted over 6 GB


def validate(tmp_path, content: str | bytes, capsys) -> tuple[int, str]:
    """`mlkube validate` on a spec file with this content, in this process: (exit code, stderr)."""
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(content if isinstance(content, bytes) else content.encode())
    code = main(["validate", str(spec)])
    return code, capsys.readouterr().err


def validate_in_a_bounded_process(tmp_path, content: str) -> subprocess.CompletedProcess:
    """`mlkube validate` in its own process, with 2 GB of address space and a minute of time."""
    (tmp_path / "spec.yaml").write_text(content)

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run(
        [sys.executable, "-m", "mlkube.cli", "validate", "spec.yaml"],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit_memory,
    )


def chain(line: str, levels: int, width: int = 9) -> str:
    """Lines `l0: &l0 LINE`, then one per level, whose list holds `width` aliases of the level before."""
    out = [f"l0: &l0 {line}"]
    out += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ class 3: specs that exhaust the machine
EXHAUSTING = {
    "nine-line alias bomb of lists": (
        chain('["x", "x", "x", "x", "x", "x", "x", "x", "x"]', 9),
        "YAML nodes",
    ),
    "alias bomb of mappings": (
        "a: &a {k0: x, k1: x, k2: x, k3: x, k4: x, k5: x, k6: x, k7: x}\n"
        + "".join(
            f"{n}: &{n} {{{', '.join(f'k{i}: *{p}' for i in range(8))}}}\n"
            for p, n in zip("abcdefgh", "bcdefghi", strict=True)
        ),
        "YAML nodes",
    ),
    "alias bomb inside a real section": (
        "data: {name: iris}\nclassical:\n  params:\n    LR: &p0 {C: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]}\n"
        + "".join(f"    M{i}: &p{i} [{', '.join([f'*p{i - 1}'] * 10)}]\n" for i in range(1, 9)),
        "YAML nodes",
    ),
    "an alias to its own node": ("seed: &s [1, *s]\n", "contains it"),
    "a mapping merged into itself": ("data: &d {<<: *d, name: iris}\n", "contains it"),
    "aliases nested past the depth limit": (chain("[1]", MAX_DEPTH + 2, width=1), "levels deep"),
    "nested 5,000 deep in a flow list": ("seed: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than"),
    "nested 5,000 deep in flow mappings": (
        "data: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
        "nested deeper",
    ),
    "a file over the size limit": (
        "data: {name: iris}\n" + "# padding\n" * (MAX_SPEC_CHARS // 10 + 1),
        f"larger than {MAX_SPEC_CHARS // 1024} KiB",
    ),
    "a single value over the size limit": (
        "data: {name: '" + "x" * (MAX_SPEC_CHARS + 1) + "'}\n",
        "larger than",
    ),
}


@pytest.mark.parametrize("case", EXHAUSTING)
def test_a_spec_that_would_exhaust_memory_is_refused_within_bounds(case, tmp_path):
    text, expected = EXHAUSTING[case]
    proc = validate_in_a_bounded_process(tmp_path, text)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert expected in proc.stderr and "fix:" in proc.stderr
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr


def test_the_limits_leave_room_for_a_real_spec():
    sites = ", ".join(f"'{i:08d}'" for i in range(700))  # every CAMELS-US basin, with room to spare
    spec = parse_spec(
        "data: {name: iris}\nclassical:\n"
        "  cv: {scheme: nested, inner: &k {scheme: kfold, folds: 3}, outer: *k}\n"
        f"lstm: {{data: {{sites: [{sites}]}}}}\n"
    )
    assert spec.classical.cv.outer == spec.classical.cv.inner and len(spec.lstm.data.sites) == 700
    assert MAX_NODES >= 10_000 and MAX_DEPTH >= 16
    with pytest.raises(Exception, match="YAML nodes"):
        parse_spec(chain("[1, 2, 3, 4, 5, 6, 7, 8, 9]", 7))  # 9⁶ nodes from seven short lines


# -------------------------------------------------------------------- class 9: tracebacks instead of messages
UNREADABLE = {
    "a binary file": (
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xff\xfe",
        "not a text file (line 1: a NUL byte)",
    ),
    "a Latin-1 spec": (
        "seed: 1\ndata: {name: iris}\n# café\n".encode("latin-1"),
        "not UTF-8 text (line 3: byte 0xe9)",
    ),
    "a control character": ("seed: 1\x07\ndata: {name: iris}\n", "not allowed in YAML text"),
    "an impossible date": (
        "lstm: {data: {train_period: [2001-02-30, 2001-06-30]}}\n",
        "lstm.data.train_period.0 (line 1): '2001-02-30' — Input should be a valid date",
    ),
    "an impossible month": (
        "lstm: {data: {test_period: [2002-01-01, 2002-13-01]}}\n",
        "lstm.data.test_period.1 (line 1): '2002-13-01'",
    ),
    "an impossible time of day": (
        "lstm: {data: {train_period: [2001-01-01 25:00:00, 2001-06-30]}}\n",
        "lstm.data.train_period.0 (line 1): '2001-01-01 25:00:00'",
    ),
    "nesting 5,000 deep": (
        "seed: " + "[" * 5000 + "]" * 5000 + "\n",
        f"nested deeper than {MAX_DEPTH} levels",
    ),
    "an integer with 5,000 digits": (
        "seed: " + "9" * 5000 + "\ndata: {name: iris}\n",
        "cannot read this int",
    ),
    "a tagged int that is no int": ("seed: !!int twelve\ndata: {name: iris}\n", "not valid YAML (line 1)"),
    "a tagged float that is no float": (
        "lstm: {train: {learning_rate: !!float fast}}\n",
        "cannot read this float",
    ),
    "loguniform with hi below lo": (
        "data: {name: iris}\nclassical:\n  models: [SVM]\n"
        "  search: {algorithm: random, space: {SVM: {C: {loguniform: [100, -1]}}}}\n",
        "classical.search.space.SVM.C (line 4): {'loguniform': [100, -1]} — `loguniform` needs lo < hi",
    ),
    "loguniform from zero": (
        "data: {name: iris}\nclassical:\n  models: [SVM]\n"
        "  search: {algorithm: tpe, space: {SVM: {C: {loguniform: [0, 10]}}}}\n",
        "classical.search.space.SVM.C (line 4): {'loguniform': [0, 10]} — `loguniform` samples the logarithm",
    ),
    "uniform over words": (
        "data: {name: iris}\nclassical:\n  models: [SVM]\n"
        "  search: {algorithm: random, space: {SVM: {C: {uniform: [low, high]}}}}\n",
        "`uniform` takes [lo, hi], two finite numbers",
    ),
    "uniform to infinity": (
        "data: {name: iris}\nclassical:\n  models: [SVM]\n"
        "  search: {algorithm: random, space: {SVM: {C: {uniform: [1, .inf]}}}}\n",
        "`uniform` takes [lo, hi], two finite numbers",
    ),
    "randint with one bound": (
        "data: {name: iris}\nclassical:\n  models: [KNN]\n"
        "  search: {algorithm: random, space: {KNN: {n_neighbors: {randint: [3]}}}}\n",
        "classical.search.space.KNN.n_neighbors (line 4): {'randint': [3]} — `randint` takes [lo, hi]",
    ),
    "randint over fractions": (
        "data: {name: iris}\nclassical:\n  models: [KNN]\n"
        "  search: {algorithm: random, space: {KNN: {n_neighbors: {randint: [1.5, 9]}}}}\n",
        "two integers",
    ),
    "an empty choice": (
        "data: {name: iris}\nclassical:\n  models: [SVM]\n"
        "  search: {algorithm: random, space: {SVM: {kernel: {choice: []}}}}\n",
        "`choice` takes a non-empty list of values",
    ),
    "an empty grid axis": (
        "data: {name: iris}\nclassical:\n  models: [SVM]\n  search: {space: {SVM: {C: []}}}\n",
        "classical.search.space.SVM.C (line 4): [] — an empty list of values",
    ),
    "a sampler that does not exist": (
        "data: {name: iris}\nclassical:\n  models: [SVM]\n"
        "  search: {algorithm: random, space: {SVM: {C: {normal: [0, 1]}}}}\n",
        "classical.search.space.SVM.C (line 4): {'normal': [0, 1]} — not a search axis",
    ),
}


@pytest.mark.parametrize("case", UNREADABLE)
def test_an_unreadable_spec_gets_a_message_not_a_traceback(case, tmp_path, capsys):
    content, expected = UNREADABLE[case]
    code, err = validate(tmp_path, content, capsys)
    assert code == 2
    assert expected in err
    assert "Traceback" not in err


def test_a_bad_value_is_shown_cut_short():
    with pytest.raises(Exception) as err:
        parse_spec("seed: " + "9" * 4000 + "\ndata: {name: iris}\n")
    (problem,) = err.value.problems
    assert problem.startswith("seed (line 1): 999") and len(problem) < 200
    assert f"less than or equal to {SEED_MAX}" in problem


# ----------------------------------------------------------------------- class 10: accepted without a word
SILENT = {
    "a duplicate top-level key": ("seed: 1\ndata: {name: iris}\nseed: 2\n", "seed (line 3): duplicate key"),
    "a duplicate nested key": (
        "data: {name: iris}\nclassical:\n  cv:\n    folds: 3\n    folds: 10\n",
        "classical.cv.folds (line 5): duplicate key — also given on line 4",
    ),
    "a duplicate key in a flow mapping": (
        "data: {name: iris, name: wine}\n",
        "data.name (line 1): duplicate key",
    ),
    "a duplicate quoted key": ("seed: 1\n'seed': 2\ndata: {name: iris}\n", "seed (line 2): duplicate key"),
    "an empty file": ("", "the spec is empty"),
    "only comments": ("# seed: 1\n\n# data: {name: iris}\n", "the spec is empty"),
    "an empty mapping": ("{}\n", "the spec is empty"),
    "a spec that enables no stage": ("seed: 3\n", "the spec enables no stage"),
    "classical off and no lstm": ("data: {name: iris}\nclassical: {enabled: false}\n", "enables no stage"),
    "models: []": (
        "data: {name: iris}\nclassical: {models: []}\n",
        "classical.models (line 2): [] — List should have at least 1 item",
    ),
    "features: []": ("data: {path: x.csv, target: y, features: []}\n", "data.features (line 1): []"),
    "sites: []": (
        "lstm: {data: {sites: []}}\n",
        "lstm.data.sites (line 1): [] — List should have at least 1",
    ),
    "dynamic_inputs: []": ("lstm: {data: {dynamic_inputs: []}}\n", "lstm.data.dynamic_inputs (line 1): []"),
    "seed: true": (
        "seed: true\ndata: {name: iris}\n",
        "seed (line 1): True — Input should be a valid integer",
    ),
    "repeats: yes": (
        "data: {name: iris}\nclassical: {cv: {scheme: repeated, repeats: yes}}\n",
        "classical.cv.repeats (line 2): True — Input should be a valid integer",
    ),
    "a CPU count of true": (
        "data: {name: iris}\nclassical: {resources_per_trial: {cpu: true}}\n",
        "classical.resources_per_trial.cpu (line 2): True — Input should be a valid number",
    ),
    "a switch given as 0": (
        "data: {name: iris}\nserve: {token_auth: 0}\n",
        "serve.token_auth (line 2): 0 — Input should be a valid boolean",
    ),
    "a seed beyond numpy's range": (
        f"seed: {SEED_MAX + 1}\ndata: {{name: iris}}\n",
        f"seed (line 1): {SEED_MAX + 1} — Input should be less than or equal to {SEED_MAX}",
    ),
    "one port for both APIs": (
        "data: {name: iris}\nserve: {inference_port: 9000, metrics_port: 9000}\n",
        "inference_port and metrics_port share port 9000",
    ),
    "a management port (the management API is a Unix socket only)": (
        "data: {name: iris}\nserve: {management_port: 8081}\n",
        "management_port: the management API has no port; it listens on a Unix socket",
    ),
    "the default metrics port for inference": (
        "data: {name: iris}\nserve: {inference_port: 8082}\n",
        "serve (line 2): {'inference_port': 8082} — inference_port and metrics_port share port 8082",
    ),
    "holdout.test_size: 0.999": (
        "data: {name: iris}\nclassical: {holdout: {test_size: 0.999}}\n",
        "classical.holdout.test_size (line 2): 0.999 — Input should be less than or equal to 0.5",
    ),
    "cv.test_size: 0.95": (
        "data: {name: iris}\nclassical: {cv: {scheme: holdout, test_size: 0.95}}\n",
        "classical.cv.test_size (line 2): 0.95 — Input should be less than or equal to 0.5",
    ),
    "an infinite learning rate": (
        "lstm: {train: {learning_rate: .inf}}\n",
        "lstm.train.learning_rate (line 1): inf — Input should be a finite number",
    ),
    "linger for NaN seconds": ("data: {name: iris}\nmetrics: {linger_seconds: .nan}\n", "finite number"),
}


@pytest.mark.parametrize("case", SILENT)
def test_a_spec_once_accepted_silently_is_refused_by_name(case, tmp_path, capsys):
    text, expected = SILENT[case]
    code, err = validate(tmp_path, text, capsys)
    assert code == 2
    assert expected in err
    assert "Traceback" not in err


def test_a_holdout_too_large_is_not_answered_with_use_a_larger_one(tmp_path, capsys):
    code, err = validate(tmp_path, "data: {name: iris}\nclassical: {holdout: {test_size: 0.999}}\n", capsys)
    assert code == 2 and "larger test_size" not in err


def test_a_merge_key_overriding_its_base_is_no_duplicate_but_a_repeated_key_is():
    cv = "  cv: {scheme: nested, inner: &k {scheme: kfold, folds: 3}, outer: {<<: *k, folds: 4}}\n"
    spec = parse_spec("data: {name: iris}\nclassical:\n" + cv)
    assert (spec.classical.cv.inner.folds, spec.classical.cv.outer.folds) == (3, 4)
    with pytest.raises(Exception, match="duplicate key"):
        parse_spec("data: {name: iris}\nclassical:\n" + cv.replace("folds: 4", "folds: 4, folds: 5"))

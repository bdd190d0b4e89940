"""What a model file may hold and who may have written it: skops types exactly those of mlkube's zoo, and a
model card signed with the key that training and serving hold (refused otherwise, in-process and when
TorchServe's worker loads it)."""

from __future__ import annotations

import builtins
import itertools
import os
import shutil
import warnings
from dataclasses import replace

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris

from mlkube.trainer.artifacts import load_sklearn_model, read_model_card, save_sklearn_model
from mlkube.trainer.classical import zoo
from mlkube.trainer.classical.encode import Encoding
from mlkube.trainer.classical.trust import trusted_skops_types
from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.run import atomic_write_json, read_json
from mlkube.trainer.signing import KEY_ENV, sign
from tests.serving_fixtures import RUN_ID, iris_pipeline, make_run, serve_spec

FIELDS = {"name": "classical", "features": ["a", "b"], "target": "y", "estimator": "X"}
# Tuned parameters that change what a fitted model holds (its tree index, its loss), per (task, model).
PARAM_VARIANTS = {
    ("classification", "LR"): [{"solver": "liblinear"}],  # one-vs-rest on three classes
    ("classification", "KNN"): [{"algorithm": "kd_tree"}, {"algorithm": "ball_tree", "metric": "manhattan"}],
    ("regression", "KNN"): [{"algorithm": "ball_tree"}, {"algorithm": "brute", "metric": "chebyshev"}],
    ("regression", "GBM"): [
        {"loss": "absolute_error"},
        {"loss": "gamma"},
        {"loss": "poisson"},
        {"loss": "quantile", "quantile": 0.5},
    ],
}
SMALL = {"RF": {"n_estimators": 3}, "GBM": {"max_iter": 3}}  # fitted state of the same types, sooner


def _data(task: str, classes: int):
    if task == "regression":
        X, y = load_diabetes(return_X_y=True, as_frame=True)
        y = y / y.max()  # positive: gamma and poisson losses
    else:
        X, y = load_iris(return_X_y=True, as_frame=True)
        y = y if classes == 3 else (y > 0).astype(int)
    X = X.copy()
    X.iloc[0, 0] = np.nan  # something for the imputer to fill
    return X, y


def _typed(X):
    """The data as a typed table: a categorical (with a gap), a boolean and a date beside the numbers."""
    X = X.assign(
        colour=np.where(np.arange(len(X)) % 3 == 0, "red", "blue").astype(object),
        flag=(np.arange(len(X)) % 2).astype(float),
        day=np.datetime64("2024-01-01") + np.arange(len(X)).astype("timedelta64[D]"),
    )
    X.loc[1, "colour"] = np.nan
    return X, Encoding(
        {c: "numeric" for c in X.columns[:-3]} | {"colour": "categorical", "flag": "boolean", "day": "date"}
    )


# every way a typed table enters a pipeline: unknown categories × date encodings, with and without PCA
TABLE_VARIANTS = [
    ({"unknown": unknown, "dates": dates}, reduce)
    for unknown, dates, reduce in itertools.product(
        ("ignore", "error"), ("parts", "ordinal"), ({}, {"pca": 2})
    )
]


def _variants(task: str, name: str):
    """(params, scaler, classes, input kind, table variant): every scaler and input kind (array, DataFrame,
    typed table) with the zoo's defaults, each table variant once, then each parameter variant once."""
    classes = (3, 2) if task == "classification" else (0,)
    scalers = ("auto", "none", "standard", "minmax")
    yield from itertools.product([{}], scalers, classes, ("array", "frame"), [({}, {})])
    yield from itertools.product([{}], ["auto"], classes[:1], ["table"], TABLE_VARIANTS)
    yield from itertools.product(
        PARAM_VARIANTS.get((task, name), []), ["none"], classes, ["frame"], [({}, {})]
    )


@pytest.mark.unit
@pytest.mark.parametrize(("task", "name"), [(t, n) for t, table in zoo.ZOOS.items() for n in table])
def test_every_zoo_model_and_pipeline_variant_saves_and_loads(tmp_path, task, name):
    for i, (params, scaler, classes, kind, (table, reduce)) in enumerate(_variants(task, name)):
        X, y = _data(task, classes)
        encoding = None
        if kind == "table":
            X, types = _typed(X)
            encoding = replace(types, **table)
        X = X.to_numpy() if kind == "array" else X
        plan = zoo.plan(name, task, {**SMALL.get(name, {}), **params}, scaler, classes, 0, reduce)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings of a three-iteration fit
            pipeline = zoo.build_pipeline(plan, "mean", encoding).fit(X, y)
        save_sklearn_model(tmp_path / str(i), pipeline, {**FIELDS, "task": task})
        loaded, _ = load_sklearn_model(tmp_path / str(i), trusted_skops_types())
        np.testing.assert_array_equal(loaded.predict(X), pipeline.predict(X), err_msg=f"{plan}")


def _code_runner(func) -> object:
    """A fitted pipeline that calls `func` on its input at the first prediction."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    return make_pipeline(StandardScaler(), FunctionTransformer(func=func, validate=False))


ATTACKS = {
    "builtins.exec": builtins.exec,
    "builtins.eval": builtins.eval,
    "builtins.getattr": builtins.getattr,
    "posix.system": os.system,
    "builtins.__import__": builtins.__import__,
    "numpy.load": np.load,  # allow_pickle: a NumPy name, trusted by the old "numpy." prefix
    "shutil.rmtree": shutil.rmtree,
}


@pytest.mark.unit
@pytest.mark.parametrize("type_name", ATTACKS)
def test_a_skops_file_that_calls_code_is_refused_naming_the_type_even_when_its_card_is_signed(
    tmp_path, type_name
):
    save_sklearn_model(tmp_path, _code_runner(ATTACKS[type_name]), {**FIELDS, "task": "regression"})
    read_model_card(tmp_path)  # the card itself is correctly signed
    with pytest.raises(MlkubeError, match="types that mlkube's model zoo does not produce") as refused:
        load_sklearn_model(tmp_path, trusted_skops_types())
    assert type_name in str(refused.value)


@pytest.mark.unit
def test_a_user_defined_class_is_refused_naming_it(tmp_path):
    from sklearn.preprocessing import Normalizer

    pipeline, fields, data = iris_pipeline()
    pipeline.steps.insert(0, ("pass", Normalizer()))  # a scikit-learn class the zoo never uses
    save_sklearn_model(tmp_path, pipeline, fields)
    with pytest.raises(MlkubeError, match="Normalizer"):
        load_sklearn_model(tmp_path, trusted_skops_types())


@pytest.fixture
def saved(tmp_path):
    pipeline, fields, _ = iris_pipeline()
    save_sklearn_model(tmp_path / "classical", pipeline, fields)
    return tmp_path / "classical"


def _resign(folder, key: bytes, change=lambda card: None) -> None:
    """Change the card as someone who writes the runs volume could, signed with `key` (not serving's)."""
    card = read_json(folder / "model.json")
    change(card)
    card.pop("signature", None)
    atomic_write_json(folder / "model.json", {**card, "signature": sign(card, key)})


def _unsigned(folder) -> None:
    card = read_json(folder / "model.json")
    card.pop("signature")
    atomic_write_json(folder / "model.json", card)


def _edited(folder) -> None:
    card = read_json(folder / "model.json")
    card["classes"] = ["virginica", "versicolor", "setosa"]  # the signature kept
    atomic_write_json(folder / "model.json", card)


def _other_weights(folder) -> None:
    """Other weights with their SHA-256 in the card, re-signed with a key of the attacker's own."""
    from mlkube.trainer.run import sha256_file

    pipeline, fields, data = iris_pipeline()
    pipeline.steps[-1][1].set_params(solver="lsqr")
    save_sklearn_model(folder.parent / "other", pipeline.fit(data, load_iris().target), fields)
    shutil.copy(folder.parent / "other" / "model.skops", folder / "model.skops")
    _resign(folder, os.urandom(32), lambda card: card.update(sha256=sha256_file(folder / "model.skops")))


FORGERIES = {
    "re-signed with another key": (lambda f: _resign(f, os.urandom(32)), "does not match the signing key"),
    "unsigned": (_unsigned, "is not signed"),
    "edited, signature kept": (_edited, "does not match the signing key"),
    "other weights, hash and signature": (_other_weights, "does not match the signing key"),
}


@pytest.mark.unit
@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_card_not_signed_with_servings_key_is_refused_naming_the_key_file(saved, signing_key_file, forgery):
    forge, message = FORGERIES[forgery]
    forge(saved)
    for load in (read_model_card, lambda f: load_sklearn_model(f, trusted_skops_types())):
        with pytest.raises(MlkubeError, match=message) as refused:
            load(saved)
        assert str(signing_key_file) in str(refused.value) and KEY_ENV in refused.value.fix


@pytest.mark.unit
def test_a_changed_weights_file_is_refused(saved):
    (saved / "model.skops").write_bytes((saved / "model.skops").read_bytes() + b"\0")
    with pytest.raises(MlkubeError, match="integrity check failed"):
        load_sklearn_model(saved, trusted_skops_types())


@pytest.mark.unit
def test_a_named_key_file_that_is_missing_is_an_error_and_never_created(saved, tmp_path, monkeypatch):
    missing = tmp_path / "secret" / "key"
    monkeypatch.setenv(KEY_ENV, str(missing))
    pipeline, fields, _ = iris_pipeline()
    for act in (
        lambda: read_model_card(saved),
        lambda: save_sklearn_model(tmp_path / "new", pipeline, fields),
    ):
        with pytest.raises(MlkubeError, match=f"the signing key {missing} does not exist") as refused:
            act()
        assert "/etc/mlkube/signing/key" in refused.value.fix
    assert not missing.exists()


@pytest.mark.unit
def test_training_creates_the_default_key_once_private_and_reuses_it(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    key = tmp_path / "home" / ".config" / "mlkube" / "signing.key"
    pipeline, fields, _ = iris_pipeline()
    save_sklearn_model(tmp_path / "a", pipeline, fields)
    first = key.read_bytes()
    assert len(first) == 32 and key.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in key.parent.iterdir()] == ["signing.key"]  # no temp file left
    save_sklearn_model(tmp_path / "b", pipeline, fields)
    assert key.read_bytes() == first
    load_sklearn_model(tmp_path / "a", trusted_skops_types())
    monkeypatch.setenv("HOME", str(tmp_path / "elsewhere"))  # another machine's (missing) default key
    with pytest.raises(MlkubeError, match="signing key .*elsewhere.* does not exist"):
        load_sklearn_model(tmp_path / "a", trusted_skops_types())


# ------------------------------------------------------------------ through TorchServe's worker
def _plant(run, folder) -> None:
    """Pack `folder` as the run's classical archive and record it, as a writer of the runs volume could."""
    from mlkube.serving.archive import ARCHIVES_JSON, archive_model
    from mlkube.trainer.artifacts import read_model_card

    store = run / "serving" / "model-store"
    store.mkdir(parents=True, exist_ok=True)
    record = archive_model(folder, read_model_card(folder, verify=False), store / "classical.mar", RUN_ID)
    # recorded as made from the run's own model, so that `mlkube serve` keeps it
    record["model_sha256"] = read_json(run / "models" / "classical" / "model.json")["sha256"]
    atomic_write_json(store / ARCHIVES_JSON, {"classical": record})


PLANTED = {
    "a card signed with another key": (
        lambda folder: _resign(folder, os.urandom(32)),
        "does not match the signing key",
    ),
    "a signed pipeline that ends in builtins.exec": (
        lambda folder: save_sklearn_model(
            folder, _code_runner(builtins.exec), FIELDS | {"task": "regression"}
        ),
        "does not produce: ['builtins.exec']",  # a FunctionTransformer may hold only the date functions
    ),
}


@pytest.mark.integration
@pytest.mark.parametrize("planted", PLANTED)
def test_serve_refuses_a_planted_model_in_the_worker(run_cli, tmp_path, planted):
    plant, message = PLANTED[planted]
    run = make_run(tmp_path / "runs", serve=serve_spec())
    forged = shutil.copytree(run / "models" / "classical", tmp_path / "forged")
    plant(forged)
    _plant(run, forged)
    done = run_cli("serve", run, "--model", "classical", "--detach")
    assert done.returncode == 2, done.stdout
    assert "TorchServe refused to load a model" in done.stderr and message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (run / "serving" / "server.json").exists()


@pytest.mark.integration
def test_archive_refuses_a_card_signed_with_another_key(run_cli, tmp_path):
    run = make_run(tmp_path / "runs")
    _resign(run / "models" / "lstm", os.urandom(32))
    done = run_cli("archive", run)
    assert done.returncode == 2 and "does not match the signing key" in done.stderr
    assert KEY_ENV in done.stderr

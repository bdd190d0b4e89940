"""Serving test helpers: a run with both models built through the artifact contract, requests for them,
ports."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

RUN_ID = "20250101-000000-abcd"
SEQUENCE_LENGTH = 30  # days per LSTM window
# The LSTM fixture's variables: name → (mean, spread) of its raw values, in their units.
DYNAMIC = {"prcp": (3.1, 6.5), "tmax": (14.2, 9.8), "srad": (310.0, 120.0)}
STATIC = {"area": (850.0, 900.0), "elev_mean": (760.0, 520.0)}
TARGET = "QObs(mm/d)"


def scrape(server) -> dict[tuple[str, str], float]:
    """TorchServe's metrics endpoint, parsed: (sample name, model) → value."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{server.url('metrics')}/metrics", timeout=10).text
    return {
        (s.name, s.labels.get("ModelName") or s.labels.get("model_name")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def serve_spec(**overrides):
    """A ServeSpec on free loopback ports (never a user's 8080)."""
    from mlkube.serving.server import free_port
    from mlkube.trainer.spec import ServeSpec

    ports = {f"{api}_port": free_port("127.0.0.1") for api in ("inference", "metrics")}
    return ServeSpec(**{**ports, "max_batch_delay_ms": 2, **overrides})


def iris_pipeline():
    """An LDA pipeline fitted on the iris DataFrame with integer class codes (the card names the classes)."""
    from sklearn.datasets import load_iris
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    iris = load_iris(as_frame=True)
    pipeline = make_pipeline(StandardScaler(), LinearDiscriminantAnalysis()).fit(iris.data, iris.target)
    fields = {
        "name": "classical",
        "task": "classification",
        "features": list(iris.data.columns),
        "target": "species",
        "classes": list(iris.target_names),
        "estimator": "LDA",
        "metrics": {"accuracy": 0.98},
    }
    return pipeline, fields, iris.data


def lstm_series(static: bool = True):
    """Three sites × 120 days of raw series under the fixture's names (training period: days 0-59); the
    target is positive streamflow (mm/day). Without `static`, no static attributes."""
    from tests.test_preprocess import make_data

    data = make_data(seed=0, sites=3, days=120, dynamic=len(DYNAMIC), static=len(STATIC), missing=0.0)
    (dynamic_mean, dynamic_std), (static_mean, static_std) = (
        np.array(list(v.values())).T for v in (DYNAMIC, STATIC)
    )
    attributes = data.static * static_std + static_mean
    return dataclasses.replace(
        data,
        dynamic=((data.dynamic - 10) / 3 * dynamic_std + dynamic_mean).astype(np.float32),
        static=(attributes if static else attributes[:, :0]).astype(np.float32),
        dynamic_inputs=tuple(DYNAMIC),
        static_inputs=tuple(STATIC) if static else (),
        target_name=TARGET,
    )


def lstm_statistics(data=None, normalization: str = "global"):
    """The statistics training fits on `data` (default: `lstm_series()`), with the target trained in log
    space."""
    from mlkube.trainer.preprocess import fit_statistics
    from mlkube.trainer.spec import PreprocessSpec

    data = lstm_series() if data is None else data
    return fit_statistics(data, PreprocessSpec(log_target=True, normalization=normalization))


def lstm_network(seed: int = 0, hidden_size: int = 16, days: int = SEQUENCE_LENGTH, data=None, stats=None):
    """A seeded network and its card's fields as training makes them (`artifact_meta`): `data` default
    `lstm_series()`, `stats` default `lstm_statistics(data)`; `days` is the sequence length it serves."""
    import torch

    from mlkube.trainer.lstm.model import artifact_meta, build_model
    from mlkube.trainer.spec import LstmSpec

    data = lstm_series() if data is None else data
    stats = lstm_statistics(data) if stats is None else stats
    spec = LstmSpec(sequence_length=days, model={"hidden_size": hidden_size})
    fields = artifact_meta(spec, data, stats, {"nse": 0.71})
    torch.manual_seed(seed)
    return build_model(fields["architecture"]).eval(), fields


TABLES_MODEL = "tables"  # the typed-table model of `make_run(tables=True)`


def tables_csv(folder: Path) -> Path:
    """A small typed table as a user brings it: semicolon-separated, decimal commas, a categorical, a
    boolean and a date column, and an imbalanced string target."""
    rng = np.random.default_rng(4)
    n = 90
    colour = rng.choice(["red", "blue", "green"], n, p=[0.3, 0.4, 0.3])
    size = rng.normal(10, 3, n).round(2)
    days = np.datetime64("2024-01-01") + rng.integers(0, 366, n).astype("timedelta64[D]")
    late = days > np.datetime64("2024-10-01")
    label = np.where((colour == "red") & (size > 9) | late, "churn", "stay")
    lines = ["size;colour;member;joined;label"] + [
        f"{str(v).replace('.', ',')};{c};{'yes' if m else 'no'};{d};{t}"
        for v, c, m, d, t in zip(size, colour, rng.random(n) < 0.5, days, label, strict=True)
    ]
    path = folder / "customers.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def tables_model(folder: Path, data_folder: Path):
    """The typed-table model trained as the classical stages train it (mlkube's loader, ColumnTransformer
    pipeline, card with columns and a real example row), saved in `folder`; (pipeline, data)."""
    from mlkube.trainer.artifacts import save_sklearn_model
    from mlkube.trainer.classical import zoo
    from mlkube.trainer.classical.encode import Encoding
    from mlkube.trainer.classical.stages import example_row, input_columns
    from mlkube.trainer.spec import DataSpec
    from mlkube.trainer.tabular import load_tabular

    data = load_tabular(DataSpec(path=tables_csv(data_folder), target="label"))
    plan = zoo.plan("LR", "classification", {"class_weight": "balanced"}, "auto", 2, 0)
    pipeline = zoo.build_pipeline(plan, "none", Encoding(data.column_types, unknown="error"))
    pipeline.fit(data.X, data.y)
    rows = np.arange(data.n_rows)
    fields = {
        "name": TABLES_MODEL,
        "task": "classification",
        "features": data.feature_names,
        "columns": input_columns(data, rows),
        "unknown_categories": "error",
        "example": example_row(data, rows[-5:]),
        "target": data.target_name,
        "classes": data.class_names,
        "estimator": "LR",
    }
    save_sklearn_model(folder, pipeline, fields)
    return pipeline, data


ENSEMBLE_MODEL = "lstm_ensemble"  # the LSTM ensemble of `make_run(ensemble=N)`


def ensemble_model(run, members: int) -> list[Path]:
    """models/lstm_ensemble: `members` networks of seeds 0..N-1 saved as training saves each member (its own
    signed card, under the run's ensemble/), assembled by `trainer.lstm.ensemble.assemble`; the members'
    folders."""
    from mlkube.trainer.lstm.ensemble import assemble
    from mlkube.trainer.lstm.jobs import Job
    from mlkube.trainer.lstm.model import save_lstm_model

    jobs = [Job(f"member-{k}", k, run.ensemble_member(k)) for k in range(members)]
    for job in jobs:
        network, fields = lstm_network(seed=job.seed)
        save_lstm_model(job.folder, network, fields)
    assemble(run.model_dir(ENSEMBLE_MODEL), jobs, {"nse": 0.75})
    return [job.folder for job in jobs]


def make_run(
    root: Path, serve=None, run_id: str = RUN_ID, tables: bool = False, ensemble: int = 0, **lstm
) -> Path:
    """A finished-looking run folder with models/classical and models/lstm (and, with `tables`,
    models/tables: `tables_model`; with `ensemble` N, models/lstm_ensemble: `ensemble_model`), written by the
    contract functions (`lstm`: hidden_size, days for `lstm_network`)."""
    from mlkube.trainer.artifacts import save_sklearn_model
    from mlkube.trainer.lstm.model import save_lstm_model
    from mlkube.trainer.run import CLASSICAL_MODEL, LSTM_MODEL, Run
    from mlkube.trainer.spec import Spec

    spec = Spec(serve=serve) if serve is not None else Spec()
    with Run.start(spec.to_yaml(), root, run_id=run_id) as run:
        pipeline, fields, _ = iris_pipeline()
        save_sklearn_model(run.model_dir(CLASSICAL_MODEL), pipeline, fields)
        network, fields = lstm_network(**lstm)
        save_lstm_model(run.model_dir(LSTM_MODEL), network, fields)
        if tables:
            tables_model(run.model_dir(TABLES_MODEL), run.path)
        if ensemble:
            ensemble_model(run, ensemble)
    return run.path


def forcing_windows(count: int, seed: int = 1) -> list[dict]:
    """`count` LSTM request instances with plausible raw forcings and static attributes."""
    rng = np.random.default_rng(seed)
    return [
        {
            "dynamic": {
                name: rng.normal(m, s, SEQUENCE_LENGTH).round(3).tolist() for name, (m, s) in DYNAMIC.items()
            },
            "static": {name: round(float(rng.normal(m, s)), 3) for name, (m, s) in STATIC.items()},
        }
        for _ in range(count)
    ]


def iris_instances(rows) -> list[dict]:
    return [{k: float(v) for k, v in row.items()} for _, row in rows.iterrows()]


def expected_lstm(folder: Path, instances, stats=None, sites=None) -> np.ndarray:
    """The LSTM's answers computed here, independently of the handler: the saved network run with torch
    directly on windows standardised with training's statistics (`stats`, default `lstm_statistics()`), and
    its output brought back to the target's units by training's own de-standardisation (inverse log
    included). `sites`: each instance's statistics row (default 0)."""
    import torch

    from mlkube.trainer.artifacts import read_model_card
    from mlkube.trainer.lstm.model import build_model
    from mlkube.trainer.preprocess import destandardize_target

    stats = lstm_statistics() if stats is None else stats
    card = read_model_card(folder)
    network = build_model(card.architecture).eval()
    network.load_state_dict(torch.load(folder / card.weights, weights_only=True))
    rows = np.zeros(len(instances), dtype=int) if sites is None else np.asarray(sites)
    x = np.stack(
        [
            np.column_stack(
                [
                    *(np.array(i["dynamic"][n]) for n in card.preprocessing.dynamic_inputs),
                    *(
                        np.full(card.preprocessing.sequence_length, i["static"][n])
                        for n in card.preprocessing.static_inputs
                    ),
                ]
            )
            for i in instances
        ]
    )
    mean = np.hstack([stats.dynamic_mean[rows], np.tile(stats.static_mean, (len(rows), 1))])[:, None]
    std = np.hstack([stats.dynamic_std[rows], np.tile(stats.static_std, (len(rows), 1))])[:, None]
    with torch.no_grad():
        out = network(torch.tensor((x - mean) / std, dtype=torch.float32))[:, -1:].double().numpy()
    return destandardize_target(out, stats, sites=rows)[:, 0].astype(np.float64)


def record_archive(run, name: str) -> None:
    """Record archive `name`'s current SHA-256 in archives.json, as a writer of the runs volume who changed
    the archive (but cannot read the signing key) could."""
    from mlkube.serving.archive import ARCHIVES_JSON, read_archives
    from mlkube.trainer.run import atomic_write_json, sha256_file

    records = read_archives(run)
    records[name]["sha256"] = sha256_file(run.model_store / f"{name}.mar")
    atomic_write_json(run.model_store / ARCHIVES_JSON, records)

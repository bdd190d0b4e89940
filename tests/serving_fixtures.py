"""Serving test helpers: a run with both models built through the artifact contract, requests for them, ports."""

from __future__ import annotations

from pathlib import Path

import numpy as np

RUN_ID = "20250101-000000-abcd"
LSTM_PREPROCESSING = {
    "sequence_length": 30,
    "horizon": 1,
    "dynamic_inputs": ["prcp", "tmax", "srad"],
    "static_inputs": ["area", "elev_mean"],
    "dynamic_mean": [3.1, 14.2, 310.0],
    "dynamic_std": [6.5, 9.8, 120.0],
    "static_mean": [850.0, 760.0],
    "static_std": [900.0, 520.0],
    "target_mean": 0.4,
    "target_std": 1.2,
    "log_target": True,
}


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

    ports = {f"{api}_port": free_port("127.0.0.1") for api in ("inference", "management", "metrics")}
    return ServeSpec(**{**ports, "max_batch_delay_ms": 2, **overrides})


def iris_pipeline():
    """An LDA pipeline fitted on the iris DataFrame with integer class codes (model.json names the classes)."""
    from sklearn.datasets import load_iris
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    iris = load_iris(as_frame=True)
    pipeline = make_pipeline(StandardScaler(), LinearDiscriminantAnalysis()).fit(iris.data, iris.target)
    meta = {
        "name": "classical",
        "task": "classification",
        "features": list(iris.data.columns),
        "target": "species",
        "classes": list(iris.target_names),
        "estimator": "LDA",
        "metrics": {"accuracy": 0.98},
    }
    return pipeline, meta, iris.data


def lstm_network(seed: int = 0, hidden_size: int = 16, days: int = LSTM_PREPROCESSING["sequence_length"]):
    """An untrained network (seeded) and its model.json meta; `days` is the sequence length it serves."""
    import torch

    from mlkube.trainer.lstm.model import build_model

    torch.manual_seed(seed)
    architecture = {
        "n_dynamic": 3,
        "n_static": 2,
        "hidden_size": hidden_size,
        "num_layers": 1,
        "dropout": 0.0,
        "static_embedding": None,
    }
    meta = {
        "name": "lstm",
        "task": "regression",
        "target": "QObs(mm/d)",
        "architecture": architecture,
        "features": [*LSTM_PREPROCESSING["dynamic_inputs"], *LSTM_PREPROCESSING["static_inputs"]],
        "preprocessing": {**LSTM_PREPROCESSING, "sequence_length": days},
        "metrics": {"nse": 0.71},
    }
    return build_model(architecture).eval(), meta


def make_run(root: Path, serve=None, run_id: str = RUN_ID, **lstm) -> Path:
    """A finished-looking run folder with models/classical and models/lstm, written by the contract functions
    (`lstm`: hidden_size, days for `lstm_network`)."""
    from mlkube.trainer.artifacts import save_sklearn_model
    from mlkube.trainer.lstm.model import save_lstm_model
    from mlkube.trainer.run import Run
    from mlkube.trainer.spec import Spec

    spec = Spec(serve=serve) if serve is not None else Spec()
    run = Run.start(spec.to_yaml(), root, run_id=run_id)
    pipeline, meta, _ = iris_pipeline()
    save_sklearn_model(run.models / "classical", pipeline, meta)
    network, meta = lstm_network(**lstm)
    save_lstm_model(run.models / "lstm", network, meta)
    return run.path


def forcing_windows(count: int, seed: int = 1) -> list[dict]:
    """`count` LSTM request instances with plausible raw forcings and static attributes."""
    rng = np.random.default_rng(seed)
    p = LSTM_PREPROCESSING
    days = p["sequence_length"]
    return [
        {
            "dynamic": {
                name: (rng.normal(m, s, days)).round(3).tolist()
                for name, m, s in zip(p["dynamic_inputs"], p["dynamic_mean"], p["dynamic_std"], strict=False)
            },
            "static": {
                name: round(float(rng.normal(m, s)), 3)
                for name, m, s in zip(p["static_inputs"], p["static_mean"], p["static_std"], strict=False)
            },
        }
        for _ in range(count)
    ]


def iris_instances(rows) -> list[dict]:
    return [{k: float(v) for k, v in row.items()} for _, row in rows.iterrows()]


def expected_lstm(instances) -> np.ndarray:
    """The LSTM's answer computed here from the preprocessing contract, independently of the handler."""
    import torch

    p = LSTM_PREPROCESSING
    network, _ = lstm_network()
    x = np.stack(
        [
            np.column_stack(
                [
                    *(np.array(i["dynamic"][n]) for n in p["dynamic_inputs"]),
                    *(np.full(p["sequence_length"], i["static"][n]) for n in p["static_inputs"]),
                ]
            )
            for i in instances
        ]
    )
    mean = np.array(p["dynamic_mean"] + p["static_mean"])
    std = np.array(p["dynamic_std"] + p["static_std"])
    with torch.no_grad():
        out = network(torch.tensor((x - mean) / std, dtype=torch.float32))[:, -1].double().numpy()
    return np.exp(out * p["target_std"] + p["target_mean"]) - 0.1

"""The LSTM workers' Prometheus exporter: a per-step hook, one exporter per process, rank-labelled.

Process r of a node listens on `metrics.port + LOCAL_RANK` (the chart's `metrics-<r>` container ports). Under
a local `mlkube run` whose tuning driver already exports on `metrics.port`, the base moves one port up
(`worker_port`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from mlkube.trainer.exporters import start_exporter, worker_port


class MetricsHook:
    """Called after every step (trainer.lstm.train.StepInfo); updates this worker's series."""

    def __init__(self, rank: int, checkpoints: Path):
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        labelnames = ["rank"]

        def gauge(name: str, text: str):
            return Gauge(name, text, labelnames, registry=self.registry).labels(rank=str(rank))

        self.steps = Counter(
            "mlkube_lstm_steps",
            "Optimisation steps taken by this worker process.",
            labelnames,
            registry=self.registry,
        ).labels(rank=str(rank))
        self.epoch = gauge("mlkube_lstm_epoch", "Current epoch (1-based).")
        self.loss = gauge("mlkube_lstm_train_loss", "Training loss of the last step's global batch.")
        self.nse = gauge(
            "mlkube_lstm_validation_nse", "Median validation NSE over sites at the last epoch end."
        )
        self.speed = gauge(
            "mlkube_lstm_sequences_per_second", "Sequences of the global batch per second, last step."
        )
        self.restarts = gauge(
            "mlkube_lstm_restarts", "Worker-group restarts torchrun has made (TORCHELASTIC_RESTART_COUNT)."
        )
        self.restarts.set(int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")))
        self.nse.set(float("nan"))
        gauge(
            "mlkube_lstm_checkpoint_age_seconds",
            "Seconds since the newest checkpoint was written (NaN: none yet).",
        ).set_function(lambda: _age_seconds(checkpoints))
        if _cuda():
            import torch

            gauge("mlkube_lstm_gpu_memory_bytes", "GPU memory held by this worker's tensors.").set_function(
                lambda: torch.cuda.memory_allocated()
            )

    def __call__(self, info) -> None:
        self.steps.inc()
        self.epoch.set(info.epoch)
        self.loss.set(info.loss)
        self.speed.set(info.samples_per_second)
        if info.validation_nse is not None:
            self.nse.set(info.validation_nse)


def metrics_hook(port: int | None, rank: int, local_rank: int, checkpoints: Path) -> MetricsHook | None:
    """The hook of this worker, exporting on its port; None when metrics are off or the port is taken."""
    if port is None:
        return None
    hook = MetricsHook(rank, checkpoints)
    return hook if start_exporter(worker_port(port, local_rank), hook.registry, f"LSTM rank {rank}") else None


def _age_seconds(checkpoints: Path) -> float:
    newest = max(
        (p.stat().st_mtime for p in Path(checkpoints).glob("*") if p.is_file() and ".tmp-" not in p.name),
        default=None,
    )
    return float("nan") if newest is None else time.time() - newest


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()

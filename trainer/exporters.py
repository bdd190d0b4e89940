"""Prometheus exporters of mlkube's own long-running processes (the tuning driver, the LSTM workers).

Off unless `metrics.port` is set (the Helm chart sets it). Names follow Prometheus conventions: `mlkube_`
prefix, base units, `_total` for counters, help text on every metric, no high-cardinality labels. A port
already in use is reported (naming the port and the setting) and the work goes on without metrics.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

TRIAL_STATES = ("finished", "failed", "early_stopped")
# The port this process (the tuning driver) exports on: child processes with that metrics.port move one up.
TAKEN_PORT_ENV = "MLKUBE_METRICS_PORT_TAKEN"


def start_exporter(port: int | None, registry, what: str, host: str = "0.0.0.0") -> bool:
    """Serve `registry` on `port`; False (and a warning on stderr) when off or the port is taken."""
    if port is None:
        return False
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        print(
            f"mlkube: metrics for {what} are off: port {port} (metrics.port) cannot be used "
            f"({exc.strerror}); fix: set metrics.port to a free port. Going on without metrics.",
            file=sys.stderr,
            flush=True,
        )
        return False
    return True


@dataclass
class TuneMetrics:
    """The tuning driver's metrics, in their own registry."""

    registry: Any
    running: Any
    trials: Any
    folds: Any
    best: Any
    best_value: float = float("-inf")

    @classmethod
    def create(cls) -> TuneMetrics:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        registry = CollectorRegistry()
        metrics = cls(
            registry=registry,
            running=Gauge("mlkube_tune_trials_running", "Ray Tune trials running now.", registry=registry),
            trials=Counter(
                "mlkube_tune_trials",
                "Ray Tune trials ended, by how they ended.",
                ["state"],
                registry=registry,
            ),
            folds=Counter(
                "mlkube_tune_folds",
                "Cross-validation folds scored (rate: folds per second).",
                registry=registry,
            ),
            best=Gauge(
                "mlkube_tune_best_score",
                "Best mean fold score of a finished trial so far (higher is better).",
                registry=registry,
            ),
        )
        for state in TRIAL_STATES:
            metrics.trials.labels(state=state)  # export zeros from the start
        metrics.best.set(float("nan"))
        return metrics

    def trial_started(self) -> None:
        self.running.inc()

    def fold_scored(self) -> None:
        self.folds.inc()

    def trial_ended(self, state: str, mean_score: float | None) -> None:
        self.running.dec()
        self.trials.labels(state=state).inc()
        if state == "finished" and mean_score is not None and mean_score > self.best_value:
            self.best_value = mean_score
            self.best.set(mean_score)


_tune_metrics: dict[int, TuneMetrics | None] = {}


def tune_metrics(port: int | None) -> TuneMetrics | None:
    """The driver's TuneMetrics exported on `port` (started once per port and process); None when metrics are
    off or the port could not be had."""
    if port is None:
        return None
    if port not in _tune_metrics:
        metrics = TuneMetrics.create()
        _tune_metrics[port] = metrics if start_exporter(port, metrics.registry, "the tuning driver") else None
        if _tune_metrics[port] is not None:
            os.environ[TAKEN_PORT_ENV] = str(port)
    return _tune_metrics[port]


def worker_port(port: int, local_rank: int) -> int:
    """The exporter port of worker process `local_rank`: metrics.port + local rank, one higher where the
    parent process (a local `mlkube run`) already exports the tuning driver's metrics on metrics.port."""
    taken = os.environ.get(TAKEN_PORT_ENV) == str(port)
    return port + int(taken) + local_rank

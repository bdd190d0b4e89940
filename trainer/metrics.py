"""Prometheus exporters of mlkube's own long-running processes (the tuning driver, the LSTM workers).

Off unless `metrics.port` is set (the Helm chart sets it). Names follow Prometheus conventions: `mlkube_` prefix,
base units, `_total` for counters, help text on every metric, no high-cardinality labels. A port already in use is
reported (naming the port and the setting) and the work goes on without metrics.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

TRIAL_STATES = ("finished", "failed", "early_stopped")


def start_exporter(port: int | None, registry, what: str, host: str = "0.0.0.0") -> bool:
    """Serve `registry` on `port`; False (and a warning on stderr) when off or the port is taken."""
    if port is None:
        return False
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        print(f"mlkube: metrics for {what} are off: port {port} (metrics.port) cannot be used ({exc.strerror}); "
              f"fix: set metrics.port to a free port. Going on without metrics.", file=sys.stderr, flush=True)
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
            trials=Counter("mlkube_tune_trials", "Ray Tune trials ended, by how they ended.", ["state"], registry=registry),
            folds=Counter("mlkube_tune_folds", "Cross-validation folds scored (rate: folds per second).", registry=registry),
            best=Gauge("mlkube_tune_best_score", "Best mean fold score of a finished trial so far (higher is better).",
                       registry=registry),
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


_tune_metrics: TuneMetrics | None = None


def tune_metrics(port: int | None) -> TuneMetrics | None:
    """The driver's TuneMetrics, exported on `port` (started once per process); None when metrics are off."""
    global _tune_metrics
    if port is not None and _tune_metrics is None:
        metrics = TuneMetrics.create()
        if start_exporter(port, metrics.registry, "the tuning driver"):
            _tune_metrics = metrics
    return _tune_metrics if port is not None else None

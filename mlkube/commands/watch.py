"""`mlkube watch RUN`: the live figures of a run in the terminal, read from its directory (no Prometheus
needed)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mlkube.trainer.run import Run, read_json


def _read(path: Path) -> dict | None:
    try:
        return read_json(path)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def snapshot(run: Run) -> str:
    """One screenful: finished stages with their seconds, then what the running stage reports in
    status.json."""
    done = run.done_stages
    timings = _read(run.timings_file) or {}
    lines = [
        f"run {run.id}  ({'finished' if run.finished else 'running or stopped'})",
        "stages done: " + (", ".join(f"{s} {timings.get(s, 0):.1f}s" for s in done) or "none"),
    ]
    status = _read(run.status_file)
    if status:
        body = {k: v for k, v in status.items() if k not in ("stage", "updated")}
        lines.append(
            f"tuning {status.get('stage', '?')} (as of {status.get('updated', '?')}): {json.dumps(body)}"
        )
    training = _last_training_line(run.lstm_log)
    if training:
        lines.append(f"LSTM: {training}")
    return "\n".join(lines)


def _last_training_line(log: Path) -> str | None:
    """Rank 0's newest progress line (step, epoch, loss, sequences/s, validation NSE) from the torchrun
    log."""
    if not log.exists():
        return None
    with open(log, "rb") as fh:
        fh.seek(max(0, log.stat().st_size - 8192))
        tail = fh.read().decode(errors="replace").splitlines()
    steps = [line for line in tail if line.startswith("[lstm] step")]
    return steps[-1].removeprefix("[lstm] ").strip() if steps else None


def cmd_watch(args: argparse.Namespace) -> int:
    run = Run.open(args.run)
    previous = None
    while True:
        text = snapshot(run)
        if text != previous:
            print(text + "\n", flush=True)
            previous = text
        if args.once or run.finished:
            return 0
        time.sleep(args.interval)

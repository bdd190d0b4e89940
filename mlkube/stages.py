"""Stages that span the science packages or need a launcher: prepare (load and describe the data), deep (the
LSTM, trained by torchrun on this machine) and present (report)."""

from __future__ import annotations

from typing import Any

from mlkube.trainer.run import atomic_write_json


def prepare(ctx) -> None:
    """Load every data set the spec names, check it, and record its shape and hash."""
    spec, out = ctx.spec, {}
    hashes: dict[str, Any] = {}
    if spec.runs_classical:
        from mlkube.trainer.classical.stages import classical_data

        cd = classical_data(spec)
        out["classical"] = {
            **cd.data.summary(),
            "class_names": cd.data.class_names,
            "train_rows": len(cd.train),
            "holdout_rows": 0 if cd.holdout is None else len(cd.holdout),
        }
        hashes["classical"] = cd.data.digest()
        ctx.progress.say(
            f"data: {cd.data.source}, {cd.data.n_rows} rows × {len(cd.data.feature_names)} features, "
            f"{cd.data.task}"
        )
    if spec.runs_lstm:
        from mlkube.trainer.lstm.prepared import prepare as prepare_lstm
        from mlkube.trainer.lstm.prepared import summary

        prepared = prepare_lstm(spec, ctx.run.path)
        out["lstm"], hashes["lstm"] = summary(prepared), prepared.data_hash
        ctx.progress.say(
            f"time series: {len(prepared.data.sites)} sites × {len(prepared.data.dates)} days, "
            f"{len(prepared.data.dynamic_inputs)} dynamic inputs → {prepared.data.target_name}"
        )
    atomic_write_json(ctx.run.stage_file("prepare"), out)
    ctx.run.write_env(seed=spec.seed, data_hash=hashes)


def deep(ctx) -> None:
    """Train the LSTM under torchrun on this machine (an ensemble's members as Ray Tune trials, side by side),
    then score it beside the baselines (stages/deep.json)."""
    from mlkube.torchrun import launch
    from mlkube.trainer.lstm.ensemble import train_ensemble
    from mlkube.trainer.lstm.stage import deep as train_and_score

    if ctx.spec.lstm.ensemble > 1:
        train_and_score(ctx, lambda: train_ensemble(ctx))
    else:
        train_and_score(ctx, lambda: launch(ctx.spec.lstm.elastic, ctx.run, ctx.progress))


def present(ctx) -> None:
    """leaderboard.json, cv_scores.csv, figures/*.png and report.html, from the stages' results."""
    from mlkube.trainer.report import present as write_report

    write_report(ctx.run)
    ctx.progress.say(f"report: {ctx.run.report_file}")

"""Present: the leaderboard (JSON, CSV, terminal table), figures (PNG) and a self-contained HTML report.

Everything here is derived from the stages' plain-data results in `stages/*.json`, so `mlkube report RUN` can
rebuild it at any time.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from pathlib import Path
from typing import Any

from mlkube.trainer.run import Run, atomic_path, atomic_write_json, atomic_write_text, read_json


# ------------------------------------------------------------------------------------------ leaderboard
def build_leaderboard(run: Run) -> dict[str, Any] | None:
    """leaderboard.json: the classical models {"metric", "task", "scheme", "rows" (best first), "best":
    {"model", "holdout_score", ...}} and, when the LSTM ran, "deep": the LSTM beside its baselines on the test
    period."""
    board: dict[str, Any] = {}
    evaluate_path, improve_path = run.stage_file("evaluate"), run.stage_file("improve")
    if evaluate_path.exists():
        spot = read_json(evaluate_path)
        improved = read_json(improve_path, {"tuned": [], "best": None})
        rows = _rank_rows(spot["rows"] + improved["tuned"])
        board.update(
            {
                "metric": spot["metric"],
                "metrics": spot.get("metrics", [spot["metric"]]),
                "task": spot["task"],
                "scheme": spot["scheme"],
                "rows": rows,
                "best": improved["best"],
            }
        )
        failed = [{"model": r["model"], "error": r.get("error")} for r in rows if r["status"] == "failed"]
        if failed:
            board["failed"] = failed
    if run.stage_file("deep").exists():
        deep = read_json(run.stage_file("deep"))
        board["deep"] = {
            "metric": "median_nse",
            "period": deep["period"],
            "dates": deep["dates"],
            "target": deep["target"],
            "rows": deep["ranking"],
            "artifact": deep["artifact"],
        }
    if run.stage_file("search_lstm").exists():
        board["lstm_search"] = lstm_search_board(read_json(run.stage_file("search_lstm")))
    if run.stage_file("basin_cv").exists():
        board["basin_cv"] = basin_cv_board(read_json(run.stage_file("basin_cv")))
    return board or None


def basin_cv_board(cv: dict[str, Any]) -> dict[str, Any]:
    """The cross-validation over sites in leaderboard.json: every metric's median pooled over the held-out
    sites (ungauged), over the same sites trained gauged, and per fold."""
    rows = [
        {
            "setting": "ungauged",
            "fold": None,
            "sites": list(cv["pooled"]["sites"]),
            "medians": cv["pooled"]["median"],
        },
        {
            "setting": "gauged",
            "fold": None,
            "model": cv["gauged"]["model"],
            "sites": list(cv["gauged"]["sites"]),
            "medians": cv["gauged"]["median"],
        },
    ]
    rows += [
        {
            "setting": "fold",
            "fold": f["fold"],
            "sites": f["test_sites"],
            "trained_on": f["train_sites"],
            "medians": f["median"],
        }
        for f in cv["folds"]
    ]
    return {"scheme": cv["scheme"], "period": cv["period"], "metric": "median_nse", "rows": rows}


def _rank_rows(rows: list[dict]) -> list[dict]:
    order = {"ok": 0, "early_stopped": 1, "failed": 2}
    return sorted(
        rows, key=lambda r: (order[r["status"]], -(r["mean"] if r["mean"] is not None else float("-inf")))
    )


def write_cv_scores(path: Path, rows: list[dict], metrics: list[str] | None = None) -> None:
    """cv_scores.csv: one row per model × fold; `score` is the ranking metric's, then one column per other
    metric of `metrics` (the ranking one first)."""
    others = (metrics or [])[1:]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "stage", "params", "fold", "score", *others])
    for row in rows:
        per_metric = row.get("metrics") or {}
        for k, (fold, score) in enumerate(zip(row.get("folds", []), row["scores"], strict=False)):
            extra = [_fold_score(per_metric, m, k) for m in others]
            writer.writerow(
                [
                    row["model"],
                    row.get("stage", ""),
                    json.dumps(row["params"], sort_keys=True),
                    fold,
                    repr(score),
                ]
                + extra
            )
    atomic_write_text(path, buffer.getvalue())


def _fold_score(per_metric: dict, metric: str, fold: int) -> str:
    scores = per_metric.get(metric, {}).get("scores", [])
    return repr(scores[fold]) if fold < len(scores) and scores[fold] is not None else ""


def metric_means(board: dict[str, Any], row: dict[str, Any]) -> list[str]:
    """The row's mean of every metric but the ranking one, in the board's order ('-' where undefined)."""
    per_metric = row.get("metrics") or {}
    return [_num(per_metric.get(m, {}).get("mean")) for m in board.get("metrics", [])[1:]]


def leaderboard_table(board: dict[str, Any]) -> str:
    """The leaderboard as a plain-text table (for `mlkube show`)."""
    lines: list[str] = []
    if "rows" in board:
        lines += [
            f"metric: {board['metric']}   task: {board['task']}   scheme: {board['scheme']['scheme']}",
            "",
        ]
        others = board.get("metrics", [])[1:]
        header = (
            f"{'#':>2}  {'model':<8} {'stage':<9} {'mean':>8} {'std':>8} "
            + "".join(f"{m:>{max(8, len(m))}} " for m in others)
            + f"{'folds':>5} {'fit s':>7}  {'status':<13} params"
        )
        lines += [header, "-" * len(header)]
        for i, row in enumerate(board["rows"], 1):
            params = json.dumps(row["params"], sort_keys=True)
            means = "".join(
                f"{v:>{max(8, len(m))}} " for m, v in zip(others, metric_means(board, row), strict=True)
            )
            lines.append(
                f"{i:>2}  {row['model']:<8} {row.get('stage', ''):<9} "
                f"{_num(row['mean']):>8} {_num(row['std']):>8} {means}"
                f"{len(row['scores']):>5} {_num(row.get('fit_time'), 3):>7}  {row['status']:<13} {params}"
            )
        best = board.get("best")
        if best:
            hold = _num(best.get("holdout_score")) if best.get("holdout_score") is not None else "no holdout"
            lines += [
                "",
                f"best: {best['model']}  cv {best['cv_mean']:.4f}  holdout {hold}  → {best['artifact']}",
            ]
    if "deep" in board:
        deep = board["deep"]
        title = (
            f"LSTM and baselines on the {deep['period']} period "
            f"{deep['dates'][0]}..{deep['dates'][1]} ({deep['target']}):"
        )
        lines += ["", title, f"{'model':<12} {'median NSE':>10} {'mean NSE':>9} {'median KGE':>10}"]
        lines += [
            f"{r['model']:<12} {_num(r['median_nse']):>10} {_num(r['mean_nse']):>9} "
            f"{_num(r['median_kge']):>10}"
            for r in deep["rows"]
        ]
    if "lstm_search" in board:
        search = board["lstm_search"]
        lines += [
            "",
            f"LSTM search ({search['algorithm']}, scheduler {search['scheduler']}), {search['metric']}:",
        ]
        lines += [f"{'trial':>5} {'status':<16} {'epochs':>6} {'score':>8}  config"]
        lines += [
            f"{t['trial']:>5} {t['status']:<16} {t['epochs']:>6} {_num(t['score']):>8}  "
            f"{_search_config(t['config'])}{'  (best)' if t['trial'] == search['best'] else ''}"
            for t in search["trials"]
        ]
    if "basin_cv" in board:
        cv = board["basin_cv"]
        lines += ["", f"Cross-validation over sites ({cv['scheme']}), {cv['period']} period:"]
        lines += [f"{'setting':<10} {'fold':>4} {'median NSE':>10} {'median KGE':>10}  sites"]
        lines += [
            f"{r['setting']:<10} {'' if r['fold'] is None else r['fold']:>4} {_num(r['medians']['nse']):>10} "
            f"{_num(r['medians']['kge']):>10}  {', '.join(r['sites'])}"
            for r in cv["rows"]
        ]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- figures
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Save a figure atomically as PNG without a timestamp, so the same data gives the same bytes."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    _pyplot().close(fig)
    return path


def comparison_boxplot(board: dict[str, Any], path: Path) -> Path | None:
    """The algorithm-comparison box plot of fold scores (spot-check rows, in leaderboard order)."""
    rows = [r for r in board["rows"] if r["status"] == "ok" and r.get("stage") == "evaluate" and r["scores"]]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(rows) + 2), 4))
    ax.boxplot([r["scores"] for r in rows], tick_labels=[r["model"] for r in rows])
    ax.set_title(f"Algorithm comparison ({board['scheme']['scheme']} CV)")
    ax.set_ylabel(board["metric"])
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def confusion_plot(best: dict[str, Any], class_names: list[str], path: Path) -> Path | None:
    """Confusion matrix of the best model on the holdout."""
    matrix = best.get("confusion_matrix") if best else None
    if not matrix:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    ticks = range(len(matrix))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("observed")
    for i, line in enumerate(matrix):
        for j, count in enumerate(line):
            ax.text(j, i, str(count), ha="center", va="center", color="black")
    ax.set_title(f"{best['model']} on the holdout ({best.get('holdout_rows', '?')} rows)")
    return save_figure(fig, path)


def _one_vs_rest(best: dict[str, Any], class_names: list[str]):
    """The holdout's (label, observed 0/1, predicted probability) per class: the positive class of a binary
    target, every class one-vs-rest for more; empty without probabilities."""
    import numpy as np

    predictions = (best or {}).get("holdout_predictions") or {}
    if "probabilities" not in predictions:
        return []
    observed, probabilities = np.asarray(predictions["observed"]), np.asarray(predictions["probabilities"])
    classes = [1] if probabilities.shape[1] == 2 else range(probabilities.shape[1])
    names = class_names or [str(c) for c in range(probabilities.shape[1])]
    return [(names[c], observed == c, probabilities[:, c]) for c in classes]


def class_curves(best: dict[str, Any], class_names: list[str], folder: Path) -> list[Path]:
    """ROC and precision-recall curves of the best model on the holdout (scikit-learn's displays), for the
    positive class of a binary target or every class one-vs-rest."""
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    curves = _one_vs_rest(best, class_names)
    if not curves:
        return []
    plt = _pyplot()
    paths = []
    for display, name, title in (
        (RocCurveDisplay, "roc_curve.png", "ROC"),
        (PrecisionRecallDisplay, "precision_recall.png", "Precision-recall"),
    ):
        fig, ax = plt.subplots(figsize=(5, 4.5))
        for label, observed, scores in curves:
            display.from_predictions(observed, scores, name=label, ax=ax)
        ax.set_title(
            f"{title}: {best['model']} on the holdout ({'one-vs-rest' if len(curves) > 1 else 'binary'})"
        )
        paths.append(save_figure(fig, folder / name))
    return paths


def residual_plot(best: dict[str, Any], folder: Path) -> Path | None:
    """Residuals against predictions of the best regression model on the holdout (scikit-learn's
    PredictionErrorDisplay)."""
    import numpy as np
    from sklearn.metrics import PredictionErrorDisplay

    predictions = (best or {}).get("holdout_predictions") or {}
    if not predictions:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    observed, predicted = (np.asarray(predictions[k], dtype=float) for k in ("observed", "predicted"))
    PredictionErrorDisplay.from_predictions(observed, predicted, kind="residual_vs_predicted", ax=ax)
    ax.set_title(f"Residuals: {best['model']} on the holdout")
    return save_figure(fig, folder / "residuals.png")


def tuning_curves(trials: list[dict], metric: str, path: Path) -> Path | None:
    """Best mean score of the finished trials so far against trial number (early-stopped and failed trials
    count as trials but not as scores), one line per tuned model."""
    curves: dict[str, tuple[list[int], list[float]]] = {}
    for trial in trials:
        xs, ys = curves.setdefault(trial["model"], ([], []))
        best = ys[-1] if ys else float("nan")
        if trial["status"] == "ok" and trial["mean"] is not None:
            best = trial["mean"] if math.isnan(best) else max(best, trial["mean"])  # NaN: none yet
        xs.append(len(xs) + 1)
        ys.append(best)
    if all(math.isnan(y) for _, ys in curves.values() for y in ys):
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 4))
    for model, (xs, ys) in curves.items():
        ax.step(xs, ys, where="post", marker="o", ms=3, label=model)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(f"best mean {metric} so far")
    ax.set_title("Tuning curves (finished trials)")
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def nested_plot(nested: dict[str, dict], metric: str, path: Path) -> Path | None:
    """Nested-CV estimate beside the inner-CV score of the chosen params: the gap is the tuning optimism."""
    models = [m for m, n in nested.items() if "nested_mean" in n]
    if not models:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(models) + 2), 4))
    xs = range(len(models))
    ax.bar(
        [x - 0.2 for x in xs],
        [nested[m]["inner_mean"] for m in models],
        width=0.4,
        label="inner CV (optimistic)",
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [nested[m]["nested_mean"] for m in models],
        width=0.4,
        label="nested CV (unbiased)",
    )
    ax.set_xticks(list(xs), models)
    ax.set_ylabel(metric)
    ax.set_title("Nested CV vs inner-CV optimism")
    ax.legend(loc="lower right")
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------- HTML
def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(path.stem.replace('_', ' '))}</figcaption></figure>"
    )


def _html_table(headers: list[str] | None, rows: list[list[Any]], table_id: str | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>" if headers else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table{f' id={table_id!r}' if table_id else ''}>{head}{body}</table>"


def _classical_table(board: dict[str, Any]) -> str:
    others = [f"{m} mean" for m in board.get("metrics", [])[1:]]
    return _html_table(
        [
            "#",
            "model",
            "stage",
            f"{board['metric']} mean",
            "std",
            *others,
            "folds",
            "fit s",
            "status",
            "params",
        ],
        [
            [
                i,
                r["model"],
                r.get("stage", ""),
                _num(r["mean"]),
                _num(r["std"]),
                *metric_means(board, r),
                len(r["scores"]),
                _num(r.get("fit_time"), 3),
                r["status"] + (f": {r['error']}" if r.get("error") else ""),
                json.dumps(r["params"], sort_keys=True),
            ]
            for i, r in enumerate(board["rows"], 1)
        ],
        table_id="leaderboard",
    )


def _nested_table(nested: dict[str, dict]) -> str:
    return _html_table(
        ["model", "nested mean", "nested std", "inner CV of chosen params", "optimism"],
        [
            [
                m,
                _num(n.get("nested_mean")),
                _num(n.get("nested_std")),
                _num(n.get("inner_mean")),
                _num(n.get("optimism")),
            ]
            for m, n in nested.items()
        ],
    )


def _num(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left}
th{background:#f3f3f3}figure{display:inline-block;margin:.5em}img{max-width:520px}pre{background:#f6f6f6;padding:.5em}"""


def write_html(run: Run, sections: list[tuple[str, str]]) -> Path:
    """report.html: one self-contained page (images inline), readable offline."""
    body = "".join(f"<h2>{html.escape(title)}</h2>{content}" for title, content in sections)
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>mlkube run {html.escape(run.id)}</title>"
        f"<style>{CSS}</style></head><body><h1>mlkube run {html.escape(run.id)}</h1>{body}</body></html>\n"
    )
    return atomic_write_text(run.report_file, page)


def _facts(pairs: dict[str, Any]) -> str:
    return _html_table(None, [[k, v] for k, v in pairs.items() if v is not None])


def _problem_section(prepared: dict[str, Any]) -> str:
    parts = []
    if "classical" in prepared:
        c = prepared["classical"]
        parts.append(
            "<h3>Tabular data</h3>"
            + _facts(
                {
                    "source": c["source"],
                    "rows × features": f"{c['rows']} × {c['features']}",
                    "target": c["target"],
                    "task": c["task"],
                    "classes (rows)": ", ".join(f"{k} ({v})" for k, v in c.get("classes", {}).items())
                    or None,
                    "missing feature values": c["missing_values"],
                    "training rows (CV)": c["train_rows"],
                    "holdout rows": c["holdout_rows"] or "none",
                    "features": ", ".join(c["feature_names"]),
                }
            )
        )
    if "lstm" in prepared:
        t = prepared["lstm"]
        parts.append(
            "<h3>Time series</h3>"
            + _facts(
                {
                    "sites": (
                        f"{len(t['sites'])}: {', '.join(t['sites'][:12])}"
                        f"{' …' if len(t['sites']) > 12 else ''}"
                    ),
                    "days": t["days"],
                    "dynamic inputs": ", ".join(t["dynamic_inputs"]),
                    "static inputs": ", ".join(t["static_inputs"]) or "none",
                    "target": t["target"],
                    **{f"{name} period": f"{a} .. {b}" for name, (a, b) in t["periods"].items()},
                    "missing target fraction": f"{t['missing_target_fraction']:.1%}",
                }
            )
        )
    return "".join(parts)


def _deep_section(run: Run, deep: dict[str, Any]) -> str:
    training = deep["training"]
    ranking = _html_table(
        ["model", "median NSE", "mean NSE", "median KGE"],
        [
            [r["model"], _num(r["median_nse"]), _num(r["mean_nse"]), _num(r["median_kge"])]
            for r in deep["ranking"]
        ],
    )
    facts = _facts(
        {
            "test period": " .. ".join(deep["dates"]),
            "steps": f"{training['steps']} of {training['total_steps']}",
            "epochs (best)": f"{training['epochs']} ({training['best_epoch']})",
            "stopped early": training["stopped_early"],
            "world size": training["world_size"],
            "restarts survived": training["restarts"],
            "device": training["device"],
            "cuDNN": training["cudnn"],
            "sequences/s": _num(training["samples_per_second"], 1),
            "training seconds": training["seconds"],
            "ensemble (seeds)": _ensemble_seeds(training),
        }
    )
    figures = [run.path / f for f in deep.get("figures", {}).values() if (run.path / f).exists()]
    return ranking + facts + "".join(_img(f) for f in figures)


def _ensemble_seeds(training: dict[str, Any]) -> str | None:
    """`N (seed, ...)` for an ensemble's training record (its members' rows are in the ranking), else None."""
    members = training.get("members")
    return f"{len(members)} ({', '.join(str(m.get('seed', '?')) for m in members)})" if members else None


def _basin_cv_section(run: Run, board: dict[str, Any], cv: dict[str, Any]) -> str:
    """Every metric's median held out (pooled and per fold) and trained gauged, NSE per site both ways, and
    the NSE CDF of both."""
    metrics = list(board["rows"][0]["medians"])  # every metric of trainer.lstm.scores, in its order
    medians = _html_table(
        ["setting", "fold", "held-out sites", *metrics],
        [
            [r["setting"], "" if r["fold"] is None else r["fold"], ", ".join(r["sites"])]
            + [_num(r["medians"][m]) for m in metrics]
            for r in board["rows"]
        ],
    )
    sites = _html_table(
        ["site", "fold holding it out", "NSE ungauged", f"NSE gauged ({cv['gauged']['model']})"],
        [
            [site, cv["pooled"]["fold_of"][site], _num(row["nse"]), _num(cv["gauged"]["sites"][site]["nse"])]
            for site, row in cv["pooled"]["sites"].items()
        ],
    )
    figures = [run.path / f for f in cv.get("figures", {}).values() if (run.path / f).exists()]
    return medians + sites + "".join(_img(f) for f in figures)


def _serving_section(run: Run) -> str:
    """The run's models and how to call them (the request schemas are in docs/serving.md)."""
    from mlkube.trainer.artifacts import MODEL_JSON, read_model_card
    from mlkube.trainer.card import SklearnCard

    rows = []
    for card_path in sorted(run.models.glob(f"*/{MODEL_JSON}")):
        card = read_model_card(card_path.parent, verify=False)
        estimator = card.estimator if isinstance(card, SklearnCard) else "LSTM"
        rows.append([card.name, card.framework, estimator, ", ".join(card.features), card.sha256[:12]])
    if not rows:
        return ""
    commands = (
        f"mlkube serve {run.path}            # TorchServe on 127.0.0.1, token auth on; prints a curl line\n"
        f"mlkube predict {run.path} --model {rows[0][0]}   # sends the model's example request\n"
        f"mlkube serve {run.path} --stop"
    )
    return (
        _html_table(["model", "framework", "estimator", "inputs", "sha256"], rows)
        + f"<pre>{html.escape(commands)}</pre>"
    )


def _environment_section(run: Run) -> str:
    env, timings = read_json(run.env_file, {}), read_json(run.timings_file, {})
    facts = _facts(
        {
            "run id": env.get("run_id"),
            "seed": env.get("seed"),
            "host": env.get("hostname"),
            "platform": env.get("platform"),
            "started": env.get("start_time"),
            "data hash": json.dumps(env.get("data_hash")) if env.get("data_hash") else None,
        }
    )
    stages = _html_table(["stage", "seconds"], [[k, _num(v, 1)] for k, v in timings.items()])
    versions = _html_table(["library", "version"], list(env.get("versions", {}).items()))
    return facts + "<h3>Seconds per stage</h3>" + stages + "<h3>Libraries</h3>" + versions


def present(run: Run) -> dict[str, Any] | None:
    """Write leaderboard.json, cv_scores.csv, the figures and report.html from the stages' results."""
    board = build_leaderboard(run)
    prepared = read_json(run.stage_file("prepare"), {})
    sections: list[tuple[str, str]] = [("Problem", _problem_section(prepared))]
    if board is not None:
        atomic_write_json(run.leaderboard_file, board)
    if board and "rows" in board:
        write_cv_scores(run.cv_scores_file, board["rows"], board.get("metrics"))
        sections.append(("Classical models", _classical_section(run, board, prepared.get("classical", {}))))
    if board and "lstm_search" in board:
        search = read_json(run.stage_file("search_lstm"))
        sections.append(("LSTM search (Ray Tune)", _lstm_search_section(run, board["lstm_search"], search)))
    if run.stage_file("deep").exists():
        sections.append(("LSTM and baselines", _deep_section(run, read_json(run.stage_file("deep")))))
    if board and "basin_cv" in board:
        cv = read_json(run.stage_file("basin_cv"))
        sections.append(
            ("Cross-validation over basins (ungauged)", _basin_cv_section(run, board["basin_cv"], cv))
        )
    sections.append(("Serving", _serving_section(run)))
    sections.append(("Environment and timings", _environment_section(run)))
    write_html(run, [(title, body) for title, body in sections if body])
    return board


def _classical_section(run: Run, board: dict[str, Any], summary: dict[str, Any]) -> str:
    improved = read_json(run.stage_file("improve"), {})
    figures = [
        comparison_boxplot(board, run.figures / "algorithm_comparison.png"),
        confusion_plot(board["best"], summary.get("class_names", []), run.figures / "confusion_matrix.png"),
        tuning_curves(improved.get("trials", []), board["metric"], run.figures / "tuning_curves.png"),
        nested_plot(improved.get("nested", {}), board["metric"], run.figures / "nested_cv.png"),
    ]
    if board["task"] == "classification":
        figures += class_curves(board["best"], summary.get("class_names", []), run.figures)
    else:
        figures.append(residual_plot(board["best"], run.figures))
    best = board.get("best") or {}
    parts = [
        _facts(
            {
                "metric": board["metric"],
                "scheme": board["scheme"]["scheme"],
                "best model": best.get("model"),
                "its CV mean": _num(best.get("cv_mean")),
                "its holdout score": _num(best.get("holdout_score")),
                **{
                    f"its holdout {m}": _num(v)
                    for m, v in (best.get("holdout_scores") or {}).items()
                    if m != board["metric"]
                },
                "saved as": best.get("artifact"),
            }
        ),
        _classical_table(board),
    ]
    if improved.get("nested"):
        parts.append("<h3>Nested cross-validation</h3>" + _nested_table(improved["nested"]))
    parts.append("".join(_img(f) for f in figures if f))
    return "".join(parts)


def lstm_search_board(search: dict[str, Any]) -> dict[str, Any]:
    """The LSTM search in leaderboard.json: every trial (config, per-epoch median validation NSE, status:
    finished | early_stopped (patience) | stopped_by_asha | failed, score) in trial order, and the best."""
    keys = ("trial", "config", "status", "epochs", "curve", "score", "error")
    return {
        "metric": "median validation NSE",
        "algorithm": search["algorithm"],
        "scheduler": search["scheduler"],
        "epochs": search["epochs"],
        "best": search["best"]["trial"],
        "best_config": search["best"]["config"],
        "trials": [{k: t[k] for k in keys if k in t} for t in search["trials"]],
    }


STATUS_TEXT = {
    "finished": "finished",
    "early_stopped": "early stopping",
    "stopped_by_asha": "stopped by ASHA",
    "failed": "failed",
}


def _search_config(config: dict[str, Any]) -> str:
    """A trial's config as `learning_rate 0.0031, optimizer sgd` (the last part of each dotted path)."""
    return ", ".join(
        f"{k.rsplit('.', 1)[-1]} {f'{v:.3g}' if isinstance(v, float) else v}" for k, v in config.items()
    )


def _lstm_search_section(run: Run, board: dict[str, Any], search: dict[str, Any]) -> str:
    rows = [
        [
            f"{t['trial']}{' (best)' if t['trial'] == board['best'] else ''}",
            _search_config(t["config"]),
            STATUS_TEXT.get(t["status"], t["status"]) + (f": {t['error']}" if t.get("error") else ""),
            t["epochs"],
            " ".join(_num(v, 3) for v in t["curve"]),
            _num(t["score"]),
        ]
        for t in board["trials"]
    ]
    table = _html_table(
        ["trial", "config", "status", "epochs", f"{board['metric']} per epoch", "score"], rows, "lstm-search"
    )
    counts = {s: sum(t["status"] == s for t in board["trials"]) for s in STATUS_TEXT}
    facts = _facts(
        {
            "algorithm": board["algorithm"],
            "scheduler": board["scheduler"],
            "epochs per trial": board["epochs"],
            "trials": ", ".join(f"{n} {STATUS_TEXT[s]}" for s, n in counts.items() if n),
            "best (trained by the deep stage)": _search_config(board["best_config"]),
        }
    )
    figures = [run.path / f for f in search.get("figures", {}).values() if (run.path / f).exists()]
    return facts + table + "".join(_img(f) for f in figures)


def compare(a: dict[str, Any], b: dict[str, Any], names: tuple[str, str]) -> str:
    """Two leaderboards side by side: each model's best mean in either run, and the difference."""
    if a["metric"] != b["metric"]:
        return (
            f"the runs use different metrics ({a['metric']} vs {b['metric']}); "
            "their scores are not comparable"
        )
    best: list[dict[str, float]] = [{}, {}]
    for side, board in zip(best, (a, b), strict=False):
        for row in board["rows"]:
            if row["status"] == "ok" and row["mean"] > side.get(row["model"], float("-inf")):
                side[row["model"]] = row["mean"]
    models = sorted(
        set(best[0]) | set(best[1]), key=lambda m: -max(best[0].get(m, -1e300), best[1].get(m, -1e300))
    )
    width = max(12, *(len(n) for n in names))
    lines = [f"metric: {a['metric']}", f"{'model':<8} {names[0]:>{width}} {names[1]:>{width}} {'b - a':>9}"]
    for model in models:
        x, y = best[0].get(model), best[1].get(model)
        delta = f"{y - x:+.4f}" if x is not None and y is not None else "-"
        lines.append(f"{model:<8} {_num(x):>{width}} {_num(y):>{width}} {delta:>9}")
    holdout = [board["best"].get("holdout_score") if board.get("best") else None for board in (a, b)]
    lines.append(
        f"{'best':<8} {(a['best'] or {}).get('model', '-'):>{width}} "
        f"{(b['best'] or {}).get('model', '-'):>{width}}"
    )
    lines.append(f"{'holdout':<8} {_num(holdout[0]):>{width}} {_num(holdout[1]):>{width}}")
    return "\n".join(lines)

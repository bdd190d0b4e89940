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
from pathlib import Path
from typing import Any

from trainer.run import Run, atomic_path, atomic_write_json, atomic_write_text, read_json


# ------------------------------------------------------------------------------------------ leaderboard
def build_leaderboard(run: Run) -> dict[str, Any] | None:
    """leaderboard.json: {"metric", "task", "scheme", "rows" (best first), "best": {"model", "holdout_score", ...}}."""
    evaluate_path, improve_path = run.stage_file("evaluate"), run.stage_file("improve")
    if not evaluate_path.exists():
        return None
    spot = read_json(evaluate_path)
    improved = read_json(improve_path) if improve_path.exists() else {"tuned": [], "best": None}
    rows = _rank_rows(spot["rows"] + improved["tuned"])
    board = {"metric": spot["metric"], "task": spot["task"], "scheme": spot["scheme"], "rows": rows,
             "best": improved["best"]}
    failed = [{"model": r["model"], "error": r.get("error")} for r in rows if r["status"] == "failed"]
    if failed:
        board["failed"] = failed
    return board


def _rank_rows(rows: list[dict]) -> list[dict]:
    order = {"ok": 0, "early_stopped": 1, "failed": 2}
    return sorted(rows, key=lambda r: (order[r["status"]], -(r["mean"] if r["mean"] is not None else float("-inf"))))


def write_cv_scores(path: Path, rows: list[dict]) -> None:
    """cv_scores.csv: one row per model × fold."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "stage", "params", "fold", "score"])
    for row in rows:
        for fold, score in zip(row.get("folds", []), row["scores"]):
            writer.writerow([row["model"], row.get("stage", ""), json.dumps(row["params"], sort_keys=True), fold, repr(score)])
    atomic_write_text(path, buffer.getvalue())


def leaderboard_table(board: dict[str, Any]) -> str:
    """The leaderboard as a plain-text table (for `mlkube show`)."""
    lines = [f"metric: {board['metric']}   task: {board['task']}   scheme: {board['scheme']['scheme']}", ""]
    header = f"{'#':>2}  {'model':<8} {'stage':<9} {'mean':>8} {'std':>8} {'folds':>5} {'fit s':>7}  {'status':<13} params"
    lines += [header, "-" * len(header)]
    for i, row in enumerate(board["rows"], 1):
        mean = f"{row['mean']:.4f}" if row["mean"] is not None else "-"
        std = f"{row['std']:.4f}" if row["std"] is not None else "-"
        fit = f"{row['fit_time']:.3f}" if row.get("fit_time") is not None else "-"
        params = json.dumps(row["params"], sort_keys=True)
        lines.append(f"{i:>2}  {row['model']:<8} {row.get('stage', ''):<9} {mean:>8} {std:>8} {len(row['scores']):>5} "
                     f"{fit:>7}  {row['status']:<13} {params}")
    best = board.get("best")
    if best:
        hold = f"{best['holdout_score']:.4f}" if best.get("holdout_score") is not None else "no holdout"
        lines += ["", f"best: {best['model']}  cv {best['cv_mean']:.4f}  holdout {hold}  → {best['artifact']}"]
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


def tuning_curves(trials: list[dict], metric: str, path: Path) -> Path | None:
    """Best mean score of the finished trials so far against trial number (early-stopped and failed trials count
    as trials but not as scores), one line per tuned model."""
    curves: dict[str, tuple[list[int], list[float]]] = {}
    for trial in trials:
        xs, ys = curves.setdefault(trial["model"], ([], []))
        best = ys[-1] if ys else float("nan")
        if trial["status"] == "ok" and trial["mean"] is not None:
            best = trial["mean"] if best != best else max(best, trial["mean"])  # best != best: NaN, none yet
        xs.append(len(xs) + 1)
        ys.append(best)
    if not any(y == y for _, ys in curves.values() for y in ys):
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
    ax.bar([x - 0.2 for x in xs], [nested[m]["inner_mean"] for m in models], width=0.4, label="inner CV (optimistic)")
    ax.bar([x + 0.2 for x in xs], [nested[m]["nested_mean"] for m in models], width=0.4, label="nested CV (unbiased)")
    ax.set_xticks(list(xs), models)
    ax.set_ylabel(metric)
    ax.set_title("Nested CV vs inner-CV optimism")
    ax.legend(loc="lower right")
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------- HTML
def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(path.stem.replace("_", " "))}</figcaption></figure>'


def _table(board: dict[str, Any]) -> str:
    head = "<tr><th>#</th><th>model</th><th>stage</th><th>mean</th><th>std</th><th>folds</th><th>fit s</th><th>status</th><th>params</th></tr>"
    body = []
    for i, r in enumerate(board["rows"], 1):
        cells = [i, r["model"], r.get("stage", ""), _num(r["mean"]), _num(r["std"]), len(r["scores"]),
                 _num(r.get("fit_time"), 3), r["status"] + (f": {r['error']}" if r.get("error") else ""),
                 json.dumps(r["params"], sort_keys=True)]
        body.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _nested_table(nested: dict[str, dict]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(m)}</td><td>{_num(n.get('nested_mean'))}</td><td>{_num(n.get('nested_std'))}</td>"
        f"<td>{_num(n.get('inner_mean'))}</td><td>{_num(n.get('optimism'))}</td></tr>" for m, n in nested.items())
    return ("<table><tr><th>model</th><th>nested mean</th><th>nested std</th><th>inner CV of chosen params</th>"
            f"<th>optimism</th></tr>{rows}</table>")


def _num(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left}
th{background:#f3f3f3}figure{display:inline-block;margin:.5em}img{max-width:520px}pre{background:#f6f6f6;padding:.5em}"""


def write_html(run: Run, sections: list[tuple[str, str]]) -> Path:
    """report.html: one self-contained page (images inline), readable offline."""
    body = "".join(f"<h2>{html.escape(title)}</h2>{content}" for title, content in sections)
    page = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>mlkube run {html.escape(run.id)}</title>"
            f"<style>{CSS}</style></head><body><h1>mlkube run {html.escape(run.id)}</h1>{body}</body></html>\n")
    return atomic_write_text(run.path / "report.html", page)


def present(run: Run) -> dict[str, Any] | None:
    """Write leaderboard.json, cv_scores.csv, the figures and report.html from the stages' results."""
    board = build_leaderboard(run)
    sections: list[tuple[str, str]] = []
    prepare = run.stage_file("prepare")
    summary = read_json(prepare).get("classical") if prepare.exists() else None
    if summary:
        sections.append(("Problem", f"<pre>{html.escape(json.dumps(summary, indent=2))}</pre>"))
    if board is not None:
        atomic_write_json(run.path / "leaderboard.json", board)
        write_cv_scores(run.path / "cv_scores.csv", board["rows"])
        improved = read_json(run.stage_file("improve")) if run.stage_file("improve").exists() else {}
        figures = [comparison_boxplot(board, run.figures / "algorithm_comparison.png"),
                   confusion_plot(board["best"], (summary or {}).get("class_names", []), run.figures / "confusion_matrix.png"),
                   tuning_curves(improved.get("trials", []), board["metric"], run.figures / "tuning_curves.png"),
                   nested_plot(improved.get("nested", {}), board["metric"], run.figures / "nested_cv.png")]
        sections.append(("Leaderboard", _table(board)))
        if improved.get("nested"):
            sections.append(("Nested cross-validation", _nested_table(improved["nested"])))
        sections.append(("Figures", "".join(_img(f) for f in figures if f)))
    for name in ("env.json", "timings.json"):
        if (run.path / name).exists():
            sections.append((name, f"<pre>{html.escape((run.path / name).read_text())}</pre>"))
    write_html(run, sections)
    return board


def compare(a: dict[str, Any], b: dict[str, Any], names: tuple[str, str]) -> str:
    """Two leaderboards side by side: each model's best mean in either run, and the difference."""
    if a["metric"] != b["metric"]:
        return f"the runs use different metrics ({a['metric']} vs {b['metric']}); their scores are not comparable"
    best = [{}, {}]
    for side, board in zip(best, (a, b)):
        for row in board["rows"]:
            if row["status"] == "ok" and row["mean"] > side.get(row["model"], float("-inf")):
                side[row["model"]] = row["mean"]
    models = sorted(set(best[0]) | set(best[1]), key=lambda m: -max(best[0].get(m, -1e300), best[1].get(m, -1e300)))
    width = max(12, *(len(n) for n in names))
    lines = [f"metric: {a['metric']}", f"{'model':<8} {names[0]:>{width}} {names[1]:>{width}} {'b - a':>9}"]
    for model in models:
        x, y = best[0].get(model), best[1].get(model)
        delta = f"{y - x:+.4f}" if x is not None and y is not None else "-"
        lines.append(f"{model:<8} {_num(x):>{width}} {_num(y):>{width}} {delta:>9}")
    holdout = [board["best"].get("holdout_score") if board.get("best") else None for board in (a, b)]
    lines.append(f"{'best':<8} {(a['best'] or {}).get('model', '-'):>{width}} {(b['best'] or {}).get('model', '-'):>{width}}")
    lines.append(f"{'holdout':<8} {_num(holdout[0]):>{width}} {_num(holdout[1]):>{width}}")
    return "\n".join(lines)

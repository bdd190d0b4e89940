"""The deep stage's figures: training curves per epoch, and observed vs simulated series of chosen sites."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mlkube.trainer.report import save_figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curves(history: list[dict[str, Any]], path: Path) -> Path:
    """Training loss and median validation NSE per epoch, side by side."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, nse_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
    loss_ax.plot(epochs, [h["train_loss"] for h in history], marker="o")
    loss_ax.set(title="Training loss", xlabel="epoch", ylabel="loss")
    nse_ax.plot(
        epochs,
        [np.nan if h["validation_nse"] is None else h["validation_nse"] for h in history],
        marker="o",
        color="tab:green",
    )
    nse_ax.set(title="Validation NSE (median over sites)", xlabel="epoch", ylabel="NSE")
    for ax in (loss_ax, nse_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return save_figure(fig, path)


def hydrographs(
    dates: np.ndarray,
    observed: np.ndarray,
    simulated: dict[str, np.ndarray],
    panels: dict[str, tuple[int, str, float | None]],
    target: str,
    path: Path,
) -> Path:
    """One panel per entry of `panels` (label → (site index, site, LSTM NSE)): observed and each
    simulation."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.6 * len(panels)), sharex=True, squeeze=False)
    for ax, (label, (index, site, nse)) in zip(axes[:, 0], panels.items(), strict=False):
        ax.plot(dates, observed[index], color="black", lw=1.2, label="observed")
        for name, series in simulated.items():
            ax.plot(dates, series[index], lw=1, alpha=0.85, label=name)
        ax.set_title(f"{label} site {site} (LSTM NSE {'-' if nse is None else f'{nse:.2f}'})", fontsize=10)
        ax.set_ylabel(target)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=8, ncols=len(simulated) + 1)
    return save_figure(fig, path)


def nse_cdf(nse_by_model: dict[str, list[float | None]], path: Path) -> Path:
    """The cumulative distribution of NSE over the sites, one step curve per model (the field's standard
    comparison; sites without a score are left out, NSE below 0 is clipped to the axis)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, values in nse_by_model.items():
        nse = np.sort([v for v in values if v is not None])
        if nse.size:
            ax.step(nse, np.arange(1, nse.size + 1) / nse.size, where="post", label=f"{name} ({nse.size})")
    ax.set(title="NSE over sites (test period)", xlabel="NSE", ylabel="fraction of sites", xlim=(0, 1))
    ax.set_ylim(0, 1.02)
    ax.legend(loc="upper left", fontsize="small")
    return save_figure(fig, path)


def lr_range_curve(curve: dict[str, Any], path: Path) -> Path:
    """The learning-rate range test: loss (raw and smoothed) against the learning rate on a log axis, the
    suggested rate marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(curve["learning_rates"], curve["losses"], color="0.75", linewidth=0.8, label="loss")
    ax.plot(curve["learning_rates"], curve["smoothed"], label="smoothed")
    if curve["suggested"] is not None:
        rate = curve["suggested"]
        ax.axvline(rate, color="C3", linestyle="--", label=f"suggested {rate:.2g}")
    finite = [v for v in curve["smoothed"] if np.isfinite(v)]
    if finite:  # a diverging tail would flatten the rest
        ax.set_ylim(top=min(max(finite), 4 * min(finite)) * 1.1)
    ax.set(xscale="log", title="Learning-rate range test", xlabel="learning rate", ylabel="training loss")
    ax.legend(fontsize="small")
    return save_figure(fig, path)


STATUS_STYLE = {  # the search's trial statuses: colour, marker, label
    "finished": ("C0", "o", "finished"),
    "early_stopped": ("C0", "s", "early stopping"),
    "stopped_by_asha": ("C3", "x", "stopped by ASHA"),
    "failed": ("0.5", "v", "failed"),
}


def search_learning_rates(trials: list[dict[str, Any]], default_lr: float, path: Path) -> Path:
    """The LSTM search: each trial's last validation NSE against its learning rate (log axis), by status (and
    named by its optimiser when that is searched); the best finished trial ringed. Trials that failed before
    an epoch sit at the bottom edge."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    scored = [v for t in trials for v in t["curve"] if v is not None]
    floor = min(scored, default=0.0) - 0.05
    for status, (color, marker, label) in STATUS_STYLE.items():
        chosen = [t for t in trials if t["status"] == status]
        if not chosen:
            continue
        rates = [t["config"].get("train.learning_rate", default_lr) for t in chosen]
        nse = [_last(t["curve"], floor) for t in chosen]
        ax.scatter(rates, nse, color=color, marker=marker, label=f"{label} ({len(chosen)})")
        for t, x, y in zip(chosen, rates, nse, strict=True):  # a searched optimiser, by its name
            if "train.optimizer" in t["config"]:
                ax.annotate(
                    t["config"]["train.optimizer"],
                    (x, y),
                    fontsize=7,
                    xytext=(4, 3),
                    textcoords="offset points",
                )
    done = [t for t in trials if t["status"] in ("finished", "early_stopped") and t["score"] is not None]
    if done:
        best = max(done, key=lambda t: t["score"])
        rate = best["config"].get("train.learning_rate", default_lr)
        ax.scatter(
            [rate], [_last(best["curve"], floor)], s=160, facecolors="none", edgecolors="C2", label="best"
        )
    ax.set(xscale="log", title="LSTM search: validation NSE by learning rate", xlabel="learning rate")
    ax.xaxis.set_major_locator(
        LogLocator(subs=(1.0, 3.0))
    )  # 1, 3, 10, 30 …: a narrow range still gets labels
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(ylabel="median validation NSE (last epoch)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def search_curves(trials: list[dict[str, Any]], path: Path) -> Path:
    """The LSTM search's learning curves: validation NSE per epoch of every trial; trials ASHA stopped dashed
    and ending in a red cross, the best finished trial bold."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    done = [t for t in trials if t["status"] in ("finished", "early_stopped") and t["score"] is not None]
    best = max(done, key=lambda t: t["score"])["trial"] if done else None
    for t in trials:
        epochs = np.arange(1, len(t["curve"]) + 1)
        nse = [np.nan if v is None else v for v in t["curve"]]
        if not len(epochs):
            continue
        stopped = t["status"] == "stopped_by_asha"
        ax.plot(
            epochs,
            nse,
            linestyle="--" if stopped else "-",
            linewidth=2.5 if t["trial"] == best else 1,
            color="C3" if stopped else ("C2" if t["trial"] == best else "C0"),
            alpha=0.9 if t["trial"] == best else 0.6,
        )
        if stopped:
            ax.plot(epochs[-1], nse[-1], marker="x", color="C3", markersize=8)
    handles = [
        plt.Line2D([], [], color="C0", label="finished"),
        plt.Line2D([], [], color="C3", linestyle="--", marker="x", label="stopped by ASHA"),
        plt.Line2D([], [], color="C2", linewidth=2.5, label="best"),
    ]
    ax.legend(handles=handles, fontsize="small")
    ax.set(title="LSTM search: learning curves", xlabel="epoch", ylabel="median validation NSE")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _last(curve: list[float | None], floor: float) -> float:
    values = [v for v in curve if v is not None]
    return values[-1] if values else floor

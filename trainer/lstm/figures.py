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

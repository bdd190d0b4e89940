"""The learning-rate range test (Smith 2017, "Cyclical learning rates"; fastai's lr_find): train the spec's
LSTM for a few hundred steps while the learning rate grows exponentially from `lr_min` to `lr_max`, and record
the loss at each rate. Too small a rate barely moves the loss, too large a one makes it climb or diverge; the
suggested rate is a tenth of the rate where the smoothed loss is lowest.

It is the deep stage's own training step (the same network, sampler, loss weights, gradient clipping and
mixed precision as the spec asks), on one worker, with the schedule replaced by the exponential one; nothing
is saved but the curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlkube.trainer.errors import MlkubeError

SMOOTHING = 0.05  # weight of the newest loss in the exponential moving average
DIVERGED = 4.0  # stop once the smoothed loss exceeds this many times its best
SKIP = 0.1  # the first fraction of the steps is left out of the suggestion (the average is still settling)


@dataclass
class RangeTest:
    """The curve: one learning rate, loss and smoothed loss per step done."""

    learning_rates: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    diverged: bool = False
    suggested: float | None = None

    def record(self) -> dict[str, Any]:
        return {
            "learning_rates": self.learning_rates,
            "losses": self.losses,
            "smoothed": self.smoothed,
            "diverged": self.diverged,
            "suggested": self.suggested,
        }


def check_bounds(steps: int, lr_min: float, lr_max: float) -> None:
    if steps < 10:
        raise MlkubeError(
            f"--steps {steps}: the range test needs at least 10 steps", "use --steps 100 or more"
        )
    if not 0 < lr_min < lr_max or not math.isfinite(lr_max):
        raise MlkubeError(
            f"learning-rate bounds {lr_min:g} .. {lr_max:g}: need 0 < min < max, both finite",
            "for example --min 1e-5 --max 1",
        )


def range_test(
    lstm: Any, seed: int, prepared: Any, steps: int, lr_min: float, lr_max: float, say=None
) -> RangeTest:
    """Run the test on `prepared` data with the `lstm` spec section; `say(step, rate, loss)` shows
    progress."""
    import torch

    from mlkube.trainer.lstm.train import Trainer

    check_bounds(steps, lr_min, lr_max)
    trainer = Trainer(lstm, seed, prepared)
    for group in trainer.optimizer.param_groups:
        group["lr"] = group["initial_lr"] = lr_min  # the spec's schedule had set initial_lr
    gamma = (lr_max / lr_min) ** (1 / (steps - 1))
    trainer.scheduler = torch.optim.lr_scheduler.ExponentialLR(trainer.optimizer, gamma)
    curve = RangeTest()
    average, best = 0.0, math.inf
    for step in range(steps):
        rate = trainer.optimizer.param_groups[0]["lr"]
        loss = trainer.train_step(step)  # steps the exponential schedule too
        average = SMOOTHING * loss + (1 - SMOOTHING) * average
        smoothed = average / (1 - (1 - SMOOTHING) ** (step + 1))  # bias-corrected
        curve.learning_rates.append(rate)
        curve.losses.append(loss)
        curve.smoothed.append(smoothed)
        if say is not None:
            say(step + 1, rate, loss)
        if not math.isfinite(loss) or smoothed > DIVERGED * best:
            curve.diverged = True
            break
        best = min(best, smoothed)
    curve.suggested = suggest(curve.learning_rates, curve.smoothed)
    return curve


def suggest(rates: list[float], smoothed: list[float]) -> float | None:
    """A tenth of the rate at the smoothed loss's minimum (Smith's and fastai's rule: the minimum is already
    at the edge of instability, and the loss's fall before it is also the training's own progress, so the
    steepest slope comes too early); None when the loss never fell below its start after the settling
    steps."""
    values = np.asarray(smoothed, dtype=float)
    start = int(len(values) * SKIP)
    if len(values) - start < 3 or not np.isfinite(values[start:]).any():
        return None
    lowest = start + int(np.nanargmin(values[start:]))
    if not values[lowest] < values[start]:
        return None
    return float(rates[lowest]) / 10

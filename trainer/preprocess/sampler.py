"""Batches of (site, start) windows for the LSTM: random for training, whole periods for evaluation.

A window of `sequence_length` days holds the dynamic inputs of those days with the site's static attributes
appended, and the target `horizon - 1` days later. The global batch of a step is a pure function of (seed,
step): rank r of `world_size` workers takes its slice of it, so any number of workers sees the same batches,
and a checkpoint only needs the seed and the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.preprocess.device import kernels, on_device, resolve_device

if TYPE_CHECKING:
    from mlkube.trainer.series.contract import TimeSeriesData


@dataclass(frozen=True, eq=False)
class Batch:
    """Windows gathered into contiguous float32 arrays (NumPy on the CPU; Numba device arrays on CUDA, which
    `torch.as_tensor(x, device="cuda")` takes without a copy)."""

    x: Any  # [windows, days, n_dynamic + n_static]: dynamic inputs, then static attributes repeated every day
    # [windows, days] target `horizon - 1` days after each input day; NaN where missing (masked in the loss)
    y: Any
    site: np.ndarray  # [windows] index into data.sites
    start: np.ndarray  # [windows] first input day, index into data.dates
    history: int = 0  # leading days of every window that only give context (not scored)


def gather_windows(
    data: TimeSeriesData,
    sites: np.ndarray,
    starts: np.ndarray,
    length: int,
    horizon: int = 1,
    device: str = "cpu",
) -> Batch:
    """The windows of `length` days starting at day `starts[i]` of site `sites[i]` (indices), as one batch."""
    sites = np.ascontiguousarray(sites, dtype=np.int64)
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    days = data.target.shape[1]
    if sites.size and (
        sites.min() < 0
        or sites.max() >= len(data.sites)
        or starts.min() < 0
        or starts.max() + length + horizon - 1 > days
    ):
        raise ValueError(f"windows outside the data ({len(data.sites)} sites, {days} days)")
    x, y = kernels(device).gather(
        *on_device((data.dynamic, data.static, data.target), device), sites, starts, length, horizon - 1
    )
    return Batch(x, y, sites, starts)


def period_batch(
    data: TimeSeriesData, period: str, sequence_length: int, horizon: int = 1, device: str = "cpu"
) -> Batch:
    """Every site's whole `period` (train, validation, test) as one window per site, preceded by up to
    `sequence_length - 1` days of history (`Batch.history`): each scored day has its full input sequence."""
    lo, hi = data.periods[period]
    shift = horizon - 1
    first_target = max(lo, shift)
    start = max(0, first_target - shift - (sequence_length - 1))
    batch = gather_windows(
        data, np.arange(len(data.sites)), np.full(len(data.sites), start), hi - shift - start, horizon, device
    )
    return Batch(batch.x, batch.y, batch.site, batch.start, history=first_target - shift - start)


class BatchSampler:
    """Random training windows, the same for a given seed and step on any number of workers.

    Windows are drawn uniformly (with replacement) among the valid ones: every input day finite, at least one
    finite target after `warmup_days`, and every target day inside `period`.
    """

    def __init__(
        self,
        data: TimeSeriesData,
        sequence_length: int,
        seed: int,
        *,
        horizon: int = 1,
        warmup_days: int = 0,
        period: str = "train",
        device: str = "cpu",
    ):
        if not 0 <= warmup_days < sequence_length:
            raise MlkubeError(
                f"lstm.train.warmup_days ({warmup_days}) must be below lstm.sequence_length "
                f"({sequence_length}): a window needs days left to score",
                "lower warmup_days or raise sequence_length",
            )
        self.sequence_length, self.seed, self.horizon = sequence_length, seed, horizon
        self.warmup_days, self.period, self.step = warmup_days, period, 0
        self.device = resolve_device(device)
        self._kernels = kernels(self.device)
        self._site, self._start = self._valid_windows(data)
        self._arrays = on_device((data.dynamic, data.static, data.target), self.device)

    def _valid_windows(self, data: TimeSeriesData) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = data.periods[self.period]
        shift = self.horizon - 1
        first = max(lo - shift, 0)
        starts = hi - shift - self.sequence_length - first + 1
        valid = np.zeros((1, 0), bool)
        if starts > 0:
            valid = self._kernels.window_validity(
                data.dynamic, data.target, first, starts, self.sequence_length, shift, self.warmup_days
            )
        flat = np.flatnonzero(valid)
        if flat.size == 0:
            raise MlkubeError(
                f"the {self.period} period has no window of {self.sequence_length} days with finite inputs "
                f"and a finite target after {self.warmup_days} warm-up days, at any site",
                "lengthen the period, shorten lstm.sequence_length, or raise preprocess.fill_max_gap",
            )
        site, offset = np.divmod(flat, valid.shape[1])
        return site, offset + first

    @property
    def windows(self) -> int:
        """How many distinct windows a batch may draw from."""
        return len(self._site)

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> Batch:
        """Rank `rank`'s share of the global batch of `step`: of the n = `batch_size` windows drawn for that
        step, those [rank * n // world, (rank + 1) * n // world)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        rng = np.random.default_rng([self.seed, step])
        drawn = rng.integers(0, self.windows, size=batch_size)
        mine = drawn[rank * batch_size // world_size : (rank + 1) * batch_size // world_size]
        sites, starts = self._site[mine], self._start[mine]
        x, y = self._kernels.gather(*self._arrays, sites, starts, self.sequence_length, self.horizon - 1)
        self.step = step + 1
        return Batch(x, y, sites, starts)

    def state_dict(self) -> dict[str, int | str]:
        """What a checkpoint keeps: the seed, the next step, and the settings that must match on resume."""
        return {
            "seed": self.seed,
            "step": self.step,
            "sequence_length": self.sequence_length,
            "horizon": self.horizon,
            "warmup_days": self.warmup_days,
            "period": self.period,
            "windows": self.windows,
        }

    def load_state_dict(self, state: dict[str, int | str]) -> None:
        """Continue from a checkpoint; its settings and data must match this sampler's."""
        mine = self.state_dict()
        changed = {k: (state.get(k), mine[k]) for k in mine if k != "step" and state.get(k) != mine[k]}
        if changed:
            raise MlkubeError(
                f"the checkpoint's batch sampler differs from this run's: {changed} (checkpoint, now)",
                "resume with the spec and data the checkpoint was made with, or start a new run",
            )
        self.step = int(state["step"])

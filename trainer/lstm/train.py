"""The training loop, the same for one process and for each worker of a torch elastic group (DDP).

Every step is a pure function of (seed, step): the sampler draws the step's global batch and rank r trains on
its slice; dropout is reseeded from (seed, step, rank). A checkpoint therefore needs no RNG state, and a run
resumed from one ends with the same weights as a run that never stopped (CPU, same world size).

The loss is the weighted squared error summed over the scored days (finite target, after the warm-up) of the
global batch, divided by the days it could hold (batch × (sequence_length − warmup_days)): a constant, so the
optimisation does not depend on how many workers share the batch, and no worker needs another's count.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlkube.trainer.lstm.checkpoint import latest_checkpoint, save_checkpoint
from mlkube.trainer.lstm.evaluate import score, simulate
from mlkube.trainer.lstm.model import architecture, build_model
from mlkube.trainer.lstm.prepared import Prepared
from mlkube.trainer.preprocess import BatchSampler, standardize

NSE_EPS = 0.1  # neuralhydrology's NSE loss: weight 1 / (site std + eps)^2, eps keeps flat sites bounded


@dataclass(frozen=True)
class StepInfo:
    """What the per-step hooks get (progress lines; a metrics exporter)."""

    step: int  # steps done, 1-based
    total_steps: int
    epoch: int  # 1-based
    loss: float  # training loss of the step's global batch
    samples: int  # sequences in the global batch
    seconds: float  # wall time of the step on this worker
    validation_nse: float | None = None  # median over sites, on the step that ends an epoch

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds


@dataclass(frozen=True)
class Worker:
    """Where this process trains: its rank among `world_size` workers and its torch device."""

    rank: int = 0
    world_size: int = 1
    device: str = "cpu"
    restart: int = 0  # torchrun's TORCHELASTIC_RESTART_COUNT
    # the group in which the others wait for rank 0's own work (elastic.process_group)
    rank0_group: Any = None

    @classmethod
    def from_environ(cls) -> Worker:
        import torch

        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return cls(
            rank=int(os.environ.get("RANK", "0")),
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            device=f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu",
            restart=int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")),
        )


@dataclass
class LoopState:
    """Everything of the loop's own state that a checkpoint keeps (plain data)."""

    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per finished epoch
    best_nse: float = -math.inf  # best median validation NSE
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best
    stopped: bool = False  # early stopping fired
    epoch_loss: float = 0.0  # sum of this epoch's step losses so far
    epoch_seconds: float = 0.0
    seconds: float = 0.0  # time in training steps, over all (re)starts
    segments: list[dict[str, float]] = field(
        default_factory=list
    )  # (re)starts: restart count, world size, first step, when it started


def loss_weights(loss: str, stats) -> np.ndarray:
    """Per-site weights of the squared error: 1 / (std + eps)^2 of the standardised target (nse), or 1
    (mse)."""
    if loss == "nse":
        return (1 / (stats.target_site_std + NSE_EPS) ** 2).astype(np.float32)
    return np.ones(len(stats.target_site_std), np.float32)


def step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def schedule(optimizer, train, total_steps: int):
    """The learning-rate schedule, stepped once per training step. step: tenfold drops at 1/2 and 3/4 of the
    steps; cosine: cosine annealing to zero over all steps."""
    from torch.optim import lr_scheduler

    if train.schedule == "step":
        return lr_scheduler.MultiStepLR(optimizer, [total_steps // 2, 3 * total_steps // 4], gamma=0.1)
    if train.schedule == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def make_optimizer(parameters, train):
    """The spec's optimiser (`lstm.train.optimizer`) at its learning rate: Adam, AdamW (torch's default weight
    decay) or SGD with `lstm.train.momentum`."""
    import torch

    if train.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=train.learning_rate, momentum=train.momentum)
    kind = torch.optim.AdamW if train.optimizer == "adamw" else torch.optim.Adam
    return kind(parameters, lr=train.learning_rate)


def autocast_dtype(train, device) -> Any:
    """bfloat16 (float16 where the GPU lacks it) on CUDA with `mixed_precision`; bfloat16 on a CPU with
    `cpu_precision: bfloat16` that runs it natively (`cpu_bfloat16`); None (float32) otherwise."""
    import torch

    if device.type == "cpu":
        return torch.bfloat16 if train.cpu_precision == "bfloat16" and cpu_bfloat16() else None
    if device.type != "cuda" or not train.mixed_precision:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def cpu_bfloat16() -> bool:
    """Does oneDNN run bfloat16 natively on this CPU (AVX-512 BF16 or AMX)? Elsewhere it would emulate it,
    slower than float32."""
    import torch

    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def precision(amp) -> str:
    """How the training steps run: "float32", or the autocast dtype's name."""
    return "float32" if amp is None else str(amp).removeprefix("torch.")


class Trainer:
    """Trains the LSTM of `lstm` (the spec's section) on prepared data, as one worker of
    `worker.world_size`."""

    def __init__(
        self,
        lstm,
        seed: int,
        prepared: Prepared,
        worker: Worker = Worker(),
        checkpoints: Path | None = None,
        hooks: tuple[Callable[[StepInfo], None], ...] = (),
    ):
        import torch

        self.lstm, self.train, self.seed, self.worker = lstm, lstm.train, seed, worker
        self.checkpoints, self.hooks = checkpoints, hooks
        self.device = torch.device(worker.device)
        self.stats = prepared.stats
        self.data = standardize(prepared.data, prepared.stats)
        # what scoring reads: the target in its units, with the periods and sites (not a second copy of the
        # raw inputs: 0.12 GB at 671 basins × 20 years)
        self.scored = dataclasses.replace(self.data, target=prepared.data.target)
        self.total_steps = self.train.epochs * self.train.steps_per_epoch
        torch.manual_seed(seed)
        self.net = build_model(architecture(lstm, self.data)).to(self.device)
        self.model = self.net  # wrapped in DDP by `fit` when there are several workers
        self.optimizer = make_optimizer(self.net.parameters(), self.train)
        self.scheduler = schedule(self.optimizer, self.train, self.total_steps)
        self.amp = autocast_dtype(self.train, self.device)
        if self.device.type == "cpu" and self.train.cpu_precision != precision(self.amp):
            self._say(
                f"lstm.train.cpu_precision is {self.train.cpu_precision}, but this CPU runs no bfloat16 "
                "natively (AVX-512 BF16 or AMX): training in float32"
            )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self.sampler = BatchSampler(
            self.data, lstm.sequence_length, seed, horizon=lstm.horizon, warmup_days=self.train.warmup_days
        )
        self.weights = torch.from_numpy(loss_weights(self.train.loss, self.stats)).to(self.device)
        self.loss_days = self.train.batch_size * (lstm.sequence_length - self.train.warmup_days)
        self.state = LoopState()
        self.best_weights: dict[str, Any] | None = None

    # -- the loop
    @property
    def finished(self) -> bool:
        return self.state.step >= self.total_steps or self.state.stopped

    def fit(self) -> LoopState:
        """Train from the latest checkpoint (if any) to the end; leave the chosen weights in `self.net`."""
        self.resume()
        self.model = self._distributed(self.net)
        self.state.segments[-1]["first_step_at"] = time.time()  # start-up ends (unix seconds)
        while not self.finished:
            start = time.perf_counter()
            loss = self.train_step(self.state.step)
            seconds = time.perf_counter() - start
            self.state.step += 1
            self.state.epoch_loss += loss
            self.state.epoch_seconds += seconds
            self.state.seconds += seconds
            info = StepInfo(
                self.state.step, self.total_steps, self.epoch, loss, self.train.batch_size, seconds
            )
            if self.state.step % self.train.steps_per_epoch == 0:
                info = dataclasses.replace(info, validation_nse=self.end_epoch())
            for hook in self.hooks:
                hook(info)
            if self.state.step % self.train.checkpoint_every == 0 or self.finished:
                self.save()
        self.model = self.net  # drop DDP (see elastic.fit_and_save)
        if self.train.early_stopping_patience and self.best_weights is not None:
            self.net.load_state_dict(self.best_weights)
        return self.state

    @property
    def epoch(self) -> int:
        return -(-self.state.step // self.train.steps_per_epoch)

    def train_step(self, step: int) -> float:
        """One optimiser step on this worker's share of the global batch of `step`; the global batch's
        loss."""
        import torch

        torch.manual_seed(step_seed(self.seed, step, self.worker.rank))
        batch = self.sampler.batch(step, self.train.batch_size, self.worker.rank, self.worker.world_size)
        warmup = self.train.warmup_days
        x = torch.from_numpy(batch.x).to(self.device, non_blocking=True)
        y = torch.from_numpy(batch.y[:, warmup:]).to(self.device, non_blocking=True)
        scored = ~torch.isnan(y)
        weight = self.weights[torch.from_numpy(batch.site).to(self.device)]
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            prediction = self.model(x, days=y.shape[1])  # the head on the scored days only
        error = (prediction.float() - y.nan_to_num()) * scored
        loss = (
            (weight[:, None] * error**2).sum() / self.loss_days * self.worker.world_size
        )  # DDP averages workers
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.train.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.train.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return self._all_sum(loss.detach()).item() / self.worker.world_size

    def end_epoch(self) -> float:
        """Score the validation period, record the epoch, and decide on early stopping; the median NSE."""
        p = self.state
        nse = self._from_rank0(self.validation_nse())
        p.history.append(
            {
                "epoch": self.epoch,
                "step": p.step,
                "train_loss": p.epoch_loss / self.train.steps_per_epoch,
                "validation_nse": nse if math.isfinite(nse) else None,
                "learning_rate": self.optimizer.param_groups[0]["lr"],
                "samples_per_second": self.train.steps_per_epoch * self.train.batch_size / p.epoch_seconds,
            }
        )
        p.epoch_loss = p.epoch_seconds = 0.0
        if nse > p.best_nse:
            p.best_nse, p.best_epoch, p.bad_epochs = nse, self.epoch, 0
            if self.train.early_stopping_patience:
                self.best_weights = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        else:
            p.bad_epochs += 1
        p.stopped = bool(
            self.train.early_stopping_patience and p.bad_epochs >= self.train.early_stopping_patience
        )
        return nse

    def validation_nse(self) -> float:
        """Median NSE over sites on the validation period (rank 0 computes it; NaN elsewhere, or if
        undefined)."""
        if self.worker.rank != 0:
            return math.nan
        sim = simulate(
            self.net,
            self.data,
            self.stats,
            "validation",
            self.lstm.sequence_length,
            self.lstm.horizon,
            self.device,
        )
        median = score(sim, self.scored, "validation", self.lstm.horizon)["median"]["nse"]
        return -math.inf if median is None else median

    # -- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "loop": dataclasses.asdict(self.state),
            "best_weights": self.best_weights,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        self.state = LoopState(**state["loop"])
        self.best_weights = state["best_weights"]

    def resume(self) -> None:
        """Load the latest complete checkpoint (if any) and record this (re)start."""
        if self.checkpoints is not None:
            state, _ = latest_checkpoint(self.checkpoints, self.device, warn=self._say)
            if state is not None:
                self.load_state_dict(state)
        self.state.segments.append(
            {
                "restart": self.worker.restart,
                "world_size": self.worker.world_size,
                "from_step": self.state.step,
            }
        )

    def save(self) -> None:
        if self.checkpoints is not None and self.worker.rank == 0:
            save_checkpoint(self.checkpoints, self.state.step, self.state_dict())

    # -- collectives (no-ops for one worker)
    def _distributed(self, net):
        if self.worker.world_size == 1:
            return net
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            net, device_ids=[self.device.index] if self.device.type == "cuda" else None
        )

    def _all_sum(self, value):
        if self.worker.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(value)
        return value

    def _from_rank0(self, value: float) -> float:
        if self.worker.world_size == 1:
            return value
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(tensor, src=0, group=self.worker.rank0_group)  # rank 0 validated meanwhile
        return float(tensor.item())

    def _say(self, message: str) -> None:
        if self.worker.rank == 0:
            print(f"[lstm] {message}", flush=True)

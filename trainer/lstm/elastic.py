"""One worker of the elastic training: `torchrun ... -m mlkube.commands.lstm_worker --spec SPEC --run-dir RUN`
runs `train` in each worker process.

Each worker reads RANK, LOCAL_RANK and WORLD_SIZE from torchrun, joins the group (nccl on CUDA, gloo on CPU),
loads the latest complete checkpoint of `RUN/checkpoints/` and trains on its share of every global batch.
Rank 0 prints progress, writes a checkpoint every `lstm.train.checkpoint_every` steps, and at the end writes
the model (`models/lstm/`) with its test-period scores and its training record (`models/lstm/training.json`).
Without torchrun's variables it trains alone in this process.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import os
import time
from pathlib import Path
from typing import Any

from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.lstm.exporter import metrics_hook
from mlkube.trainer.lstm.prepared import Prepared, load_prepared
from mlkube.trainer.lstm.store import tcp_store_server
from mlkube.trainer.lstm.train import LoopState, StepInfo, Trainer, Worker, precision
from mlkube.trainer.run import LSTM_MODEL, Run

PREFIX = "[lstm]"  # progress lines of rank 0, which the local launcher shows
# how long the other workers wait for rank 0's own work (validation, the final scores) before giving up
RANK0_WORK_TIMEOUT = datetime.timedelta(hours=6)
TRAINING_RECORD = "training.json"


def train(spec_path: Path, run_dir: Path) -> None:
    from mlkube.trainer.lstm.overrides import best_spec
    from mlkube.trainer.spec import load_spec

    spec = load_spec(spec_path)
    if spec.lstm is None:
        raise MlkubeError(f"{spec_path} has no `lstm` section", "add one (e.g. `lstm: {}`) to train the LSTM")
    spec, searched = best_spec(spec, Path(run_dir))  # with lstm.search: the best trial's configuration
    worker = Worker.from_environ()
    import torch

    # No use_deterministic_algorithms: the CPU kernels here are deterministic at a fixed thread count (the
    # resume tests pin bit-identical weights), and the flag cost 15-25 % of each LSTM step on CPU.
    torch.set_num_threads(cpu_share())
    with process_group(worker, spec.lstm.elastic.timeout_seconds) as worker:
        fit_and_save(spec, Path(run_dir), worker, {"search_config": searched} if searched else None)


def fit_and_save(spec, run_dir: Path, worker: Worker, record: dict[str, Any] | None = None) -> None:
    """Train; rank 0 writes the model. The trainer (and its DDP reducer) is gone when this returns, before the
    process group is destroyed: a reducer outliving its gloo group hung a worker's exit here."""
    prepared = load_prepared(spec, run_dir)
    checkpoints = Run(run_dir).checkpoints
    exporter = metrics_hook(
        spec.metrics.port, worker.rank, int(os.environ.get("LOCAL_RANK", "0")), checkpoints
    )
    hooks = (ProgressLine(worker.rank, spec.lstm.train.steps_per_epoch),) + ((exporter,) if exporter else ())
    trainer = Trainer(spec.lstm, spec.seed, prepared, worker, checkpoints, hooks=hooks)
    prepared = dataclasses.replace(prepared, data=trainer.scored)  # the raw inputs are freed while it trains
    state = trainer.fit()
    if worker.rank == 0:
        write_model(trainer, prepared, run_dir, state, extra=record)
    if exporter is not None:
        time.sleep(spec.metrics.linger_seconds)  # a short job's last values stay scrapeable


class process_group:
    """Join torchrun's worker group (with several workers) and leave it cleanly; the worker, with its group
    for waiting on rank 0.

    A collective of the group gives up after `timeout_seconds` (torch's default is 30 minutes): a peer cut off
    the network then fails this worker, and torchrun re-forms the group without it, from the last checkpoint.
    Rank 0 alone scores each epoch's validation period and, at the end, the test period (minutes with
    hundreds of basins); the others wait for that in a second group whose timeout is RANK0_WORK_TIMEOUT, so
    the short timeout of the training steps never counts rank 0's own work."""

    def __init__(self, worker: Worker, timeout_seconds: float = 300):
        self.worker, self.timeout = worker, timeout_seconds
        self.rank0_group: Any = None

    def __enter__(self) -> Worker:
        if self.worker.world_size <= 1:
            return self.worker
        import torch
        import torch.distributed as dist

        if self.worker.device.startswith("cuda"):
            torch.cuda.set_device(torch.device(self.worker.device))
        dist.init_process_group(
            "nccl" if self.worker.device.startswith("cuda") else "gloo",
            store=self.store(),
            rank=self.worker.rank,
            world_size=self.worker.world_size,
            timeout=datetime.timedelta(seconds=self.timeout),
        )
        self.rank0_group = dist.new_group(timeout=RANK0_WORK_TIMEOUT)
        return dataclasses.replace(self.worker, rank0_group=self.rank0_group)

    def store(self):
        """The workers' store. Launched as mlkube launches torchrun (TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1),
        rank 0 hosts a new one for each formation of the group, at the address and free port that torchrun's
        rendezvous round publishes. On torchrun's shared agent store instead (which outlives a restart of the
        workers), keys of this attempt's own: without a prefix the new workers may read the dead ones'
        addresses (gloo: connection refused)."""
        import torch.distributed as dist

        agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # else rank 0 hosts the store
        addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
        if agent:
            store = dist.TCPStore(addr, port, self.worker.world_size, is_master=False)
            return dist.PrefixStore(f"mlkube/attempt-{self.worker.restart}", store)
        if self.worker.rank == 0 and is_loopback(addr):
            return tcp_store_server(addr, port, world_size=self.worker.world_size, multi_tenant=True)
        # no prefix: the store is this formation's own, and the nodes' restart counts differ (a node that
        # joined later, or one whose workers failed, counts its own restarts), so a prefix of it would split
        # the group
        return dist.TCPStore(
            addr, port, self.worker.world_size, is_master=self.worker.rank == 0, multi_tenant=True
        )

    def __exit__(self, *exc: object) -> None:
        if self.worker.world_size > 1:
            import torch.distributed as dist

            gc.collect()  # DDP's reducer sits in reference cycles; free it while its group is alive
            if exc[0] is None:
                # the others wait here while rank 0 writes the model (the test period's scores: minutes with
                # many basins); without it, gloo sometimes aborts rank 0 in destroy_process_group
                dist.barrier(group=self.rank0_group)
            dist.destroy_process_group()


def cpu_share() -> int:
    """torch threads of this worker: its share of the CPUs this process may run on, split evenly over the
    node's workers (torchrun's LOCAL_WORLD_SIZE; torchrun itself would give each of several workers one)."""
    workers = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, len(os.sched_getaffinity(0)) // workers)


def is_loopback(addr: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return addr == "localhost"


class ProgressLine:
    """Rank 0 prints `[lstm] step S/T epoch E loss L N seq/s` about five times per epoch, and at each epoch's
    end."""

    def __init__(self, rank: int, steps_per_epoch: int):
        self.rank, self.every = rank, max(1, steps_per_epoch // 5)
        self.samples, self.seconds = 0.0, 0.0

    def __call__(self, info: StepInfo) -> None:
        self.samples += info.samples
        self.seconds += info.seconds
        if self.rank != 0 or (info.step % self.every and info.validation_nse is None):
            return
        line = (
            f"{PREFIX} step {info.step}/{info.total_steps} epoch {info.epoch} loss {info.loss:.4f} "
            f"{self.samples / self.seconds:.0f} seq/s"
        )
        if info.validation_nse is not None:
            line += f" validation NSE {info.validation_nse:.3f}"
        print(line, flush=True)
        self.samples = self.seconds = 0.0


def write_model(
    trainer: Trainer,
    prepared: Prepared,
    run_dir: Path,
    state: LoopState,
    folder: Path | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """models/lstm/{model.pt, model.json} (test-period scores in `metrics`) and training.json (with `extra`'s
    keys); `folder`: another folder than the run's models/lstm."""
    import torch

    from mlkube.trainer.lstm.evaluate import score, simulate
    from mlkube.trainer.lstm.model import artifact_meta, save_lstm_model
    from mlkube.trainer.run import atomic_write_json

    lstm = trainer.lstm
    sim = simulate(
        trainer.net, trainer.data, prepared.stats, "test", lstm.sequence_length, lstm.horizon, trainer.device
    )
    test = score(sim, prepared.data, "test", lstm.horizon)
    metrics = {"period": "test", "median": test["median"], "mean": test["mean"]}
    folder = folder or Run(run_dir).model_dir(LSTM_MODEL)
    save_lstm_model(
        folder,
        trainer.net,
        {**artifact_meta(lstm, prepared.data, prepared.stats, metrics), "data_hash": prepared.data_hash},
    )
    record = {
        "steps": state.step,
        "total_steps": trainer.total_steps,
        "epochs": len(state.history),
        "stopped_early": state.stopped,
        "best_epoch": state.best_epoch,
        "world_size": trainer.worker.world_size,
        "restarts": trainer.worker.restart,
        "segments": state.segments,
        "device": str(trainer.device),
        "cudnn": _cudnn(trainer.device),
        "precision": precision(trainer.amp),  # of the training steps (autocast)
        "torch_threads": torch.get_num_threads(),
        "seconds": round(state.seconds, 3),
        "samples_per_second": state.step * trainer.train.batch_size / max(state.seconds, 1e-9),
        "history": state.history,
        "sites": list(prepared.data.sites),  # what it trained on (a fold of lstm.cv: its training sites)
        **(extra or {}),
    }
    atomic_write_json(folder / TRAINING_RECORD, record)
    return folder


def _cudnn(device) -> bool:
    import torch

    return device.type == "cuda" and torch.backends.cudnn.is_available() and torch.backends.cudnn.enabled

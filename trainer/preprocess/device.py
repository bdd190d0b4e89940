"""Which kernel twin runs: `preprocess.device` auto | cpu | cuda, resolved against what Numba sees."""

from __future__ import annotations

from types import ModuleType

import numpy as np

from mlkube.trainer.errors import MlkubeError


def resolve_device(device: str) -> str:
    """`auto` → `cuda` where Numba sees a CUDA GPU, else `cpu`; `cuda` without a GPU is a user error."""
    if device == "cpu":
        return "cpu"
    from numba import cuda

    if cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise MlkubeError(
            "preprocess.device is cuda, but Numba sees no CUDA GPU on this machine",
            "set preprocess.device: auto (or cpu), or run where a GPU and its driver are present",
        )
    return "cpu"


def kernels(device: str) -> ModuleType:
    """The kernel twin for `device` (auto, cpu or cuda): `cpu` or `gpu`, modules with the same functions."""
    if resolve_device(device) == "cuda":
        from mlkube.trainer.preprocess import gpu

        return gpu
    from mlkube.trainer.preprocess import cpu

    return cpu


def on_device(arrays: tuple[np.ndarray, ...], device: str) -> tuple:
    """The arrays where `device`'s twin reads them fastest: unchanged on the CPU, copied once to the GPU."""
    if resolve_device(device) == "cpu":
        return arrays
    from numba import cuda

    return tuple(cuda.to_device(np.ascontiguousarray(a)) for a in arrays)

"""The hydrology LSTM: input linear layer → nn.LSTM (cuDNN on CUDA by itself) → dropout → linear head.

Its artifact is `models/lstm/{model.pt, model.json}`: the state dict (loadable with `weights_only=True`) and, in
model.json, `architecture` (the constructor arguments) and `preprocessing` (input/target statistics, sequence length,
variable names), which is all a handler needs to rebuild and run it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlkube.trainer.artifacts import read_model_json, write_model_json
from mlkube.trainer.run import atomic_write_bytes

if TYPE_CHECKING:
    from mlkube.trainer.preprocess import Statistics
    from mlkube.trainer.spec import LstmSpec
    from mlkube.trainer.tsdata import TimeSeriesData

ARCHITECTURE_KEYS = ("n_dynamic", "n_static", "hidden_size", "num_layers", "dropout", "static_embedding")
# model.json["preprocessing"]: what inference needs to turn raw forcings into the network's input and back.
PREPROCESSING_KEYS = (
    "sequence_length",  # days of input per prediction
    "horizon",  # the target is predicted this many days after the last input day (1: same day)
    "dynamic_inputs",  # names, in input order
    "static_inputs",  # names, in input order (after the dynamic ones)
    "normalization",  # global | per_site
    "dynamic_mean",
    "dynamic_std",  # per dynamic input (per site and dynamic input under per_site)
    "static_mean",
    "static_std",  # per static input
    "target_mean",
    "target_std",  # de-standardise the output (per site under per_site)
    "log_target",  # the target was trained as log(y + 0.1)
    "sites",  # per_site only: the site ids, in the order of the per-site statistics
)


def architecture(lstm: LstmSpec, data: TimeSeriesData) -> dict[str, Any]:
    """The constructor arguments of the network for the spec's `lstm` section and its data."""
    model = lstm.model
    return {
        "n_dynamic": len(data.dynamic_inputs),
        "n_static": len(data.static_inputs),
        "hidden_size": model.hidden_size,
        "num_layers": model.num_layers,
        "dropout": model.dropout,
        "static_embedding": model.static_embedding,
    }


def artifact_meta(
    lstm: LstmSpec, data: TimeSeriesData, stats: Statistics, metrics: dict[str, Any]
) -> dict[str, Any]:
    """model.json's content (beyond what `save_lstm_model` adds) for a network trained on `data`."""
    return {
        "name": "lstm",
        "task": "regression",
        "target": data.target_name,
        "features": [*data.dynamic_inputs, *data.static_inputs],
        "architecture": architecture(lstm, data),
        "preprocessing": {
            "sequence_length": lstm.sequence_length,
            "horizon": lstm.horizon,
            "dynamic_inputs": list(data.dynamic_inputs),
            "static_inputs": list(data.static_inputs),
            **stats.to_json(),
            **({"sites": list(data.sites)} if stats.normalization == "per_site" else {}),
        },
        "metrics": metrics,
    }


def build_model(architecture: dict[str, Any]):
    """Build the network from its `architecture` dict (the keys of ARCHITECTURE_KEYS)."""
    import torch
    from torch import nn

    class HydroLSTM(nn.Module):
        """x: [batch, days, n_dynamic + n_static] (statics broadcast over days) → [batch, days] target."""

        def __init__(
            self,
            n_dynamic: int,
            n_static: int,
            hidden_size: int,
            num_layers: int,
            dropout: float,
            static_embedding: int | None,
        ):
            super().__init__()
            self.n_dynamic = n_dynamic
            self.n_static = n_static
            embed = static_embedding if (static_embedding and n_static) else None
            self.static_embed = nn.Linear(n_static, embed) if embed else None
            self.input = nn.Linear(n_dynamic + (embed or n_static), hidden_size)
            self.lstm = nn.LSTM(
                hidden_size,
                hidden_size,
                num_layers=num_layers,
                batch_first=True,
                dropout=dropout if num_layers > 1 else 0.0,
            )
            self.dropout = nn.Dropout(dropout)
            self.head = nn.Linear(hidden_size, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.dropout(self.states(x))).squeeze(-1)

        def last_day(self, x: torch.Tensor) -> torch.Tensor:
            """forward(x)[:, -1], with the head run on the last day only (what serving needs: one value per window)."""
            return self.head(self.dropout(self.states(x)[:, -1])).squeeze(-1)

        def states(self, x: torch.Tensor) -> torch.Tensor:
            """The LSTM's hidden states: [batch, days, hidden_size]."""
            if self.static_embed is not None:
                dynamic, static = x[..., : self.n_dynamic], x[..., self.n_dynamic :]
                x = torch.cat([dynamic, torch.tanh(self.static_embed(static))], dim=-1)
            out, _ = self.lstm(torch.relu(self.input(x)))
            return out

    return HydroLSTM(**{k: architecture[k] for k in ARCHITECTURE_KEYS})


def save_lstm_model(folder: Path, model: Any, meta: dict[str, Any]) -> Path:
    """Save the state dict atomically and model.json (`meta` must hold `architecture` and `preprocessing`)."""
    import torch

    missing = [k for k in ("architecture", "preprocessing") if k not in meta]
    if missing:
        raise ValueError(f"LSTM model.json needs {missing}")
    folder = Path(folder)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    buffer = (
        io.BytesIO()
    )  # not the temp file: torch.save names the archive's records after the file it writes
    torch.save(state, buffer)
    atomic_write_bytes(folder / "model.pt", buffer.getvalue())
    return write_model_json(folder, {**meta, "framework": "torch", "weights": "model.pt"})


def load_lstm_model(folder: Path, device: str = "cpu"):
    """Rebuild the network from model.json and load its checked weights with `weights_only=True`."""
    import torch

    meta = read_model_json(folder)
    weights = Path(folder) / meta["weights"]
    model = build_model(meta["architecture"])
    model.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
    return model.to(device).eval(), meta

"""The hydrology LSTM: [input linear layer] → nn.LSTM (cuDNN on CUDA by itself) → dropout → linear head.

Its artifact is `models/lstm/{model.pt, model.json}`: the state dict (loadable with `weights_only=True`) and
the card (`trainer.card.LstmCard`): `architecture` (the constructor arguments) and `preprocessing`
(input/target statistics, sequence length, variable names, the target transform), all a handler needs to
rebuild and run it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlkube.trainer.artifacts import read_model_card, write_model_card
from mlkube.trainer.card import Architecture, LstmCard, Preprocessing, TargetTransform
from mlkube.trainer.run import LSTM_MODEL, atomic_write_bytes

if TYPE_CHECKING:
    from mlkube.trainer.preprocess import Statistics
    from mlkube.trainer.series import TimeSeriesData
    from mlkube.trainer.spec import LstmSpec

WEIGHTS = "model.pt"


def architecture(lstm: LstmSpec, data: TimeSeriesData) -> Architecture:
    """The constructor arguments of the network for the spec's `lstm` section and its data."""
    model = lstm.model
    return Architecture(
        n_dynamic=len(data.dynamic_inputs),
        n_static=len(data.static_inputs),
        hidden_size=model.hidden_size,
        num_layers=model.num_layers,
        dropout=model.dropout,
        static_embedding=model.static_embedding,
        input_layer=model.input_layer,
        initial_forget_bias=model.initial_forget_bias,
    )


def target_transform(stats: Statistics) -> TargetTransform:
    """The transform the target was trained in: log(y + the kernels' offset) under `log_target`."""
    from mlkube.trainer.preprocess.bodies import LOG_OFFSET

    if stats.log_target:
        return TargetTransform(kind="log", offset=LOG_OFFSET)
    return TargetTransform(kind="none", offset=0.0)


def artifact_meta(
    lstm: LstmSpec, data: TimeSeriesData, stats: Statistics, metrics: dict[str, Any]
) -> dict[str, Any]:
    """The card's fields (beyond what `save_lstm_model` adds) for a network trained on `data`."""
    statistics = {k: v for k, v in stats.to_json().items() if k != "log_target"}  # as target_transform
    per_site = stats.normalization == "per_site"
    return {
        "name": LSTM_MODEL,
        "target": data.target_name,
        "features": [*data.dynamic_inputs, *data.static_inputs],
        "architecture": architecture(lstm, data),
        "preprocessing": Preprocessing(
            sequence_length=lstm.sequence_length,
            horizon=lstm.horizon,
            dynamic_inputs=list(data.dynamic_inputs),
            static_inputs=list(data.static_inputs),
            target_transform=target_transform(stats),
            sites=[str(site) for site in data.sites] if per_site else None,
            **statistics,
        ),
        "metrics": metrics,
    }


def build_model(architecture: Architecture):
    """Build the network from its constructor arguments."""
    import torch
    from torch import nn

    class HydroLSTM(nn.Module):
        """x: [batch, days, n_dynamic + n_static] (statics broadcast over days) → [batch, days] target.

        Without `input_layer` and `static_embedding`, and with `initial_forget_bias`, it is neuralhydrology's
        CudaLSTM: the inputs go to nn.LSTM as they are, then dropout and the linear head.
        """

        def __init__(
            self,
            n_dynamic: int,
            n_static: int,
            hidden_size: int,
            num_layers: int,
            dropout: float,
            static_embedding: int | None,
            input_layer: bool,
            initial_forget_bias: float | None,
        ):
            super().__init__()
            self.n_dynamic = n_dynamic
            self.n_static = n_static
            embed = static_embedding if (static_embedding and n_static) else None
            self.static_embed = nn.Linear(n_static, embed) if embed else None
            width = n_dynamic + (embed or n_static)
            self.input = nn.Linear(width, hidden_size) if input_layer else None
            self.lstm = nn.LSTM(
                hidden_size if input_layer else width,
                hidden_size,
                num_layers=num_layers,
                batch_first=True,
                dropout=dropout if num_layers > 1 else 0.0,
            )
            if initial_forget_bias is not None:  # gates i, f, g, o: the first layer's forget gate
                bias = self.lstm.get_parameter("bias_hh_l0").data
                bias[hidden_size : 2 * hidden_size].fill_(initial_forget_bias)
            self.dropout = nn.Dropout(dropout)
            self.head = nn.Linear(hidden_size, 1)

        def forward(self, x: torch.Tensor, days: int | None = None) -> torch.Tensor:
            """The target of every day, or (`days`) of the last `days` days only: dropout and the head run on
            those alone, as the loss and the prediction need no more."""
            states = self.states(x)
            if days is not None:
                states = states[:, states.shape[1] - days :]
            return self.head(self.dropout(states)).squeeze(-1)

        def last_day(self, x: torch.Tensor) -> torch.Tensor:
            """forward(x)[:, -1], with the head run on the last day only (what serving needs: one value per
            window)."""
            return self.forward(x, days=1)[:, 0]

        def states(self, x: torch.Tensor) -> torch.Tensor:
            """The LSTM's hidden states: [batch, days, hidden_size]."""
            if self.static_embed is not None:
                dynamic, static = x[..., : self.n_dynamic], x[..., self.n_dynamic :]
                x = torch.cat([dynamic, torch.tanh(self.static_embed(static))], dim=-1)
            if self.input is not None:
                x = torch.relu(self.input(x))
            out, _ = self.lstm(x)
            return out

    return HydroLSTM(**architecture.model_dump())


def save_lstm_model(folder: Path, model: Any, fields: dict[str, Any]) -> LstmCard:
    """Save the state dict atomically and the card (`fields`: those of LstmCard that the saving does not fill
    in, `architecture` and `preprocessing` among them)."""
    import torch

    folder = Path(folder)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    buffer = (
        io.BytesIO()
    )  # not the temp file: torch.save names the archive's records after the file it writes
    torch.save(state, buffer)
    atomic_write_bytes(folder / WEIGHTS, buffer.getvalue())
    return write_model_card(folder, LstmCard, {**fields, "weights": WEIGHTS})


def load_lstm_model(folder: Path, device: str = "cpu") -> tuple[Any, LstmCard]:
    """Rebuild the network from its card and load its checked weights with `weights_only=True`."""
    import torch

    card = read_model_card(folder, expected=LstmCard)
    model = build_model(card.architecture)
    weights = Path(folder) / card.weights
    model.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
    return model.to(device).eval(), card

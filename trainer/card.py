"""The model card `models/<name>/model.json`: one typed model that training writes and the handlers read.

A card holds everything inference needs, so that nothing is spelled twice between training and serving:
the framework, task, input columns in order, target, the weights' file name and SHA-256, and per framework
the typed parts: for scikit-learn the estimator and its parameters, for the LSTM its constructor arguments
(`architecture`) and its preprocessing (window length, statistics, the target transform).
`trainer.artifacts` writes and reads cards; an unknown key, a missing field or a wrong type is refused
there, naming the field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Part(BaseModel):
    """A section of a card: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


class ModelCard(Part):
    """What every model card holds, whatever the framework."""

    name: str = Field(description="The model's name: its folder under models/ and its TorchServe model name.")
    framework: Literal["sklearn", "torch"] = Field(
        description="Which handler serves it: sklearn (a skops pipeline) or torch (the LSTM's state dict)."
    )
    task: Literal["classification", "regression"] = Field(description="What the model predicts.")
    features: list[str] = Field(description="The input columns, in the order the model takes them.")
    target: str = Field(description="The predicted column, with its units where the data names them.")
    classes: list[str] | None = Field(
        None, description="Classification: the class labels, in the order of the class codes 0..k-1."
    )
    weights: str = Field(
        pattern=r"^[^/\\]+$", description="File name of the weights, beside model.json (no folders)."
    )
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the weights file (hex).")
    versions: dict[str, str] = Field(description="Library → version installed when the model was saved.")
    created: str = Field(description="When the model was saved (ISO 8601, UTC).")
    metrics: dict[str, Any] = Field(
        default_factory=dict, description="Scores of the model (sklearn: CV and holdout; LSTM: test period)."
    )
    data_hash: str | None = Field(None, description="SHA-256 of the data the model was trained on.")
    run_id: str | None = Field(None, description="The run that made the model.")
    signature: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="HMAC-SHA256 (hex) of the card's other fields with the signing key (trainer.signing); "
        "serving refuses a card without it or with one its key does not give.",
    )

    def weight_files(self) -> list[tuple[str, str]]:
        """(file name, SHA-256) of every weights file the model loads, `weights` first."""
        return [(self.weights, self.sha256)]


class InputColumn(Part):
    """One input column of a scikit-learn pipeline, as a request sends it."""

    name: str = Field(description="The column's name (a key of each instance).")
    type: Literal["numeric", "categorical", "boolean", "date"] = Field(
        description="numeric: a number; categorical: a string; boolean: true/false; date: an ISO 8601 string."
    )
    categories: list[str] | None = Field(
        None,
        description="Categorical: the categories seen in training (others: preprocess.unknown_categories).",
    )


class SklearnCard(ModelCard):
    """A fitted scikit-learn pipeline saved with skops."""

    framework: Literal["sklearn"] = Field("sklearn", description="Served by the scikit-learn handler.")
    estimator: str = Field(description="The model zoo's name of the pipeline's estimator (e.g. SVM).")
    params: dict[str, Any] = Field(
        default_factory=dict, description="The tuned hyper-parameters; empty: the zoo's defaults."
    )
    columns: list[InputColumn] = Field(
        default_factory=list,
        description="Every input column with its type, in `features` order; empty: all numeric.",
    )
    unknown_categories: Literal["ignore", "error"] = Field(
        "ignore", description="A category outside `categories` at prediction: ignored, or refused (400)."
    )
    example: dict[str, Any] = Field(
        default_factory=dict, description="A real row of the data (a holdout row), as a request sends it."
    )

    def column_types(self) -> dict[str, str]:
        """Feature → type (numeric for every feature of a card without `columns`)."""
        types = {c.name: c.type for c in self.columns}
        return {name: types.get(name, "numeric") for name in self.features}


class Architecture(Part):
    """The LSTM's constructor arguments."""

    n_dynamic: int = Field(ge=1, description="Dynamic (daily) inputs.")
    n_static: int = Field(ge=0, description="Static attributes, broadcast over the days.")
    hidden_size: int = Field(ge=1, description="LSTM hidden units.")
    num_layers: int = Field(ge=1, description="Stacked LSTM layers.")
    dropout: float = Field(ge=0, lt=1, description="Dropout before the head (and between layers).")
    static_embedding: int | None = Field(
        ge=1, description="Width of the static attributes' embedding; null: the attributes go in as they are."
    )
    input_layer: bool = Field(
        True,
        description="A linear layer + ReLU before the LSTM; false: the inputs go to the LSTM as they are.",
    )
    initial_forget_bias: float | None = Field(
        None, description="The forget gate's bias at initialisation (the weights then overwrite it)."
    )


class TargetTransform(Part):
    """How the network's target relates to the raw target: y itself, or log(y + offset)."""

    kind: Literal["none", "log"] = Field(description="none: the raw target; log: log(target + offset).")
    offset: float = Field(
        ge=0,
        description="Added to the target before the log, in the target's units (mm/day), so that zero flow "
        "stays finite; 0 under kind none.",
    )

    def inverse(self, values: Any) -> Any:
        """Values in the transformed space (a NumPy array) back in the target's units."""
        import numpy as np

        return np.exp(values) - self.offset if self.kind == "log" else values


class Preprocessing(Part):
    """What inference needs to turn raw forcings into the network's input, and its output back into the
    target."""

    sequence_length: int = Field(ge=1, description="Days of input per prediction.")
    horizon: int = Field(
        ge=1, description="The target is predicted this many days after the last input day (1: the same day)."
    )
    dynamic_inputs: list[str] = Field(description="Dynamic input names, in input order.")
    static_inputs: list[str] = Field(
        description="Static attribute names, in input order (after the dynamic)."
    )
    normalization: Literal["global", "per_site"] = Field(
        description="global: one set of statistics; per_site: one row of statistics per site of `sites`."
    )
    dynamic_mean: list[float] | list[list[float]] = Field(
        description="Mean per dynamic input, in its units (per site and input under per_site)."
    )
    dynamic_std: list[float] | list[list[float]] = Field(
        description="Standard deviation per dynamic input (per site and input under per_site)."
    )
    static_mean: list[float] = Field(description="Mean per static attribute, over the sites.")
    static_std: list[float] = Field(description="Standard deviation per static attribute, over the sites.")
    target_mean: float | list[float] = Field(
        description="Mean of the transformed target (per site under per_site): de-standardises the output."
    )
    target_std: float | list[float] = Field(
        description="Standard deviation of the transformed target (per site under per_site)."
    )
    target_transform: TargetTransform = Field(
        description="The transform the target was trained in; the handler applies its inverse."
    )
    sites: list[str] | None = Field(
        None, description="per_site only: the site ids, in the order of the per-site statistics' rows."
    )

    @model_validator(mode="after")
    def _statistics_fit_the_inputs(self) -> Preprocessing:
        per_site = self.normalization == "per_site"
        if per_site and not self.sites:
            raise ValueError("normalization per_site needs `sites`, the site ids of the statistics' rows")
        rows = len(self.sites) if per_site and self.sites else 1  # (per_site has sites: refused above)
        shapes = {
            "dynamic_mean": _shape(self.dynamic_mean),
            "dynamic_std": _shape(self.dynamic_std),
            "static_mean": _shape(self.static_mean),
            "static_std": _shape(self.static_std),
            "target_mean": _shape(self.target_mean),
            "target_std": _shape(self.target_std),
        }
        dynamic = (rows, len(self.dynamic_inputs)) if per_site else (len(self.dynamic_inputs),)
        expected = {
            "dynamic_mean": dynamic,
            "dynamic_std": dynamic,
            "static_mean": (len(self.static_inputs),),
            "static_std": (len(self.static_inputs),),
            "target_mean": (rows,) if per_site else (),
            "target_std": (rows,) if per_site else (),
        }
        wrong = [f"{k} has shape {shapes[k]}, expected {v}" for k, v in expected.items() if shapes[k] != v]
        if wrong:
            raise ValueError(
                f"statistics do not fit the inputs under {self.normalization}: {'; '.join(wrong)}"
            )
        return self


def _shape(value: Any) -> tuple[int, ...]:
    """The shape of a number, a list or a list of equal lists (ragged lists: an impossible shape)."""
    if not isinstance(value, list):
        return ()
    inner = {_shape(v) for v in value}
    if len(inner) > 1:
        return (-1,)
    return (len(value), *(inner.pop() if inner else ()))


class EnsembleMember(Part):
    """One seed of an LSTM ensemble: its weights beside model.json, hashed like a single model's."""

    seed: int = Field(ge=0, description="The seed it trained with (batches, dropout, initial weights).")
    weights: str = Field(pattern=r"^[^/\\]+$", description="File name of its state dict, beside model.json.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of its weights file (hex).")
    metrics: dict[str, Any] = Field(default_factory=dict, description="Its own test-period scores.")


class LstmCard(ModelCard):
    """The hydrology LSTM: a state dict (`torch.load(weights_only=True)`) and how to rebuild and feed it; or
    an ensemble of such networks (`members`), served as the mean of their predictions in the target's
    units."""

    framework: Literal["torch"] = Field("torch", description="Served by the LSTM handler.")
    task: Literal["regression"] = Field("regression", description="The LSTM predicts a number.")
    architecture: Architecture = Field(description="The network's constructor arguments.")
    preprocessing: Preprocessing = Field(description="Window, statistics and target transform.")
    members: list[EnsembleMember] | None = Field(
        None,
        min_length=2,
        description="An ensemble (lstm.ensemble): every member's seed, weights and SHA-256 (the first is "
        "`weights`); all share `architecture` and `preprocessing`. None: one network.",
    )

    @model_validator(mode="after")
    def _first_member_is_weights(self) -> LstmCard:
        if self.members and (self.members[0].weights, self.members[0].sha256) != (self.weights, self.sha256):
            raise ValueError("an ensemble's first member must be the card's `weights` with its `sha256`")
        return self

    def weight_files(self) -> list[tuple[str, str]]:
        if not self.members:
            return super().weight_files()
        return [(m.weights, m.sha256) for m in self.members]


# framework → its card
CARDS: dict[str, type[ModelCard]] = {"sklearn": SklearnCard, "torch": LstmCard}

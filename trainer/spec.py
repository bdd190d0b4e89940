"""The experiment spec: one typed object (pydantic v2), loaded from YAML and validated before any work starts.

Every section has defaults, so a three-line spec runs. Unknown keys are errors. Field descriptions are
user-facing: the README's spec reference is generated from them (`mlkube validate --reference`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mlkube.trainer.errors import SpecError

TABULAR_DATASETS = ("iris", "wine", "breast_cancer", "diabetes")
TIMESERIES_DATASETS = ("camels_us_sample", "synthetic")
SAMPLERS = ("loguniform", "uniform", "randint", "choice")

# Limits of the YAML loader: a spec is a page of settings, so these stop only hostile or broken files.
MAX_SPEC_CHARS = 1 << 20  # 1 MiB of text
MAX_NODES = 100_000  # YAML nodes once aliases are expanded (a nine-line alias bomb expands to 10⁹)
MAX_DEPTH = 32  # nesting levels of mappings and lists (a real spec nests fewer than ten)
SEED_MAX = 2**32 - 1  # numpy's and scikit-learn's random_state range


class Section(BaseModel):
    """Base of every spec section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# ----------------------------------------------------------------------------------------------------- data
ColumnType = Literal["numeric", "categorical", "boolean", "date"]


class DataSpec(Section):
    """The tabular data set for the classical stages: a built-in by name, or a CSV/Parquet file."""

    name: Literal["iris", "wine", "breast_cancer", "diabetes"] | None = Field(
        None,
        description=(
            "Built-in data set shipped with scikit-learn (no download): iris, wine, breast_cancer, diabetes."
        ),
    )
    path: Path | None = Field(
        None, description="A CSV or Parquet file with one row per sample (instead of `name`)."
    )
    target: str | None = Field(None, description="Target column of `path` (built-ins know theirs).")
    features: list[str] | None = Field(
        None,
        min_length=1,
        description="Feature columns of `path`; default: every column but the target and groups.",
    )
    groups: str | None = Field(None, description="Column holding group labels, for `cv.scheme: group`.")
    columns: dict[str, ColumnType] = Field(
        default_factory=dict,
        description=(
            "Column types of `path` that override the inferred ones: numeric, categorical, boolean or date, "
            "e.g. {zip_code: categorical}. Inferred: numbers are numeric, true/false/yes/no boolean, "
            "ISO dates date, any other text categorical."
        ),
    )
    sep: str | None = Field(
        None,
        min_length=1,
        description="CSV field separator (e.g. ';' or '\\t'); default: sniffed (comma, semicolon, tab, "
        "pipe).",
    )
    decimal: Literal[".", ","] | None = Field(
        None,
        description="CSV decimal mark; default: ',' when the separator is not ',' and the numbers read 1,5, "
        "else '.'.",
    )
    encoding: str | None = Field(
        None,
        description="CSV text encoding (e.g. latin-1, cp1252); default: UTF-8 (with or without BOM), "
        "refused naming the byte, its line and the usual encodings when the file is not UTF-8.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if self.name is None and self.path is None:
            raise ValueError(
                "give either `name` (a built-in: iris, wine, breast_cancer, diabetes) "
                "or `path` (a CSV/Parquet file)"
            )
        if self.name is not None and self.path is not None:
            raise ValueError("give `name` or `path`, not both")
        if self.path is not None and not self.target:
            raise ValueError("`target` is required with `path`: name the column to predict")
        return self


# ------------------------------------------------------------------------------------------------ preprocess
class ReduceSpec(Section):
    """A dimensionality-reduction step of the tabular pipeline."""

    pca: Annotated[StrictInt, Field(ge=1)] | Annotated[StrictFloat, Field(gt=0, lt=1)] = Field(
        0.95, description="PCA components: a count (e.g. 2), or the fraction of variance to keep (e.g. 0.95)."
    )


class PreprocessSpec(Section):
    """Preprocessing: scaling for tabular models; gap filling and normalisation for time series (Numba
    kernels)."""

    scaler: Literal["auto", "standard", "minmax", "none"] = Field(
        "auto",
        description=(
            "Tabular scaling of numeric columns inside each model's pipeline. "
            "auto: only models that need it (LR, KNN, SVM, ...); none: exactly what scikit-learn does "
            "with the model's defaults (no scaling step at all)."
        ),
    )
    impute: Literal["none", "mean", "median"] = Field(
        "none", description="Tabular missing-value imputation of numeric columns inside the pipeline."
    )
    unknown_categories: Literal["ignore", "error"] = Field(
        "ignore",
        description=(
            "A category not seen in training, at prediction: ignore (one-hot: all zeros; trees: its own "
            "code -1) or error (serving answers 400 naming the column and its categories)."
        ),
    )
    max_categories: StrictInt = Field(
        50,
        ge=2,
        description="Most distinct values a categorical column may hold (more: refused, naming the column).",
    )
    dates: Literal["parts", "ordinal"] = Field(
        "parts", description="Date columns as calendar parts (year, month, day, weekday) or as a day number."
    )
    reduce: ReduceSpec | None = Field(
        None,
        description="Dimensionality reduction after encoding and scaling, inside the pipeline; search it "
        "as `pca__n_components` in classical.search.space.",
    )
    fill_max_gap: StrictInt = Field(
        5,
        ge=0,
        description=(
            "Time series: longest gap (days) filled by linear interpolation; "
            "longer gaps stay NaN and are masked in the loss."
        ),
    )
    log_target: StrictBool = Field(
        False, description="Time series: train on log(target + 0.1) (skewed streamflow)."
    )
    normalization: Literal["global", "per_site"] = Field(
        "global",
        description=(
            "Time series: standardise inputs with statistics over all sites or per site "
            "(training period only)."
        ),
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the Numba kernels run: auto picks CUDA when present."
    )


# ------------------------------------------------------------------------------------------------ classical
Scheme = Literal["holdout", "kfold", "stratified", "repeated", "loocv", "group", "timeseries", "nested"]


class CVSpec(Section):
    """A cross-validation scheme, built from scikit-learn's splitters."""

    scheme: Scheme = Field(
        "stratified", description="holdout, kfold, stratified, repeated, loocv, group, timeseries or nested."
    )
    folds: StrictInt = Field(
        5, ge=2, description="Number of folds (k) for kfold, stratified, repeated, group and timeseries."
    )
    repeats: StrictInt = Field(
        3, ge=1, description="Repeats for `repeated` (repeated stratified k-fold for classification)."
    )
    test_size: StrictFloat = Field(
        0.25, gt=0, le=0.5, description="Test fraction for `holdout` (at most 0.5: the rest trains)."
    )
    shuffle: StrictBool = Field(
        True, description="Shuffle before splitting (kfold, stratified); seeded by `seed`."
    )
    gap: StrictInt = Field(0, ge=0, description="`timeseries`: samples left out between train and test.")
    inner: CVSpec | None = Field(None, description="`nested`: the inner scheme that tunes.")
    outer: CVSpec | None = Field(
        None, description="`nested`: the outer scheme that scores the tuned pipeline."
    )

    @model_validator(mode="after")
    def _nested_parts(self) -> CVSpec:
        if self.scheme == "nested":
            if self.inner is None or self.outer is None:
                raise ValueError(
                    "`nested` needs both `inner` and `outer` schemes, "
                    "e.g. inner: {scheme: stratified, folds: 3}"
                )
            if "nested" in (self.inner.scheme, self.outer.scheme):
                raise ValueError("`inner` and `outer` cannot themselves be nested")
        elif self.inner is not None or self.outer is not None:
            raise ValueError(f"`inner`/`outer` only apply to scheme `nested`, not `{self.scheme}`")
        return self


class HoldoutSpec(Section):
    """A final validation split taken before any cross-validation and scored once by the best model."""

    test_size: StrictFloat = Field(
        0.2,
        gt=0,
        le=0.5,
        description=(
            "Fraction of rows kept aside for the final validation (at most 0.5: the rest is cross-validated)."
        ),
    )
    stratify: StrictBool = Field(
        True,
        description="Keep the class ratios in the split (classification); false: a plain random split, "
        "as `train_test_split(..., random_state=seed)` without `stratify`.",
    )
    shuffle: StrictBool = Field(
        True, description="Shuffle before splitting (seeded by `seed`); false: the last rows are held out."
    )

    @model_validator(mode="after")
    def _stratify_shuffles(self) -> HoldoutSpec:
        if self.stratify and not self.shuffle:
            raise ValueError("a stratified split shuffles: set stratify: false with shuffle: false")
        return self


def _search_axis(axis: Any) -> Any:
    """One parameter's search axis: a non-empty list of values, or one sampler with usable bounds."""
    if isinstance(axis, list):
        if not axis:
            raise ValueError("an empty list of values: give at least one")
        return axis
    if not (isinstance(axis, dict) and len(axis) == 1 and next(iter(axis)) in SAMPLERS):
        raise ValueError(
            "not a search axis: give a list of values, or one of "
            "{loguniform|uniform|randint: [lo, hi]}, {choice: [...]}"
        )
    ((kind, bounds),) = axis.items()
    if kind == "choice":
        if not isinstance(bounds, list) or not bounds:
            raise ValueError("`choice` takes a non-empty list of values")
        return axis
    integers = kind == "randint"
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(_is_bound(b, integers) for b in bounds)):
        kinds = "integers" if kind == "randint" else "finite numbers"
        raise ValueError(f"`{kind}` takes [lo, hi], two {kinds}")
    lo, hi = bounds
    if not lo < hi:
        raise ValueError(f"`{kind}` needs lo < hi, got lo = {lo}, hi = {hi}")
    if kind == "loguniform" and lo <= 0:
        raise ValueError(f"`loguniform` samples the logarithm, so it needs 0 < lo < hi, got lo = {lo}")
    return axis


def _is_bound(value: Any, integers: bool) -> bool:
    """A sampler's bound: a finite number (an integer for randint), never a bool."""
    if isinstance(value, bool) or not isinstance(value, int if integers else (int, float)):
        return False
    return math.isfinite(value)


SearchAxis = Annotated[Any, AfterValidator(_search_axis)]


class SearchSpec(Section):
    """Hyperparameter search on Ray Tune."""

    algorithm: Literal["grid", "random", "tpe"] = Field(
        "grid", description="grid (every combination), random, or tpe (Optuna TPE)."
    )
    space: dict[str, dict[str, SearchAxis]] = Field(
        default_factory=dict,
        description=(
            "Per model, per parameter: a list of values, or {loguniform|uniform: [lo, hi]}, "
            "{randint: [lo, hi]}, {choice: [...]}."
        ),
    )
    trials: StrictInt = Field(
        20, ge=1, description="Trials per model for random and tpe (grid runs every combination)."
    )
    scheduler: Literal["none", "asha"] = Field(
        "none", description="asha stops weak trials after a few folds."
    )
    grace_folds: StrictInt = Field(
        2, ge=1, description="ASHA: folds every trial runs before it may be stopped."
    )


class ResourcesSpec(Section):
    """Resources one trial holds."""

    cpu: StrictFloat = Field(1, gt=0, description="CPUs per trial.")
    gpu: StrictFloat = Field(0, ge=0, description="GPUs per trial.")


class ClassicalSpec(Section):
    """Spot-check and tuning of scikit-learn models (stages evaluate and improve)."""

    enabled: StrictBool = Field(True, description="Run the classical stages (they need a `data` section).")
    task: Literal["auto", "classification", "regression"] = Field(
        "auto", description="auto infers it from the target."
    )
    models: list[str] | None = Field(
        None, min_length=1, description="Model short names; default (no `models` key): the task's whole zoo."
    )
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Fixed parameters per model, e.g. {SVM: {gamma: auto}}."
    )
    metric: str = Field(
        "auto",
        description="The scikit-learn scorer that ranks the models; auto: accuracy (classification) or r2 "
        "(regression).",
    )
    metrics: list[str] = Field(
        default_factory=list,
        description="More scikit-learn scorers reported beside `metric` on the same folds (leaderboard, "
        "cv_scores.csv, report), e.g. [balanced_accuracy, f1, roc_auc, average_precision, neg_log_loss].",
    )
    holdout: HoldoutSpec | None = Field(
        None, description="Final validation split scored once by the best model."
    )
    cv: CVSpec = Field(default_factory=CVSpec, description="The cross-validation scheme of the spot-check.")
    search: SearchSpec | None = Field(
        None, description="Hyperparameter search (stage improve); none: spot-check only."
    )
    max_concurrent: StrictInt | None = Field(
        None, ge=1, description="Trials running at once; default: as many as the resources allow."
    )
    resources_per_trial: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="Resources one trial holds."
    )
    max_failures: StrictInt = Field(1, ge=0, description="Retries of a trial whose worker died.")
    parallel_folds: StrictBool = Field(
        False, description="Run the folds of one trial as parallel Ray tasks (big data sets)."
    )


# ------------------------------------------------------------------------------------------------------ lstm
class TimeSeriesDataSpec(Section):
    """Multi-site daily time series for the LSTM: a built-in by name, or the user's files."""

    name: Literal["camels_us_sample", "synthetic"] | None = Field(
        None,
        description=(
            "Built-in: camels_us_sample (4 real CAMELS-US basins, shipped; the default when `path` is "
            "not given) or synthetic (seeded weather driving a bucket model, any size)."
        ),
    )
    path: Path | None = Field(
        None,
        description=(
            "Instead of `name`: a CAMELS-US folder (the full download works as is), a folder of one "
            "CSV/Parquet per site (file name = site), "
            "or one long CSV/Parquet/NetCDF table with `site` and `date`."
        ),
    )
    sites: list[str] | None = Field(
        None, min_length=1, description="Sites (basins) to use, quoted (e.g. '01022500'); default: all."
    )
    dynamic_inputs: list[str] | None = Field(
        None,
        min_length=1,
        description="Daily input variables (`prcp` finds `prcp(mm/day)`); default: the data set's forcings "
        "(CAMELS: prcp, srad, tmax, tmin, vp, dayl; tables: every numeric column but the target).",
    )
    static_inputs: list[str] = Field(
        default_factory=list,
        description="Static site attributes appended to every day (CAMELS: e.g. area_gages2, "
        "elev_mean, p_mean; tables: columns constant within each site).",
    )
    target: str | None = Field(
        None, description="Daily target variable; default: streamflow QObs(mm/d) (required for tables)."
    )
    train_period: tuple[dt.date, dt.date] | None = Field(
        None,
        description="[start, end] dates, inclusive; default: the data set's (camels_us_sample: 2000-01-01 to "
        "2001-06-30), else the first half of the days.",
    )
    validation_period: tuple[dt.date, dt.date] | None = Field(
        None,
        description="[start, end] dates, inclusive; default: camels_us_sample 2001-07-01 to 2001-12-31, else "
        "the third quarter of the days.",
    )
    test_period: tuple[dt.date, dt.date] | None = Field(
        None,
        description="[start, end] dates, inclusive; default: camels_us_sample 2002, else the last quarter.",
    )
    synthetic_sites: StrictInt = Field(8, ge=1, description="`synthetic`: number of sites generated.")
    synthetic_years: StrictInt = Field(
        4, ge=1, description="`synthetic`: years of daily data generated (from 2000-01-01)."
    )

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("name") is None and data.get("path") is None:
            return {**data, "name": "camels_us_sample"}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> TimeSeriesDataSpec:
        if self.name is not None and self.path is not None:
            raise ValueError("give `name` (a built-in: camels_us_sample, synthetic) or `path`, not both")
        return self

    @field_validator("sites", mode="before")
    @classmethod
    def _sites_quoted(cls, value: Any) -> Any:
        if isinstance(value, list) and any(isinstance(site, int) for site in value):
            raise ValueError(
                "quote site ids, e.g. '01022500': YAML reads unquoted digits as a number and drops the "
                "leading zeros"
            )
        if isinstance(value, list) and len(set(value)) != len(value):
            raise ValueError("lists a site twice")
        return value

    @field_validator("train_period", "validation_period", "test_period")
    @classmethod
    def _start_before_end(cls, value: tuple[dt.date, dt.date] | None) -> tuple[dt.date, dt.date] | None:
        if value is not None and value[0] > value[1]:
            raise ValueError("the start date comes after the end date")
        return value


class LstmModelSpec(Section):
    """The network: [input linear layer], nn.LSTM (cuDNN on CUDA), dropout and a linear head on the days the
    loss or the prediction needs. `input_layer: false` with `initial_forget_bias: 3` is neuralhydrology's
    CudaLSTM."""

    hidden_size: StrictInt = Field(64, ge=1, description="LSTM hidden units.")
    num_layers: StrictInt = Field(1, ge=1, description="Stacked LSTM layers.")
    dropout: StrictFloat = Field(0.0, ge=0, lt=1, description="Dropout before the head (and between layers).")
    static_embedding: StrictInt | None = Field(
        None, ge=1, description="Embed static attributes to this size; none: feed them raw."
    )
    input_layer: StrictBool = Field(
        False,
        description="A linear layer + ReLU (inputs → hidden_size) before the LSTM; false: the inputs go to "
        "the LSTM as they are (neuralhydrology's CudaLSTM), about 1.5× faster per step on CPU.",
    )
    initial_forget_bias: StrictFloat | None = Field(
        3.0,
        description="The LSTM's forget-gate bias at initialisation (neuralhydrology's initial_forget_bias): "
        "a high bias keeps the cell state through long sequences early in training; none: torch's default.",
    )


class LstmTrainSpec(Section):
    """Optimisation."""

    epochs: StrictInt = Field(10, ge=1, description="Epochs (an epoch is `steps_per_epoch` batches).")
    steps_per_epoch: StrictInt = Field(50, ge=1, description="Batches per epoch.")
    batch_size: StrictInt = Field(
        64, ge=1, description="Global batch (sequences), split evenly over workers."
    )
    learning_rate: StrictFloat = Field(1e-3, gt=0, description="The optimiser's (initial) learning rate.")
    optimizer: Literal["adam", "adamw", "sgd"] = Field(
        "adam",
        description="adam, adamw (decoupled weight decay, torch's default 0.01) or sgd (with `momentum`).",
    )
    momentum: StrictFloat = Field(
        0.0, ge=0, lt=1, description="sgd's momentum (the other optimisers ignore it)."
    )
    schedule: Literal["none", "step", "cosine"] = Field("none", description="Learning-rate schedule.")
    clip_grad_norm: StrictFloat | None = Field(1.0, gt=0, description="Gradient clipping; none: off.")
    loss: Literal["nse", "mse"] = Field(
        "nse", description="nse: per-site variance weighted (neuralhydrology); mse."
    )
    warmup_days: StrictInt = Field(0, ge=0, description="First days of each sequence left out of the loss.")
    early_stopping_patience: StrictInt | None = Field(
        None, ge=1, description="Epochs without better validation NSE before stopping."
    )
    checkpoint_every: StrictInt = Field(50, ge=1, description="Steps between checkpoints (rank 0, atomic).")
    mixed_precision: StrictBool = Field(
        True, description="bfloat16/float16 autocast on CUDA (on a CPU: see cpu_precision)."
    )
    cpu_precision: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="The LSTM's training steps on a CPU: float32, or bfloat16 autocast where the CPU runs it "
        "natively (AVX-512 BF16 or AMX, through oneDNN: 1.6x the float32 steps on a 2-core Xeon VM); a CPU "
        "without falls back to float32 and says so. Validation and scores run in float32.",
    )


class ElasticSpec(Section):
    """torch elastic (torchrun) launch."""

    nproc_per_node: StrictInt = Field(2, ge=1, description="Worker processes on this node.")
    min_nodes: StrictInt = Field(1, ge=1, description="Elastic membership: fewest nodes.")
    max_nodes: StrictInt = Field(1, ge=1, description="Elastic membership: most nodes.")
    max_restarts: StrictInt = Field(3, ge=0, description="Worker-group restarts after a failure.")
    rdzv_backend: Literal["c10d", "etcd", "etcd-v2", "static"] = Field(
        "c10d", description="Rendezvous backend."
    )
    rdzv_endpoint: str | None = Field(None, description="host:port of the rendezvous; default: local.")
    timeout_seconds: StrictInt = Field(
        300,
        ge=10,
        description="How long a worker waits for the others in a training step's collective before the "
        "group gives up and torchrun re-forms it, from the last checkpoint, without a node that stopped "
        "answering (a network cut; torch's default is 30 minutes). Rank 0's validation and final scoring "
        "do not count against it (the others wait for those without this limit).",
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> ElasticSpec:
        if self.min_nodes > self.max_nodes:
            raise ValueError(f"min_nodes ({self.min_nodes}) must be ≤ max_nodes ({self.max_nodes})")
        return self


class BasinCVSpec(Section):
    """Cross-validation over sites (prediction in ungauged basins, as Kratzert et al. 2019 for CAMELS-US):
    each fold trains the deep stage's configuration on the other folds' sites, with statistics from those
    sites alone, and is scored on its held-out sites' test period (stage basin_cv)."""

    scheme: Literal["kfold", "group"] = Field(
        "kfold",
        description="kfold: sites split into `folds` (scikit-learn's KFold); group: whole groups of sites "
        "held out together (GroupKFold), e.g. a region, so no basin of a held-out region trains.",
    )
    folds: StrictInt | None = Field(
        None,
        ge=2,
        description="Folds (k); none: one per site (kfold: leave-one-basin-out) or per group (group).",
    )
    shuffle: StrictBool = Field(
        True, description="kfold: shuffle the sites before splitting (seeded by `seed`); false: in order."
    )
    groups: str | dict[str, str] | None = Field(
        None,
        description="group: a static attribute of the data set that names each site's group (CAMELS-US: "
        "huc_02, the hydrologic region; it need not be a model input), or a mapping site → group.",
    )
    max_concurrent: StrictInt | None = Field(
        None, ge=1, description="Folds training at once (Ray Tune trials); default: as the CPUs allow."
    )

    @model_validator(mode="after")
    def _groups_for_group(self) -> BasinCVSpec:
        if self.scheme == "group" and self.groups is None:
            raise ValueError(
                "scheme group needs `groups`: a static attribute naming each site's group (e.g. huc_02) "
                "or a mapping site → group"
            )
        if self.scheme != "group" and self.groups is not None:
            raise ValueError(f"`groups` applies to scheme group, not {self.scheme}")
        return self


# Searchable LSTM settings: a short name (lstm.search.space's key) → its dotted path under `lstm`.
LSTM_SEARCHABLE = {
    "learning_rate": "train.learning_rate",
    "optimizer": "train.optimizer",
    "momentum": "train.momentum",
    "schedule": "train.schedule",
    "batch_size": "train.batch_size",
    "hidden_size": "model.hidden_size",
    "num_layers": "model.num_layers",
    "dropout": "model.dropout",
    "sequence_length": "sequence_length",
}


def _lstm_search_key(key: str) -> str:
    if key not in LSTM_SEARCHABLE:
        raise ValueError(f"{key!r} is not searchable: choose from {', '.join(LSTM_SEARCHABLE)}")
    return key


class LstmSearchSpec(Section):
    """Ray Tune over the LSTM (stage search_lstm): one trial is one training (one worker), reported every
    epoch with its validation NSE; the best configuration is then trained by the deep stage under torch
    elastic."""

    algorithm: Literal["grid", "random", "tpe"] = Field(
        "random", description="grid (every combination of lists), random, or tpe (Optuna TPE)."
    )
    space: dict[Annotated[str, AfterValidator(_lstm_search_key)], SearchAxis] = Field(
        default_factory=dict,
        description="Per setting (" + ", ".join(LSTM_SEARCHABLE) + "): a list of values, or "
        "{loguniform|uniform: [lo, hi]}, {randint: [lo, hi]} (hi excluded), {choice: [...]}; every value "
        "must be one the setting accepts, e.g. {learning_rate: {loguniform: [0.0001, 0.1]}, "
        "optimizer: [adam, sgd]}.",
    )
    trials: StrictInt = Field(8, ge=1, description="Trials for random and tpe (grid runs every combination).")
    scheduler: Literal["none", "asha"] = Field(
        "asha", description="asha stops weak trials by epoch on the validation NSE."
    )
    grace_epochs: StrictInt = Field(
        1, ge=1, description="ASHA: epochs every trial trains before it may be stopped."
    )
    max_concurrent: StrictInt | None = Field(
        None, ge=1, description="Trials running at once; default: as many as the resources allow."
    )
    resources_per_trial: ResourcesSpec = Field(
        default_factory=ResourcesSpec,
        description="Resources one trial holds (gpu: trials train on a GPU of the Ray cluster).",
    )
    max_failures: StrictInt = Field(
        1, ge=0, description="Retries of a trial whose process died; it resumes from its last epoch."
    )

    @field_validator("space")
    @classmethod
    def _space_values(cls, space: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        for key, axis in space.items():
            problem = _lstm_axis_problem(key, axis, info.data.get("algorithm", "random"))
            if problem:
                raise ValueError(f"{key}: {problem}")
        return space


def _lstm_axis_problem(key: str, axis: Any, algorithm: str) -> str | None:
    """Why `axis` cannot be searched for the LSTM setting `key` (None: it can): every value a trial may get
    must be one the setting itself accepts."""
    from pydantic import TypeAdapter

    *sections, name = LSTM_SEARCHABLE[key].split(".")
    model: type[BaseModel] = LstmSpec
    for section in sections:
        model = _section_type(model.model_fields[section].annotation) or model
    info = model.model_fields[name]
    field_type: Any = info.annotation
    adapter = TypeAdapter(Annotated[field_type, info])  # the field's type and constraints (ge, lt …)
    if isinstance(axis, list) or "choice" in axis:
        values = axis if isinstance(axis, list) else axis["choice"]
    else:
        if algorithm == "grid":
            return (
                f"grid search takes a list of values, not {axis}: give a list, or use algorithm random or tpe"
            )
        kind, (lo, hi) = next(iter(axis.items()))
        if kind == "randint":
            values = [lo, hi - 1]  # Ray Tune's randint leaves hi out
        else:
            values = [float(lo), float(hi)]
            try:
                adapter.validate_python(0.5)
            except ValidationError:
                return f"{kind} draws fractions, and {key} takes integers or names: give a list, or randint"
    for value in values:
        try:
            adapter.validate_python(value)
        except ValidationError as err:
            return f"{value!r} is not a valid {key}: {err.errors()[0]['msg']}"
    return None


Baseline = Literal["climatology", "Ridge", "GBM"]  # trainer.lstm.baselines.BASELINES (a test ties the two)


class LstmSpec(Section):
    """The deep stage: an LSTM on multi-site daily series, trained under torch elastic."""

    enabled: StrictBool = Field(True, description="Run the deep stage.")
    data: TimeSeriesDataSpec = Field(
        default_factory=TimeSeriesDataSpec, description="The time-series data set."
    )
    sequence_length: StrictInt = Field(365, ge=2, description="Days the LSTM sees per sample.")
    horizon: StrictInt = Field(
        1, ge=1, description="Predict the target this many days ahead of the last input day (1: same day)."
    )
    model: LstmModelSpec = Field(default_factory=LstmModelSpec, description="The network.")
    train: LstmTrainSpec = Field(default_factory=LstmTrainSpec, description="Optimisation.")
    elastic: ElasticSpec = Field(default_factory=ElasticSpec, description="torchrun launch.")
    baselines: list[Baseline] = Field(
        default_factory=lambda: list(get_args(Baseline)),
        description="Baselines scored beside the LSTM on the test period: climatology (day-of-year means), "
        "Ridge and GBM on lagged forcings ([] skips them all).",
    )
    baseline_max_rows: StrictInt | None = Field(
        500_000,
        ge=1000,
        description="Ridge and GBM fit on at most this many training days (site × day rows): with more, a "
        "sample of this many drawn from the seed (671 basins × 10 years are 2.4 M rows, which took 8 GB); "
        "null: every row.",
    )
    search: LstmSearchSpec | None = Field(
        None,
        description="Ray Tune over the LSTM's learning rate, optimiser and architecture (stage search_lstm); "
        "the deep stage then trains the best configuration. None: train the settings as given.",
    )
    cv: BasinCVSpec | None = Field(
        None,
        description="Cross-validation over sites (stage basin_cv): ungauged prediction of held-out basins, "
        "scored beside the same basins trained gauged; none: no such stage.",
    )
    ensemble: StrictInt = Field(
        1,
        ge=1,
        le=64,
        description="Seeds of the configuration trained side by side (Ray Tune trials, seeds seed .. "
        "seed + N - 1); the deep stage scores, archives and serves their mean. 1: one model under "
        "torch elastic.",
    )


# ----------------------------------------------------------------------------------------------------- serve
class ServeSpec(Section):
    """TorchServe for the best models."""

    host: str = Field("127.0.0.1", description="Bind address (loopback by default).")
    inference_port: StrictInt = Field(8080, ge=1, le=65535, description="Inference API port.")
    metrics_port: StrictInt = Field(8082, ge=1, le=65535, description="Prometheus metrics port.")
    token_auth: StrictBool = Field(True, description="TorchServe token authorization (keep on).")
    token_expiration_min: StrictInt = Field(
        60, ge=1, description="Minutes before TorchServe's keys expire (renew or restart after)."
    )
    batch_size: StrictInt = Field(8, ge=1, description="Dynamic batching: requests per batch.")
    max_batch_delay_ms: StrictInt = Field(
        5, ge=0, description="Dynamic batching: wait this long to fill a batch."
    )
    workers: StrictInt = Field(1, ge=1, description="Workers per model.")
    max_request_bytes: StrictInt = Field(1_048_576, ge=1024, description="Largest request body.")
    jvm_options: str = Field(
        "-XX:TieredStopAtLevel=1",
        description=(
            "Extra options for TorchServe's Java frontend (one line). "
            "The default compiles with C1 only: on a few cores, "
            "C2's compiler threads took 12-50 % of a core through the first minute of load "
            "and ~25 % of the LSTM's "
            'batched throughput; "" restores the JVM\'s default.'
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _no_management_port(cls, data: Any) -> Any:
        if isinstance(data, dict) and "management_port" in data:
            raise ValueError(
                "management_port: the management API has no port; it listens on a Unix socket that only the "
                "serving user can reach (its key can scale workers without bound); remove the key"
            )
        return data

    @model_validator(mode="after")
    def _two_ports(self) -> ServeSpec:
        if self.inference_port == self.metrics_port:
            raise ValueError(
                f"inference_port and metrics_port share port {self.metrics_port}: "
                "the inference and metrics APIs each need their own port"
            )
        return self

    @field_validator("jvm_options")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if any(c in value for c in "\r\n\\"):
            raise ValueError("JVM options go on one line of config.properties: no line breaks or backslashes")
        return value


# --------------------------------------------------------------------------------------------------- cluster
class ClusterSpec(Section):
    """Where the work runs: the embedded default, or a cluster."""

    ray_address: str | None = Field(
        None,
        description="Ray cluster to join (`ray://...` or `auto`); default: $RAY_ADDRESS, else a local Ray.",
    )
    num_cpus: StrictInt | None = Field(None, ge=1, description="CPUs of the local Ray; default: all.")
    namespace: str = Field("default", description="Kubernetes namespace for `mlkube submit`.")
    image: str | None = Field(
        None,
        description="Container image for cluster jobs (`repository[:tag]`); default: the chart's, "
        "mlkube:<chart appVersion> (`-gpu` with `gpu: true`); without a tag, the chart's tag.",
    )
    gpu: StrictBool = Field(False, description="Request nvidia.com/gpu for training pods (false on kind).")


class MetricsSpec(Section):
    """Prometheus exporters of mlkube's own processes."""

    port: StrictInt | None = Field(
        None, ge=0, le=65535, description="Exporter port (training rank r uses port + r); none: off."
    )
    linger_seconds: StrictFloat = Field(
        0,
        ge=0,
        le=3600,
        description=(
            "Keep the LSTM workers' exporters up this long after training, "
            "so a short job's last values get scraped."
        ),
    )


# ------------------------------------------------------------------------------------------------------ spec
class Spec(Section):
    """An mlkube experiment."""

    seed: StrictInt = Field(
        0,
        ge=0,
        le=SEED_MAX,
        description="Seeds splits, models and batches (0 to 4294967295): same seed, same results.",
    )
    run_dir: Path = Field(Path("runs"), description="Folder that holds one sub-folder per run.")
    data: DataSpec | None = Field(None, description="Tabular data for the classical stages.")
    preprocess: PreprocessSpec = Field(default_factory=PreprocessSpec, description="Preprocessing.")
    classical: ClassicalSpec = Field(default_factory=ClassicalSpec, description="Spot-check and tuning.")
    lstm: LstmSpec | None = Field(None, description="The deep stage; absent: no LSTM.")
    serve: ServeSpec = Field(default_factory=ServeSpec, description="Serving.")
    cluster: ClusterSpec = Field(default_factory=ClusterSpec, description="Where it runs.")
    metrics: MetricsSpec = Field(default_factory=MetricsSpec, description="Prometheus exporters.")

    @field_validator("classical")
    @classmethod
    def _models_unique(cls, value: ClassicalSpec) -> ClassicalSpec:
        if value.models is not None and len(set(value.models)) != len(value.models):
            raise ValueError("`models` lists a model twice")
        return value

    @property
    def runs_classical(self) -> bool:
        return self.data is not None and self.classical.enabled

    @property
    def runs_lstm(self) -> bool:
        return self.lstm is not None and self.lstm.enabled

    def to_yaml(self) -> str:
        """The resolved spec (every default filled in), as YAML."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ------------------------------------------------------------------------------------------------- loading
def load_spec(source: str | Path, base_dir: Path | None = None) -> Spec:
    """Read and validate a spec file; raise SpecError with one line per problem.

    Relative paths in the spec are resolved against the spec file's folder (or `base_dir`). A spec that
    enables no stage is refused: it would run nothing and say nothing.
    """
    path = Path(source)
    spec = parse_spec(read_spec_text(path), source=str(path))
    if not (spec.runs_classical or spec.runs_lstm):
        raise SpecError(
            ["the spec enables no stage: add a `data` section (the classical stages) or an `lstm` section"],
            source=str(path),
        )
    return _resolve_paths(spec, base_dir or path.parent)


def read_spec_text(path: Path) -> str:
    """A spec file's text: at most MAX_SPEC_CHARS bytes of UTF-8 (a byte-order mark allowed), never binary."""
    if not path.is_file():
        raise SpecError([f"spec file not found: {path}"], source=str(path))
    with path.open("rb") as file:
        data = file.read(MAX_SPEC_CHARS + 1)  # bounded, whatever the file system says its size is
    if len(data) > MAX_SPEC_CHARS:
        raise _too_large(str(path))
    if b"\0" in data:
        line = data.count(b"\n", 0, data.index(b"\0")) + 1
        raise SpecError(
            [f"not a text file (line {line}: a NUL byte) — a spec is YAML text in UTF-8"], source=str(path)
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SpecError(
            [f"not UTF-8 text (line {line}: byte {data[exc.start]:#04x}) — a spec is YAML text in UTF-8"],
            source=str(path),
            fix="save the file as UTF-8 (from Latin-1: iconv -f latin1 -t utf-8 SPEC > SPEC.utf8)",
        ) from None


def parse_spec(text: str, source: str = "<spec>") -> Spec:
    """Validate YAML text into a Spec; an empty document is refused (it would run nothing, silently)."""
    raw, lines = _read_yaml(text, source)
    if raw is None or raw == {}:
        raise SpecError(
            ["the spec is empty: give at least a `data` section (classical stages) or an `lstm` section"],
            source=source,
        )
    if not isinstance(raw, dict):
        raise SpecError(
            [
                "the spec must be a mapping of sections (seed, data, classical, ...), "
                f"got {type(raw).__name__}"
            ],
            source=source,
        )
    try:
        return Spec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError([_describe(err, lines) for err in exc.errors()], source=source) from None


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, for hostile files: it refuses nesting deeper than MAX_DEPTH while it composes
    (the composer recurses once per level), turns a value the constructor cannot build into a YAML error,
    and keeps a date that does not exist (2001-02-30) as text, for the validation to name with its field."""

    def __init__(self, text: str):
        super().__init__(text)
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels (line {line})")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this {node.tag.rsplit(':', 1)[-1]}: {exc}", node.start_mark
            ) from None

    def construct_date_or_text(self, node: yaml.ScalarNode) -> Any:
        try:
            return self.construct_yaml_timestamp(node)
        except ValueError:
            return self.construct_scalar(node)


_SpecLoader.add_constructor("tag:yaml.org,2002:timestamp", _SpecLoader.construct_date_or_text)


class _Refused(Exception):
    """A spec document past one of the loader's limits (the problem, with its line)."""

    def __init__(self, problem: str):
        super().__init__(problem)
        self.problem = problem


def _too_large(source: str) -> SpecError:
    return SpecError(
        [f"larger than {MAX_SPEC_CHARS // 1024} KiB — a spec is a page of settings"],
        source=source,
        fix="keep data in data files (data.path, lstm.data.path) and name them in the spec",
    )


def _read_yaml(text: str, source: str) -> tuple[Any, dict[tuple, int]]:
    """The YAML document and the line of each key path, within the loader's limits: size, nesting depth and
    alias expansion are checked on the composed node graph, before anything walks or builds the expansion."""
    if len(text) > MAX_SPEC_CHARS:
        raise _too_large(source)
    try:
        raw, lines, duplicates = _load_yaml(text)
    except _Refused as exc:
        raise SpecError(
            [exc.problem],
            source=source,
            fix=f"a spec nests at most {MAX_DEPTH} levels and expands to at most {MAX_NODES} YAML nodes",
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError([f"not valid YAML{_yaml_where(exc)}: {_yaml_problem(exc)}"], source=source) from None
    if duplicates:
        raise SpecError(duplicates, source=source)
    return raw, lines


def _load_yaml(text: str) -> tuple[Any, dict[tuple, int], list[str]]:
    loader = _SpecLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, {}, []
        _measure(root)
        lines, duplicates = _line_map(root)
        return loader.construct_document(root), lines, duplicates
    finally:
        loader.dispose()


def _yaml_where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f" (line {mark.line + 1})" if mark else ""


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        return f"control character #x{exc.character:04x} (position {exc.position}): not allowed in YAML text"
    return str(getattr(exc, "problem", exc))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _measure(root: yaml.Node) -> None:
    """Refuse a document that expands (aliases followed) past MAX_NODES nodes or MAX_DEPTH levels, or that
    contains itself. Each distinct node is measured once, so the cost is that of the text, not of the
    expansion; an alias always names a node defined earlier, so the recursion is no deeper than the text."""
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, levels) once expanded
    open_nodes: set[int] = set()

    def measure(node: yaml.Node) -> tuple[int, int]:
        if id(node) in measured:
            return measured[id(node)]
        if id(node) in open_nodes:
            line = node.start_mark.line + 1
            raise _Refused(
                f"an alias refers to the node that contains it (line {line}): the spec would contain itself"
            )
        open_nodes.add(id(node))
        nodes, levels = 1, 1
        for child in _children(node):
            child_nodes, child_levels = measure(child)
            nodes, levels = nodes + child_nodes, max(levels, child_levels + 1)
        open_nodes.discard(id(node))
        line = node.start_mark.line + 1
        if nodes > MAX_NODES:
            raise _Refused(f"aliases expand the node on line {line} to {nodes} YAML nodes, over {MAX_NODES}")
        if levels > MAX_DEPTH:
            raise _Refused(f"aliases nest the node on line {line} {levels} levels deep, over {MAX_DEPTH}")
        measured[id(node)] = nodes, levels
        return nodes, levels

    measure(root)


def _line_map(root: yaml.Node) -> tuple[dict[tuple, int], list[str]]:
    """Each key path of the document with its 1-based line, and one problem per duplicate key (YAML would
    silently keep the last). Each node is walked once, where it is defined, never along an alias."""
    lines: dict[tuple, int] = {}
    duplicates: list[str] = []
    walked: set[int] = set()

    def walk(node: yaml.Node, path: tuple) -> None:
        if id(node) in walked:
            return
        walked.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                sub, line = (*path, key.value), key.start_mark.line + 1
                if key.value in first:
                    duplicates.append(
                        f"{'.'.join(str(p) for p in sub)} (line {line}): duplicate key — also given on line "
                        f"{first[key.value]}; give it once"
                    )
                first.setdefault(key.value, line)
                lines.setdefault(sub, line)
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                sub = (*path, i)
                lines[sub] = item.start_mark.line + 1
                walk(item, sub)

    walk(root, ())
    return lines, duplicates


def _describe(err: Mapping[str, Any], lines: dict[tuple, int]) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    path = ".".join(str(p) for p in loc) or "<top level>"
    line = _nearest_line(loc, lines)
    where = f" (line {line})" if line else ""
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{path}{where}: unknown key — remove it or check its spelling ({_allowed_keys(loc)})"
    if kind == "missing":
        return f"{path}{where}: required but missing"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{path}{where}: {_shown(err.get('input'))} — {msg}"


def _shown(value: Any, limit: int = 80) -> str:
    """A bad value as the message shows it: its repr, cut short (a section's mapping, a huge number)."""
    if isinstance(value, dict) and len(value) != 1:
        return "{...}"
    shown = repr(value)
    return shown if len(shown) <= limit else f"{shown[: limit - 3]}..."


def _allowed_keys(loc: tuple) -> str:
    model: type[BaseModel] | None = Spec
    for part in loc[:-1]:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return "see `mlkube validate --help`"
        model = _section_type(model.model_fields[part].annotation)
    if model is None:
        return "see the spec reference"
    return "allowed: " + ", ".join(model.model_fields)


def _section_type(annotation: Any) -> type[BaseModel] | None:
    candidates = getattr(annotation, "__args__", (annotation,))
    for cand in candidates:
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            return cand
    return None


def _nearest_line(loc: tuple, lines: dict[tuple, int]) -> int | None:
    for end in range(len(loc), 0, -1):
        key = tuple(str(p) if not isinstance(p, int) else p for p in loc[:end])
        if key in lines:
            return lines[key]
    return None


def _resolve_paths(spec: Spec, base: Path) -> Spec:
    def absolute(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else (base / p).resolve()

    if spec.data is not None:
        spec.data.path = absolute(spec.data.path)
    if spec.lstm is not None:
        spec.lstm.data.path = absolute(spec.lstm.data.path)
    return spec


# ------------------------------------------------------------------------------------------ spec reference
def reference_markdown() -> str:
    """The spec reference for the README, generated from the field descriptions so it cannot drift."""
    out: list[str] = [
        "# Spec reference",
        "",
        (
            "Generated from the pydantic model (`mlkube validate --reference > docs/spec-reference.md`); "
            "a test keeps it equal to the code."
        ),
    ]

    def section(model: type[BaseModel], prefix: str) -> None:
        summary = " ".join((model.__doc__ or "").split())  # a docstring wrapped in the code is one paragraph
        out.append(f"\n### `{prefix or 'top level'}`\n\n{summary}\n")
        out.append("| key | default | meaning |\n|---|---|---|")
        nested = []
        for name, field in model.model_fields.items():
            sub = _section_type(field.annotation)
            default = field.get_default(call_default_factory=True)
            shown = "(section)" if isinstance(default, BaseModel) else f"`{_short(default)}`"
            out.append(f"| `{name}` | {shown} | {field.description or ''} |")
            if sub is not None and sub is not model:
                nested.append((sub, f"{prefix}.{name}" if prefix else name))
        for sub, name in nested:
            section(sub, name)

    section(Spec, "")
    return "\n".join(out) + "\n"


def _short(value: Any) -> str:
    if isinstance(value, Path):
        return str(value)
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()

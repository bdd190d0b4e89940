"""The skops types mlkube trusts: exactly those its model zoo's pipelines hold (derived from the zoo)."""

from __future__ import annotations

import functools
import importlib

from mlkube.trainer.classical.encode import DATE_FUNCTIONS
from mlkube.trainer.classical.zoo import CLASSIFIERS, REDUCERS, REGRESSORS, SCALERS

# The estimators that `zoo.build_pipeline` and `encode.column_transformer` put around the zoo's models
# (besides SCALERS and REDUCERS); the only functions a FunctionTransformer may hold are DATE_FUNCTIONS.
PIPELINE_PARTS = (
    "sklearn.pipeline.Pipeline",
    "sklearn.impute.SimpleImputer",
    "sklearn.multiclass.OneVsRestClassifier",
    "sklearn.compose.ColumnTransformer",
    "sklearn.preprocessing.OneHotEncoder",
    "sklearn.preprocessing.OrdinalEncoder",
    "sklearn.preprocessing.FunctionTransformer",
)
# What fitted zoo estimators hold besides NumPy arrays and Python containers: trees, neighbour indexes,
# gradient boosting's bins, predictors and losses, label encoders, column slices (tests/test_model_trust.py
# saves and loads every zoo model and pipeline variant, so a type missing here fails there).
FITTED_STATE = (
    "builtins.dict",
    "builtins.int",
    "builtins.list",
    "builtins.slice",  # a ColumnTransformer's output_indices_
    "builtins.str",
    "builtins.tuple",
    "numpy.dtype",
    "numpy.ndarray",
    "numpy.random._generator.Generator",
    *(f"numpy.{name}" for name in ("bool", "int32", "int64", "uint64", "float32", "float64", "str_")),
    "sklearn.tree._tree.Tree",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.preprocessing._label.LabelBinarizer",
    "sklearn.preprocessing._label.LabelEncoder",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    *(
        f"sklearn._loss.{module}.{prefix}{name}"
        for name in (
            "HalfSquaredError",
            "AbsoluteError",
            "PinballLoss",
            "HalfGammaLoss",
            "HalfPoissonLoss",
            "HalfBinomialLoss",
            "HalfMultinomialLoss",
        )
        for module, prefix in (("loss", ""), ("_loss", "Cy"))
    ),
    *(f"sklearn._loss.link.{name}" for name in ("IdentityLink", "LogLink", "LogitLink", "MultinomialLogit")),
    "sklearn._loss.link.Interval",
)


@functools.cache
def trusted_skops_types() -> frozenset[str]:
    """The types a skops file of a zoo pipeline holds: the classes of CLASSIFIERS, REGRESSORS, SCALERS,
    REDUCERS and PIPELINE_PARTS (as skops names them, by their defining module), the date functions, their
    fitted state (FITTED_STATE) and the distance metrics the neighbours models may be tuned to."""
    from sklearn.metrics._dist_metrics import METRIC_MAPPING64

    paths = [e.estimator for e in (*CLASSIFIERS.values(), *REGRESSORS.values())]
    parts = (*paths, *SCALERS.values(), *REDUCERS.values(), *PIPELINE_PARTS)
    classes = [_class(path) for path in parts] + [*METRIC_MAPPING64.values(), *DATE_FUNCTIONS.values()]
    return frozenset(f"{c.__module__}.{c.__qualname__}" for c in classes) | frozenset(FITTED_STATE)


def _class(path: str) -> type:
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)

"""Cross-validation schemes, all scikit-learn splitters: scheme name → splitter builder (one line each).

Splits are computed once, on the driver, as index arrays: the same seed gives the same folds on any number of
workers, and the same folds `cross_val_score` would use with the same splitter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mlkube.trainer.errors import MlkubeError
from mlkube.trainer.spec import CVSpec

Split = tuple[np.ndarray, np.ndarray]


def _seed(cv: CVSpec, seed: int) -> int | None:
    return seed if cv.shuffle else None


def _holdout(cv: CVSpec, task: str, seed: int):
    from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

    cls = StratifiedShuffleSplit if task == "classification" else ShuffleSplit
    return cls(n_splits=1, test_size=cv.test_size, random_state=seed)


def _kfold(cv: CVSpec, task: str, seed: int):
    from sklearn.model_selection import KFold

    return KFold(n_splits=cv.folds, shuffle=cv.shuffle, random_state=_seed(cv, seed))


def _stratified(cv: CVSpec, task: str, seed: int):
    from sklearn.model_selection import StratifiedKFold

    return StratifiedKFold(n_splits=cv.folds, shuffle=cv.shuffle, random_state=_seed(cv, seed))


def _repeated(cv: CVSpec, task: str, seed: int):
    from sklearn.model_selection import RepeatedKFold, RepeatedStratifiedKFold

    cls = RepeatedStratifiedKFold if task == "classification" else RepeatedKFold
    return cls(n_splits=cv.folds, n_repeats=cv.repeats, random_state=seed)


def _loocv(cv: CVSpec, task: str, seed: int):
    from sklearn.model_selection import LeaveOneOut

    return LeaveOneOut()


def _group(cv: CVSpec, task: str, seed: int):
    from sklearn.model_selection import GroupKFold

    return GroupKFold(n_splits=cv.folds)


def _timeseries(cv: CVSpec, task: str, seed: int):
    from sklearn.model_selection import TimeSeriesSplit

    return TimeSeriesSplit(n_splits=cv.folds, gap=cv.gap)


SCHEMES: dict[str, Callable[[CVSpec, str, int], object]] = {
    "holdout": _holdout,
    "kfold": _kfold,
    "stratified": _stratified,
    "repeated": _repeated,
    "loocv": _loocv,
    "group": _group,
    "timeseries": _timeseries,
}


# schemes that split by class: a regression target has none
CLASS_SCHEMES = {"stratified"}


def make_splitter(cv: CVSpec, task: str, seed: int):
    """The scikit-learn splitter of a (non-nested) scheme."""
    if cv.scheme == "nested":
        raise ValueError("nested is two schemes; split with nested_splits")
    return SCHEMES[cv.scheme](cv, task, seed)


def check_scheme(
    cv: CVSpec, y: np.ndarray, task: str, groups: np.ndarray | None, field: str = "classical.cv"
) -> None:
    """Refuse a scheme that cannot split this data, before any trial runs."""
    if cv.scheme in CLASS_SCHEMES and task != "classification":
        raise MlkubeError(
            f"{field}.scheme: {cv.scheme} splits by class, but the target is a regression target "
            "(it has no classes)",
            "use scheme: kfold (or repeated, which is plain repeated k-fold for regression)",
        )
    n = len(y)
    k = {
        "kfold": cv.folds,
        "stratified": cv.folds,
        "repeated": cv.folds,
        "group": cv.folds,
        "timeseries": cv.folds + 1,
    }.get(cv.scheme)
    if k is not None and k > n:
        raise MlkubeError(
            f"{field}.folds: {cv.folds} folds but only {n} rows",
            f"use at most {n - (cv.scheme == 'timeseries')} folds",
        )
    if cv.scheme == "group":
        if groups is None:
            raise MlkubeError(
                f"{field}.scheme: group needs group labels", "name the group column with data.groups"
            )
        n_groups = len(np.unique(groups))
        if n_groups < cv.folds:
            raise MlkubeError(
                f"{field}.folds: {cv.folds} folds but only {n_groups} groups", f"use at most {n_groups} folds"
            )
    if task == "classification" and cv.scheme in ("stratified", "repeated"):
        classes, counts = np.unique(y, return_counts=True)
        small = [(int(c), int(n)) for c, n in zip(classes, counts, strict=False) if n < cv.folds]
        if small:
            raise MlkubeError(
                f"{field}.folds: stratified {cv.folds}-fold needs ≥ {cv.folds} rows of every class; "
                f"class index/rows {small} have fewer",
                f"use at most {int(counts.min())} folds, or scheme: kfold",
            )


def splits(
    cv: CVSpec, X: np.ndarray, y: np.ndarray, task: str, seed: int, groups: np.ndarray | None = None
) -> list[Split]:
    """Train/test index arrays of a non-nested scheme."""
    check_scheme(cv, y, task, groups)
    splitter = make_splitter(cv, task, seed)
    return [(np.asarray(tr), np.asarray(te)) for tr, te in splitter.split(X, y, groups)]


def check_folds(folds: list[Split], y: np.ndarray, class_names: list[str], ordered: bool, field: str) -> int:
    """Refuse folds whose training part holds one class (a model learns nothing), or, unless the data are
    ordered in time, lacks a class of the data (never predicted, yet scored); `class_names` is empty for a
    regression target. Return the rows of the smallest training part."""
    for k, (train, _) in enumerate(folds):
        seen = np.unique(y[train]) if class_names else ()
        if class_names and (len(seen) < 2 or (not ordered and len(seen) < len(class_names))):
            raise MlkubeError(
                f"{field}: the training part of fold {k} holds only the class(es) "
                f"{[class_names[int(c)] for c in seen]} of {class_names}",
                "shuffle the rows (shuffle: true) or use scheme: stratified",
            )
    return min(len(train) for train, _ in folds)


@dataclass
class NestedSplits:
    """Outer folds, each with inner folds of its training part (indices into the full arrays)."""

    outer: list[Split]
    inner: list[list[Split]]


def nested_splits(
    cv: CVSpec, X: np.ndarray, y: np.ndarray, task: str, seed: int, groups: np.ndarray | None = None
) -> NestedSplits:
    from sklearn.utils import _safe_indexing

    if cv.inner is None or cv.outer is None:
        raise ValueError("nested_splits needs a nested scheme (both inner and outer)")
    outer = splits(cv.outer, X, y, task, seed, groups)
    inner = []
    for train, _ in outer:
        sub_groups = groups[train] if groups is not None else None
        check_scheme(cv.inner, y[train], task, sub_groups, field="classical.cv.inner")
        local = make_splitter(cv.inner, task, seed).split(_safe_indexing(X, train), y[train], sub_groups)
        inner.append([(train[tr], train[te]) for tr, te in local])
    return NestedSplits(outer=outer, inner=inner)


def holdout_split(
    test_size: float, y: np.ndarray, seed: int, ordered: bool = False, stratify: bool = True
) -> Split:
    """The final validation split, taken before cross-validation: `train_test_split` of the row indices
    (seeded by `seed`; stratified by class where `stratify`, for classification), or the last rows when the
    data are ordered in time or not shuffled (`ordered`)."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y))
    if ordered:
        cut = len(y) - max(1, round(test_size * len(y)))
        return index[:cut], index[cut:]
    try:
        train, test = train_test_split(
            index, test_size=test_size, random_state=seed, stratify=y if stratify else None
        )
    except ValueError as exc:
        raise MlkubeError(
            f"classical.holdout.test_size: {exc}", "use a larger test_size or more data"
        ) from None
    return train, test

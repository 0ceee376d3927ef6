"""What the target column means, in one place for training, evaluation and decay.

Every model works on numbers: a binary target becomes 1.0 (the positive label) and 0.0
(the other label), a regression target float64. The config says which label is positive:

- integer or float targets: ``positive_label`` defaults to 1 and the other label must be 0,
  unless ``positive_label`` names another number (then any one other number is negative);
- boolean targets: ``positive_label`` defaults to true (false turns the meaning around);
- string or category targets: ``positive_label`` is required (the config refuses to load
  without it); exactly one other label is the negative class.

More than two distinct labels is a multiclass target, which the pipeline refuses with a
clear message (see README "Use your own data"). Missing targets stay NaN: training drops
those rows, evaluation and decay refuse them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops_loop.exceptions import TargetError

if TYPE_CHECKING:
    from mlops_loop.core.config import DatasetConfig

SHOWN_LABELS = 8
# Model version tag: the training labels' mean (positive rate, or the regression mean). The
# first model's trivial baseline predicts it, so the baseline never sees the holdout.
TRAIN_TARGET_MEAN_TAG = "train_target_mean"


def _shown(values: list[Any]) -> str:
    listed = [repr(v) for v in values[:SHOWN_LABELS]]
    more = f" and {len(values) - SHOWN_LABELS} more" if len(values) > SHOWN_LABELS else ""
    return "[" + ", ".join(listed) + "]" + more


def _label_key(value: Any) -> Any:
    """Labels compare by value: 1, 1.0 and True are one label; text compares exactly."""
    if isinstance(value, (bool, np.bool_, int, float, np.integer, np.floating)):
        return float(value)
    return str(value)


def _labels(values: pd.Series) -> list[Any]:
    return sorted({_label_key(v) for v in values.unique()}, key=str)


def positive_label(config: DatasetConfig) -> Any:
    """The configured positive label, or the type's default (1 / true)."""
    if config.positive_label is not None:
        return config.positive_label
    return True if config.column(config.target).type.value == "boolean" else 1


def encode_target(config: DatasetConfig, values: pd.Series, *, where: str) -> np.ndarray:
    """The target as float64 (1.0/0.0 for classification, the value for regression; NaN
    where missing). Raises TargetError naming the column, ``where`` the values came from
    (a snapshot, a holdout) and the values found."""
    column = config.target
    present = values[values.notna()]
    if config.task == "regression":
        numbers = pd.to_numeric(present, errors="coerce")
        bad = present[numbers.isna() | ~np.isfinite(numbers.astype("float64"))]
        if len(bad):
            raise TargetError(
                f"{where}: regression target {column!r} needs numbers, found "
                f"{_shown(sorted({str(v) for v in bad.unique()}))}",
                column=column,
            )
        out = np.full(len(values), np.nan)
        out[values.notna().to_numpy()] = numbers.to_numpy(dtype="float64")
        return out

    positive = _label_key(positive_label(config))
    keys = present.map(_label_key)
    labels = _labels(keys)
    others = [label for label in labels if label != positive]
    if config.positive_label is None and not isinstance(positive, str):
        # 0/1 (or false/true) by default: the negative label is 0.
        if any(label != 0.0 for label in others):
            raise TargetError(
                f"{where}: binary target {column!r} needs labels 0/1 (or false/true), found "
                f"{_shown(labels)}; "
                + (
                    "more than two labels is a multiclass target, which is not supported"
                    if len(labels) > 2
                    else "name the positive one with positive_label in the dataset config"
                ),
                column=column,
            )
    elif len(others) > 1 and len(labels) == 2:
        raise TargetError(
            f"{where}: positive_label {positive_label(config)!r} never occurs in target {column!r} "
            f"(labels found: {_shown(labels)}; labels compare exactly, case included)",
            column=column,
        )
    elif len(others) > 1:
        raise TargetError(
            f"{where}: binary target {column!r} has {len(labels)} distinct labels {_shown(labels)}; "
            f"it needs positive_label {config.positive_label!r} and one other label "
            "(multiclass targets are not supported)",
            column=column,
        )
    out = np.full(len(values), np.nan)
    out[values.notna().to_numpy()] = (keys == positive).to_numpy(dtype="float64")
    return out


def require_both_classes(
    config: DatasetConfig, encoded: np.ndarray, raw: pd.Series, *, where: str
) -> None:
    """Training needs the positive label at least once (and one other label)."""
    if config.task != "classification":
        return
    labels = encoded[~np.isnan(encoded)]
    if labels.size and labels.max() < 1.0:
        found = _labels(raw[raw.notna()])
        raise TargetError(
            f"{where}: positive_label {positive_label(config)!r} never occurs in target "
            f"{config.target!r} (labels found: {_shown(found)})",
            column=config.target,
        )
    if labels.size and labels.min() > 0.0:
        raise TargetError(
            f"{where}: target {config.target!r} holds only the positive label "
            f"{positive_label(config)!r}; a classifier needs examples of both classes",
            column=config.target,
        )


def is_constant(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    return finite.size > 0 and math.isclose(float(finite.min()), float(finite.max()))

"""Live-performance decay of the champion: its metrics on labelled recent rows, with
confidence intervals, against the validation metrics it was trained with.

Airflow-free. Both sides come from :mod:`core.metrics`: training records its validation
metrics with :func:`core.metrics.metric_value`, and :func:`measure_decay` computes the live
value of each metric with the same function (same clipping, same definition), so identical
predictions on identical rows give identical numbers on both sides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_loop.core.metrics import (
    higher_is_better,
    json_safe,
    metric_interval,
    metrics_with_interval,
)
from mlops_loop.exceptions import DriftError

if TYPE_CHECKING:
    from mlops_loop.core.config import DriftSettings


def decay_metrics(task: str) -> tuple[str, ...]:
    """The live metrics decay measures for ``task``: those with an analytic confidence
    interval (classification: roc_auc, accuracy, log_loss, brier; regression: rmse, mae)."""
    return metrics_with_interval(task)


def measure_decay(
    y_true: Any,
    scores: Any,
    reference_metrics: dict[str, float],
    settings: DriftSettings,
    task: str,
) -> dict[str, Any]:
    """Live metrics of the champion on labelled recent rows vs its validation metrics.

    Confidence intervals are analytic: DeLong for ROC AUC, the normal approximation of a
    mean for per-row losses (accuracy, brier, log_loss, mae; rmse through the MSE).
    Verdict ``decay`` when the whole interval of the primary metric is worse than the
    reference by more than ``decay_tolerance`` (relative); ``insufficient_data`` with
    fewer than ``decay_min_rows`` labelled rows (or one class only); else ``none``.
    """
    from scipy.stats import norm

    if task not in ("classification", "regression"):
        raise DriftError(f"task must be classification or regression, got {task!r}")
    live_metrics = decay_metrics(task)
    metric = settings.decay_metric or ("roc_auc" if task == "classification" else "rmse")
    if metric not in live_metrics:
        raise DriftError(
            f"decay metric {metric!r} does not apply to a {task} task (or has no confidence "
            f"interval); use one of {live_metrics}"
        )
    if metric not in reference_metrics:
        raise DriftError(
            f"the champion's validation metrics have no {metric!r} (have {sorted(reference_metrics)}); "
            "decay needs it as the reference"
        )
    reference = float(reference_metrics[metric])
    higher = higher_is_better(metric)
    threshold = (
        reference * (1 - settings.decay_tolerance)
        if higher
        else reference * (1 + settings.decay_tolerance)
    )
    base: dict[str, Any] = {
        "metric": metric,
        "higher_is_better": higher,
        "reference": reference,
        "threshold": threshold,
        "tolerance": settings.decay_tolerance,
        "confidence_level": settings.confidence_level,
        "value": None,
        "ci_low": None,
        "ci_high": None,
        "metrics": {},
    }
    y = np.asarray([] if y_true is None else y_true, dtype="float64")
    s = np.asarray([] if scores is None else scores, dtype="float64")
    if y.shape != s.shape:
        raise DriftError(f"labels and scores differ in length ({y.size} vs {s.size})")
    keep = np.isfinite(y) & np.isfinite(s)
    y, s = y[keep], s[keep]
    base["n"] = int(y.size)
    if y.size < settings.decay_min_rows:
        return {
            **base,
            "verdict": "insufficient_data",
            "reason": f"{y.size} labelled rows < decay_min_rows {settings.decay_min_rows}",
        }
    if task == "classification" and np.unique(y).size < 2:
        return {
            **base,
            "verdict": "insufficient_data",
            "reason": "labelled rows have one class only",
        }
    z = float(norm.ppf(0.5 + settings.confidence_level / 2))
    metrics: dict[str, dict[str, Any]] = {}
    for name in live_metrics:
        value, lo, hi = metric_interval(name, y, s, z)
        metrics[name] = {
            "value": value,
            "ci_low": lo,
            "ci_high": hi,
            "reference": reference_metrics.get(name),
        }
    value, lo, hi = metrics[metric]["value"], metrics[metric]["ci_low"], metrics[metric]["ci_high"]
    worse = hi < threshold if higher else lo > threshold
    interval = f"{metric} {value:.4f} [{lo:.4f}, {hi:.4f}]"
    if worse:
        verdict = "decay"
        reason = f"{interval} is entirely {'below' if higher else 'above'} {threshold:.4f} (validation {reference:.4f}, tolerance {settings.decay_tolerance:.0%})"
    else:
        verdict = "none"
        reason = f"{interval} is not entirely {'below' if higher else 'above'} {threshold:.4f} (validation {reference:.4f})"
    return json_safe(
        {
            **base,
            "value": value,
            "ci_low": lo,
            "ci_high": hi,
            "metrics": metrics,
            "verdict": verdict,
            "reason": reason,
        }
    )

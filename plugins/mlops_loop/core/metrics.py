"""Every model metric once: its task, direction, probability clipping and confidence interval.

Training (``training/train.py:validation_metrics``), the champion/challenger decision
(``core/compare.py``) and live-performance decay (``core/decay.py``) all compute their
metrics here, so a validation metric, a holdout metric and a live metric of the same
predictions are the same number.

Metrics are vectorised NumPy functions over labels and scores (for classification the
score is the probability of the positive class; for regression the prediction). Each one
also accepts a bootstrap *weight matrix* of shape ``(resamples, rows)``: row ``j`` of it
counts how often each row was drawn into resample ``j``. A weighted metric over the
original rows equals the metric over the resampled rows, so rank metrics (ROC AUC, PR AUC)
need one sort per model instead of one sort per resample (see ``core/compare.py``).

:data:`METRICS` describes each metric once (:class:`Metric`): the task it scores, whether
higher is better, how it is computed (``kind``) and which analytic confidence interval
it has (``interval``: DeLong for ROC AUC, the normal approximation of a mean for per-row
losses, through the mean squared error for RMSE; ``None``: bootstrap only).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mlops_loop.exceptions import EvaluationError

FloatArray = NDArray[np.float64]
Task = Literal["classification", "regression"]

# Probabilities are clipped to [PROBABILITY_CLIP, 1 - PROBABILITY_CLIP] before a logarithm,
# so a confidently wrong prediction costs a large but finite log-loss. One constant for
# training, comparison and decay: with two, a live log-loss and a validation log-loss of
# the same predictions differed.
PROBABILITY_CLIP = 1e-15


@dataclass(frozen=True)
class Metric:
    """One metric.

    ``kind``: ``rank`` (from the order of the scores), ``mean`` (weighted mean of a per-row
    loss; RMSE takes the square root of it), ``count`` (from confusion counts at a
    threshold) or ``ratio`` (R^2). ``interval``: the analytic confidence interval
    :func:`metric_interval` gives (``delong``, ``mean``: normal approximation of the
    mean of the per-row losses, ``root_mean``: the same for the MSE, then the square
    root), ``None`` when there is none (a paired bootstrap still works for every metric).
    """

    name: str
    task: Task
    higher_is_better: bool
    kind: Literal["rank", "mean", "count", "ratio"]
    interval: Literal["delong", "mean", "root_mean"] | None


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("roc_auc", "classification", True, "rank", "delong"),
        Metric("pr_auc", "classification", True, "rank", None),
        Metric("recall_at_precision", "classification", True, "rank", None),
        Metric("accuracy", "classification", True, "mean", "mean"),
        Metric("f1", "classification", True, "count", None),
        Metric("precision", "classification", True, "count", None),
        Metric("recall", "classification", True, "count", None),
        Metric("log_loss", "classification", False, "mean", "mean"),
        Metric("brier", "classification", False, "mean", "mean"),
        Metric("rmse", "regression", False, "mean", "root_mean"),
        Metric("mae", "regression", False, "mean", "mean"),
        Metric("r2", "regression", True, "ratio", None),
    )
}
MEAN_METRICS = tuple(n for n, m in METRICS.items() if m.kind == "mean")
COUNT_METRICS = tuple(n for n, m in METRICS.items() if m.kind == "count")
RANK_METRICS = tuple(n for n, m in METRICS.items() if m.kind == "rank")


def metric_spec(metric: str) -> Metric:
    try:
        return METRICS[metric]
    except KeyError:
        raise EvaluationError(
            f"unknown metric {metric!r}; known: {sorted(METRICS)}", metric=metric
        ) from None


def higher_is_better(metric: str) -> bool:
    return metric_spec(metric).higher_is_better


def metric_task(metric: str) -> str:
    return metric_spec(metric).task


def metrics_with_interval(task: str) -> tuple[str, ...]:
    """The metrics of ``task`` that have an analytic confidence interval, in table order."""
    return tuple(n for n, m in METRICS.items() if m.task == task and m.interval is not None)


# --------------------------------------------------------------------------- values


def _weights_2d(weights: ArrayLike | None, n: int) -> tuple[FloatArray, bool]:
    """``(resamples, n)`` float weights and whether the caller passed a matrix."""
    if weights is None:
        return np.ones((1, n)), False
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        if w.shape[0] != n:
            raise EvaluationError(f"weights have {w.shape[0]} entries for {n} rows", rows=n)
        return w[None, :], False
    if w.ndim != 2 or w.shape[1] != n:
        raise EvaluationError(f"weights must be (resamples, {n}), got {w.shape}", rows=n)
    return w, True


def _out(values: FloatArray, matrix: bool) -> Any:
    return values if matrix else float(values[0])


def _safe_div(num: FloatArray, den: FloatArray) -> FloatArray:
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _cumsum_dtype(w: NDArray[Any]) -> type[np.generic]:
    """Exact integer running sums for count weights (much faster than float64 in the
    bootstrap's hot loop); float64 for any other weights."""
    if w.dtype == np.uint8 and w.shape[1] < 2**31 // 255:
        return np.int32
    if np.issubdtype(w.dtype, np.integer) or w.dtype == np.bool_:
        return np.int64
    return np.float64


@dataclass(frozen=True)
class _RankIndex:
    """Rows sorted by descending score, and where each run of tied scores ends."""

    order: NDArray[np.intp]
    positive_sorted: NDArray[np.uint8]
    negative_sorted: NDArray[np.uint8]
    ends: NDArray[np.intp] | None  # None: no ties, every row is its own group

    @classmethod
    def build(cls, y: FloatArray, score: FloatArray) -> _RankIndex:
        order = np.argsort(-score, kind="stable")
        s = score[order]
        ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
        positive = y[order] == 1
        return cls(
            order=order,
            positive_sorted=positive.astype(np.uint8),
            negative_sorted=(~positive).astype(np.uint8),
            ends=None if ends.size == s.size else ends,
        )

    def group_sums(
        self, w: NDArray[Any], *, need_cum_pos: bool = True
    ) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any] | None, NDArray[Any]]:
        """Per tie group, shape (resamples, groups), in descending score order: weight of
        positives, of negatives, and the running totals through each group (cum_pos is
        None when not needed and there are no ties)."""
        ws = np.take(w, self.order, axis=1)
        if ws.dtype == np.bool_:
            ws = ws.astype(np.uint8)
        pos = ws * self.positive_sorted
        neg = ws * self.negative_sorted
        dtype = _cumsum_dtype(ws)
        cum_neg = np.cumsum(neg, axis=1, dtype=dtype)
        if self.ends is None:
            cum_pos = np.cumsum(pos, axis=1, dtype=dtype) if need_cum_pos else None
            return pos, neg, cum_pos, cum_neg
        cum_pos = np.cumsum(pos, axis=1, dtype=dtype)[:, self.ends]
        cum_neg = cum_neg[:, self.ends]
        pos_g = np.diff(cum_pos, axis=1, prepend=0)
        neg_g = np.diff(cum_neg, axis=1, prepend=0)
        return pos_g, neg_g, cum_pos, cum_neg


def _dot_rows(a: NDArray[Any], b: NDArray[Any]) -> FloatArray:
    out: FloatArray = np.einsum("ij,ij->i", a, b, dtype=np.float64)
    return out


def _roc_auc_ranked(idx: _RankIndex, w: NDArray[Any]) -> FloatArray:
    # Mann-Whitney: pairs (positive, negative) with the positive scored higher, ties half.
    # Negatives strictly below a group = n_neg - cum_neg (cum_neg includes the group), so
    # num = n_pos * n_neg - sum(pos * cum_neg) + 0.5 * sum(pos * neg).
    pos, neg, _, cum_neg = idx.group_sums(w, need_cum_pos=False)
    n_pos = pos.sum(axis=1, dtype=np.float64)
    n_neg = cum_neg[:, -1].astype(np.float64)
    num = n_pos * n_neg - _dot_rows(pos, cum_neg)
    if idx.ends is not None:
        num += 0.5 * _dot_rows(pos, neg)
    return _safe_div(num, n_pos * n_neg)


def _pr_curve_ranked(
    idx: _RankIndex, w: NDArray[Any]
) -> tuple[NDArray[Any], FloatArray, FloatArray]:
    pos, _, tp, fp = idx.group_sums(w)
    assert tp is not None
    tp = tp.astype(np.float64)
    precision = _safe_div(tp, tp + fp)
    return pos, tp, precision


def _pr_auc_ranked(idx: _RankIndex, w: NDArray[Any]) -> FloatArray:
    """Average precision (sklearn's definition): sum over thresholds of recall gain x precision."""
    pos, tp, precision = _pr_curve_ranked(idx, w)
    n_pos = tp[:, -1]
    gain = _dot_rows(pos, np.nan_to_num(precision, copy=False))
    return _safe_div(gain, n_pos)


def _recall_at_precision_ranked(
    idx: _RankIndex, w: NDArray[Any], at_precision: float
) -> FloatArray:
    _, tp, precision = _pr_curve_ranked(idx, w)
    n_pos = tp[:, -1]
    recall = _safe_div(tp, n_pos[:, None])
    ok = np.nan_to_num(precision) >= at_precision
    best = np.where(ok, np.nan_to_num(recall), 0.0).max(axis=1)
    return np.where(n_pos > 0, best, np.nan)


def roc_auc(y: ArrayLike, score: ArrayLike, weights: ArrayLike | None = None) -> Any:
    """Area under the ROC curve from rank statistics (ties count half). NaN with one class."""
    yy, ss = np.asarray(y, dtype=np.float64), np.asarray(score, dtype=np.float64)
    w, matrix = _weights_2d(weights, yy.shape[0])
    return _out(_roc_auc_ranked(_RankIndex.build(yy, ss), w), matrix)


def pr_auc(y: ArrayLike, score: ArrayLike, weights: ArrayLike | None = None) -> Any:
    """Average precision (area under the precision-recall step curve)."""
    yy, ss = np.asarray(y, dtype=np.float64), np.asarray(score, dtype=np.float64)
    w, matrix = _weights_2d(weights, yy.shape[0])
    return _out(_pr_auc_ranked(_RankIndex.build(yy, ss), w), matrix)


def recall_at_precision(
    y: ArrayLike, score: ArrayLike, at_precision: float, weights: ArrayLike | None = None
) -> Any:
    """Highest recall over thresholds whose precision is at least ``at_precision`` (0 if none)."""
    yy, ss = np.asarray(y, dtype=np.float64), np.asarray(score, dtype=np.float64)
    w, matrix = _weights_2d(weights, yy.shape[0])
    return _out(_recall_at_precision_ranked(_RankIndex.build(yy, ss), w, at_precision), matrix)


def row_loss(metric: str, y: FloatArray, score: FloatArray, threshold: float) -> FloatArray:
    """Per-row loss whose weighted mean is the metric (before the square root for rmse)."""
    if metric == "log_loss":
        p = np.clip(score, PROBABILITY_CLIP, 1 - PROBABILITY_CLIP)
        return -(y * np.log(p) + (1 - y) * np.log1p(-p))
    if metric == "brier":
        return (score - y) ** 2
    if metric == "accuracy":
        return ((score >= threshold) == (y == 1)).astype(np.float64)
    if metric == "rmse":
        return (score - y) ** 2
    if metric == "mae":
        return np.abs(score - y)
    raise EvaluationError(f"{metric!r} is not a mean of per-row losses", metric=metric)


def _mean_loss(loss: FloatArray, w: NDArray[Any]) -> FloatArray:
    value: FloatArray = (w @ loss) / w.sum(axis=1, dtype=np.float64)
    return value


def _mean_metric(metric: str, loss: FloatArray, w: NDArray[Any]) -> FloatArray:
    value = _mean_loss(loss, w)
    return np.sqrt(value) if metric == "rmse" else value


def _confusion_rows(y: FloatArray, score: FloatArray, threshold: float) -> FloatArray:
    pred = score >= threshold
    truth = y == 1
    return np.stack([pred & truth, pred & ~truth, ~pred & truth]).astype(np.float64).T


def _count_metric(metric: str, conf: FloatArray, w: NDArray[Any]) -> FloatArray:
    tp, fp, fn = (w @ conf).T
    if metric == "precision":
        return np.nan_to_num(_safe_div(tp, tp + fp))
    if metric == "recall":
        return _safe_div(tp, tp + fn)
    return np.nan_to_num(_safe_div(2 * tp, 2 * tp + fp + fn))


def _r2(y: FloatArray, pred: FloatArray, w: NDArray[Any]) -> FloatArray:
    """Coefficient of determination, two-pass like scikit-learn: 1 when the labels are
    constant and predicted exactly, 0 when they are constant and missed."""
    total = w.sum(axis=1, dtype=np.float64)
    sse = w @ (y - pred) ** 2
    mean = (w @ y) / total
    deviation = y[None, :] - mean[:, None]
    sst = _dot_rows(w, deviation * deviation)
    flat = np.where(sse == 0, 1.0, 0.0)
    return np.where(sst != 0, 1.0 - _safe_div(sse, sst), flat)


def prepare_metric(
    metric: str, y: FloatArray, score: FloatArray, threshold: float, at_precision: float | None
) -> Callable[[NDArray[Any]], FloatArray]:
    """Precompute what ``metric`` needs once; return a function of a weight matrix."""
    if metric in MEAN_METRICS:
        loss = row_loss(metric, y, score, threshold)
        return lambda w: _mean_metric(metric, loss, w)
    if metric in COUNT_METRICS:
        conf = _confusion_rows(y, score, threshold)
        return lambda w: _count_metric(metric, conf, w)
    if metric == "r2":
        return lambda w: _r2(y, score, w)
    idx = _RankIndex.build(y, score)
    if metric == "roc_auc":
        return lambda w: _roc_auc_ranked(idx, w)
    if metric == "pr_auc":
        return lambda w: _pr_auc_ranked(idx, w)
    if metric == "recall_at_precision":
        if at_precision is None:
            raise EvaluationError("recall_at_precision needs at_precision", metric=metric)
        return lambda w: _recall_at_precision_ranked(idx, w, at_precision)
    raise EvaluationError(f"unknown metric {metric!r}", metric=metric)


def metric_value(
    metric: str,
    y: ArrayLike,
    score: ArrayLike,
    weights: ArrayLike | None = None,
    *,
    threshold: float = 0.5,
    at_precision: float | None = None,
) -> Any:
    """Any supported metric by name; a float, or one value per weight row for a matrix."""
    yy, ss = np.asarray(y, dtype=np.float64), np.asarray(score, dtype=np.float64)
    w, matrix = _weights_2d(weights, yy.shape[0])
    return _out(prepare_metric(metric, yy, ss, threshold, at_precision)(w), matrix)


def log_loss(y: ArrayLike, score: ArrayLike, weights: ArrayLike | None = None) -> Any:
    return metric_value("log_loss", y, score, weights)


def brier(y: ArrayLike, score: ArrayLike, weights: ArrayLike | None = None) -> Any:
    return metric_value("brier", y, score, weights)


def accuracy(
    y: ArrayLike, score: ArrayLike, weights: ArrayLike | None = None, threshold: float = 0.5
) -> Any:
    return metric_value("accuracy", y, score, weights, threshold=threshold)


def f1(
    y: ArrayLike, score: ArrayLike, weights: ArrayLike | None = None, threshold: float = 0.5
) -> Any:
    return metric_value("f1", y, score, weights, threshold=threshold)


def rmse(y: ArrayLike, pred: ArrayLike, weights: ArrayLike | None = None) -> Any:
    return metric_value("rmse", y, pred, weights)


def mae(y: ArrayLike, pred: ArrayLike, weights: ArrayLike | None = None) -> Any:
    return metric_value("mae", y, pred, weights)


def r2(y: ArrayLike, pred: ArrayLike, weights: ArrayLike | None = None) -> Any:
    return metric_value("r2", y, pred, weights)


# --------------------------------------------------------------------------- intervals


def delong_placements(y_true: ArrayLike, scores: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """DeLong's placement values, from midranks (ties count half), O(n log n).

    ``v10``: for each positive row (in row order), the share of negatives scored below it;
    ``v01``: for each negative row, the share of positives scored above it. Both average to
    the ROC AUC; their variances give its standard error. Empty arrays for a missing class.
    """
    from scipy.stats import rankdata

    y, s = np.asarray(y_true, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    positive = y == 1
    pos, neg = s[positive], s[~positive]
    m, n = pos.size, neg.size
    if m == 0 or n == 0:
        return np.empty(0), np.empty(0)
    # Midrank among all rows minus midrank among the own class = how many of the other
    # class lie below (ties half).
    all_ranks = rankdata(s)
    v10 = (all_ranks[positive] - rankdata(pos)) / n
    v01 = 1.0 - (all_ranks[~positive] - rankdata(neg)) / m
    return v10, v01


def auc_delong(y_true: ArrayLike, scores: ArrayLike) -> tuple[float, float]:
    """ROC AUC and its DeLong standard error (midranks, O(n log n)); NaNs with one class."""
    v10, v01 = delong_placements(y_true, scores)
    m, n = v10.size, v01.size
    if m == 0 or n == 0:
        return math.nan, math.nan
    auc = float(v10.mean())
    var = (v10.var(ddof=1) if m > 1 else 0.0) / m + (v01.var(ddof=1) if n > 1 else 0.0) / n
    return auc, math.sqrt(var)


def metric_interval(
    metric: str, y: ArrayLike, score: ArrayLike, z: float, *, threshold: float = 0.5
) -> tuple[float, float, float]:
    """``(value, low, high)``: the metric and its analytic ``z``-sigma confidence interval.

    ``value`` is :func:`metric_value` itself (the number training records for the same
    predictions); the interval follows ``METRICS[metric].interval``.
    """
    spec = metric_spec(metric)
    yy, ss = np.asarray(y, dtype=np.float64), np.asarray(score, dtype=np.float64)
    value = float(metric_value(metric, yy, ss, threshold=threshold))
    if spec.interval == "delong":
        _, se = auc_delong(yy, ss)
        return value, max(0.0, value - z * se), min(1.0, value + z * se)
    if spec.interval in ("mean", "root_mean"):
        loss = row_loss(metric, yy, ss, threshold)
        # The same mean as in ``value`` (before the square root for RMSE).
        mean = float(_mean_loss(loss, np.ones((1, loss.size)))[0])
        se = float(loss.std(ddof=1) / math.sqrt(loss.size)) if loss.size > 1 else math.inf
        low, high = mean - z * se, mean + z * se
        if spec.interval == "root_mean":
            return value, math.sqrt(max(low, 0.0)), math.sqrt(high)
        return value, low, high
    raise EvaluationError(f"{metric} has no analytic confidence interval", metric=metric)


def json_safe(value: Any) -> Any:
    """Metric results as JSON: NumPy scalars as Python values, NaN/inf (a metric undefined
    on the rows) as None, tuples as lists, keys as text."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

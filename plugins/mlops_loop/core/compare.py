"""Champion/challenger comparison on the same holdout rows, as a statistical decision.

The metrics come from :mod:`mlops_loop.core.metrics`, where each one also accepts a
bootstrap *weight matrix* of shape ``(resamples, rows)``: row ``j`` of it counts how often
each holdout row was drawn into resample ``j``. A weighted metric over the original rows
equals the metric over the resampled rows, so rank metrics (ROC AUC, PR AUC) need one sort
per model instead of one sort per resample, and resamples are processed in blocks that
fit a memory budget (1M rows x 1,000 resamples never exists in memory at once).

:func:`paired_bootstrap` resamples rows once and scores both models on each resample
(a paired comparison); :func:`paired_closed_form` gives the same kind of interval without
resampling where the metric has one (DeLong for ROC AUC, the paired per-row loss
differences for mean losses), :func:`mcnemar` tests paired right/wrong outcomes, and
:func:`decide` turns the comparison plus guardrails, slices, floors and a latency/size
budget into a :class:`Decision` with readable reasons.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mlops_loop.core.metrics import (
    FloatArray,
    delong_placements,
    higher_is_better,
    json_safe,
    metric_spec,
    metric_task,
    metric_value,
    prepare_metric,
    row_loss,
)
from mlops_loop.exceptions import EvaluationError, TargetError

if TYPE_CHECKING:
    import pandas as pd

    from mlops_loop.core.config import DatasetConfig, EvaluationSettings, GuardrailSpec

Outcome = Literal["promote", "reject", "insufficient_data"]

# Bytes one (resamples x rows) float64 block may take; a few such temporaries live at once.
DEFAULT_BLOCK_BYTES = 32 * 1024 * 1024
# Below this many discordant pairs McNemar uses the exact binomial test.
MCNEMAR_EXACT_BELOW = 25
# More than this share of one-class bootstrap resamples (or, for the closed form, of the
# resamples a bootstrap would expect) leaves the comparison undecided.
MAX_DEGENERATE_SHARE = 0.1
# Slices shown per column at most (largest first); the rest are counted, not evaluated.
MAX_SLICES_PER_COLUMN = 50


# ------------------------------------------------------------------ paired comparison


class _PairedDifference:
    """``improvement``: ``diff`` turned so that positive means *a is better*."""

    diff: float
    ci_low: float
    ci_high: float
    higher_is_better: bool

    @property
    def improvement(self) -> float:
        return self.diff if self.higher_is_better else -self.diff

    @property
    def improvement_ci(self) -> tuple[float, float]:
        if self.higher_is_better:
            return self.ci_low, self.ci_high
        return -self.ci_high, -self.ci_low

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)  # type: ignore[call-overload]
        out["improvement"] = self.improvement
        out["improvement_ci"] = list(self.improvement_ci)
        return json_safe(out)


@dataclass(frozen=True)
class BootstrapResult(_PairedDifference):
    """Paired bootstrap of ``metric(a) - metric(b)`` on the same resampled rows.

    ``diff``/``ci_low``/``ci_high`` are in raw metric units (a minus b, two-sided percentile
    interval); ``improvement*`` are the same turned so that positive means *a is better*
    (for lower-is-better metrics the sign flips). ``p_better`` is the share of resamples
    where a is strictly better. Resamples where the metric is undefined (one class drawn)
    are dropped and counted in ``n_degenerate``.
    """

    metric: str
    value_a: float
    value_b: float
    diff: float
    ci_low: float
    ci_high: float
    p_better: float
    confidence: float
    n_resamples: int
    n_degenerate: int
    higher_is_better: bool


def bootstrap_weights(n_rows: int, n_resamples: int, rng: np.random.Generator) -> NDArray[Any]:
    """``(n_resamples, n_rows)`` draw counts: row j counts how often each row was drawn
    into resample j (a multinomial bootstrap). uint8 when the counts fit, to save memory
    bandwidth in the gathers that follow."""
    dtype = np.int32 if n_resamples * n_rows < 2**31 else np.int64
    idx: NDArray[Any] = rng.integers(0, n_rows, size=(n_resamples, n_rows), dtype=dtype)
    offsets: NDArray[Any] = np.arange(n_resamples, dtype=dtype) * n_rows
    idx += offsets[:, None]
    counts = np.bincount(idx.ravel(), minlength=n_resamples * n_rows).reshape(n_resamples, n_rows)
    return counts.astype(np.uint8 if counts.max() <= 255 else np.int32)


def block_resamples(n_rows: int, block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    return max(1, min(1000, block_bytes // (8 * max(n_rows, 1))))


def paired_bootstrap(
    y: ArrayLike,
    score_a: ArrayLike,
    score_b: ArrayLike,
    metric: str,
    n: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    *,
    threshold: float = 0.5,
    at_precision: float | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> BootstrapResult:
    """Paired bootstrap CI of ``metric(score_a) - metric(score_b)``.

    Every resample draws rows with replacement once and scores both models on the same
    draw, so row-level noise shared by both models cancels. Deterministic for a seed.
    """
    yy = np.asarray(y, dtype=np.float64)
    sa, sb = np.asarray(score_a, dtype=np.float64), np.asarray(score_b, dtype=np.float64)
    if not (yy.shape == sa.shape == sb.shape) or yy.ndim != 1:
        raise EvaluationError(
            f"labels and scores must be 1-D and equally long, got {yy.shape}, {sa.shape}, {sb.shape}",
            metric=metric,
        )
    if n < 1:
        raise EvaluationError(f"n_bootstrap must be positive, got {n}", metric=metric)
    rows = yy.shape[0]
    fa = prepare_metric(metric, yy, sa, threshold, at_precision)
    fb = prepare_metric(metric, yy, sb, threshold, at_precision)
    ones = np.ones((1, rows))
    value_a, value_b = float(fa(ones)[0]), float(fb(ones)[0])

    rng = np.random.default_rng(seed)
    step = block_resamples(rows, block_bytes)
    diffs = np.empty(n)
    done = 0
    while done < n:
        b = min(step, n - done)
        w = bootstrap_weights(rows, b, rng)
        diffs[done : done + b] = fa(w) - fb(w)
        done += b
    valid = diffs[np.isfinite(diffs)]
    alpha = 1.0 - confidence
    if valid.size:
        ci_low, ci_high = (float(v) for v in np.quantile(valid, [alpha / 2, 1 - alpha / 2]))
        better = valid > 0 if higher_is_better(metric) else valid < 0
        p_better = float(better.mean())
    else:
        ci_low = ci_high = p_better = math.nan
    return BootstrapResult(
        metric=metric,
        value_a=value_a,
        value_b=value_b,
        diff=value_a - value_b,
        ci_low=ci_low,
        ci_high=ci_high,
        p_better=p_better,
        confidence=confidence,
        n_resamples=n,
        n_degenerate=int(n - valid.size),
        higher_is_better=higher_is_better(metric),
    )


ClosedFormMethod = Literal["delong", "paired_mean", "paired_root_mean"]


def closed_form_method(metric: str) -> ClosedFormMethod | None:
    """The closed-form paired test of ``metric``, or None (the bootstrap only)."""
    return {
        "delong": "delong",
        "mean": "paired_mean",
        "root_mean": "paired_root_mean",
    }.get(metric_spec(metric).interval or "")  # type: ignore[return-value]


@dataclass(frozen=True)
class ClosedFormResult(_PairedDifference):
    """Closed-form paired test of ``metric(a) - metric(b)`` on the same rows.

    Fields as in :class:`BootstrapResult`, the interval being ``diff +- z * se`` (normal
    approximation). ``p_better`` is the normal probability that the true difference favours
    a, ``Phi(improvement / se)``, what the bootstrap's share of resamples where a is
    better estimates; ``p_value = 1 - p_better`` is the one-sided p-value of "a is no
    better". ``degenerate_share`` is the share of bootstrap resamples of these rows that
    would hold one class only (``(1 - pi)^n + pi^n``; 0 for metrics defined on one class),
    so :func:`decide` applies the bootstrap's rule without resampling.
    """

    metric: str
    method: ClosedFormMethod
    value_a: float
    value_b: float
    diff: float
    se: float
    ci_low: float
    ci_high: float
    p_better: float
    p_value: float
    confidence: float
    n_rows: int
    degenerate_share: float
    higher_is_better: bool


def _one_class_share(n_pos: int, n_rows: int) -> float:
    """Probability that a bootstrap resample of ``n_rows`` rows draws one class only."""
    if n_pos in (0, n_rows):
        return 1.0
    share = n_pos / n_rows
    return math.exp(n_rows * math.log1p(-share)) + math.exp(n_rows * math.log(share))


def paired_closed_form(
    y: ArrayLike,
    score_a: ArrayLike,
    score_b: ArrayLike,
    metric: str,
    confidence: float = 0.95,
    *,
    threshold: float = 0.5,
) -> ClosedFormResult:
    """Closed-form paired CI of ``metric(score_a) - metric(score_b)``, O(n log n).

    roc_auc: DeLong's test for two correlated ROC curves. Each row gets a placement value
    per model (:func:`~mlops_loop.core.metrics.delong_placements`: the share of the other
    class it outranks, ties half); the AUC is their mean, and the variance of the AUC
    difference is ``var(v10_a - v10_b) / m + var(v01_a - v01_b) / n`` over the m positive
    and n negative rows (the paired covariance enters through the differences).

    Means of per-row losses (accuracy, log_loss, brier, mae): the mean of the paired
    per-row differences ``d = loss_a - loss_b`` with standard error ``sd(d) / sqrt(rows)``.
    rmse, the square root of a mean: the delta method, i.e. the same on the per-row
    influence ``loss_a / (2 rmse_a) - loss_b / (2 rmse_b)``.

    Metrics without a closed form raise EvaluationError (use :func:`paired_bootstrap`).
    With one class, roc_auc is undefined: NaN values and ``degenerate_share`` 1.
    """
    from scipy import stats

    method = closed_form_method(metric)
    if method is None:
        raise EvaluationError(
            f"{metric} has no closed-form paired test; use the paired bootstrap", metric=metric
        )
    yy = np.asarray(y, dtype=np.float64)
    sa, sb = np.asarray(score_a, dtype=np.float64), np.asarray(score_b, dtype=np.float64)
    if not (yy.shape == sa.shape == sb.shape) or yy.ndim != 1:
        raise EvaluationError(
            f"labels and scores must be 1-D and equally long, got {yy.shape}, {sa.shape}, {sb.shape}",
            metric=metric,
        )
    rows = int(yy.shape[0])
    hib = higher_is_better(metric)
    degenerate_share = 0.0
    if method == "delong":
        n_pos = int(np.count_nonzero(yy == 1))
        degenerate_share = _one_class_share(n_pos, rows)
        va10, va01 = delong_placements(yy, sa)
        vb10, vb01 = delong_placements(yy, sb)
        if va10.size == 0 or va01.size == 0:
            value_a = value_b = diff = var = math.nan
        else:
            value_a, value_b = float(va10.mean()), float(vb10.mean())
            diff = value_a - value_b
            d10, d01 = va10 - vb10, va01 - vb01
            var = (float(d10.var(ddof=1)) / d10.size if d10.size > 1 else 0.0) + (
                float(d01.var(ddof=1)) / d01.size if d01.size > 1 else 0.0
            )
    else:
        loss_a, loss_b = row_loss(metric, yy, sa, threshold), row_loss(metric, yy, sb, threshold)
        mean_a, mean_b = float(loss_a.mean()), float(loss_b.mean())
        if method == "paired_root_mean":
            value_a, value_b = math.sqrt(mean_a), math.sqrt(mean_b)
            # d sqrt(M) = dM / (2 sqrt(M)); a model with zero loss on every row adds nothing.
            influence = (loss_a / (2 * value_a) if value_a > 0 else 0.0) - (
                loss_b / (2 * value_b) if value_b > 0 else 0.0
            )
        else:
            value_a, value_b = mean_a, mean_b
            influence = loss_a - loss_b
        diff = value_a - value_b
        inf = np.asarray(influence, dtype=np.float64)
        var = float(inf.var(ddof=1)) / rows if rows > 1 else math.inf
    se = math.sqrt(var) if math.isfinite(var) else var
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    ci_low, ci_high = diff - z * se, diff + z * se
    improvement = diff if hib else -diff
    if not math.isfinite(improvement):
        p_better = math.nan
    elif se > 0:
        p_better = float(stats.norm.cdf(improvement / se))
    else:  # identical per-row contributions: no uncertainty left
        p_better = 1.0 if improvement > 0 else 0.0
    return ClosedFormResult(
        metric=metric,
        method=method,
        value_a=value_a,
        value_b=value_b,
        diff=diff,
        se=se,
        ci_low=ci_low,
        ci_high=ci_high,
        p_better=p_better,
        p_value=1.0 - p_better,
        confidence=confidence,
        n_rows=rows,
        degenerate_share=degenerate_share,
        higher_is_better=hib,
    )


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test on paired right/wrong outcomes.

    ``a_only``: rows a got right and b got wrong; ``b_only``: the reverse. ``method`` is
    ``exact`` (binomial test, few discordant rows) or ``chi2`` (with continuity correction).
    """

    a_only: int
    b_only: int
    statistic: float
    p_value: float
    method: Literal["exact", "chi2", "none"]

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def mcnemar(
    y: ArrayLike, pred_a: ArrayLike, pred_b: ArrayLike, *, exact_below: int = MCNEMAR_EXACT_BELOW
) -> McNemarResult:
    """Two-sided McNemar test of whether a and b are right on different rows equally often."""
    from scipy import stats

    yy, pa, pb = np.asarray(y), np.asarray(pred_a), np.asarray(pred_b)
    if not (yy.shape == pa.shape == pb.shape):
        raise EvaluationError(
            f"labels and predictions differ in shape: {yy.shape}, {pa.shape}, {pb.shape}"
        )
    right_a, right_b = pa == yy, pb == yy
    a_only = int(np.count_nonzero(right_a & ~right_b))
    b_only = int(np.count_nonzero(~right_a & right_b))
    discordant = a_only + b_only
    if discordant == 0:
        return McNemarResult(a_only, b_only, 0.0, 1.0, "none")
    if discordant < exact_below:
        res = stats.binomtest(a_only, discordant, 0.5, alternative="two-sided")
        return McNemarResult(a_only, b_only, float(min(a_only, b_only)), float(res.pvalue), "exact")
    stat = (abs(a_only - b_only) - 1.0) ** 2 / discordant
    return McNemarResult(a_only, b_only, float(stat), float(stats.chi2.sf(stat, df=1)), "chi2")


def baseline_scores(
    y_reference: ArrayLike,
    task: str,
    n_rows: int | None = None,
    *,
    baseline_value: float | None = None,
) -> FloatArray:
    """The trivial model, repeated ``n_rows`` times (default: as many as ``y_reference``):
    ``baseline_value`` when given (the training positive rate or mean, from the challenger's
    ``train_target_mean`` tag), else the positive-class prior (classification) or the mean
    (regression) of ``y_reference``."""
    yy = np.asarray(y_reference, dtype=np.float64)
    if task not in ("classification", "regression"):
        raise EvaluationError(f"unknown task {task!r}")
    size = yy.size if n_rows is None else n_rows
    if baseline_value is not None:
        value = float(baseline_value)
        if not math.isfinite(value) or (task == "classification" and not 0.0 <= value <= 1.0):
            raise EvaluationError(f"baseline value {value} is not a {task} prediction")
        return np.full(size, value)
    if yy.size == 0 or not np.isfinite(yy).all():
        raise EvaluationError("baseline needs at least one non-missing label", rows=int(yy.size))
    return np.full(size, float(yy.mean()))


# ------------------------------------------------------------------------- the decision


def make_decision_id(
    challenger_version: str | None, champion_version: str | None, holdout_sha256: str | None
) -> str:
    """Deterministic id: the same challenger, champion and holdout give the same id."""
    payload = json.dumps(
        [str(challenger_version), str(champion_version or "baseline"), holdout_sha256]
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class Decision:
    """The outcome of one champion/challenger evaluation, readable and JSON-serialisable."""

    outcome: Outcome
    reasons: list[str]
    task: str
    primary_metric: str
    higher_is_better: bool
    method: str
    compared_against: str
    n_rows: int
    decision_id: str
    challenger_version: str | None = None
    champion_version: str | None = None
    holdout_sha256: str | None = None
    challenger_value: float | None = None
    reference_value: float | None = None
    improvement: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float | None = None
    min_improvement: float | None = None
    p_value: float | None = None
    p_better: float | None = None
    test: dict[str, Any] = field(default_factory=dict)
    guardrails: list[dict[str, Any]] = field(default_factory=list)
    floors: list[dict[str, Any]] = field(default_factory=list)
    slices: list[dict[str, Any]] = field(default_factory=list)
    budget: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def promote(self) -> bool:
        return self.outcome == "promote"

    @property
    def validation_status(self) -> str:
        return {"promote": "passed", "reject": "failed"}.get(self.outcome, "inconclusive")

    def summary(self) -> str:
        return f"{self.outcome}: " + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        out = json_safe(asdict(self))
        out["validation_status"] = self.validation_status
        return out


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _check_inputs(
    y: ArrayLike, scores: Mapping[str, ArrayLike | None], task: str
) -> tuple[FloatArray, dict[str, FloatArray]]:
    try:
        yy = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise EvaluationError(f"holdout labels are not numeric: {exc}") from exc
    if yy.ndim != 1:
        raise EvaluationError(f"holdout labels must be 1-D, got shape {yy.shape}")
    n = yy.shape[0]
    if not np.isfinite(yy).all():
        raise EvaluationError(
            f"holdout labels have {int((~np.isfinite(yy)).sum())} missing values", rows=n
        )
    if task == "classification" and n and not np.isin(yy, (0.0, 1.0)).all():
        bad = sorted({float(v) for v in np.unique(yy) if v not in (0.0, 1.0)})[:5]
        raise EvaluationError(f"classification labels must be 0/1, found {bad}", rows=n)
    out: dict[str, FloatArray] = {}
    for name, s in scores.items():
        if s is None:
            continue
        arr = np.asarray(s, dtype=np.float64)
        if arr.shape != (n,):
            raise EvaluationError(f"{name} scores have shape {arr.shape}, labels ({n},)", rows=n)
        if not np.isfinite(arr).all():
            raise EvaluationError(
                f"{name} scores have {int((~np.isfinite(arr)).sum())} NaN/inf values", rows=n
            )
        if task == "classification" and n and (arr.min() < 0 or arr.max() > 1):
            raise EvaluationError(
                f"{name} scores must be probabilities in [0, 1], got [{arr.min():.3g}, {arr.max():.3g}]",
                rows=n,
            )
        out[name] = arr
    return yy, out


def _evaluate_guardrail(
    spec: GuardrailSpec, y: FloatArray, chal: FloatArray, ref: FloatArray, threshold: float
) -> dict[str, Any]:
    c = metric_value(spec.metric, y, chal, threshold=threshold, at_precision=spec.at_precision)
    r = metric_value(spec.metric, y, ref, threshold=threshold, at_precision=spec.at_precision)
    hib = higher_is_better(spec.metric)
    regression = (r - c) if hib else (c - r)
    name = spec.metric if spec.at_precision is None else f"{spec.metric}@{spec.at_precision:g}"
    comparable = math.isfinite(c) and math.isfinite(r)
    passed = (not comparable) or regression <= spec.max_regression + 1e-12
    return {
        "name": name,
        "metric": spec.metric,
        "challenger": c,
        "reference": r,
        "regression": regression if comparable else None,
        "max_regression": spec.max_regression,
        "passed": passed,
        "note": "" if comparable else "undefined on this holdout; not enforced",
    }


def _slice_labels(values: ArrayLike) -> NDArray[np.str_]:
    arr = np.asarray(values, dtype=object)
    out = np.empty(arr.shape[0], dtype=object)
    for i, v in enumerate(arr):
        out[i] = "(missing)" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
    return out.astype(str)


def _evaluate_slices(
    slices: Mapping[str, ArrayLike],
    y: FloatArray,
    chal: FloatArray,
    ref: FloatArray,
    settings: EvaluationSettings,
) -> list[dict[str, Any]]:
    metric = settings.primary_metric
    hib = higher_is_better(metric)
    rows: list[dict[str, Any]] = []
    for column in settings.slice_columns or list(slices):
        if column not in slices:
            raise EvaluationError(
                f"slice column {column!r} is missing from the holdout", metric=metric
            )
        labels = _slice_labels(slices[column])
        if labels.shape[0] != y.shape[0]:
            raise EvaluationError(
                f"slice column {column!r} has {labels.shape[0]} rows, labels {y.shape[0]}"
            )
        values, counts = np.unique(labels, return_counts=True)
        ranked = sorted(
            zip(values.tolist(), counts.tolist(), strict=True), key=lambda t: (-t[1], t[0])
        )
        for i, (value, count) in enumerate(ranked):
            row: dict[str, Any] = {"column": column, "value": value, "rows": int(count)}
            if i >= MAX_SLICES_PER_COLUMN:
                row.update(
                    status="skipped", note=f"beyond the {MAX_SLICES_PER_COLUMN} largest slices"
                )
            elif count < settings.slice_min_rows:
                row.update(status="skipped", note=f"fewer than {settings.slice_min_rows} rows")
            else:
                mask = labels == value
                c = metric_value(metric, y[mask], chal[mask], threshold=settings.threshold)
                r = metric_value(metric, y[mask], ref[mask], threshold=settings.threshold)
                if not (math.isfinite(c) and math.isfinite(r)):
                    row.update(
                        status="skipped",
                        note="metric undefined (one class)",
                        challenger=c,
                        reference=r,
                    )
                else:
                    regression = (r - c) if hib else (c - r)
                    limit = settings.slice_max_regression
                    ok = limit is None or regression <= limit + 1e-12
                    row.update(
                        status="passed" if ok else "failed",
                        challenger=c,
                        reference=r,
                        regression=regression,
                        max_regression=limit,
                    )
            rows.append(row)
    return rows


BUDGET_KEYS = {
    "latency_ms_per_1k_rows": "max_latency_ms_per_1k_rows",
    "model_size_mb": "max_model_size_mb",
}


def _evaluate_budget(
    settings: EvaluationSettings, observed: Mapping[str, float] | None
) -> list[dict[str, Any]]:
    observed = dict(observed or {})
    unknown = sorted(set(observed) - set(BUDGET_KEYS))
    if unknown:
        raise EvaluationError(
            f"unknown budget measurements {unknown}; known: {sorted(BUDGET_KEYS)}"
        )
    out = []
    for key, limit_name in BUDGET_KEYS.items():
        limit = getattr(settings.budget, limit_name)
        value = observed.get(key)
        if limit is None:
            out.append(
                {"name": key, "observed": value, "limit": None, "passed": True, "note": "no limit"}
            )
        elif value is None:
            out.append(
                {
                    "name": key,
                    "observed": None,
                    "limit": limit,
                    "passed": False,
                    "note": "not measured",
                }
            )
        else:
            out.append(
                {
                    "name": key,
                    "observed": float(value),
                    "limit": limit,
                    "passed": float(value) <= limit,
                }
            )
    return out


def decide(
    y: ArrayLike,
    challenger_scores: ArrayLike,
    champion_scores: ArrayLike | None,
    settings: EvaluationSettings,
    slices: Mapping[str, ArrayLike] | None = None,
    budget_observed: Mapping[str, float] | None = None,
    *,
    challenger_version: str | None = None,
    champion_version: str | None = None,
    holdout_sha256: str | None = None,
    baseline_value: float | None = None,
    notes: Sequence[str] = (),
) -> Decision:
    """Promote, reject, or 'insufficient_data', with readable reasons.

    The challenger is compared with the champion on the same rows, or without a champion
    with the trivial baseline (:func:`baseline_scores`: ``baseline_value``, the training
    positive rate or mean, else the holdout's). Promotion needs: the ``settings.confidence`` interval of the primary
    metric's improvement lies above zero and its lower end is at least
    ``settings.min_improvement`` (the paired bootstrap, or with ``settings.paired_test``
    ``closed_form`` :func:`paired_closed_form` where the metric has one; ``test["name"]``
    says which ran); or for McNemar, a significant test in the
    challenger's favour with an observed improvement of at least the margin; and every
    guardrail, slice check, floor and budget limit passes. Raises EvaluationError on
    malformed inputs (missing labels, shape mismatch, non-probability scores).
    """
    task = metric_task(settings.primary_metric)
    try:
        settings.check_against(task)
    except ValueError as exc:
        raise EvaluationError(
            f"evaluation settings: {exc}", metric=settings.primary_metric
        ) from exc
    yy, scores = _check_inputs(
        y, {"challenger": challenger_scores, "champion": champion_scores}, task
    )
    n = int(yy.shape[0])
    chal = scores["challenger"]
    metric = settings.primary_metric
    hib = higher_is_better(metric)
    if champion_scores is not None:
        ref = scores["champion"]
        compared_against = f"champion:{champion_version}" if champion_version else "champion"
    else:
        ref = baseline_scores(yy, task, n, baseline_value=baseline_value)
        compared_against = "baseline"
    decision = Decision(
        outcome="insufficient_data",
        reasons=[],
        task=task,
        primary_metric=metric,
        higher_is_better=hib,
        method=settings.method,
        compared_against=compared_against,
        n_rows=n,
        decision_id=make_decision_id(challenger_version, champion_version, holdout_sha256),
        challenger_version=challenger_version,
        champion_version=champion_version,
        holdout_sha256=holdout_sha256,
        confidence=settings.confidence,
        min_improvement=settings.min_improvement,
        notes=list(notes),
    )
    if n < settings.min_holdout_rows:
        decision.reasons.append(
            f"holdout has {n} rows, fewer than min_holdout_rows={settings.min_holdout_rows}: "
            "too small to compare models"
        )
        return decision
    if task == "classification":
        positives = int(yy.sum())
        if positives in (0, n):
            decision.reasons.append(
                f"holdout labels are all {int(yy[0])} ({n} rows): {metric} cannot tell models apart"
            )
            return decision
    elif n and float(yy.min()) == float(yy.max()):
        decision.reasons.append(
            f"holdout target is constant ({yy[0]:g} on all {n} rows): it cannot show which "
            "model follows the target"
        )
        return decision

    # Primary comparison.
    decision.challenger_value = metric_value(metric, yy, chal, threshold=settings.threshold)
    decision.reference_value = metric_value(metric, yy, ref, threshold=settings.threshold)
    reasons_fail: list[str] = []
    primary_ok: bool
    if settings.method == "mcnemar":
        pred_c = (chal >= settings.threshold).astype(np.int8)
        pred_r = (ref >= settings.threshold).astype(np.int8)
        test = mcnemar(yy.astype(np.int8), pred_c, pred_r)
        improvement = float(decision.challenger_value - decision.reference_value)
        # Paired-proportion (Wald) interval for the accuracy difference, for the record.
        from scipy import stats

        d = (test.a_only - test.b_only) / n
        se = math.sqrt(max(test.a_only + test.b_only - n * d * d, 0.0)) / n
        z = float(stats.norm.ppf(0.5 + settings.confidence / 2))
        decision.improvement, decision.ci_low, decision.ci_high = (
            improvement,
            d - z * se,
            d + z * se,
        )
        decision.p_value = test.p_value
        decision.test = {"name": "mcnemar", **test.to_dict()}
        alpha = 1 - settings.confidence
        primary_ok = (
            test.a_only > test.b_only
            and test.p_value < alpha
            and improvement >= settings.min_improvement
        )
        if not primary_ok:
            reasons_fail.append(
                f"{metric} {_fmt(decision.challenger_value)} vs {_fmt(decision.reference_value)} "
                f"({compared_against}): McNemar p={test.p_value:.4g} (challenger right on "
                f"{test.a_only} rows the reference missed, wrong on {test.b_only}), needs a "
                f"significant gain at confidence {settings.confidence} and >= {settings.min_improvement}"
            )
    else:
        paired: BootstrapResult | ClosedFormResult
        closed_form = closed_form_method(metric) if settings.paired_test == "closed_form" else None
        if closed_form is not None:
            paired = paired_closed_form(
                yy, chal, ref, metric, settings.confidence, threshold=settings.threshold
            )
            decision.test = {"name": closed_form, **paired.to_dict()}
            degenerate = (
                f"a bootstrap of these rows would draw one class in "
                f"{paired.degenerate_share:.1%} of resamples"
                if paired.degenerate_share > MAX_DEGENERATE_SHARE
                else None
            )
        else:
            if settings.paired_test == "closed_form":
                decision.notes.append(
                    f"paired_test closed_form: {metric} has no closed form; paired bootstrap used"
                )
            paired = paired_bootstrap(
                yy, chal, ref, metric, settings.n_bootstrap, settings.confidence, settings.seed,
                threshold=settings.threshold,
            )  # fmt: skip
            decision.test = {"name": "paired_bootstrap", **paired.to_dict()}
            degenerate = (
                f"{paired.n_degenerate} of {paired.n_resamples} bootstrap resamples had only one class"
                if paired.n_degenerate > MAX_DEGENERATE_SHARE * paired.n_resamples
                else None
            )
        low, high = paired.improvement_ci
        decision.improvement, decision.ci_low, decision.ci_high = paired.improvement, low, high
        decision.p_better = paired.p_better
        if degenerate:
            decision.reasons.append(
                f"{degenerate}: the holdout has too few rows of the minority class"
            )
            return decision
        primary_ok = low > 0 and low >= settings.min_improvement
        if not primary_ok:
            reasons_fail.append(
                f"{metric} {_fmt(decision.challenger_value)} vs {_fmt(decision.reference_value)} "
                f"({compared_against}): improvement {_fmt(paired.improvement)}, "
                f"{settings.confidence:.0%} CI [{_fmt(low)}, {_fmt(high)}] does not clear "
                f"min_improvement {settings.min_improvement} (and zero)"
            )

    # Vetoes.
    decision.guardrails = [
        _evaluate_guardrail(g, yy, chal, ref, settings.threshold) for g in settings.guardrails
    ]
    for g in decision.guardrails:
        if not g["passed"]:
            reasons_fail.append(
                f"guardrail {g['name']} regressed by {_fmt(g['regression'])} "
                f"({_fmt(g['challenger'])} vs {_fmt(g['reference'])}), more than {g['max_regression']}"
            )
    for name, limit in settings.floors.items():
        value = metric_value(name, yy, chal, threshold=settings.threshold)
        ok = math.isfinite(value) and (value >= limit if higher_is_better(name) else value <= limit)
        bound = "min" if higher_is_better(name) else "max"
        decision.floors.append({"metric": name, "challenger": value, bound: limit, "passed": ok})
        if not ok:
            reasons_fail.append(f"floor: {name} {_fmt(value)} does not meet {bound} {limit}")
    if slices or settings.slice_columns:
        decision.slices = _evaluate_slices(slices or {}, yy, chal, ref, settings)
        for s in decision.slices:
            if s["status"] == "failed":
                reasons_fail.append(
                    f"slice {s['column']}={s['value']} ({s['rows']} rows): {metric} regressed by "
                    f"{_fmt(s['regression'])}, more than {s['max_regression']}"
                )
    decision.budget = _evaluate_budget(settings, budget_observed)
    for b in decision.budget:
        if not b["passed"]:
            if b.get("note") == "not measured":
                reasons_fail.append(
                    f"budget {b['name']} has a limit ({b['limit']}) but was not measured"
                )
            else:
                reasons_fail.append(f"budget {b['name']} {b['observed']:.4g} exceeds {b['limit']}")

    if primary_ok and not reasons_fail:
        decision.outcome = "promote"
        ci = f" ({settings.confidence:.0%} CI [{_fmt(decision.ci_low)}, {_fmt(decision.ci_high)}])"
        decision.reasons.append(
            f"{metric} {_fmt(decision.challenger_value)} vs {_fmt(decision.reference_value)} "
            f"({compared_against}): improvement {_fmt(decision.improvement)}{ci} clears "
            f"min_improvement {settings.min_improvement}; all guardrails, floors, slices and budget pass"
        )
    else:
        decision.outcome = "reject"
        decision.reasons.extend(reasons_fail)
    return decision


# What run_evaluation holds per holdout row (see holdout_memory_mb): measured on the
# credit-default holdout (16 columns: text ids and categories, timestamps, numbers),
# read with read_snapshot and scored by an MLP and a gradient-boosting model in one
# process, the peak RSS grew by 580 to 780 bytes a row (36 to 49 a cell) at 200,000 and
# 400,000 rows (/tmp measurement, see the issue 15 report); the estimate, 1,280 bytes a
# row for those 16 columns, allows at least 1.6 times that.
HOLDOUT_BYTES_PER_CELL = 72
HOLDOUT_BYTES_PER_ROW = 128


def holdout_memory_mb(rows: int, columns: int) -> float:
    """A conservative estimate of the memory (MiB) the evaluation holds for a holdout of
    ``rows`` rows and ``columns`` columns: the DataFrame of every column (text as Python
    strings), the feature frame, the preprocessed matrix a model scores, the labels,
    slices and both models' scores, at their peak together.

    ``rows * (columns * HOLDOUT_BYTES_PER_CELL + HOLDOUT_BYTES_PER_ROW)`` bytes: linear in
    both, with per-cell and per-row bytes about 1.6 times what was measured (see the
    constants). What ``evaluation.max_holdout_memory_mb`` is compared with before the
    holdout is read.
    """
    if rows < 0 or columns < 0:
        raise ValueError(f"rows and columns must be >= 0, got {rows} and {columns}")
    return rows * (columns * HOLDOUT_BYTES_PER_CELL + HOLDOUT_BYTES_PER_ROW) / 2**20


def check_holdout_memory(rows: int, columns: int, max_mb: float, *, where: str = "holdout") -> float:
    """The :func:`holdout_memory_mb` estimate; raises EvaluationError naming
    ``evaluation.max_holdout_memory_mb``, the estimate and the rows when it exceeds
    ``max_mb`` (a refusal before anything is read or scored)."""
    estimate = holdout_memory_mb(rows, columns)
    if estimate > max_mb:
        raise EvaluationError(
            f"{where} has {rows:,} rows x {columns} columns, estimated to need "
            f"{estimate:,.0f} MB to evaluate, more than evaluation.max_holdout_memory_mb "
            f"{max_mb:,.0f}: nothing was scored. Raise evaluation.max_holdout_memory_mb "
            "(the trainer container needs that much memory) or shorten "
            "training.window.holdout_days so the holdout holds fewer rows",
            rows=rows,
        )
    return estimate


def holdout_arrays(
    frame: pd.DataFrame, config: DatasetConfig
) -> tuple[FloatArray, dict[str, NDArray[Any]]]:
    """Encoded labels (core.targets: 1.0/0.0, or the regression value) and the slice
    columns from a holdout DataFrame, with errors naming the column for a missing target or
    slice column, missing labels or labels that do not fit the task."""
    from mlops_loop.core.targets import encode_target

    target, slice_columns = config.target, config.evaluation.slice_columns
    missing = [c for c in (target, *slice_columns) if c not in frame.columns]
    if missing:
        what = "target column" if target in missing else "slice columns"
        raise EvaluationError(
            f"holdout has no {what} {missing}; it has {list(frame.columns)[:20]}", rows=len(frame)
        )
    y = frame[target]
    if y.isna().any():
        raise EvaluationError(
            f"holdout target {target!r} has {int(y.isna().sum())} missing values", rows=len(frame)
        )
    try:
        labels = encode_target(config, y, where="holdout")
    except TargetError as exc:
        raise EvaluationError(str(exc), rows=len(frame)) from exc
    return labels, {c: frame[c].to_numpy(dtype=object) for c in slice_columns}

"""core/metrics.py: each metric against scikit-learn, weighted (bootstrap) evaluation, the
direction table, the analytic confidence intervals, and that training's validation
metrics and decay's live metrics are the same numbers on the same predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from mlops_loop.core import metrics
from mlops_loop.core.compare import bootstrap_weights
from mlops_loop.core.config import EVALUATION_METRICS, DriftSettings
from mlops_loop.core.decay import decay_metrics, measure_decay
from mlops_loop.exceptions import EvaluationError
from mlops_loop.training.train import validation_metrics


def scored(n: int, seed: int, signal: float, prior: float = 0.3, ties: bool = False):
    """Labels and a probability score whose quality grows with ``signal``."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prior).astype(int)
    score = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(size=n))))
    return y, (np.round(score, 2) if ties else score)


@pytest.mark.parametrize("ties", [False, True], ids=["distinct-scores", "tied-scores"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_sklearn(seed, ties):
    y, s = scored(3000, seed, 0.8, ties=ties)
    assert metrics.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert metrics.pr_auc(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    assert metrics.log_loss(y, s) == pytest.approx(skm.log_loss(y, s), abs=1e-12)
    assert metrics.brier(y, s) == pytest.approx(skm.brier_score_loss(y, s), abs=1e-12)
    assert metrics.accuracy(y, s) == pytest.approx(skm.accuracy_score(y, s >= 0.5))
    assert metrics.f1(y, s) == pytest.approx(skm.f1_score(y, s >= 0.5))
    assert metrics.metric_value("precision", y, s) == pytest.approx(
        skm.precision_score(y, s >= 0.5)
    )
    assert metrics.metric_value("recall", y, s) == pytest.approx(skm.recall_score(y, s >= 0.5))
    precision, recall, _ = skm.precision_recall_curve(y, s)
    assert metrics.recall_at_precision(y, s, 0.6) == pytest.approx(recall[precision >= 0.6].max())
    pred = s * 10
    assert metrics.rmse(y, pred) == pytest.approx(skm.root_mean_squared_error(y, pred))
    assert metrics.mae(y, pred) == pytest.approx(skm.mean_absolute_error(y, pred))


@pytest.mark.parametrize(
    "metric", ["roc_auc", "pr_auc", "log_loss", "f1", "accuracy", "brier", "rmse"]
)
def test_weight_matrix_equals_metric_on_resampled_rows(metric):
    y, s = scored(500, 7, 0.6, ties=True)
    rng = np.random.default_rng(3)
    draws = rng.integers(0, y.size, size=(4, y.size))
    weights = np.stack([np.bincount(d, minlength=y.size) for d in draws])
    got = metrics.metric_value(metric, y, s, weights)
    want = [metrics.metric_value(metric, y[d], s[d]) for d in draws]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_roc_auc_is_nan_with_one_class_and_weights_must_fit():
    assert math.isnan(metrics.roc_auc(np.ones(5), np.linspace(0, 1, 5)))
    with pytest.raises(EvaluationError, match="weights"):
        metrics.roc_auc([0, 1, 1], [0.1, 0.2, 0.3], np.ones((2, 4)))


@pytest.mark.parametrize("ties", [False, True], ids=["distinct-scores", "tied-scores"])
@pytest.mark.parametrize("metric", ["roc_auc", "pr_auc", "recall_at_precision", "log_loss", "f1"])
def test_bootstrap_count_weights_match_float_weights(metric, ties):
    """The bootstrap's hot path (uint8 counts, integer running sums) equals the float path."""
    y, s = scored(2000, 4, 0.7, ties=ties)
    counts = bootstrap_weights(y.size, 6, np.random.default_rng(0))
    assert counts.dtype == np.uint8 and (counts.sum(axis=1) == y.size).all()
    fast = metrics.prepare_metric(metric, y.astype(float), s, 0.5, 0.6)(counts)
    slow = metrics.metric_value(metric, y, s, counts.astype(float), at_precision=0.6)
    np.testing.assert_allclose(fast, slow, rtol=1e-12)


def test_more_metrics_equal_sklearn() -> None:
    """r2, and log_loss where the clipping matters (scores of exactly 0 and 1)."""
    rng = np.random.default_rng(11)
    y = rng.normal(size=2000)
    pred = y + rng.normal(size=2000)
    assert metrics.r2(y, pred) == pytest.approx(skm.r2_score(y, pred), abs=1e-12)
    assert metrics.r2([2.0, 2.0], [2.0, 2.0]) == 1.0 and metrics.r2([2.0, 2.0], [1.0, 3.0]) == 0.0
    labels = (rng.random(500) < 0.4).astype(int)
    scores = rng.random(500)
    scores[:20], scores[20:40] = 0.0, 1.0  # confidently right or wrong
    eps = metrics.PROBABILITY_CLIP
    assert metrics.log_loss(labels, scores) == pytest.approx(
        skm.log_loss(labels, np.clip(scores, eps, 1 - eps)), rel=1e-12
    )


# ----------------------------------------------------------------------------- the table


@pytest.mark.parametrize(
    ("name", "task", "higher", "interval"),
    [
        pytest.param("roc_auc", "classification", True, "delong", id="roc_auc"),
        pytest.param("pr_auc", "classification", True, None, id="pr_auc"),
        pytest.param("recall_at_precision", "classification", True, None, id="recall_at_precision"),
        pytest.param("accuracy", "classification", True, "mean", id="accuracy"),
        pytest.param("f1", "classification", True, None, id="f1"),
        pytest.param("precision", "classification", True, None, id="precision"),
        pytest.param("recall", "classification", True, None, id="recall"),
        pytest.param("log_loss", "classification", False, "mean", id="log_loss"),
        pytest.param("brier", "classification", False, "mean", id="brier"),
        pytest.param("rmse", "regression", False, "root_mean", id="rmse"),
        pytest.param("mae", "regression", False, "mean", id="mae"),
        pytest.param("r2", "regression", True, None, id="r2"),
    ],
)
def test_direction_table(name, task, higher, interval) -> None:
    spec = metrics.METRICS[name]
    assert (spec.task, spec.higher_is_better, spec.interval) == (task, higher, interval)
    assert metrics.higher_is_better(name) is higher and metrics.metric_task(name) == task


def test_every_metric_a_config_may_name_is_in_the_table_with_the_same_direction() -> None:
    for name, (tasks, higher) in EVALUATION_METRICS.items():
        assert metrics.METRICS[name].task in tasks and metrics.higher_is_better(name) is higher
    with pytest.raises(EvaluationError, match="unknown metric 'auc'"):
        metrics.higher_is_better("auc")


# ----------------------------------------------------------------------------- intervals


@pytest.mark.parametrize(
    ("name", "y", "score", "loss"),
    [
        pytest.param("brier", "labels", "probs", lambda y, s: (s - y) ** 2, id="brier"),
        pytest.param(
            "accuracy", "labels", "probs", lambda y, s: ((s >= 0.5) == y) * 1.0, id="accuracy"
        ),
        pytest.param(
            "log_loss",
            "labels",
            "probs",
            lambda y, s: -(y * np.log(s) + (1 - y) * np.log(1 - s)),
            id="log_loss",
        ),
        pytest.param("mae", "values", "preds", lambda y, s: np.abs(s - y), id="mae"),
    ],
)
def test_mean_interval_is_the_normal_approximation_of_the_mean_loss(name, y, score, loss) -> None:
    rng = np.random.default_rng(5)
    data = {
        "labels": (rng.random(800) < 0.3).astype(float),
        "values": rng.normal(size=800),
    }
    data["probs"] = np.clip(0.3 * data["labels"] + 0.7 * rng.random(800), 0.01, 0.99)
    data["preds"] = data["values"] + rng.normal(size=800)
    yy, ss = data[y], data[score]
    z = 1.96
    value, low, high = metrics.metric_interval(name, yy, ss, z)
    per_row = loss(yy, ss)
    se = per_row.std(ddof=1) / math.sqrt(per_row.size)
    assert value == metrics.metric_value(name, yy, ss)
    assert value == pytest.approx(per_row.mean(), rel=1e-12)
    assert (low, high) == pytest.approx(
        (per_row.mean() - z * se, per_row.mean() + z * se), rel=1e-12
    )


def test_rmse_interval_goes_through_the_mse_and_auc_through_delong() -> None:
    rng = np.random.default_rng(6)
    y = rng.normal(size=1000)
    pred = y + rng.normal(0, 0.5, 1000)
    value, low, high = metrics.metric_interval("rmse", y, pred, 1.96)
    sq = (pred - y) ** 2
    se = sq.std(ddof=1) / math.sqrt(sq.size)
    assert value == metrics.rmse(y, pred)
    assert (low, high) == pytest.approx(
        (math.sqrt(sq.mean() - 1.96 * se), math.sqrt(sq.mean() + 1.96 * se)), rel=1e-12
    )
    labels, scores = scored(1000, 6, 0.5)
    auc, se_auc = metrics.auc_delong(labels, scores)
    value, low, high = metrics.metric_interval("roc_auc", labels, scores, 1.96)
    assert value == metrics.roc_auc(labels, scores) and auc == pytest.approx(value, abs=1e-12)
    assert (low, high) == pytest.approx((value - 1.96 * se_auc, value + 1.96 * se_auc), rel=1e-12)
    with pytest.raises(EvaluationError, match="no analytic confidence interval"):
        metrics.metric_interval("f1", labels, scores, 1.96)


# ------------------------------------------------------- training and decay agree


def _identical_data(task: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(21)
    if task == "regression":
        y = rng.normal(10, 3, 1500)
        return y, y + rng.normal(0, 1, 1500)
    y, s = scored(1500, 21, 0.6, ties=True)
    s[:30], s[30:60] = 0.0, 1.0  # where a 1e-7 and a 1e-15 clip disagree
    return y.astype(float), s


@pytest.mark.parametrize(
    ("task", "shared"),
    [
        pytest.param("classification", ("roc_auc", "log_loss", "brier"), id="classification"),
        pytest.param("regression", ("rmse", "mae"), id="regression"),
    ],
)
def test_decay_reference_and_live_values_agree_on_identical_data(task, shared) -> None:
    """What training records as the validation metric (decay's reference) and what decay
    measures live are the same number when the predictions and rows are the same."""
    y, s = _identical_data(task)
    reference = validation_metrics(task, y, s)
    decay = measure_decay(y, s, reference, DriftSettings(), task)
    compared = tuple(m for m in decay_metrics(task) if m in reference)
    assert compared == shared
    for name in compared:
        live = decay["metrics"][name]
        assert live["reference"] == reference[name]
        assert live["value"] == reference[name], name
    assert decay["value"] == decay["reference"] and decay["verdict"] == "none"

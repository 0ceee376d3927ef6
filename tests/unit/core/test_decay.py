"""core/decay.py: live metrics with confidence intervals against the validation metrics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from mlops_loop.core.config import DriftSettings
from mlops_loop.core.decay import decay_metrics, measure_decay
from mlops_loop.exceptions import DriftError


def test_decay_auc_and_delong_interval() -> None:
    rng = np.random.default_rng(100)
    y = (rng.random(2000) < 0.2).astype(int)
    good = np.clip(0.35 * y + rng.random(2000) * 0.65, 0, 1)
    s = DriftSettings()
    d = measure_decay(y, good, {"roc_auc": 0.86}, s, "classification")
    assert d["value"] == pytest.approx(roc_auc_score(y, good), abs=1e-12)
    assert d["ci_low"] < d["value"] < d["ci_high"]
    # DeLong standard error against a bootstrap of the same data.
    boots = []
    for _ in range(300):
        idx = rng.integers(0, y.size, y.size)
        boots.append(roc_auc_score(y[idx], good[idx]))
    se_delong = (d["ci_high"] - d["ci_low"]) / (2 * stats.norm.ppf(0.975))
    assert se_delong == pytest.approx(np.std(boots), rel=0.25)
    assert d["verdict"] == "none"
    random_scores = rng.random(2000)
    bad = measure_decay(y, random_scores, {"roc_auc": 0.86}, s, "classification")
    assert bad["verdict"] == "decay" and "roc_auc" in bad["reason"]


@pytest.mark.parametrize(
    ("y", "scores", "why"),
    [
        pytest.param(None, None, "0 labelled rows", id="no-labels"),
        pytest.param([0, 1] * 50, [0.1, 0.9] * 50, "100 labelled rows", id="too-few"),
        pytest.param([0] * 500, [0.1] * 500, "one class", id="one-class"),
    ],
)
def test_decay_insufficient_data(y, scores, why) -> None:
    d = measure_decay(y, scores, {"roc_auc": 0.8}, DriftSettings(), "classification")
    assert d["verdict"] == "insufficient_data" and why in d["reason"]


def test_decay_regression_rmse_and_errors() -> None:
    rng = np.random.default_rng(110)
    y = rng.normal(0, 1, 1000)
    s = DriftSettings()
    fine = measure_decay(y, y + rng.normal(0, 0.5, 1000), {"rmse": 0.5}, s, "regression")
    assert fine["value"] == pytest.approx(0.5, rel=0.1) and fine["verdict"] == "none"
    worse = measure_decay(y, y + rng.normal(0, 0.8, 1000), {"rmse": 0.5}, s, "regression")
    assert worse["verdict"] == "decay"
    with pytest.raises(DriftError, match="no 'rmse'"):
        measure_decay(y, y, {"mae": 0.4}, s, "regression")
    with pytest.raises(DriftError, match="differ in length"):
        measure_decay(y, y[:10], {"rmse": 0.4}, s, "regression")


@pytest.mark.parametrize(
    ("task", "metric"),
    [
        pytest.param("classification", "rmse", id="regression-metric-for-classification"),
        pytest.param("classification", "f1", id="no-confidence-interval"),
        pytest.param("regression", "roc_auc", id="classification-metric-for-regression"),
    ],
)
def test_decay_metric_must_fit_the_task_and_have_an_interval(task, metric) -> None:
    with pytest.raises(DriftError, match=f"decay metric {metric!r}"):
        measure_decay([0, 1], [0.2, 0.8], {metric: 0.5}, DriftSettings(decay_metric=metric), task)


def test_decay_metrics_per_task() -> None:
    assert decay_metrics("classification") == ("roc_auc", "accuracy", "log_loss", "brier")
    assert decay_metrics("regression") == ("rmse", "mae")

"""The closed-form paired tests (DeLong for ROC AUC, paired per-row loss differences for
mean losses, the delta method for RMSE) against brute force and against the paired
bootstrap they can stand in for (the decide() truth table runs with both: test_compare.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlops_loop.core import compare, metrics
from mlops_loop.core.config import EvaluationSettings
from mlops_loop.exceptions import EvaluationError
from tests.unit.core.test_compare import GOOD, WEAK, Y, two_models

# A closed-form CI bound may differ from the paired bootstrap's (1,000 resamples) by at
# most this share of the bootstrap CI's width. The bootstrap's own Monte Carlo error on a
# 2.5% quantile is about 2% of the width; the rest is the normal approximation itself
# (skew of small, imbalanced holdouts). The largest seen on these cases was about 6%.
CI_TOLERANCE = 0.15


def regression_models(n: int, seed: int, noise_a: float, noise_b: float):
    """Two regressors of the SAME rows with a shared error and heavy-ish tails."""
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n) * 3
    shared = rng.standard_t(5, size=n)
    return y, y + shared + noise_a * rng.normal(size=n), y + shared + noise_b * rng.normal(size=n)


def _classification(n: int, seed: int, prior: float, ties: bool):
    y, a, b = two_models(n, seed, 1.0, 0.85, prior=prior)
    if ties:  # scores on a 1/50 grid: many ties within and across classes
        a, b = np.round(a * 50) / 50, np.round(b * 50) / 50
    return y, a, b


AGREEMENT = [
    pytest.param(
        metric, n, seed, prior, ties, id=f"{metric}-{n}-s{seed}-p{prior}{'-ties' if ties else ''}"
    )
    for metric in ("roc_auc", "log_loss", "brier", "accuracy")
    for n, seed, prior, ties in (
        (2000, 0, 0.3, False),
        (2000, 1, 0.05, True),
        (5000, 2, 0.1, True),
        (20_000, 3, 0.02, False),
        (20_000, 4, 0.3, True),
    )
]


@pytest.mark.parametrize(("metric", "n", "seed", "prior", "ties"), AGREEMENT)
def test_closed_form_interval_agrees_with_bootstrap(metric, n, seed, prior, ties):
    y, a, b = _classification(n, seed, prior, ties)
    boot = compare.paired_bootstrap(y, a, b, metric, n=1000, seed=seed)
    closed = compare.paired_closed_form(y, a, b, metric)
    width = boot.ci_high - boot.ci_low
    assert closed.diff == pytest.approx(boot.diff, abs=1e-12)
    assert abs(closed.ci_low - boot.ci_low) <= CI_TOLERANCE * width, (closed, boot)
    assert abs(closed.ci_high - boot.ci_high) <= CI_TOLERANCE * width, (closed, boot)
    assert closed.p_better == pytest.approx(boot.p_better, abs=0.05)
    assert closed.improvement_ci == pytest.approx(boot.improvement_ci, abs=CI_TOLERANCE * width)


@pytest.mark.parametrize("metric", ["rmse", "mae"])
@pytest.mark.parametrize(("n", "seed"), [(2000, 0), (20_000, 1)])
def test_closed_form_regression_interval_agrees_with_bootstrap(metric, n, seed):
    y, a, b = regression_models(n, seed, 0.8, 1.0)
    boot = compare.paired_bootstrap(y, a, b, metric, n=1000, seed=seed)
    closed = compare.paired_closed_form(y, a, b, metric)
    width = boot.ci_high - boot.ci_low
    assert closed.method == ("paired_root_mean" if metric == "rmse" else "paired_mean")
    assert closed.diff == pytest.approx(boot.diff, abs=1e-12)
    assert abs(closed.ci_low - boot.ci_low) <= CI_TOLERANCE * width, (closed, boot)
    assert abs(closed.ci_high - boot.ci_high) <= CI_TOLERANCE * width, (closed, boot)


def _placements_brute_force(y, s):
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return psi.mean(axis=1), psi.mean(axis=0)


def test_delong_matches_the_pairwise_definition_with_ties():
    """Placement values from midranks equal the O(m n) pairwise kernel; the variance of
    the difference equals DeLong's covariance-matrix form."""
    rng = np.random.default_rng(7)
    y = (rng.random(300) < 0.25).astype(float)
    a = np.round(rng.random(300) + 0.4 * y, 1)
    b = np.round(rng.random(300) + 0.2 * y + 0.3 * a, 1)
    va10, va01 = metrics.delong_placements(y, a)
    vb10, vb01 = metrics.delong_placements(y, b)
    for got, want in zip(
        (va10, va01, vb10, vb01),
        (*_placements_brute_force(y, a), *_placements_brute_force(y, b)),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, atol=1e-12)
    m, n = va10.size, va01.size
    s10, s01 = np.cov(np.stack([va10, vb10])), np.cov(np.stack([va01, vb01]))
    contrast = np.array([1.0, -1.0])
    var = contrast @ s10 @ contrast / m + contrast @ s01 @ contrast / n
    res = compare.paired_closed_form(y, a, b, "roc_auc")
    assert res.value_a == pytest.approx(metrics.roc_auc(y, a), abs=1e-12)
    assert res.value_b == pytest.approx(metrics.roc_auc(y, b), abs=1e-12)
    assert res.se == pytest.approx(math.sqrt(var), rel=1e-9)


def test_delong_ci_covers_true_difference_across_seeds():
    y_big, a_big, b_big = two_models(400_000, 99, 1.0, 0.8)
    true_diff = metrics.roc_auc(y_big, a_big) - metrics.roc_auc(y_big, b_big)
    covered = sum(
        res.ci_low <= true_diff <= res.ci_high
        for res in (
            compare.paired_closed_form(*two_models(1500, seed, 1.0, 0.8), "roc_auc")
            for seed in range(40)
        )
    )
    assert covered >= 34, f"true diff {true_diff:.4f} covered in only {covered}/40 holdouts"


def test_rmse_delta_method_with_a_perfect_model():
    y = np.linspace(0, 1, 1000)
    res = compare.paired_closed_form(y, y, y + 0.1 * np.sin(np.arange(1000)), "rmse")
    assert res.value_a == 0.0 and res.diff < 0 and res.ci_high < 0 and res.p_better == 1.0


def test_closed_form_one_class_is_undefined_like_the_bootstrap():
    y, a, b = np.zeros(500), GOOD[:500], WEAK[:500]
    closed = compare.paired_closed_form(y, a, b, "roc_auc")
    boot = compare.paired_bootstrap(y, a, b, "roc_auc", n=100)
    assert closed.degenerate_share == 1.0 and boot.n_degenerate == boot.n_resamples
    assert all(math.isnan(v) for v in (closed.diff, closed.ci_low, closed.p_better))
    assert all(math.isnan(v) for v in (boot.ci_low, boot.p_better))
    # Mean losses are defined on one class, with or without resampling.
    assert compare.paired_closed_form(y, a, b, "log_loss").degenerate_share == 0.0


@pytest.mark.parametrize(
    ("positives", "outcome"),
    [
        pytest.param(1, "insufficient_data", id="one-positive"),
        pytest.param(2, "insufficient_data", id="two-positives"),
        pytest.param(8, "promote", id="eight-positives"),
    ],
)
def test_decide_too_few_minority_rows_same_with_both_tests(positives, outcome):
    """The bootstrap leaves the decision open when more than 10% of its resamples draw one
    class (about exp(-positives)); the closed form applies the same rule analytically."""
    n = 3000
    y = np.zeros(n)
    y[:positives] = 1
    challenger = np.where(y == 1, 0.9, np.linspace(0.0, 0.5, n))
    champion = np.where(y == 1, 0.3, np.linspace(0.0, 0.5, n))
    outcomes = {}
    for paired_test in ("bootstrap", "closed_form"):
        settings = EvaluationSettings(
            n_bootstrap=1000, min_holdout_rows=100, paired_test=paired_test
        )
        decision = compare.decide(y, challenger, champion, settings)
        outcomes[paired_test] = decision.outcome
        if outcome == "insufficient_data":
            assert "too few rows of the minority class" in decision.reasons[0], decision.reasons
    assert outcomes == {"bootstrap": outcome, "closed_form": outcome}


def test_decide_records_which_test_ran():
    closed = EvaluationSettings(n_bootstrap=200, min_holdout_rows=100, paired_test="closed_form")
    d = compare.decide(Y, GOOD, WEAK, closed)
    assert d.test["name"] == "delong" and d.test["se"] > 0 and d.notes == []
    assert d.p_better == d.test["p_better"] and d.ci_low == d.test["ci_low"]
    d = compare.decide(Y, GOOD, WEAK, closed.model_copy(update={"primary_metric": "pr_auc"}))
    assert d.test["name"] == "paired_bootstrap" and d.outcome == "promote"
    assert "pr_auc has no closed form" in d.notes[0]
    d = compare.decide(Y, GOOD, WEAK, EvaluationSettings(n_bootstrap=200, min_holdout_rows=100))
    assert d.test["name"] == "delong"  # the default
    boot = closed.model_copy(update={"paired_test": "bootstrap"})
    assert compare.decide(Y, GOOD, WEAK, boot).test["name"] == "paired_bootstrap"


def test_closed_form_refuses_a_metric_without_one():
    with pytest.raises(EvaluationError, match="no closed-form"):
        compare.paired_closed_form(Y, GOOD, WEAK, "f1")
    assert [m for m in metrics.METRICS if compare.closed_form_method(m)] == [
        "roc_auc", "accuracy", "log_loss", "brier", "rmse", "mae",
    ]  # fmt: skip


def test_settings_paired_test_default_and_mcnemar():
    from pydantic import ValidationError

    assert EvaluationSettings().paired_test == "closed_form"
    # McNemar is its own test: the default paired_test does not stand in its way.
    assert EvaluationSettings(primary_metric="accuracy", method="mcnemar").method == "mcnemar"
    with pytest.raises(ValidationError, match="paired_test applies to method 'bootstrap'"):
        EvaluationSettings(primary_metric="accuracy", method="mcnemar", paired_test="closed_form")

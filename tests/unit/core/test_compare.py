"""Paired bootstrap, McNemar and the champion/challenger decision (the metrics themselves:
test_metrics.py)."""

from __future__ import annotations

import numpy as np
import pytest

from mlops_loop.core import compare, metrics
from mlops_loop.core.config import EvaluationSettings
from mlops_loop.exceptions import EvaluationError
from tests.fixtures.dataset_configs import small_config


def two_models(n: int, seed: int, signal_a: float, signal_b: float, prior: float = 0.3):
    """Two models scoring the SAME rows: shared row noise plus model-specific noise."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prior).astype(int)
    shared = rng.normal(size=n)

    def model(signal: float) -> np.ndarray:
        z = signal * (2 * y - 1) + shared + 0.5 * rng.normal(size=n)
        return 1 / (1 + np.exp(-z))

    return y, model(signal_a), model(signal_b)


# -------------------------------------------------------------------- paired bootstrap


def test_bootstrap_ci_covers_true_difference_across_seeds():
    """The population AUC difference (from a very large sample) lies inside the 95% CI
    for most independent holdouts; a broken (e.g. unpaired or mis-scaled) CI fails this."""
    y_big, a_big, b_big = two_models(400_000, 99, 1.0, 0.8)
    true_diff = metrics.roc_auc(y_big, a_big) - metrics.roc_auc(y_big, b_big)
    covered = 0
    seeds = range(20)
    for seed in seeds:
        y, a, b = two_models(1500, seed, 1.0, 0.8)
        res = compare.paired_bootstrap(y, a, b, "roc_auc", n=300, confidence=0.95, seed=seed)
        assert res.ci_low <= res.diff <= res.ci_high
        covered += res.ci_low <= true_diff <= res.ci_high
    assert covered >= 16, f"true diff {true_diff:.4f} covered in only {covered}/20 holdouts"


def test_bootstrap_detects_clearly_better_model_and_is_deterministic():
    y, a, b = two_models(3000, 5, 1.5, 0.5)
    res = compare.paired_bootstrap(y, a, b, "roc_auc", n=400, seed=1)
    assert res.ci_low > 0.02 and res.p_better == 1.0
    again = compare.paired_bootstrap(y, a, b, "roc_auc", n=400, seed=1)
    assert (again.ci_low, again.ci_high) == (res.ci_low, res.ci_high)


def test_bootstrap_lower_is_better_metric_turns_improvement():
    y, a, b = two_models(3000, 5, 1.5, 0.5)
    res = compare.paired_bootstrap(y, a, b, "log_loss", n=300, seed=0)
    assert res.diff < 0 and res.improvement > 0
    low, high = res.improvement_ci
    assert 0 < low <= res.improvement <= high


def test_bootstrap_small_blocks_give_the_same_answer():
    y, a, b = two_models(2000, 2, 1.0, 0.9)
    big = compare.paired_bootstrap(y, a, b, "pr_auc", n=200, seed=4)
    small = compare.paired_bootstrap(y, a, b, "pr_auc", n=200, seed=4, block_bytes=8 * 2000 * 3)
    assert (big.ci_low, big.ci_high, big.p_better) == (small.ci_low, small.ci_high, small.p_better)


# ------------------------------------------------------------------------------ McNemar


def _mcnemar_reference(y, pa, pb):
    from scipy import stats

    b = int(np.sum((pa == y) & (pb != y)))
    c = int(np.sum((pa != y) & (pb == y)))
    if b + c < 25:
        return stats.binomtest(b, b + c, 0.5).pvalue
    return stats.chi2.sf((abs(b - c) - 1) ** 2 / (b + c), 1)


@pytest.mark.parametrize(
    ("n", "flip_a", "flip_b", "method"),
    [
        pytest.param(60, 0.05, 0.15, "exact", id="few-discordant-exact"),
        pytest.param(4000, 0.10, 0.14, "chi2", id="many-discordant-chi2"),
    ],
)
def test_mcnemar_matches_scipy_reference(n, flip_a, flip_b, method):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    pa = np.where(rng.random(n) < flip_a, 1 - y, y)
    pb = np.where(rng.random(n) < flip_b, 1 - y, y)
    res = compare.mcnemar(y, pa, pb)
    assert res.method == method
    assert res.p_value == pytest.approx(_mcnemar_reference(y, pa, pb))


def test_mcnemar_identical_predictions():
    y = np.array([0, 1, 1, 0])
    res = compare.mcnemar(y, y, y)
    assert (res.a_only, res.b_only, res.p_value, res.method) == (0, 0, 1.0, "none")


def test_baseline_scores():
    np.testing.assert_allclose(
        compare.baseline_scores([0, 0, 1, 1, 1], "classification", 3), [0.6] * 3
    )
    np.testing.assert_allclose(compare.baseline_scores([1.0, 3.0], "regression"), [2.0, 2.0])
    with pytest.raises(EvaluationError, match="at least one"):
        compare.baseline_scores([], "regression")


# -------------------------------------------------------------------------- decide()

FAST = {"n_bootstrap": 200, "min_holdout_rows": 100}
Y, GOOD, WEAK = two_models(3000, 11, 1.4, 0.6)


def _settings(**kw) -> EvaluationSettings:
    return EvaluationSettings(**{**FAST, **kw})


CASES = [
    pytest.param(
        dict(champion=WEAK, challenger=GOOD),
        {},
        {},
        "promote",
        None,
        id="better-challenger-promotes",
    ),
    pytest.param(
        dict(champion=GOOD, challenger=WEAK),
        {},
        {},
        "reject",
        "roc_auc",
        id="worse-challenger-rejected",
    ),
    pytest.param(
        dict(champion=GOOD, challenger=GOOD),
        {},
        {},
        "reject",
        "does not clear",
        id="equal-models-rejected",
    ),
    pytest.param(
        dict(champion=WEAK, challenger=GOOD**0.3),  # same ranking, miscalibrated
        {"guardrails": [{"metric": "brier", "max_regression": 0.005}]},
        {},
        "reject",
        "guardrail brier",
        id="guardrail-regression-vetoes",
    ),
    pytest.param(
        dict(champion=WEAK, challenger=GOOD),
        {"budget": {"max_latency_ms_per_1k_rows": 5.0}},
        {"latency_ms_per_1k_rows": 9.5},
        "reject",
        "budget latency_ms_per_1k_rows 9.5 exceeds 5.0",
        id="budget-exceeded-vetoes",
    ),
    pytest.param(
        dict(champion=WEAK, challenger=GOOD),
        {"budget": {"max_model_size_mb": 50.0}},
        {},
        "reject",
        "not measured",
        id="budget-unmeasured-vetoes",
    ),
    pytest.param(
        dict(champion=WEAK, challenger=GOOD, rows=50),
        {},
        {},
        "insufficient_data",
        "min_holdout_rows",
        id="tiny-holdout",
    ),
    pytest.param(
        dict(champion=None, challenger=GOOD),
        {"floors": {"roc_auc": 0.7}},
        {},
        "promote",
        "baseline",
        id="no-champion-beats-baseline-and-floor",
    ),
    pytest.param(
        dict(champion=None, challenger=WEAK),
        {"floors": {"roc_auc": 0.9}},
        {},
        "reject",
        "floor: roc_auc",
        id="no-champion-below-floor",
    ),
    pytest.param(
        dict(champion=None, challenger=np.full(Y.size, 0.3)),
        {},
        {},
        "reject",
        "baseline",
        id="no-champion-constant-model-does-not-beat-baseline",
    ),
    pytest.param(
        dict(champion=WEAK, challenger=GOOD),
        {"min_improvement": 0.5},
        {},
        "reject",
        "min_improvement 0.5",
        id="margin-not-cleared",
    ),
    pytest.param(
        dict(champion=WEAK, challenger=GOOD),
        {"primary_metric": "accuracy", "method": "mcnemar"},
        {},
        "promote",
        "accuracy",
        id="mcnemar-accuracy-better",
    ),
    pytest.param(
        dict(champion=GOOD, challenger=GOOD),
        {"primary_metric": "accuracy", "method": "mcnemar"},
        {},
        "reject",
        "McNemar",
        id="mcnemar-equal-models",
    ),
    pytest.param(
        dict(champion=WEAK, challenger=GOOD),
        {"primary_metric": "log_loss"},
        {},
        "promote",
        "log_loss",
        id="lower-is-better-primary",
    ),
]


# Every case with either paired test (McNemar is its own test): the closed form must
# reach the bootstrap's decision on the same inputs.
PAIRED_CASES = [
    pytest.param(*case.values, paired_test, id=f"{case.id}-{paired_test}")
    for case in CASES
    for paired_test in ("bootstrap", "closed_form")
    if not (paired_test == "closed_form" and case.values[1].get("method") == "mcnemar")
]


@pytest.mark.parametrize(
    ("models", "overrides", "budget", "outcome", "reason_part", "paired_test"), PAIRED_CASES
)
def test_decide_truth_table(models, overrides, budget, outcome, reason_part, paired_test):
    rows = models.get("rows", Y.size)
    champion = models["champion"]
    decision = compare.decide(
        Y[:rows],
        models["challenger"][:rows],
        None if champion is None else champion[:rows],
        _settings(**overrides, paired_test=paired_test),
        budget_observed=budget,
        challenger_version="7",
        champion_version=None if champion is None else "6",
    )
    assert decision.outcome == outcome, decision.reasons
    if reason_part:
        assert reason_part in " ".join(decision.reasons), decision.reasons
    assert decision.compared_against == ("baseline" if champion is None else "champion:6")
    d = decision.to_dict()
    assert d["outcome"] == outcome and d["validation_status"] in (
        "passed",
        "failed",
        "inconclusive",
    )
    assert d["decision_id"] == compare.make_decision_id(
        "7", None if champion is None else "6", None
    )


@pytest.mark.parametrize("paired_test", ["bootstrap", "closed_form"])
def test_decide_slices_veto_a_regressing_segment(paired_test):
    rng = np.random.default_rng(0)
    region = rng.choice(["north", "south", "tiny"], size=Y.size, p=[0.5, 0.48, 0.02])
    # The challenger is better overall but random on "south".
    challenger = np.where(region == "south", rng.random(Y.size), GOOD)
    champion = np.where(region == "south", GOOD, WEAK)
    settings = _settings(
        slice_columns=["region"],
        slice_min_rows=100,
        slice_max_regression=0.05,
        paired_test=paired_test,
    )
    decision = compare.decide(Y, challenger, champion, settings, slices={"region": region})
    table = {s["value"]: s for s in decision.slices}
    assert table["south"]["status"] == "failed" and table["north"]["status"] == "passed"
    assert table["tiny"]["status"] == "skipped"
    if decision.outcome != "reject":
        pytest.fail(f"slice regression must veto, got {decision.reasons}")
    assert any("slice region=south" in r for r in decision.reasons)


@pytest.mark.parametrize(
    ("y", "champion", "error"),
    [
        pytest.param(np.r_[Y[:-1], np.nan], WEAK, "missing values", id="missing-label"),
        pytest.param(Y, WEAK[:-1], "shape", id="length-mismatch"),
        pytest.param(Y * 2, WEAK, "must be 0/1", id="labels-not-binary"),
        pytest.param(Y, WEAK * 3, "probabilities", id="scores-not-probabilities"),
    ],
)
def test_decide_rejects_malformed_input(y, champion, error):
    with pytest.raises(EvaluationError, match=error):
        compare.decide(y, GOOD, champion, _settings())


@pytest.mark.parametrize("paired_test", ["bootstrap", "closed_form"])
def test_decide_all_one_class_is_insufficient_data(paired_test):
    decision = compare.decide(
        np.zeros(500), GOOD[:500], WEAK[:500], _settings(paired_test=paired_test)
    )
    assert decision.outcome == "insufficient_data"
    assert "all 0" in decision.reasons[0]


def test_holdout_without_target_column_is_a_clear_error():
    import pandas as pd

    config = small_config(
        "string", positive_label="yes", extra={"evaluation": {"slice_columns": ["region"]}}
    )
    frame = pd.DataFrame({"age": [30, 40], "region": ["n", "s"]})
    with pytest.raises(EvaluationError, match="no target column \\['label'\\]"):
        compare.holdout_arrays(frame, config)
    y, slices = compare.holdout_arrays(frame.assign(label=["no", "yes"]), config)
    assert y.tolist() == [0.0, 1.0] and slices["region"].tolist() == ["n", "s"]
    with pytest.raises(EvaluationError, match="'label' has 3 distinct labels"):
        compare.holdout_arrays(
            frame.assign(label=["no", "yes"]).iloc[[0, 1, 1]].assign(label=["no", "yes", "maybe"]),
            config,
        )


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        pytest.param(
            {"primary_metric": "roc_auc", "method": "mcnemar"}, "accuracy-type", id="mcnemar-on-auc"
        ),
        pytest.param({"primary_metric": "brier"}, "not supported", id="unsupported-primary"),
        pytest.param(
            {"guardrails": [{"metric": "recall_at_precision", "max_regression": 0.1}]},
            "at_precision",
            id="rap-needs-precision",
        ),
        pytest.param({"floors": {"nope": 1}}, "unknown metric", id="unknown-floor"),
    ],
)
def test_settings_reject_bad_combinations(settings, error):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=error):
        EvaluationSettings(**settings)


def test_settings_check_against_task():
    with pytest.raises(ValueError, match="do not apply to a regression task"):
        EvaluationSettings(primary_metric="roc_auc").check_against("regression")
    with pytest.raises(ValueError, match="slice_columns"):
        EvaluationSettings(slice_columns=["zone"]).check_against("classification", ["region"])


@pytest.mark.parametrize("paired_test", ["bootstrap", "closed_form"])
def test_decide_regression_against_mean_baseline(paired_test):
    rng = np.random.default_rng(0)
    y = rng.normal(size=2000) * 3
    pred = y + rng.normal(size=2000)
    decision = compare.decide(
        y, pred, None, _settings(primary_metric="rmse", paired_test=paired_test)
    )
    assert decision.outcome == "promote" and decision.compared_against == "baseline"
    assert decision.challenger_value < decision.reference_value


@pytest.mark.parametrize("paired_test", ["bootstrap", "closed_form"])
def test_equally_good_but_different_models_are_rarely_promoted(paired_test):
    """Same signal, independent model noise: the CI should straddle zero (one-sided error
    about 2.5% per holdout at 95% confidence)."""
    promoted = 0
    for seed in range(12):
        y, a, b = two_models(2000, 100 + seed, 1.0, 1.0)
        promoted += compare.decide(y, a, b, _settings(paired_test=paired_test)).outcome == "promote"
    assert promoted <= 2

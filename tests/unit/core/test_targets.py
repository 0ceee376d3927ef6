"""Target types: binary as 0/1, booleans or text labels (positive_label), regression; and
the refusals, at config load or with an error naming the column and the labels found."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops_loop.core import compare, targets
from mlops_loop.core.config import EvaluationSettings
from mlops_loop.exceptions import TargetError
from tests.fixtures.dataset_configs import small_config


def _encode(config, values):
    return targets.encode_target(config, pd.Series(values), where="snapshot s")


# --- what the config accepts --------------------------------------------------------------


def test_text_labels_without_positive_label_fail_at_load_naming_the_key():
    with pytest.raises(ValueError, match=r"positive_label: required .*'label' holds text labels"):
        small_config("string")
    with pytest.raises(ValueError, match="positive_label: required"):
        small_config("category")


def test_unquoted_yes_read_as_a_boolean_is_explained():
    with pytest.raises(ValueError, match=r"quote it \(positive_label: 'yes'\)"):
        small_config("string", positive_label=True)


def test_multiclass_task_is_refused_at_load_by_name():
    with pytest.raises(ValueError, match="task: 'multiclass' is not supported"):
        small_config("string", task="multiclass", positive_label="a")


@pytest.mark.parametrize(
    ("target_type", "task", "label", "error"),
    [
        ("string", "regression", None, "a regression target must be an integer or float column"),
        ("float", "regression", 1, "positive_label: applies to classification only"),
        ("boolean", "classification", "yes", "is boolean, so use true or false"),
        ("integer", "classification", "yes", "so give a number"),
        ("integer", "classification", 1.5, "is not an integer"),
        ("date", "classification", None, "is a date column, not a label"),
    ],
)
def test_target_settings_that_cannot_work_fail_at_load(target_type, task, label, error):
    with pytest.raises(ValueError, match=error):
        small_config(target_type, task=task, positive_label=label)


def test_classification_metric_on_a_regression_task_fails_at_load():
    with pytest.raises(
        ValueError, match=r"evaluation: metrics \['roc_auc'\] do not apply to a regression task"
    ):
        small_config(
            "float", task="regression", extra={"evaluation": {"primary_metric": "roc_auc"}}
        )
    with pytest.raises(ValueError, match=r"metrics \['log_loss'\] do not apply"):
        small_config(
            "float", task="regression", extra={"evaluation": {"floors": {"log_loss": 0.5}}}
        )
    with pytest.raises(
        ValueError, match=r"drift\.decay_metric: 'roc_auc' does not apply to a regression task"
    ):
        small_config("float", task="regression", extra={"drift": {"decay_metric": "roc_auc"}})
    with pytest.raises(
        ValueError, match=r"metrics \['rmse'\] do not apply to a classification task"
    ):
        small_config("integer", extra={"evaluation": {"primary_metric": "rmse"}})


def test_regression_decides_on_rmse_unless_told_otherwise():
    assert small_config("float", task="regression").evaluation.primary_metric == "rmse"
    mae = small_config("float", task="regression", extra={"evaluation": {"primary_metric": "mae"}})
    assert mae.evaluation.primary_metric == "mae"
    assert small_config("integer").evaluation.primary_metric == "roc_auc"


# --- encoding -----------------------------------------------------------------------------


def test_text_labels_encode_to_the_positive_label():
    config = small_config("string", positive_label="yes")
    np.testing.assert_array_equal(
        _encode(config, ["yes", "no", None, "no"]), [1.0, 0.0, np.nan, 0.0]
    )
    # A batch of negatives only is fine (a rare positive class); training checks both classes.
    np.testing.assert_array_equal(_encode(config, ["no", "no"]), [0.0, 0.0])


def test_booleans_and_numbers_encode_with_their_default_positive_label():
    np.testing.assert_array_equal(
        _encode(small_config("boolean"), [True, False, None]), [1.0, 0.0, np.nan]
    )
    flipped = small_config("boolean", positive_label=False)
    np.testing.assert_array_equal(_encode(flipped, [True, False]), [0.0, 1.0])
    np.testing.assert_array_equal(_encode(small_config("integer"), [0, 1, 1]), [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(_encode(small_config("float"), [0.0, 1.0]), [0.0, 1.0])
    two = small_config("integer", positive_label=2)
    np.testing.assert_array_equal(_encode(two, [1, 2, 2]), [0.0, 1.0, 1.0])


def test_a_third_label_is_refused_as_multiclass_naming_the_column():
    with pytest.raises(
        TargetError,
        match=r"snapshot s: binary target 'label' has 3 distinct labels \['a', 'b', 'c'\]",
    ):
        _encode(small_config("string", positive_label="a"), ["a", "b", "c"])
    with pytest.raises(
        TargetError, match=r"needs labels 0/1 .*found \[0.0, 1.0, 2.0\].*multiclass"
    ):
        _encode(small_config("integer"), [0, 1, 2])
    with pytest.raises(TargetError, match="name the positive one with positive_label"):
        _encode(small_config("integer"), [1, 2])


def test_a_positive_label_that_never_occurs_names_the_labels_found():
    config = small_config("string", positive_label="yes")
    with pytest.raises(
        TargetError,
        match=r"positive_label 'yes' never occurs in target 'label' \(labels found: \['No', 'Yes'\]; .*case included",
    ):
        _encode(config, ["Yes", "No", "No"])
    # Negatives only in every training snapshot: caught before fitting.
    raw = pd.Series(["no", "no"])
    with pytest.raises(
        TargetError, match=r"t: positive_label 'yes' never occurs .*\(labels found: \['no'\]\)"
    ):
        targets.require_both_classes(config, _encode(config, raw), raw, where="t")


def test_only_positive_labels_cannot_train_a_classifier():
    config = small_config("boolean")
    with pytest.raises(TargetError, match="holds only the positive label True"):
        targets.require_both_classes(
            config, _encode(config, [True, True]), pd.Series([True, True]), where="t"
        )


def test_regression_target_with_text_values_names_them():
    config = small_config("float", task="regression")
    np.testing.assert_array_equal(_encode(config, [1.5, None, 3]), [1.5, np.nan, 3.0])
    with pytest.raises(
        TargetError, match=r"regression target 'label' needs numbers, found \['high', 'n/a'\]"
    ):
        _encode(config, [1.5, "high", "n/a"])


# --- the decision on awkward holdouts -----------------------------------------------------


def test_a_holdout_with_only_one_class_is_insufficient_data():
    settings = EvaluationSettings(min_holdout_rows=10)
    y = np.zeros(50)
    decision = compare.decide(y, np.full(50, 0.2), None, settings, baseline_value=0.1)
    assert decision.outcome == "insufficient_data"
    assert "holdout labels are all 0 (50 rows)" in decision.reasons[0]


def test_a_regression_holdout_with_a_constant_target_is_insufficient_data():
    settings = EvaluationSettings(primary_metric="rmse", min_holdout_rows=10)
    decision = compare.decide(
        np.full(50, 3.0), np.full(50, 2.5), None, settings, baseline_value=2.0
    )
    assert decision.outcome == "insufficient_data"
    assert "holdout target is constant (3 on all 50 rows)" in decision.reasons[0]


def test_the_first_model_is_compared_with_the_training_mean_not_the_holdout_mean():
    rng = np.random.default_rng(0)
    y = rng.normal(10.0, 1.0, size=2000)
    settings = EvaluationSettings(primary_metric="rmse", min_holdout_rows=10)
    # A challenger that predicts the holdout mean exactly beats a baseline stuck at the
    # training mean 8.0; against the holdout's own mean it could not.
    decision = compare.decide(y, np.full(2000, y.mean()), None, settings, baseline_value=8.0)
    assert decision.outcome == "promote"
    assert decision.reference_value == pytest.approx(np.sqrt(np.mean((y - 8.0) ** 2)))
    assert compare.decide(y, np.full(2000, y.mean()), None, settings).outcome != "promote"
    with pytest.raises(Exception, match="is not a classification prediction"):
        compare.baseline_scores([0, 1], "classification", baseline_value=1.5)

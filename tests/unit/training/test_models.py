"""Model builders without any server: preprocessing, the MLP's determinism, early stopping
and class weighting, and the saved model's output contract."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_loop.core.config import (
    HistGradientBoostingHyperparameters,
    MlpHyperparameters,
    load_config,
)
from mlops_loop.training import models
from mlops_loop.training.train import validation_metrics
from mlops_loop_devtools.sample_data import generate_batch

torch = pytest.importorskip("torch")

CONFIG = Path(__file__).resolve().parents[3] / "include" / "config" / "credit_default.yaml"
SMALL = MlpHyperparameters(hidden_sizes=[8], max_epochs=3, batch_size=64, patience=2)


@pytest.fixture(scope="module")
def config():
    return load_config(CONFIG)


@pytest.fixture(scope="module")
def kinds(config):
    return models.feature_kinds(config)


@pytest.fixture(scope="module")
def frames():
    return generate_batch("2026-02-01", 600, seed=3), generate_batch("2026-02-02", 200, seed=3)


def test_feature_kinds_follow_column_types(kinds):
    assert kinds["age"] == "numeric"
    assert kinds["annual_income"] == "numeric"
    assert kinds["home_ownership"] == "categorical"
    assert kinds["prior_default"] == "boolean"
    assert not {"application_id", "applied_at", "default"} & set(kinds)


@pytest.mark.parametrize(
    ("values", "kind", "expected"),
    [
        pytest.param(pd.array([1, None, 3], dtype="Int64"), "numeric", [1.0, np.nan, 3.0], id="nullable-int"),
        pytest.param(["1.5", "x", None], "numeric", [1.5, np.nan, np.nan], id="text-numbers"),
        pytest.param([True, False, None], "boolean", [1.0, 0.0, np.nan], id="bool-with-none"),
        pytest.param(["true", "no", "maybe"], "boolean", [1.0, 0.0, np.nan], id="bool-text"),
        pytest.param(pd.array([True, None, False], dtype="boolean"), "boolean", [1.0, np.nan, 0.0], id="bool-nullable"),
        pytest.param(["2026-01-02", None, "1970-01-01"], "datetime", [20455.0, np.nan, 0.0], id="dates-as-days"),
    ],
)
def test_feature_frame_coerces_numeric_kinds(values, kind, expected):
    out = models.FeatureFrame({"c": kind}).fit_transform(pd.DataFrame({"c": values}))
    assert out["c"].dtype == "float64"
    np.testing.assert_array_equal(out["c"].to_numpy(), np.array(expected, dtype="float64"))


def test_feature_frame_categories_become_python_strings():
    frame = pd.DataFrame({"c": pd.array(["a", None, "b"], dtype="string"), "extra": [1, 2, 3]})
    out = models.FeatureFrame({"c": "categorical"}).fit_transform(frame)
    assert list(out.columns) == ["c"]
    assert out["c"].dtype == object
    assert out["c"][0] == "a" and pd.isna(out["c"][1])


def test_feature_frame_names_missing_columns():
    with pytest.raises(ValueError, match=r"missing feature columns \['b'\]"):
        models.FeatureFrame({"a": "numeric", "b": "numeric"}).fit_transform(pd.DataFrame({"a": [1.0]}))


@pytest.mark.parametrize("model_type", ["mlp", "hist_gradient_boosting"])
def test_preprocessor_handles_unseen_categories_and_missing_values(kinds, frames, model_type):
    train, valid = frames
    pre = models.build_preprocessor(kinds, model_type)
    width = pre.fit_transform(train).shape[1]
    odd = valid.copy()
    odd.loc[:4, "home_ownership"] = "SPACESHIP"
    odd.loc[:4, "credit_score"] = np.nan
    odd["prior_default"] = odd["prior_default"].astype(object)
    odd.loc[:4, "prior_default"] = None
    out = np.asarray(pre.transform(odd), dtype="float64")
    assert out.shape == (len(valid), width)
    if model_type == "mlp":
        assert np.isfinite(out).all()  # imputed, one-hot zeros for the unseen level
    else:
        assert np.isnan(out[:5]).any()  # left to HistGradientBoosting's missing-value handling


def _arrays(kinds, frames):
    train, valid = frames
    pre = models.build_preprocessor(kinds, "mlp")
    x_train = np.asarray(pre.fit_transform(train), dtype=np.float32)
    x_valid = np.asarray(pre.transform(valid), dtype=np.float32)
    return pre, x_train, train["default"].to_numpy("float32"), x_valid, valid["default"].to_numpy("float32")


def _fit(arrays, *, seed=5, hp=SMALL, class_weight="balanced", task="classification"):
    _, x_train, y_train, x_valid, y_valid = arrays
    return models.fit_mlp(
        x_train, y_train, x_valid, y_valid, hp=hp, task=task, class_weight=class_weight, seed=seed, device="cpu"
    )


def test_mlp_is_deterministic_on_cpu_for_a_seed(kinds, frames):
    arrays = _arrays(kinds, frames)
    first, second, other = _fit(arrays), _fit(arrays), _fit(arrays, seed=6)
    for name, weights in first.weights.items():
        np.testing.assert_array_equal(weights, second.weights[name])
    assert [r.metrics["valid_loss"] for r in first.history] == [r.metrics["valid_loss"] for r in second.history]
    assert any(not np.array_equal(w, other.weights[k]) for k, w in first.weights.items())


def test_mlp_stops_early_and_keeps_the_best_epoch(kinds, frames):
    _pre, x_train, y_train, x_valid, _ = _arrays(kinds, frames)
    noise = np.random.default_rng(0).integers(0, 2, len(x_valid)).astype("float32")
    hp = MlpHyperparameters(hidden_sizes=[64, 64], lr=0.05, max_epochs=60, patience=2, batch_size=32, dropout=0.0)
    fit = models.fit_mlp(
        x_train, y_train, x_valid, noise, hp=hp, task="classification", class_weight="none", seed=1, device="cpu"
    )
    assert fit.stopped_early and fit.epochs_run < 60
    assert fit.best_epoch == fit.epochs_run - hp.patience
    losses = [r.metrics["valid_loss"] for r in fit.history]
    assert losses[fit.best_epoch - 1] == min(losses)
    assert fit.rows_seen == fit.epochs_run * len(x_train) and fit.rows_per_second > 0


def test_class_weighting_raises_scores_for_the_rare_class(kinds, frames):
    pre, *_ = arrays = _arrays(kinds, frames)
    valid = frames[1]
    hp = MlpHyperparameters(hidden_sizes=[8], lr=0.02, max_epochs=8, batch_size=64, patience=8)
    means = {}
    for weighting in ("balanced", "none"):
        fit = _fit(arrays, hp=hp, class_weight=weighting)
        network = {"n_inputs": arrays[1].shape[1], "hidden_sizes": [8], "dropout": 0.1, "weights": fit.weights}
        model = models.TabularModel(kind="mlp", task="classification", preprocessor=pre, network=network)
        means[weighting] = model.predict(valid).mean()
    assert means["balanced"] > means["none"] + 0.1


def test_epoch_callback_sees_every_epoch(kinds, frames):
    seen = []
    _, x_train, y_train, x_valid, y_valid = _arrays(kinds, frames)
    models.fit_mlp(
        x_train, y_train, x_valid, y_valid, hp=SMALL, task="classification", class_weight="balanced",
        seed=1, device="cpu", on_epoch=seen.append,
    )  # fmt: skip
    assert [r.epoch for r in seen] == [1, 2, 3]
    assert {"train_loss", "valid_loss", "valid_roc_auc"} <= set(seen[0].metrics)


@pytest.mark.parametrize("kind", ["mlp", "hist_gradient_boosting"])
def test_saved_model_output_contract(kind, kinds, frames):
    """Probabilities in [0, 1], one float64 per row, from raw feature columns; the same
    after a pickle round trip (what MLflow's cloudpickle does)."""
    train, valid = frames
    pre = models.build_preprocessor(kinds, kind)
    x_train = pre.fit_transform(train)
    y = train["default"].to_numpy()
    if kind == "mlp":
        fit = models.fit_mlp(
            np.asarray(x_train, np.float32), y.astype("float32"),
            np.asarray(pre.transform(valid), np.float32), valid["default"].to_numpy("float32"),
            hp=SMALL, task="classification", class_weight="balanced", seed=2, device="cpu",
        )  # fmt: skip
        network = {"n_inputs": x_train.shape[1], "hidden_sizes": [8], "dropout": 0.1, "weights": fit.weights}
        model = models.TabularModel(kind=kind, task="classification", preprocessor=pre, network=network)
    else:
        n_numeric = sum(k != "categorical" for k in kinds.values())
        est = models.build_hist_gradient_boosting(
            HistGradientBoostingHyperparameters(max_iter=10), task="classification", class_weight="balanced",
            seed=2, categorical_indices=list(range(n_numeric, x_train.shape[1])),
        )  # fmt: skip
        est.fit(x_train, y)
        model = models.TabularModel(kind=kind, task="classification", preprocessor=pre, estimator=est)

    scores = model.predict(valid)  # includes id, timestamp and label columns: ignored
    assert scores.dtype == np.float64 and scores.shape == (len(valid),)
    assert ((scores >= 0) & (scores <= 1)).all() and scores.std() > 0
    assert model.feature_columns == list(kinds)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).predict(valid), scores)
    wrapped = models.TabularPyfuncModel(model)
    np.testing.assert_array_equal(wrapped.predict(None, valid[list(kinds)]), scores)


def test_regression_mlp_predicts_in_target_units(kinds, frames):
    train, _valid = frames
    pre = models.build_preprocessor(kinds, "mlp")
    x_train = np.asarray(pre.fit_transform(train), np.float32)
    y = train["annual_income"].fillna(50_000).to_numpy("float64") / 1000.0
    mean, std = y.mean(), y.std()
    fit = models.fit_mlp(
        x_train, ((y - mean) / std).astype("float32"), x_train[:100], ((y[:100] - mean) / std).astype("float32"),
        hp=SMALL, task="regression", class_weight="none", seed=1, device="cpu",
    )  # fmt: skip
    network = {"n_inputs": x_train.shape[1], "hidden_sizes": [8], "dropout": 0.1, "weights": fit.weights}
    model = models.TabularModel(
        kind="mlp", task="regression", preprocessor=pre, network=network, target_mean=mean, target_std=std
    )
    pred = model.predict(train)
    assert abs(pred.mean() - mean) < std  # in target units, not standardised


def test_input_schema_accepts_snapshot_and_generator_frames(config, kinds, frames):
    from mlflow.models.utils import _enforce_schema

    schema = models.input_schema(config)
    assert schema.input_names() == list(kinds)
    example = models.input_example(frames[0], kinds)
    assert len(example) == 5
    _enforce_schema(example, schema)
    raw = frames[1][list(kinds)]  # int64 ages, float64 scores with NaN, bools, str categories
    assert list(_enforce_schema(raw, schema).columns) == list(kinds)
    as_snapshot = raw.astype({"home_ownership": "string", "region": "string"})
    _enforce_schema(as_snapshot, schema)
    with pytest.raises(Exception, match="age"):
        _enforce_schema(raw.drop(columns=["age"]), schema)


@pytest.mark.parametrize(
    ("task", "y_true", "y_pred", "expected"),
    [
        pytest.param("classification", [0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8], {"roc_auc": 1.0, "f1": 1.0}, id="perfect"),
        pytest.param("classification", [0, 1, 0, 1], [0.9, 0.1, 0.8, 0.2], {"roc_auc": 0.0, "f1": 0.0}, id="inverted"),
        pytest.param("regression", [1.0, 2.0], [1.0, 2.0], {"rmse": 0.0, "mae": 0.0, "r2": 1.0}, id="exact"),
    ],
)
def test_validation_metrics(task, y_true, y_pred, expected):
    got = validation_metrics(task, np.array(y_true), np.array(y_pred))
    for key, value in expected.items():
        assert got[key] == pytest.approx(value)
    if task == "classification":
        assert set(got) == {"roc_auc", "pr_auc", "log_loss", "brier", "f1"}


def test_resolve_device_cpu_only_host():
    assert models.resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        assert models.resolve_device("auto") == "cpu"
        with pytest.raises(RuntimeError, match="no CUDA device"):
            models.resolve_device("cuda")

"""The MLP's CUDA path (mixed precision, pinned host batches, chunked scoring on the GPU).

Marked ``gpu``: each test needs a CUDA device and skips without one. They import only
torch, numpy, pandas and scikit-learn (no MLflow, no Airflow, no pydantic), so they run on a
bare GPU host too:

    PYTHONPATH=plugins python -m pytest --noconftest -m gpu tests/unit/training/test_gpu.py
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from mlops_loop.training import models  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

FEATURES = 20


def _hp(**overrides: object) -> SimpleNamespace:
    values = dict(
        hidden_sizes=[64, 32],
        dropout=0.1,
        lr=3e-3,
        weight_decay=1e-4,
        batch_size=512,
        max_epochs=6,
        patience=3,
    )
    values.update(overrides)
    return SimpleNamespace(**values)


def _frame(
    rows: int, seed: int, positive_rate: float | None = None
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Features with a linear signal; returns (frame, binary label, real-valued target)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES))
    x[rng.random(size=x.shape) < 0.02] = np.nan  # missing values go through the imputer
    signal = np.nan_to_num(x) @ np.linspace(1.0, -1.0, FEATURES)
    shift = 0.0 if positive_rate is None else float(np.quantile(signal, 1 - positive_rate))
    label = (signal + rng.normal(scale=1.0, size=rows) > shift).astype(np.float64)
    target = 3.0 * signal + 10.0 + rng.normal(scale=0.5, size=rows)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(FEATURES)])
    frame["segment"] = rng.choice(["a", "b", "c"], size=rows)
    return frame, label, target


def _kinds(frame: pd.DataFrame) -> dict[str, models.Kind]:
    return {c: ("categorical" if c == "segment" else "numeric") for c in frame.columns}


def _fit(
    frame: pd.DataFrame, y: np.ndarray, device: str, task: models.Task, **hp: object
) -> tuple[models.TabularModel, models.MlpFit]:
    split = int(len(frame) * 0.8)
    preprocessor = models.build_preprocessor(_kinds(frame), "mlp")
    x_train = np.asarray(preprocessor.fit_transform(frame.iloc[:split]), dtype=np.float32)
    x_valid = np.asarray(preprocessor.transform(frame.iloc[split:]), dtype=np.float32)
    mean, std = (
        (float(y[:split].mean()), float(y[:split].std())) if task == "regression" else (0.0, 1.0)
    )
    settings = _hp(**hp)
    fit = models.fit_mlp(
        x_train,
        ((y[:split] - mean) / std).astype(np.float32),
        x_valid,
        ((y[split:] - mean) / std).astype(np.float32),
        hp=settings,
        task=task,
        class_weight="balanced",
        seed=7,
        device=device,
    )
    model = models.TabularModel.from_mlp_fit(
        fit,
        hp=settings,
        n_inputs=x_train.shape[1],
        task=task,
        preprocessor=preprocessor,
        target_mean=mean,
        target_std=std,
    )
    return model, fit


def test_auto_device_is_cuda_when_torch_sees_a_gpu() -> None:
    assert models.resolve_device("auto") == "cuda"
    assert models.resolve_device("cuda") == "cuda"
    assert models.resolve_device("cpu") == "cpu"


def test_classifier_trained_on_cuda_scores_on_cpu_as_well_as_one_trained_on_cpu() -> None:
    from sklearn.metrics import roc_auc_score

    frame, label, _ = _frame(40_000, seed=1)
    holdout, holdout_label, _ = _frame(20_000, seed=2)
    gpu_model, gpu_fit = _fit(frame, label, "cuda", "classification")
    cpu_model, _ = _fit(frame, label, "cpu", "classification")

    # The saved weights live on the CPU as numpy arrays, whatever device trained them.
    assert all(isinstance(w, np.ndarray) for w in gpu_fit.weights.values())
    assert all(np.isfinite(w).all() for w in gpu_fit.weights.values())
    assert gpu_fit.rows_seen == gpu_fit.epochs_run * 32_000
    assert all(np.isfinite(r.metrics["valid_loss"]) for r in gpu_fit.history)

    gpu_scores = gpu_model.predict(holdout)
    cpu_scores = cpu_model.predict(holdout)
    assert gpu_scores.dtype == np.float64 and gpu_scores.shape == (20_000,)
    assert ((gpu_scores >= 0) & (gpu_scores <= 1)).all()
    gpu_auc = roc_auc_score(holdout_label, gpu_scores)
    cpu_auc = roc_auc_score(holdout_label, cpu_scores)
    assert gpu_auc > 0.85
    assert abs(gpu_auc - cpu_auc) < 0.01  # fp16 autocast changes the path, not the quality
    # The validation AUC reported on the GPU matches a CPU recomputation of the same model.
    assert gpu_fit.history[gpu_fit.best_epoch - 1].metrics["valid_roc_auc"] == pytest.approx(
        roc_auc_score(label[32_000:], gpu_model.predict(frame.iloc[32_000:])), abs=2e-3
    )


def test_rare_positive_class_weight_lives_on_the_gpu() -> None:
    from sklearn.metrics import roc_auc_score

    frame, label, _ = _frame(30_000, seed=3, positive_rate=0.02)
    model, _ = _fit(frame, label, "cuda", "classification")
    assert 0.005 < label.mean() < 0.05
    holdout, holdout_label, _ = _frame(20_000, seed=4, positive_rate=0.02)
    assert roc_auc_score(holdout_label, model.predict(holdout)) > 0.8


def test_regression_on_cuda_predicts_in_target_units() -> None:
    frame, _, target = _frame(40_000, seed=5)
    model, _ = _fit(frame, target, "cuda", "regression")
    holdout, _, holdout_target = _frame(10_000, seed=6)
    predicted = model.predict(holdout)
    residual = holdout_target - predicted
    r2 = 1 - residual.var() / holdout_target.var()
    assert r2 > 0.9
    assert abs(predicted.mean() - holdout_target.mean()) < 0.5  # de-standardised: target units


def test_validation_larger_than_one_scoring_chunk_is_scored_in_chunks_on_the_gpu() -> None:
    rows = 5 * models.SCORE_BATCH_ROWS
    frame, label, _ = _frame(rows, seed=8)
    _, fit = _fit(frame, label, "cuda", "classification", max_epochs=2, batch_size=4096)
    assert fit.epochs_run == 2
    assert all(0.5 < r.metrics["valid_roc_auc"] <= 1.0 for r in fit.history)


def test_streamed_fit_on_cuda_matches_the_cpu_and_holds_only_its_buffer() -> None:
    """fit_mlp_stream (a training split above training.max_rows_in_memory): chunks in a
    seeded order, a shuffle buffer moved to the GPU once per fill."""
    from sklearn.metrics import roc_auc_score

    frame, label, _ = _frame(40_000, seed=9)
    holdout, holdout_label, _ = _frame(20_000, seed=10)
    preprocessor = models.build_preprocessor(_kinds(frame), "mlp")
    preprocessor.fit(frame.sample(10_000, random_state=0))  # fitted on a sample, as streamed
    x = np.asarray(preprocessor.transform(frame), dtype=np.float32)
    y = label.astype(np.float32)
    x_train, y_train, x_valid, y_valid = x[:32_000], y[:32_000], x[32_000:], y[32_000:]

    def chunks(epoch: int):
        for start in np.random.default_rng([7, epoch]).permutation(np.arange(0, 32_000, 2_000)):
            yield x_train[start : start + 2_000], y_train[start : start + 2_000]

    def fit(device: str) -> models.MlpFit:
        return models.fit_mlp_stream(
            chunks, x_valid, y_valid, n_inputs=x.shape[1], rows=32_000,
            positives=float(y_train.sum()), buffer_rows=8_000, hp=_hp(), task="classification",
            class_weight="balanced", seed=7, device=device,
        )  # fmt: skip

    gpu_fit, cpu_fit = fit("cuda"), fit("cpu")
    assert gpu_fit.peak_rows <= 8_000 + 2_000
    assert gpu_fit.rows_seen == gpu_fit.epochs_run * 32_000
    assert all(isinstance(w, np.ndarray) and np.isfinite(w).all() for w in gpu_fit.weights.values())
    aucs = []
    for fitted in (gpu_fit, cpu_fit):
        model = models.TabularModel.from_mlp_fit(
            fitted, hp=_hp(), n_inputs=x.shape[1], task="classification", preprocessor=preprocessor
        )
        aucs.append(roc_auc_score(holdout_label, model.predict(holdout)))
    assert aucs[0] > 0.85
    assert abs(aucs[0] - aucs[1]) < 0.01


def test_cuda_without_a_device_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert models.resolve_device("auto") == "cpu"
    with pytest.raises(RuntimeError, match=r"training\.device is 'cuda'"):
        models.resolve_device("cuda")

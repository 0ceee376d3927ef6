"""The model builders: preprocessing, a PyTorch tabular MLP, scikit-learn
HistGradientBoosting, and the one MLflow pyfunc wrapper both are saved as.

Model output contract (both model types, every version in the registry)
-----------------------------------------------------------------------
``mlflow.pyfunc.load_model("models:/<name>/<version>").predict(frame)`` takes a pandas
DataFrame holding the raw feature columns of the dataset config (``config.feature_columns``,
as they appear in a snapshot; extra columns are ignored, a missing one is an error) and
returns a 1-D ``numpy.ndarray`` of float64, one value per row, in row order:

- classification: the probability of the positive class (label 1), in [0, 1];
- regression: the predicted value, in the target's units.

The preprocessing (type coercion, missing values, scaling, categorical encoding) is part of
the saved model, so whoever loads it applies the same transforms. Loading needs the
``mlops_loop`` package importable (the trainer image and a worker with the ``trainer``
extra have it); an MLP additionally needs torch, HistGradientBoosting only scikit-learn.
Scoring always runs on the CPU (deterministic; fast enough for tabular holdouts).

Training data in memory or streamed
-----------------------------------
:func:`fit_mlp` trains on arrays in memory; :func:`fit_mlp_stream` runs the same epoch
loop (``_train_loop``) over chunks handed in per epoch, shuffled within a bounded buffer,
for a training split above ``training.max_rows_in_memory`` (then the preprocessing below is
fitted on a seeded uniform sample of at most that many rows: medians, scaling and one-hot
levels come from the sample; see ``train.py``). HistGradientBoosting always trains in
memory, on at most ``training.max_rows_in_memory`` rows. This module imports no MLflow
(optional, for the pyfunc wrapper), so fitting runs with torch, numpy, pandas, pyarrow and
scikit-learn alone.

Preprocessing by column type (ColumnType in core/config.py)
------------------------------------------------------------
- integer, float, boolean (as 0/1), date/timestamp (as days since 1970): MLP: median
  imputation plus a missing-indicator column, then standardisation; HistGradientBoosting:
  passed through, missing values handled natively.
- string, category: MLP: missing -> its own level, one-hot with at most 64 levels, rare
  levels pooled and unseen levels mapped to the pooled level (or all zeros when none was
  pooled); HistGradientBoosting: ordinal codes as native categorical features, unseen and
  missing levels as missing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

try:
    from mlflow.pyfunc import PythonModel
except (
    ModuleNotFoundError
):  # fitting and predicting need no MLflow (a bare GPU host runs the gpu tests)
    PythonModel = object  # type: ignore[misc,assignment]

if TYPE_CHECKING:
    from mlops_loop.core.config import (
        DatasetConfig,
        HistGradientBoostingHyperparameters,
        MlpHyperparameters,
    )

Kind = Literal["numeric", "boolean", "datetime", "categorical"]
Task = Literal["classification", "regression"]
ONE_HOT_MAX_LEVELS = 64
ORDINAL_MAX_LEVELS = 250  # HistGradientBoosting allows at most 255 bins per categorical
SCORE_BATCH_ROWS = 16_384


def feature_kinds(config: DatasetConfig) -> dict[str, Kind]:
    """Feature column -> preprocessing kind, from the config's column types."""
    kinds: dict[str, Kind] = {}
    for name in config.feature_columns:
        col_type = config.column(name).type.value
        if col_type in ("integer", "float"):
            kinds[name] = "numeric"
        elif col_type == "boolean":
            kinds[name] = "boolean"
        elif col_type in ("date", "timestamp"):
            kinds[name] = "datetime"
        else:
            kinds[name] = "categorical"
    return kinds


class FeatureFrame(TransformerMixin, BaseEstimator):
    """First step of every saved model: select the feature columns and give each one
    dtype, whatever the caller's frame used (pandas nullable types, Arrow strings, int vs
    float, bools with missing values). Numeric kinds become float64 with NaN for missing;
    categorical ones become Python strings in an object column with NaN for missing."""

    def __init__(self, kinds: dict[str, Kind] | None = None) -> None:
        self.kinds = kinds

    def fit(self, frame: pd.DataFrame, y: Any = None) -> FeatureFrame:
        self.transform(frame)
        self.feature_names_in_ = np.array(list(self.kinds or {}), dtype=object)
        return self

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        kinds = self.kinds or {}
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(
                f"the model expects a pandas DataFrame of features, got {type(frame).__name__}"
            )
        missing = [c for c in kinds if c not in frame.columns]
        if missing:
            raise ValueError(f"input is missing feature columns {missing}")
        out = {name: _coerce(frame[name], kind) for name, kind in kinds.items()}
        return pd.DataFrame(out, index=frame.index)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.array(list(self.kinds or {}), dtype=object)


def _coerce(values: pd.Series, kind: Kind) -> pd.Series:
    if kind == "categorical":
        present = values.notna().to_numpy()
        out = np.full(len(values), np.nan, dtype=object)
        out[present] = values[present].astype(str).to_numpy(dtype=object)
        return pd.Series(out, index=values.index, dtype=object)
    if kind == "datetime":
        stamps = pd.to_datetime(values, errors="coerce", utc=True)
        days = (stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(days=1)
        return days.astype("float64")
    if kind == "boolean" and (values.dtype == object or isinstance(values.dtype, pd.StringDtype)):
        mapped = values.map(_to_bool_number)
        return pd.to_numeric(mapped, errors="coerce").astype("float64")
    numbers = pd.to_numeric(values, errors="coerce")
    return pd.Series(
        numbers.to_numpy(dtype="float64", na_value=np.nan), index=values.index, dtype="float64"
    )


def _to_bool_number(value: Any) -> float:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return math.nan
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "t", "yes", "y", "1"):
            return 1.0
        if text in ("false", "f", "no", "n", "0"):
            return 0.0
        return math.nan
    return float(bool(value))


def build_preprocessor(kinds: dict[str, Kind], model_type: str) -> Any:
    """An unfitted sklearn Pipeline: FeatureFrame, then a ColumnTransformer whose output
    puts numeric-like columns first and categorical ones after them."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    numeric = [c for c, k in kinds.items() if k != "categorical"]
    categorical = [c for c, k in kinds.items() if k == "categorical"]
    steps: list[tuple[str, Any, list[str]]] = []
    if model_type == "mlp":
        if numeric:
            steps.append((
                "numeric",
                Pipeline([
                    ("impute", SimpleImputer(strategy="median", add_indicator=True)),
                    ("scale", StandardScaler()),
                ]),
                numeric,
            ))  # fmt: skip
        if categorical:
            steps.append((
                "categorical",
                Pipeline([
                    ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
                    ("one_hot", OneHotEncoder(
                        handle_unknown="infrequent_if_exist",
                        max_categories=ONE_HOT_MAX_LEVELS,
                        sparse_output=False,
                        dtype=np.float32,
                    )),
                ]),
                categorical,
            ))  # fmt: skip
    elif model_type == "hist_gradient_boosting":
        if numeric:
            steps.append(("numeric", "passthrough", numeric))
        if categorical:
            steps.append((
                "categorical",
                OrdinalEncoder(
                    handle_unknown="use_encoded_value",
                    unknown_value=np.nan,
                    encoded_missing_value=np.nan,
                    max_categories=ORDINAL_MAX_LEVELS,
                ),
                categorical,
            ))  # fmt: skip
    else:
        raise ValueError(f"unknown model type {model_type!r}")
    if not steps:
        raise ValueError("the dataset config has no feature columns to train on")
    columns = ColumnTransformer(steps, remainder="drop", sparse_threshold=0.0)
    return Pipeline([("features", FeatureFrame(kinds)), ("columns", columns)])


# --- PyTorch MLP ------------------------------------------------------------------------


def _mlp_module(n_inputs: int, hidden_sizes: list[int], dropout: float) -> Any:
    import torch.nn as nn

    layers: list[Any] = []
    width = n_inputs
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
        width = size
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without one fails."""
    import torch

    if requested == "cpu":
        return "cpu"
    available = torch.cuda.is_available()
    if requested == "cuda" and not available:
        raise RuntimeError(
            "training.device is 'cuda' but torch sees no CUDA device in this container"
        )
    return "cuda" if available else "cpu"


@dataclass
class EpochReport:
    epoch: int
    metrics: dict[str, float]


@dataclass
class MlpFit:
    weights: dict[str, np.ndarray]
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    train_seconds: float
    rows_seen: int
    history: list[EpochReport] = field(default_factory=list)
    # Most training rows held in host memory at once (the matrix, or the shuffle buffer).
    peak_rows: int = 0

    @property
    def rows_per_second(self) -> float:
        return self.rows_seen / self.train_seconds if self.train_seconds > 0 else float("nan")


def fit_mlp(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    *,
    hp: MlpHyperparameters,
    task: Task,
    class_weight: str,
    seed: int,
    device: str,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> MlpFit:
    """Train the MLP on in-memory arrays with AdamW and early stopping on the validation
    loss; returns the best epoch's weights (on the CPU). Deterministic on the CPU for a
    given seed: seeded initialisation, dropout and batch order, deterministic algorithms
    only. On CUDA it uses mixed precision: bfloat16 autocast where the GPU supports it (no
    loss scaling, so no host sync per step), else float16 with a GradScaler; and a fused
    AdamW; the training matrix lives on the GPU when it fits in half its free memory, else
    in pinned host memory. For regression ``y`` must already be standardised.

    :func:`fit_mlp_stream` is the same training loop fed chunk by chunk instead."""
    import torch

    positives = float(y_train.sum()) if task == "classification" else 0.0
    dev = torch.device(device)
    use_amp = device == "cuda"
    xt = torch.as_tensor(x_train, dtype=torch.float32)
    yt = torch.as_tensor(y_train, dtype=torch.float32)
    # On a GPU the training matrix moves over once when it fits in half the free memory:
    # batches are then gathered on the device instead of copied from the host per step.
    resident = use_amp and (xt.nbytes + yt.nbytes) < torch.cuda.mem_get_info(dev)[0] // 2
    if resident:
        xt, yt = xt.to(dev), yt.to(dev)
    elif use_amp:
        xt, yt = xt.pin_memory(), yt.pin_memory()

    def batches(order: Any) -> Iterator[tuple[Any, Any]]:
        permutation = torch.randperm(len(xt), generator=order)
        if resident:
            permutation = permutation.to(dev)
        for idx in permutation.split(hp.batch_size):
            yield xt[idx].to(dev, non_blocking=use_amp), yt[idx].to(dev, non_blocking=use_amp)

    return _train_loop(
        batches,
        n_inputs=x_train.shape[1],
        x_valid=x_valid,
        y_valid=y_valid,
        pos_weight=_pos_weight(class_weight, len(y_train), positives),
        hp=hp,
        task=task,
        seed=seed,
        device=device,
        on_epoch=on_epoch,
        peak_rows=len(x_train),
    )


def fit_mlp_stream(
    chunks: Callable[[int], Iterator[tuple[np.ndarray, np.ndarray]]],
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    *,
    n_inputs: int,
    rows: int,
    positives: float,
    buffer_rows: int,
    hp: MlpHyperparameters,
    task: Task,
    class_weight: str,
    seed: int,
    device: str,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> MlpFit:
    """:func:`fit_mlp` for training data that does not fit in memory.

    ``chunks(epoch)`` yields the epoch's training rows as preprocessed ``(x, y)`` float32
    chunks (``y`` standardised for regression), already in the epoch's (seeded) chunk
    order; ``rows`` and ``positives`` are the labelled rows and positive labels of the
    whole split (for the class weight, which must not come from a sample). Rows are
    shuffled within a buffer: chunks accumulate until it holds at least ``buffer_rows``
    rows, then the buffer is permuted and cut into mini-batches; rows short of a whole
    batch stay for the next fill. The buffer never holds more than ``buffer_rows`` plus one
    chunk (``MlpFit.peak_rows`` records the most it held). On CUDA each filled buffer
    moves to the GPU once and batches are gathered there. Deterministic on the CPU for a
    given seed and chunk order."""
    import torch

    dev = torch.device(device)
    buffer_rows = max(int(buffer_rows), int(hp.batch_size))
    peak = [0]

    def on_device(x: np.ndarray, y: np.ndarray) -> Iterator[tuple[Any, Any]]:
        xt, yt = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)
        for start in range(0, len(xt), hp.batch_size):
            yield xt[start : start + hp.batch_size], yt[start : start + hp.batch_size]

    def batches(order: Any, epoch: int) -> Iterator[tuple[Any, Any]]:
        held_x: list[np.ndarray] = []
        held_y: list[np.ndarray] = []
        held = 0
        for x, y in chunks(epoch):
            if not len(x):
                continue
            held_x.append(np.asarray(x, dtype=np.float32))
            held_y.append(np.asarray(y, dtype=np.float32))
            held += len(x)
            peak[0] = max(peak[0], held)
            if held < buffer_rows:
                continue
            permutation = torch.randperm(held, generator=order).numpy()
            bx, by = np.concatenate(held_x)[permutation], np.concatenate(held_y)[permutation]
            whole = held - held % hp.batch_size
            yield from on_device(bx[:whole], by[:whole])
            held_x, held_y, held = [bx[whole:]], [by[whole:]], held - whole
        if held:
            permutation = torch.randperm(held, generator=order).numpy()
            yield from on_device(
                np.concatenate(held_x)[permutation], np.concatenate(held_y)[permutation]
            )

    fit = _train_loop(
        batches,
        n_inputs=n_inputs,
        x_valid=x_valid,
        y_valid=y_valid,
        pos_weight=_pos_weight(class_weight, rows, positives),
        hp=hp,
        task=task,
        seed=seed,
        device=device,
        on_epoch=on_epoch,
        peak_rows=0,
        pass_epoch=True,
    )
    fit.peak_rows = peak[0]
    return fit


def _pos_weight(class_weight: str, rows: int, positives: float) -> float | None:
    """``balanced``: negatives / positives, so both classes weigh the same in the loss
    (None for regression, where ``positives`` is 0)."""
    if class_weight == "balanced" and 0 < positives < rows:
        return (rows - positives) / positives
    return None


def _train_loop(
    batches: Callable[..., Iterator[tuple[Any, Any]]],
    *,
    n_inputs: int,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    pos_weight: float | None,
    hp: MlpHyperparameters,
    task: Task,
    seed: int,
    device: str,
    on_epoch: Callable[[EpochReport], None] | None,
    peak_rows: int,
    pass_epoch: bool = False,
) -> MlpFit:
    """The epoch loop both fits share: ``batches(generator[, epoch])`` yields one epoch's
    mini-batches as tensors on the device, shuffled with the seeded ``generator``."""
    import torch

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=device == "cuda")
    use_amp = device == "cuda"
    dev = torch.device(device)
    model = _mlp_module(n_inputs, hp.hidden_sizes, hp.dropout).to(dev)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, fused=use_amp
    )
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    if task == "classification":
        weight = None if pos_weight is None else torch.tensor(pos_weight, device=dev)
        loss_fn: Any = torch.nn.BCEWithLogitsLoss(pos_weight=weight)
    else:
        loss_fn = torch.nn.MSELoss()

    xv = torch.as_tensor(x_valid, dtype=torch.float32).to(dev)
    yv = torch.as_tensor(y_valid, dtype=torch.float32).to(dev)
    order = torch.Generator().manual_seed(seed)

    best_loss, best_epoch, wait = math.inf, 0, 0
    best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    history: list[EpochReport] = []
    train_seconds, rows_seen, epoch, stopped = 0.0, 0, 0, False
    for epoch in range(1, hp.max_epochs + 1):
        model.train()
        started = time.perf_counter()
        total, count = torch.zeros((), dtype=torch.float64, device=dev), 0
        for xb, yb in batches(order, epoch) if pass_epoch else batches(order):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=dev.type, dtype=amp_dtype, enabled=use_amp):
                loss = loss_fn(model(xb).squeeze(-1), yb)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += loss.detach().double() * len(yb)  # summed on the device: no sync per step
            count += len(yb)
        if use_amp:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        train_seconds += elapsed
        rows_seen += count

        valid_out = _forward(model, xv, use_amp, amp_dtype)
        valid_loss = float(loss_fn(valid_out, yv))
        metrics = {"train_loss": float(total) / max(count, 1), "valid_loss": valid_loss}
        if task == "classification":
            metrics["valid_roc_auc"] = _safe_auc(y_valid, torch.sigmoid(valid_out).cpu().numpy())
        metrics["epoch_rows_per_second"] = count / elapsed if elapsed > 0 else float("nan")
        report = EpochReport(epoch, metrics)
        history.append(report)
        if on_epoch is not None:
            on_epoch(report)

        if not math.isfinite(valid_loss):
            raise FloatingPointError(
                f"validation loss became {valid_loss} at epoch {epoch}; lower training.mlp.lr"
            )
        if valid_loss < best_loss - 1e-7:
            best_loss, best_epoch, wait = valid_loss, epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            wait += 1
            if wait >= hp.patience:
                stopped = True
                break

    return MlpFit(
        weights={k: v.numpy() for k, v in best_state.items()},
        best_epoch=best_epoch,
        epochs_run=epoch,
        stopped_early=stopped,
        train_seconds=train_seconds,
        rows_seen=rows_seen,
        history=history,
        peak_rows=peak_rows,
    )


def _forward(model: Any, x: Any, use_amp: bool, amp_dtype: Any) -> Any:
    import torch

    model.eval()
    outs = []
    with torch.no_grad():
        for chunk in x.split(SCORE_BATCH_ROWS):
            with torch.autocast(device_type=chunk.device.type, dtype=amp_dtype, enabled=use_amp):
                outs.append(model(chunk).squeeze(-1).float())
    return torch.cat(outs) if outs else torch.zeros(0, device=x.device)


def _safe_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y_true)) < 2:
        return float("nan")
    return float(roc_auc_score(y_true, scores))


# --- HistGradientBoosting ----------------------------------------------------------------


def build_hist_gradient_boosting(
    hp: HistGradientBoostingHyperparameters,
    *,
    task: Task,
    class_weight: str,
    seed: int,
    categorical_indices: list[int],
    verbose: int = 0,
) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    common: dict[str, Any] = dict(
        max_iter=hp.max_iter,
        learning_rate=hp.learning_rate,
        max_leaf_nodes=hp.max_leaf_nodes,
        max_depth=hp.max_depth,
        min_samples_leaf=hp.min_samples_leaf,
        l2_regularization=hp.l2_regularization,
        early_stopping=hp.early_stopping,
        n_iter_no_change=hp.n_iter_no_change,
        categorical_features=categorical_indices or None,
        random_state=seed,
        verbose=verbose,
    )
    if task == "classification":
        return HistGradientBoostingClassifier(
            class_weight="balanced" if class_weight == "balanced" else None, **common
        )
    return HistGradientBoostingRegressor(**common)


# --- The saved model -----------------------------------------------------------------------


class TabularModel:
    """Fitted preprocessing + estimator, with the output contract of this module.

    ``kind`` is ``mlp`` (``network`` holds the layer sizes and CPU weights as numpy arrays)
    or ``hist_gradient_boosting`` (``estimator`` is the fitted sklearn model)."""

    def __init__(
        self,
        *,
        kind: str,
        task: Task,
        preprocessor: Any,
        estimator: Any = None,
        network: dict[str, Any] | None = None,
        target_mean: float = 0.0,
        target_std: float = 1.0,
    ) -> None:
        self.kind = kind
        self.task = task
        self.preprocessor = preprocessor
        self.estimator = estimator
        self.network = network
        self.target_mean = target_mean
        self.target_std = target_std
        self._module: Any = None

    @classmethod
    def from_mlp_fit(
        cls,
        fit: MlpFit,
        *,
        hp: MlpHyperparameters,
        n_inputs: int,
        task: Task,
        preprocessor: Any,
        target_mean: float = 0.0,
        target_std: float = 1.0,
    ) -> TabularModel:
        """The saved model of a fitted MLP: its best weights (on the CPU) and layer sizes."""
        network = {
            "n_inputs": int(n_inputs),
            "hidden_sizes": list(hp.hidden_sizes),
            "dropout": hp.dropout,
            "weights": fit.weights,
        }
        return cls(
            kind="mlp",
            task=task,
            preprocessor=preprocessor,
            network=network,
            target_mean=target_mean,
            target_std=target_std,
        )

    @property
    def feature_columns(self) -> list[str]:
        return list(self.preprocessor.named_steps["features"].kinds)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        x = self.preprocessor.transform(frame)
        if self.kind == "hist_gradient_boosting":
            if self.task == "classification":
                return np.asarray(self.estimator.predict_proba(x)[:, 1], dtype="float64")
            return np.asarray(self.estimator.predict(x), dtype="float64")
        import torch

        module = self._torch_module()
        with torch.no_grad():
            outs = [
                module(chunk).squeeze(-1)
                for chunk in torch.as_tensor(np.asarray(x, dtype=np.float32)).split(
                    SCORE_BATCH_ROWS
                )
            ]
        raw = torch.cat(outs) if outs else torch.zeros(0)
        if self.task == "classification":
            return torch.sigmoid(raw).numpy().astype("float64")
        return raw.numpy().astype("float64") * self.target_std + self.target_mean

    def _torch_module(self) -> Any:
        if self._module is None:
            import torch

            assert self.network is not None
            module = _mlp_module(
                self.network["n_inputs"], self.network["hidden_sizes"], self.network["dropout"]
            )
            module.load_state_dict(
                {k: torch.from_numpy(np.array(v)) for k, v in self.network["weights"].items()}
            )
            module.eval()
            self._module = module
        return self._module

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_module"] = None
        return state


class TabularPyfuncModel(PythonModel):
    """MLflow pyfunc wrapper: ``predict`` follows the output contract of this module."""

    # The logged model carries an explicit signature (inputs enforced by MLflow), so
    # MLflow's type-hint based validation of predict() is switched off on purpose.
    _skip_type_hint_validation = True

    def __init__(self, model: TabularModel) -> None:
        self.model = model

    def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
        return self.model.predict(model_input)


def input_schema(config: DatasetConfig) -> Any:
    """MLflow input schema over the raw feature columns, as a snapshot delivers them:
    float -> ``double``; integer -> ``long``; boolean -> ``boolean``; string/category ->
    ``string``; date/timestamp -> ``datetime``. A nullable integer or boolean column arrives
    as float64/object when it has missing values, so it is declared ``Any`` (MLflow checks
    presence only; the model's FeatureFrame step coerces it). Every feature is required."""
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType

    specs: list[Any] = []
    for name in config.feature_columns:
        column = config.column(name)
        col_type = column.type.value
        declared: Any
        if col_type in ("integer", "boolean"):
            declared = (
                ("long" if col_type == "integer" else "boolean")
                if not column.nullable
                else AnyType()
            )
        elif col_type == "float":
            declared = "double"
        elif col_type in ("date", "timestamp"):
            declared = "datetime"
        else:
            declared = "string"
        specs.append(ColSpec(declared, name))
    return Schema(specs)


def input_example(frame: pd.DataFrame, kinds: dict[str, Kind], rows: int = 5) -> pd.DataFrame:
    """A few raw training rows (categories as Python strings or None)."""
    head = frame.head(rows)
    out: dict[str, Any] = {}
    for name, kind in kinds.items():
        col = head[name]
        if kind == "categorical":
            out[name] = col.astype(object).where(col.notna(), None)
        else:
            out[name] = col
    return pd.DataFrame(out).reset_index(drop=True)

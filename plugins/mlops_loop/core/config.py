"""Typed dataset configuration: one YAML file per dataset under include/config/.

A config describes a tabular dataset completely enough that every stage runs on it
without code changes: where batches land, how to read them, the schema, the label,
the id and timestamp columns, where outputs go and the quality thresholds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlops_loop import QUEUE_PATTERN
from mlops_loop.exceptions import ConfigError

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
# Replaces every config's storage.root with $MLOPS_LOOP_STORAGE_ROOT/<dataset name>, so one
# environment (demo, tests, a staging deployment) can redirect all outputs at once.
STORAGE_ROOT_ENV = "MLOPS_LOOP_STORAGE_ROOT"


def join_root(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnType(str, Enum):
    """Logical column types; each maps to one Arrow type in snapshots."""

    INTEGER = "integer"
    FLOAT = "float"
    STRING = "string"
    CATEGORY = "category"
    BOOLEAN = "boolean"
    DATE = "date"
    TIMESTAMP = "timestamp"

    @property
    def is_numeric(self) -> bool:
        return self in (ColumnType.INTEGER, ColumnType.FLOAT)


class ColumnSpec(_Strict):
    name: str = Field(min_length=1)
    type: ColumnType
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    allowed: list[str | int | bool] | None = Field(
        default=None, description="Allowed values (categories); anything else fails the gate."
    )
    max_null_fraction: float | None = Field(default=None, ge=0.0, le=1.0)
    description: str = ""

    @model_validator(mode="after")
    def _check_bounds(self) -> ColumnSpec:
        if (self.min is not None or self.max is not None) and not (
            self.type.is_numeric or self.type in (ColumnType.DATE, ColumnType.TIMESTAMP)
        ):
            raise ValueError(f"min/max only apply to numeric columns, not {self.type.value}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.allowed is not None and len(self.allowed) == 0:
            raise ValueError("allowed must list at least one value (or be left out)")
        if not self.nullable and self.max_null_fraction not in (None, 0.0):
            raise ValueError("a column that is not nullable cannot have max_null_fraction > 0")
        return self


class S3Settings(_Strict):
    """How to reach an S3-compatible endpoint. Credentials never live here: they come from
    an Airflow Connection (``aws_conn_id``) or, with an explicit ``endpoint_url`` or
    ``use_default_credentials``, the standard AWS credential chain. S3 with none of the
    three is refused (see :meth:`S3Settings.unconfigured_problem`)."""

    endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint, e.g. http://127.0.0.1:9000."
    )
    region_name: str | None = None
    aws_conn_id: str | None = Field(
        default=None,
        description="Airflow Connection with login=access key, password=secret and "
        "optionally endpoint_url / region_name in its extra.",
    )
    use_default_credentials: bool = Field(
        default=False,
        description="Allow S3 without aws_conn_id and endpoint_url: whatever credentials the "
        "worker's default AWS chain finds (environment, shared config, instance profile), "
        "against the public AWS endpoint.",
    )
    max_attempts: int = Field(default=5, ge=1, le=20)

    @property
    def explicit(self) -> bool:
        """An endpoint or a connection is named, or the default chain is chosen on purpose."""
        return bool(self.endpoint_url or self.aws_conn_id or self.use_default_credentials)

    def unconfigured_problem(self, uri: str, key: str) -> str | None:
        """Why ``uri`` (the value of config key ``key``) cannot be reached with these
        settings, or None. S3 without an endpoint or connection would silently use any AWS
        credentials the worker has, against the public endpoint, so it must be chosen."""
        if not uri.startswith("s3://") or self.explicit:
            return None
        return (
            f"{key} {uri!r} is on S3 but neither storage.s3.aws_conn_id nor "
            "storage.s3.endpoint_url is set: name the Airflow Connection that holds the keys "
            "(and the endpoint in its extra) in storage.s3.aws_conn_id, or set "
            "storage.s3.endpoint_url; to use the worker's default AWS credentials against "
            "the public AWS endpoint, set storage.s3.use_default_credentials: true"
        )


class StorageSettings(_Strict):
    root: str = Field(
        description="Root URI for this dataset's outputs: s3://bucket/prefix or a local path."
    )
    s3: S3Settings = S3Settings()

    @model_validator(mode="after")
    def _s3_is_configured(self) -> StorageSettings:
        problem = self.s3.unconfigured_problem(self.root, "storage.root")
        if problem:
            raise ValueError(problem)
        return self


class CsvOptions(_Strict):
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    encoding: str = "utf-8"
    quote_char: str = Field(default='"', min_length=1, max_length=1)
    null_values: list[str] = ["", "NA", "N/A", "null", "NULL", "NaN", "nan", "None"]

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError as exc:
            raise ValueError(f"unknown text encoding {value!r}") from exc
        return value


class SourceSettings(_Strict):
    uri: str = Field(
        default="{root}/raw/ds={ds}/",
        description="Where the batch for a logical date lands; {root} and {ds} are filled in.",
    )
    format: Literal["csv", "parquet"] = "csv"
    csv: CsvOptions = CsvOptions()
    on_missing: Literal["fail", "skip"] = Field(
        default="skip",
        description="No batch for the date once wait_timeout_minutes have passed: skip "
        "(the run's tasks are skipped and the run ends without a failure) or fail "
        "(the run fails, naming the files it looked for).",
    )
    wait_timeout_minutes: float = Field(
        default=360.0,
        ge=0.0,
        le=7 * 24 * 60,
        description="How long a scheduled ingest run waits for its batch to land; 0: look "
        "once. A run triggered with an explicit date never waits.",
    )
    poke_interval_seconds: float = Field(
        default=300.0,
        ge=1.0,
        le=24 * 60 * 60,
        description="Pause between two looks while waiting; the wait frees its worker slot "
        "in between.",
    )

    @field_validator("uri")
    @classmethod
    def _has_ds(cls, value: str) -> str:
        if "{ds}" not in value:
            raise ValueError("must contain {ds} so each logical date reads its own batch")
        return value


class QualitySettings(_Strict):
    suite: str | None = Field(
        default=None,
        description="Great Expectations suite JSON, relative to the config file. "
        "Left out: a suite is derived from the schema below at run time.",
    )
    min_rows: int = Field(default=1, ge=0)
    max_rows: int | None = Field(default=None, ge=1)
    default_max_null_fraction: float = Field(default=0.2, ge=0.0, le=1.0)
    chunk_rows: int = Field(
        default=500_000,
        ge=10_000,
        description="A snapshot with more rows is validated in chunks of about this many rows, "
        "read one row group at a time, so the gate's memory follows this setting rather than "
        "the batch: per-row checks add up exactly, aggregates (mean, median, uniqueness, row "
        "count) are computed over the whole batch (see core/quality.py).",
    )

    @model_validator(mode="after")
    def _rows(self) -> QualitySettings:
        if self.max_rows is not None and self.max_rows < self.min_rows:
            raise ValueError(f"max_rows ({self.max_rows}) is below min_rows ({self.min_rows})")
        return self


class ChunkSettings(_Strict):
    rows_per_chunk: int = Field(default=250_000, ge=1_000)


class DatasetConfig(_Strict):
    """One dataset, everything the pipeline needs to know about it."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    schedule: str | None = Field(default="@daily", description="Cron or preset for ingestion.")
    storage: StorageSettings
    source: SourceSettings = SourceSettings()
    columns: list[ColumnSpec] = Field(min_length=1)
    target: str
    task: Literal["classification", "regression"] = Field(
        default="classification",
        description="classification: a binary target (0/1, false/true, or two text labels "
        "with positive_label); regression: a numeric target. Multiclass is not supported.",
    )
    positive_label: str | int | float | bool | None = Field(
        default=None,
        description="classification: the label that means positive (1.0 to the model). "
        "Required for text labels; defaults to 1 (numbers) or true (booleans).",
    )
    id_column: str | None = None
    timestamp_column: str | None = None
    quality: QualitySettings = QualitySettings()
    ingest: ChunkSettings = ChunkSettings()
    # Stage sections are typed (TrainingSettings, EvaluationSettings, DriftSettings, below)
    # so a bad value fails when the config loads, before any task runs.
    training: TrainingSettings = Field(default_factory=lambda: TrainingSettings())
    evaluation: EvaluationSettings = Field(default_factory=lambda: EvaluationSettings())
    drift: DriftSettings = Field(default_factory=lambda: DriftSettings())
    compute_queue: str | None = Field(
        default=None,
        # Routing, not part of what is trained: left out of config_hash, so moving the
        # work to another queue does not count as a new config.
        exclude=True,
        description="Celery queue of the tasks that load models: training, evaluation and "
        "drift scoring (a GPU worker started with `--queues <name>` takes them). Every "
        "other task, and all of them when left out, goes to Airflow's default queue.",
    )

    # Set by load_config: where the file lives, to resolve relative paths.
    config_dir: str = Field(default=".", exclude=True)

    @field_validator("compute_queue")
    @classmethod
    def _queue_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(QUEUE_PATTERN, value):
            raise ValueError(
                f"{value!r} is not a Celery queue name: letters, digits, '_', '.' and '-' "
                "(at most 100, no spaces or commas), e.g. gpu; left out: the default queue"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, data: Any) -> Any:
        """Refuse multiclass by name; a regression config's decision metric defaults to rmse."""
        if not isinstance(data, Mapping):
            return data
        task = data.get("task", "classification")
        if isinstance(task, str) and task.strip().lower().replace("-", "").replace("_", "") in (
            "multiclass", "multiclassclassification", "multinomial",
        ):  # fmt: skip
            raise ValueError(
                f"task: {task!r} is not supported: the pipeline trains binary classifiers and "
                "regressors. Map the target to two labels (one class against the rest: "
                "positive_label) before landing, or use task: regression for an ordered score"
            )
        evaluation = data.get("evaluation")
        if task == "regression" and (evaluation is None or isinstance(evaluation, Mapping)):
            evaluation = dict(evaluation or {})
            evaluation.setdefault("primary_metric", "rmse")
            data = {**data, "evaluation": evaluation}
        return data

    @model_validator(mode="after")
    def _check_columns(self) -> DatasetConfig:
        names = [c.name for c in self.columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"columns: duplicate column names {dupes}")
        for key in ("target", "id_column", "timestamp_column"):
            value = getattr(self, key)
            if value is not None and value not in names:
                raise ValueError(f"{key}: {value!r} is not one of the columns {names}")
        if self.timestamp_column is not None:
            ts_type = self.column(self.timestamp_column).type
            if ts_type not in (ColumnType.DATE, ColumnType.TIMESTAMP):
                raise ValueError(
                    f"timestamp_column: {self.timestamp_column!r} has type {ts_type.value}, "
                    "expected date or timestamp"
                )
        self._check_target()
        try:
            self.evaluation.check_against(self.task, names)
        except ValueError as exc:
            raise ValueError(f"evaluation: {exc}") from exc
        decay = self.drift.decay_metric
        if decay is not None and self.task not in EVALUATION_METRICS.get(decay, ((),))[0]:
            raise ValueError(f"drift.decay_metric: {decay!r} does not apply to a {self.task} task")
        return self

    def _check_target(self) -> None:
        target_type = self.column(self.target).type
        label = self.positive_label
        if self.task == "regression":
            if not target_type.is_numeric:
                raise ValueError(
                    f"target: a regression target must be an integer or float column; "
                    f"{self.target!r} is {target_type.value}"
                )
            if label is not None:
                raise ValueError(
                    "positive_label: applies to classification only, not to task regression"
                )
            return
        if target_type in (ColumnType.DATE, ColumnType.TIMESTAMP):
            raise ValueError(
                f"target: {self.target!r} is a {target_type.value} column, not a label"
            )
        if target_type in (ColumnType.STRING, ColumnType.CATEGORY):
            if label is None:
                raise ValueError(
                    f"positive_label: required when the classification target {self.target!r} "
                    f"holds text labels ({target_type.value}); set it to the label that means "
                    "positive, e.g. positive_label: 'yes'"
                )
            if isinstance(label, bool):
                raise ValueError(
                    f"positive_label: read as the boolean {label} but {self.target!r} holds text; "
                    "YAML reads unquoted yes/no/on/off/true/false as booleans, so quote it "
                    "(positive_label: 'yes')"
                )
        elif target_type is ColumnType.BOOLEAN:
            if label is not None and not isinstance(label, bool):
                raise ValueError(
                    f"positive_label: {self.target!r} is boolean, so use true or false, not {label!r}"
                )
        elif target_type.is_numeric and label is not None:
            if isinstance(label, (bool, str)):
                raise ValueError(
                    f"positive_label: {self.target!r} is {target_type.value}, so give a number, not {label!r}"
                )
            if target_type is ColumnType.INTEGER and float(label) != int(label):
                raise ValueError(
                    f"positive_label: {label!r} is not an integer like the target {self.target!r}"
                )

    def column(self, name: str) -> ColumnSpec:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def feature_columns(self) -> list[str]:
        skip = {self.target, self.id_column, self.timestamp_column}
        return [c.name for c in self.columns if c.name not in skip]

    @property
    def root(self) -> str:
        return resolve_uri(self.storage.root, self.config_dir)

    def source_uri(self, ds: str) -> str:
        check_ds(ds)
        return resolve_uri(
            self.source.uri.format(root=self.root.rstrip("/"), ds=ds), self.config_dir
        )

    def resolve_path(self, path: str) -> str:
        return resolve_uri(path, self.config_dir)

    def config_hash(self) -> str:
        """sha256 of the validated config, stable across key order and formatting."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()


def check_ds(ds: str) -> str:
    """Validate a logical date string (YYYY-MM-DD); partitions are named by it."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", ds):
        raise ValueError(f"logical date must look like YYYY-MM-DD, got {ds!r}")
    return ds


def given(value: Any) -> bool:
    """An optional setting is set: not None, not empty and not the text "None" (what an
    empty form field renders to without native rendering)."""
    return value is not None and str(value).strip() not in ("", "None")


def parse_flag(value: Any, name: str) -> bool:
    """A yes/no setting as a bool: a bool, or its text from a rendered template or a form
    (true/false, 1/0, yes/no; empty and None are false)."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", "", "none"):
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


def run_time(context: Mapping[str, Any]) -> datetime:
    """The time a run is for: data interval end, else logical date, else ``run_after``
    (a manual run triggered without a logical date has only that). ``context`` is an
    Airflow task context or any mapping with those keys."""
    value = _context_time(context, ("data_interval_end", "logical_date"))
    if value is None:
        raise ValueError("the run has no data interval, logical date or run_after")
    return value


def run_ds(context: Mapping[str, Any], explicit: Any = None) -> str:
    """The date ``YYYY-MM-DD`` a task works on: ``explicit`` (a form's date) when given,
    else the run's logical date, else the day it runs for (``run_after``).

    ``explicit`` may be None, ``""`` or ``"None"`` (an empty Param rendered as text)."""
    if given(explicit):
        return check_ds(str(explicit).strip())
    value = _context_time(context, ("logical_date",))
    if value is None:
        raise ValueError("no date given and the run has neither a logical date nor run_after")
    return value.date().isoformat()


def _context_time(context: Mapping[str, Any], keys: tuple[str, ...]) -> datetime | None:
    """The first of ``keys`` that holds a datetime in ``context``, else the run's
    ``run_after``, else None."""
    for key in keys:
        value = context.get(key)
        if isinstance(value, datetime):
            return value
    dag_run = context.get("dag_run")
    value = getattr(dag_run, "run_after", None) if dag_run is not None else None
    return value if isinstance(value, datetime) else None


def resolve_uri(uri: str, base_dir: str) -> str:
    """Absolute local path or unchanged remote URI; relative local paths resolve from
    ``base_dir`` (the config file's folder)."""
    if "://" in uri:
        if uri.startswith("file://"):
            return uri[len("file://") :]
        return uri
    path = Path(uri).expanduser()
    if not path.is_absolute():
        path = Path(base_dir) / path
    return str(path.resolve())


def validation_problems(exc: ValidationError) -> list[str]:
    """Each error of ``exc`` as ``loc: message`` (the dotted key, "(top level)" for the
    model itself; a validator's message without pydantic's "Value error, ")."""
    return [
        f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: "
        f"{err['msg'].removeprefix('Value error, ')}"
        for err in exc.errors()
    ]


def _format_validation_error(path: Path, exc: ValidationError) -> str:
    return "\n".join(
        [f"invalid dataset config {path}:", *(f"  {p}" for p in validation_problems(exc))]
    )


def load_config(path: str | Path, *, overrides: dict[str, Any] | None = None) -> DatasetConfig:
    """Read and validate a dataset config; relative paths in it resolve from its folder.

    ``overrides`` are merged over the top-level keys (for example ``storage`` in tests);
    otherwise ``$MLOPS_LOOP_STORAGE_ROOT`` (when set) redirects ``storage.root``.
    Raises ConfigError naming the file, the key and the problem.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"dataset config {path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"dataset config {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(
            f"dataset config {path} must be a mapping of keys, got {type(raw).__name__}"
        )
    raw.update(overrides or {})
    env_root = os.environ.get(STORAGE_ROOT_ENV)
    if env_root and not (overrides and "storage" in overrides):
        storage = dict(raw.get("storage") or {})
        storage["root"] = join_root(env_root, str(raw.get("name", "")))
        raw["storage"] = storage
    raw["config_dir"] = str(path.resolve().parent)
    try:
        return DatasetConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(path, exc)) from exc


# --- Training settings (the `training:` section) --------------------------------------
# Validated here, on the Airflow side, so a bad model type or hyperparameter fails when
# the config loads or when a task resolves its overrides: before any container starts.

ModelType = Literal["mlp", "hist_gradient_boosting"]
MODEL_TYPES: tuple[str, ...] = ("mlp", "hist_gradient_boosting")


class MlpHyperparameters(_Strict):
    """PyTorch tabular MLP: Linear -> ReLU -> Dropout per hidden layer, one output unit."""

    hidden_sizes: list[int] = Field(default=[64, 32], min_length=1, max_length=8)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    lr: float = Field(default=1e-3, gt=0.0, le=1.0, description="AdamW learning rate.")
    weight_decay: float = Field(default=1e-4, ge=0.0, le=1.0)
    batch_size: int = Field(default=256, ge=8, le=65_536)
    max_epochs: int = Field(default=30, ge=1, le=1_000)
    patience: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Epochs without a better validation loss before stopping.",
    )

    @field_validator("hidden_sizes")
    @classmethod
    def _layer_widths(cls, value: list[int]) -> list[int]:
        bad = [w for w in value if not 1 <= w <= 4_096]
        if bad:
            raise ValueError(f"every hidden layer width must be between 1 and 4096, got {bad}")
        return value


class HistGradientBoostingHyperparameters(_Strict):
    """scikit-learn HistGradientBoosting{Classifier,Regressor}; early stopping uses the
    validation snapshot."""

    max_iter: int = Field(default=200, ge=1, le=10_000)
    learning_rate: float = Field(default=0.1, gt=0.0, le=1.0)
    max_leaf_nodes: int = Field(default=31, ge=2, le=4_096)
    max_depth: int | None = Field(default=None, ge=1, le=64)
    min_samples_leaf: int = Field(default=20, ge=1, le=100_000)
    l2_regularization: float = Field(default=0.0, ge=0.0, le=1_000.0)
    early_stopping: bool = True
    n_iter_no_change: int = Field(default=10, ge=1, le=1_000)


class TrainingWindow(_Strict):
    """Which validated data a training run uses (see core.training_set): the snapshots of
    the last ``window_days`` up to the run's date; the most recent ``holdout_days`` of them
    are the holdout, and the older data is split by time into train and validation."""

    window_days: int = Field(default=30, ge=1, le=3660)
    holdout_days: int = Field(default=1, ge=1, le=366)
    valid_fraction: float = Field(default=0.2, gt=0.0, lt=0.9)
    min_rows_per_split: int = Field(default=50, ge=1)


class TrainingSettings(_Strict):
    """How a dataset's model is trained. ``registered_model_name`` and ``experiment_name``
    left out resolve to ``<dataset>_model`` and ``<dataset>`` (see training_settings())."""

    model_type: ModelType = "mlp"
    registered_model_name: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"
    )
    experiment_name: str | None = Field(default=None, min_length=1, max_length=200)
    seed: int = Field(default=42, ge=0, le=2**32 - 1)
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: CUDA when the container sees a GPU, else CPU."
    )
    class_weight: Literal["balanced", "none"] = Field(
        default="balanced", description="Weight the rare class up (classification only)."
    )
    cpu_threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="CPU threads for torch / OpenMP while fitting; unset: the container's CPU "
        "quota, else all cores. Small tabular models on a shared host train faster with 1.",
    )
    max_rows_in_memory: int = Field(
        default=2_000_000,
        ge=1_000,
        description="Training rows held in memory at once. The MLP streams a larger training "
        "split from its row groups; HistGradientBoosting (which needs its data in memory) trains "
        "on a seeded sample of this many rows, recorded in the model version's tags.",
    )
    window: TrainingWindow = TrainingWindow()
    mlp: MlpHyperparameters = MlpHyperparameters()
    hist_gradient_boosting: HistGradientBoostingHyperparameters = (
        HistGradientBoostingHyperparameters()
    )

    @property
    def hyperparameters(self) -> MlpHyperparameters | HistGradientBoostingHyperparameters:
        """The hyperparameters of the selected model type."""
        section: MlpHyperparameters | HistGradientBoostingHyperparameters = getattr(
            self, self.model_type
        )
        return section


# The hyperparameters of each model type: what a trigger form may override (see
# form_hyperparameters). No name is also a TrainingSettings field (a test keeps it so).
HYPERPARAMETERS: dict[str, type[MlpHyperparameters] | type[HistGradientBoostingHyperparameters]] = {
    "mlp": MlpHyperparameters,
    "hist_gradient_boosting": HistGradientBoostingHyperparameters,
}


def form_hyperparameters(values: Mapping[str, Any], model_type: str) -> dict[str, Any]:
    """Hyperparameter overrides from a trigger form, limited to the hyperparameters of
    ``model_type`` (the form's model type, else the config's).

    A form user may tune the selected model, nothing else: a training setting
    (``registered_model_name``, ``experiment_name``, ``seed``, ``device`` ...), a section
    (``mlp``, ``window`` ...), ``model_type`` itself, another model type's hyperparameter
    or an unknown name is refused with a ConfigError naming each key, so no form can train
    or promote into another registered model or experiment. The values are checked
    against their bounds by training_settings(). What the DAG author sets (the dataset
    config, the operator's own arguments) is not limited by this."""
    if model_type not in HYPERPARAMETERS:
        raise ConfigError(
            f"training.model_type: unknown model type {model_type!r} "
            f"(expected one of {', '.join(HYPERPARAMETERS)})"
        )
    allowed = list(HYPERPARAMETERS[model_type].model_fields)
    problems = []
    for key in values:
        name = str(key)
        if name in allowed:
            continue
        if name == "model_type":
            why = "choose the model type in the form's model_type field"
        elif name in TrainingSettings.model_fields:
            why = "a training setting, not a hyperparameter; only the dataset config sets it"
        else:
            owner = next(
                (t for t, cls in HYPERPARAMETERS.items() if name in cls.model_fields), None
            )
            why = (
                f"a hyperparameter of {owner}, not of the selected model type {model_type}"
                if owner
                else "not a hyperparameter"
            )
        problems.append(f"  {name!r}: {why}")
    if problems:
        raise ConfigError(
            "\n".join(
                [
                    f"hyperparameters from the trigger form refused: the form overrides only "
                    f"the hyperparameters of the selected model type {model_type} "
                    f"({', '.join(allowed)})",
                    *problems,
                ]
            )
        )
    return dict(values)


def training_settings(
    config: DatasetConfig, overrides: dict[str, Any] | None = None
) -> TrainingSettings:
    """The config's training settings with per-run ``overrides`` applied and names resolved.

    ``overrides`` is one flat mapping (a trigger form's or a task's): keys that are
    TrainingSettings fields (``model_type``, ``seed``, ``registered_model_name``,
    ``experiment_name``, ``device``, ``class_weight``, ``cpu_threads``) replace those; every other key is a
    hyperparameter of the selected model type (``max_epochs``, ``lr``, ``max_iter``...).
    Nested sections (``{"mlp": {...}}``) are merged too. Raises ConfigError naming the key
    (``training.mlp.lr``) and the problem, so bad values fail before a container starts.
    """
    raw = config.training.model_dump(mode="json")
    top_level = set(TrainingSettings.model_fields)
    model_type = str((overrides or {}).get("model_type", raw["model_type"]))
    for key, value in (overrides or {}).items():
        if key in MODEL_TYPES and isinstance(value, dict):
            raw[key] = {**raw[key], **value}
        elif key in top_level:
            raw[key] = value
        elif model_type in MODEL_TYPES:
            raw[model_type] = {**raw[model_type], key: value}
    if model_type not in MODEL_TYPES:
        raise ConfigError(
            f"invalid training settings for dataset {config.name!r}:\n"
            f"  training.model_type: unknown model type {model_type!r} "
            f"(expected one of {', '.join(MODEL_TYPES)})"
        )
    raw["registered_model_name"] = raw.get("registered_model_name") or f"{config.name}_model"
    raw["experiment_name"] = raw.get("experiment_name") or config.name
    try:
        return TrainingSettings.model_validate(raw)
    except ValidationError as exc:
        lines = [f"invalid training settings for dataset {config.name!r}:"]
        for err in exc.errors():
            loc = ".".join(["training", *(str(p) for p in err["loc"])])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown setting {err['loc'][-1]!r} for this section"
            lines.append(f"  {loc}: {msg}")
        raise ConfigError("\n".join(lines)) from exc


# --- Drift settings (the `drift:` section) ---------------------------------------------
# Thresholds and policy for the nightly drift / decay monitor (core/drift.py, decay.py, retrain.py).


class DriftSettings(_Strict):
    """Drift and decay policy. Feature verdicts need both a statistically significant
    change (Benjamini-Hochberg across features at ``alpha``) and a PSI at or above a band."""

    schedule: str = Field(
        default="0 2 * * *", description="Cron (or preset) of the nightly drift run."
    )
    window_days: int = Field(default=7, ge=1, le=366, description="Days of recent data to compare.")
    features: list[str] | None = Field(
        default=None, description="Features to monitor; left out: every feature column."
    )
    n_bins: int = Field(default=10, ge=2, le=100, description="Quantile bins of the reference.")
    reference_sample_size: int = Field(
        default=10_000,
        ge=100,
        le=1_000_000,
        description="Reference values kept per feature for KS.",
    )
    psi_warn: float = Field(default=0.1, gt=0.0)
    psi_drift: float = Field(default=0.25, gt=0.0)
    psi_epsilon: float = Field(
        default=1e-4, gt=0.0, lt=0.01, description="Floor for empty-bin proportions in PSI."
    )
    alpha: float = Field(
        default=0.05, gt=0.0, lt=1.0, description="False discovery rate (Benjamini-Hochberg)."
    )
    min_rows: int = Field(
        default=500, ge=1, description="Fewer recent rows: verdict insufficient_data, no alarm."
    )
    prediction_psi_warn: float = Field(default=0.1, gt=0.0)
    prediction_psi_drift: float = Field(default=0.25, gt=0.0)
    decay_metric: str | None = Field(
        default=None,
        description="Live metric; left out: roc_auc (classification), rmse (regression).",
    )
    decay_tolerance: float = Field(
        default=0.03,
        ge=0.0,
        lt=1.0,
        description="Relative worsening vs the validation metric that counts as decay, "
        "required of the whole confidence interval.",
    )
    decay_min_rows: int = Field(default=200, ge=10, description="Labelled rows needed for decay.")
    confidence_level: float = Field(default=0.95, gt=0.5, lt=1.0)
    retrain_on: list[Literal["drift", "decay"]] = Field(
        default=["drift", "decay"], description="Verdicts that start retraining."
    )
    cool_down_hours: float = Field(
        default=24.0, ge=0.0, description="At most one drift-triggered retraining per this period."
    )

    @model_validator(mode="after")
    def _bands(self) -> DriftSettings:
        if self.psi_warn > self.psi_drift:
            raise ValueError(f"psi_warn ({self.psi_warn}) is above psi_drift ({self.psi_drift})")
        if self.prediction_psi_warn > self.prediction_psi_drift:
            raise ValueError(
                f"prediction_psi_warn ({self.prediction_psi_warn}) is above "
                f"prediction_psi_drift ({self.prediction_psi_drift})"
            )
        fields = self.schedule.split()
        if not (self.schedule.startswith("@") or len(fields) in (5, 6)):
            raise ValueError(
                f"schedule {self.schedule!r} is neither a cron expression nor a preset"
            )
        return self


# --- Champion/challenger evaluation (issue 4) -------------------------------------------

# Metric name -> (tasks it applies to, True when higher is better): what configs are
# validated against. The metrics themselves are core/metrics.py (a test keeps the two equal).
EVALUATION_METRICS: dict[str, tuple[tuple[str, ...], bool]] = {
    "roc_auc": (("classification",), True),
    "pr_auc": (("classification",), True),
    "f1": (("classification",), True),
    "accuracy": (("classification",), True),
    "precision": (("classification",), True),
    "recall": (("classification",), True),
    "log_loss": (("classification",), False),
    "brier": (("classification",), False),
    "recall_at_precision": (("classification",), True),
    "rmse": (("regression",), False),
    "mae": (("regression",), False),
}
PRIMARY_METRICS = ("roc_auc", "pr_auc", "f1", "log_loss", "accuracy", "rmse", "mae")
# Metrics that are a mean of a per-row right/wrong outcome: the only ones McNemar tests.
ACCURACY_TYPE_METRICS = ("accuracy",)


def _known_metric(name: str) -> str:
    if name not in EVALUATION_METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {sorted(EVALUATION_METRICS)}")
    return name


class GuardrailSpec(_Strict):
    """A metric that may not get worse than the reference by more than ``max_regression``
    (in the metric's own units, direction-aware: for log_loss 'worse' means higher)."""

    metric: str
    max_regression: float = Field(ge=0.0)
    at_precision: float | None = Field(
        default=None, gt=0.0, lt=1.0, description="Only for recall_at_precision."
    )

    @model_validator(mode="after")
    def _check(self) -> GuardrailSpec:
        _known_metric(self.metric)
        if (self.metric == "recall_at_precision") != (self.at_precision is not None):
            raise ValueError("at_precision is required by recall_at_precision and only by it")
        return self


class BudgetSettings(_Strict):
    """Upper limits for the challenger; left out means no limit."""

    max_latency_ms_per_1k_rows: float | None = Field(default=None, gt=0.0)
    max_model_size_mb: float | None = Field(default=None, gt=0.0)


class EvaluationSettings(_Strict):
    """How a challenger is judged against the champion (or, for the first model, against a
    trivial baseline) on the same holdout rows. See core/compare.py:decide() and core/metrics.py."""

    primary_metric: str = "roc_auc"
    min_improvement: float = Field(
        default=0.0, ge=0.0, description="Margin the challenger must beat the reference by."
    )
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    n_bootstrap: int = Field(default=1000, ge=100, le=100_000)
    method: Literal["bootstrap", "mcnemar"] = "bootstrap"
    paired_test: Literal["bootstrap", "closed_form"] = Field(
        default="closed_form",
        description="With method bootstrap: how the paired interval is computed. closed_form "
        "(default): DeLong's test for roc_auc, a normal interval of the paired per-row loss "
        "differences for accuracy/log_loss/brier/mae (delta method for rmse), in seconds on "
        "millions of rows; metrics without a closed form (pr_auc, f1 ...) use the paired "
        "bootstrap (n_bootstrap resamples). bootstrap: the paired bootstrap for every metric.",
    )
    threshold: float = Field(
        default=0.5,
        gt=0.0,
        lt=1.0,
        description="Probability cut-off for f1/accuracy/precision/recall.",
    )
    guardrails: list[GuardrailSpec] = Field(default_factory=list)
    slice_columns: list[str] = Field(default_factory=list)
    slice_min_rows: int = Field(default=200, ge=1)
    slice_max_regression: float | None = Field(
        default=None, ge=0.0, description="Veto when the primary metric drops more in any slice."
    )
    budget: BudgetSettings = BudgetSettings()
    floors: dict[str, float] = Field(
        default_factory=dict,
        description="Absolute limits the challenger must meet, e.g. {roc_auc: 0.6} "
        "(a minimum for higher-is-better metrics, a maximum for the others).",
    )
    min_holdout_rows: int = Field(default=500, ge=10)
    max_holdout_memory_mb: float = Field(
        default=3072.0,
        gt=0.0,
        description="Memory the evaluation may use for the holdout (features, labels and both "
        "models' scores held at once); a larger holdout is refused before scoring. Estimated "
        "from the holdout's row count and columns (see core/compare.py:holdout_memory_mb).",
    )
    seed: int = 0
    approval: Literal["none", "required"] = Field(
        default="none",
        description="required: a person approves each promote decision before the champion moves.",
    )
    approval_timeout_hours: float = Field(
        default=72.0, gt=0.0, description="Without an answer by then the promotion is rejected."
    )

    @model_validator(mode="after")
    def _check(self) -> EvaluationSettings:
        if self.primary_metric not in PRIMARY_METRICS:
            raise ValueError(
                f"primary_metric {self.primary_metric!r} is not supported; use one of {list(PRIMARY_METRICS)}"
            )
        if self.method == "mcnemar" and self.primary_metric not in ACCURACY_TYPE_METRICS:
            raise ValueError(
                f"method 'mcnemar' tests accuracy-type metrics {list(ACCURACY_TYPE_METRICS)} only, "
                f"not {self.primary_metric!r}; use method 'bootstrap'"
            )
        if (
            self.method == "mcnemar"
            and "paired_test" in self.model_fields_set
            and self.paired_test != "bootstrap"
        ):
            raise ValueError(
                "paired_test applies to method 'bootstrap'; method 'mcnemar' is its own test"
            )
        for name in self.floors:
            _known_metric(name)
            if name == "recall_at_precision":
                raise ValueError("floors: recall_at_precision needs at_precision; use a guardrail")
        if len(set(self.slice_columns)) != len(self.slice_columns):
            raise ValueError(f"slice_columns has duplicates: {self.slice_columns}")
        return self

    @property
    def task(self) -> str:
        return EVALUATION_METRICS[self.primary_metric][0][0]

    def check_against(self, task: str, column_names: list[str] | None = None) -> None:
        """Raise ValueError when a metric does not fit ``task`` or a slice column is unknown."""
        used = [self.primary_metric, *(g.metric for g in self.guardrails), *self.floors]
        wrong = [m for m in used if task not in EVALUATION_METRICS[m][0]]
        if wrong:
            raise ValueError(f"metrics {wrong} do not apply to a {task} task")
        if column_names is not None:
            missing = [c for c in self.slice_columns if c not in column_names]
            if missing:
                raise ValueError(f"slice_columns {missing} are not columns of the dataset")


DatasetConfig.model_rebuild(force=True)

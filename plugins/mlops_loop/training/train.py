"""Training orchestration, as run inside the trainer container (or as a local process).

One call, :func:`run_training`, takes a :class:`TrainRequest` and:

1. validates the dataset config and the training settings (with the request's overrides);
2. reads the snapshot manifests (their sha256 become tags) and checks the MLflow server
   answers, before any data is read or a run is started;
3. in one MLflow run: logs params, the two input datasets (``mlflow.data``, digest and
   name from the snapshot hash, source = snapshot URI, contexts ``training`` and
   ``validation``), per-epoch metrics (step = epoch/iteration), final validation metrics
   and the model (pyfunc, signature + input example; contract in ``models.py``);
4. registers a new version of the registered model as the last step of that run, with the
   run's tags copied onto the version. Any failure before that ends the run as FAILED and
   registers nothing; a failure after the version was created deletes that version again.

Tags on the run and the version (keys in ``*_TAG`` constants below): the request's own tags
(``airflow_dag_id``, ``airflow_run_id``, ``airflow_task_id``, ``trainer_image``,
``code_version``, ...) plus ``dataset``, ``model_type``, ``seed``, ``device``,
``config_hash``, ``train_snapshot_uri``, ``train_snapshot_sha256``, ``valid_snapshot_uri``,
``valid_snapshot_sha256``.

Final metric names (validation snapshot): classification ``roc_auc``, ``pr_auc``,
``log_loss``, ``brier``, ``f1`` (threshold 0.5); regression ``rmse``, ``mae``, ``r2``.

Memory: ``training.max_rows_in_memory`` (the cap)
-------------------------------------------------
A split whose manifest counts at most the cap rows is read whole into pandas, as always.
A larger one is never loaded whole; it is read by Parquet row groups, in chunks of at most
a quarter of the cap (and 65,536 rows):

1. one pass over its target column gives the exact label summary (labelled rows, positive
   count, mean and standard deviation) and applies the label checks of a whole split
   (``core.targets``: unlabelled rows dropped, labels encoded chunk by chunk, the distinct
   labels of all chunks checked together, "both classes" over the whole training split);
2. a seeded uniform sample of ``min(cap, labelled rows)`` labelled rows is drawn without
   replacement (rows per row group from the multivariate hypergeometric distribution,
   then uniformly within the group) and read row group by row group keeping only those;
3. the MLP (``_fit_streamed``) fits its preprocessing (medians, scaling, one-hot levels) on
   that sample, then streams every labelled row each epoch: row groups in a seeded order
   per epoch, each chunk transformed and fed to ``models.fit_mlp_stream``, whose shuffle
   buffer holds at most half the cap plus one chunk. The class weight, the regression
   target's scaling and the ``train_target_mean`` tag come from the exact pass, not the
   sample. Param ``train_data=streamed``; metrics ``peak_rows_in_memory`` and
   ``largest_chunk_rows``;
4. HistGradientBoosting needs its data in memory: it trains on the sample of exactly the
   cap rows. Param ``train_data=sampled``, ``train_rows`` = the cap, ``train_rows_total``;
   tags ``mlops_loop.train_rows_sampled``, ``mlops_loop.train_rows_total``,
   ``mlops_loop.max_rows_in_memory``;
5. a validation split above the cap is replaced by its sample of the cap rows (early
   stopping and the final metrics use it); tags ``mlops_loop.valid_rows_sampled`` and
   ``mlops_loop.valid_rows_total``.

So at most about twice the cap of rows are in memory at once (the validation rows plus
the training sample or shuffle buffer). Snapshots on S3 are downloaded part by part to
temporary files for the duration of the run (disk, not memory, holds the split). The
logged MLflow datasets (``_log_inputs``) are built from the rows in memory: the whole
split, or its sample (name and digest still from the snapshot's hash).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_loop.core.config import DatasetConfig, TrainingSettings
from mlops_loop.core.storage import S3Credentials
from mlops_loop.core.targets import TRAIN_TARGET_MEAN_TAG
from mlops_loop.core.trainer_protocol import (
    TrainRequest,
    is_connection_error,
    s3_credentials_from_env,
    trainer_tracking_uri,
)
from mlops_loop.core.training_set import (
    TRAINING_INPUT_TAG,
    resolve_train_settings,
    training_input_hash,
)
from mlops_loop.exceptions import MlopsLoopError, TargetError, TrackingServerError, TrainingError

DATASET_TAG = "dataset"
MODEL_TYPE_TAG = "model_type"
SEED_TAG = "seed"
DEVICE_TAG = "device"
CONFIG_HASH_TAG = "config_hash"
TRAIN_URI_TAG = "train_snapshot_uri"
TRAIN_SHA_TAG = "train_snapshot_sha256"
VALID_URI_TAG = "valid_snapshot_uri"
VALID_SHA_TAG = "valid_snapshot_sha256"
INPUT_HASH_TAG = TRAINING_INPUT_TAG  # identity of the input: core.training_set.training_input_hash
# Set when a split exceeded training.max_rows_in_memory and was sampled (rows used, labelled
# rows in the split, the cap); an MLP that streamed its training split needs no sample.
TRAIN_ROWS_SAMPLED_TAG = "mlops_loop.train_rows_sampled"
TRAIN_ROWS_TOTAL_TAG = "mlops_loop.train_rows_total"
VALID_ROWS_SAMPLED_TAG = "mlops_loop.valid_rows_sampled"
VALID_ROWS_TOTAL_TAG = "mlops_loop.valid_rows_total"
MAX_ROWS_TAG = "mlops_loop.max_rows_in_memory"
MODEL_ARTIFACT_NAME = "model"
DATASET_DIGEST_CHARS = 32
INPUT_EXAMPLE_ROWS = 5
MAX_DISTINCT_LABELS = 1_000  # a classification target with more labels is refused early  # MLflow caps dataset digests at 36 characters

Log = Callable[[str], None]


def print_flushed(line: str) -> None:
    print(line, flush=True)


def run_training(
    request: TrainRequest,
    *,
    tracking_uri: str | None = None,
    credentials: S3Credentials | None = None,
    log: Log = print_flushed,
) -> dict[str, Any]:
    """Train, log and register one model; returns the result document (see module doc).

    Raises ConfigError (bad config or hyperparameters), TrainingError (stage ``snapshots``,
    ``data``, ``fit``, ``log_model``, ``register``) or TrackingServerError (MLflow down).
    """
    # Shared with the worker's champion check; ConfigError naming the key.
    config, settings = resolve_train_settings(request)
    tracking_uri = trainer_tracking_uri(tracking_uri)
    credentials = credentials if credentials is not None else s3_credentials_from_env()
    model_name = str(settings.registered_model_name)

    train_manifest = _manifest(request.train_snapshot_uri, credentials)
    valid_manifest = _manifest(request.valid_snapshot_uri, credentials)
    experiment_id = _experiment_id(tracking_uri, str(settings.experiment_name))
    input_hash = training_input_hash(
        settings,
        config,
        str(train_manifest.get("sha256")),
        str(valid_manifest.get("sha256")),
        request.tags,
    )
    if not request.retrain:
        existing = _existing_result(tracking_uri, model_name, input_hash)
        if existing is not None:
            log(
                f"{model_name} version {existing['model_version']} was already trained from the "
                "identical input (same snapshots, config, settings, code and image): reusing it; "
                "set retrain to train another"
            )
            return existing

    columns = [*config.feature_columns, config.target]
    cap = int(settings.max_rows_in_memory)
    with contextlib.ExitStack() as parts:
        train = _open_split(
            request.train_snapshot_uri, credentials, columns, config, train_manifest, cap,
            seed=settings.seed, parts=parts, training=True,
        )  # fmt: skip
        valid = _open_split(
            request.valid_snapshot_uri, credentials, columns, config, valid_manifest, cap,
            seed=settings.seed + 1, parts=parts,
        )  # fmt: skip
        streamed = train.groups is not None and settings.model_type == "mlp"
        log(
            f"training {settings.model_type} for {config.name}: {train.labels.rows} train rows "
            f"({request.train_snapshot_uri}), {valid.labels.rows} validation rows"
        )
        if streamed:
            log(
                f"the training split holds {train.total_rows} rows, more than "
                f"training.max_rows_in_memory={cap}: the MLP streams it by row groups "
                f"(preprocessing fitted on a uniform sample of {len(train.frame)} rows)"
            )
        elif train.sampled:
            log(
                f"{settings.model_type} trains in memory: using a seeded uniform sample of "
                f"{len(train.frame)} of the {train.labels.rows} labelled training rows "
                f"(training.max_rows_in_memory={cap})"
            )
        if valid.sampled:
            log(
                f"validation on a seeded uniform sample of {len(valid.frame)} of "
                f"{valid.labels.rows} labelled rows (training.max_rows_in_memory={cap})"
            )
        return _train_and_register(
            request, config, settings, train, valid, train_manifest, valid_manifest,
            input_hash=input_hash, experiment_id=experiment_id, tracking_uri=tracking_uri,
            streamed=streamed, log=log,
        )  # fmt: skip


def _train_and_register(
    request: TrainRequest,
    config: DatasetConfig,
    settings: TrainingSettings,
    train: SplitData,
    valid: SplitData,
    train_manifest: dict[str, Any],
    valid_manifest: dict[str, Any],
    *,
    input_hash: str,
    experiment_id: str,
    tracking_uri: str,
    streamed: bool,
    log: Log,
) -> dict[str, Any]:
    model_name = str(settings.registered_model_name)
    from mlops_loop.training import models

    device = models.resolve_device(settings.device) if settings.model_type == "mlp" else "cpu"
    tags = {
        **request.tags,
        DATASET_TAG: config.name,
        MODEL_TYPE_TAG: settings.model_type,
        SEED_TAG: str(settings.seed),
        DEVICE_TAG: device,
        CONFIG_HASH_TAG: config.config_hash(),
        TRAIN_URI_TAG: request.train_snapshot_uri,
        TRAIN_SHA_TAG: str(train_manifest.get("sha256", "")),
        VALID_URI_TAG: request.valid_snapshot_uri,
        VALID_SHA_TAG: str(valid_manifest.get("sha256", "")),
        INPUT_HASH_TAG: input_hash,
        TRAIN_TARGET_MEAN_TAG: f"{train.labels.mean:.12g}",
    }
    if train.sampled and not streamed:
        tags[TRAIN_ROWS_SAMPLED_TAG] = str(len(train.frame))
        tags[TRAIN_ROWS_TOTAL_TAG] = str(train.labels.rows)
        tags[MAX_ROWS_TAG] = str(settings.max_rows_in_memory)
    if valid.sampled:
        tags[VALID_ROWS_SAMPLED_TAG] = str(len(valid.frame))
        tags[VALID_ROWS_TOTAL_TAG] = str(valid.labels.rows)
        tags[MAX_ROWS_TAG] = str(settings.max_rows_in_memory)
    train_data = "streamed" if streamed else "sampled" if train.sampled else "in_memory"
    params = _params(
        settings,
        device,
        train.labels.rows if streamed else len(train.frame),
        len(valid.frame),
        train_data=train_data,
        train_rows_total=train.labels.rows,
        valid_rows_total=valid.labels.rows,
    )

    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    run_id: str | None = None
    try:
        with mlflow.start_run(experiment_id=experiment_id, tags=tags) as run:
            run_id = run.info.run_id
            log(f"MLflow run {run_id} in experiment {settings.experiment_name!r} at {tracking_uri}")
            mlflow.log_params(params)
            _log_inputs(config, train.frame, valid.frame, tags)
            with _stage("fit", run_id), _cpu_threads(settings.cpu_threads, device):
                if streamed:
                    model, fit_info = _fit_streamed(config, settings, device, train, valid, log)
                else:
                    model, fit_info = _fit(config, settings, device, train.frame, valid.frame, log)
            metrics = validation_metrics(
                config.task, valid.frame[config.target].to_numpy(), model.predict(valid.frame)
            )
            mlflow.log_metrics({**metrics, **fit_info})
            log("validation: " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
            with _stage("log_model", run_id):
                model_info = _log_model(model, train.frame, config)
            with _stage("register", run_id):
                version = _register(model_info.model_uri, model_name, {**tags, "run_id": run_id})
            try:
                mlflow.set_tag("registered_model_version", f"{model_name}/{version}")
            except Exception:
                _delete_version(tracking_uri, model_name, version)
                raise
    except MlopsLoopError as exc:
        if isinstance(exc, TrainingError) and exc.run_id is None:
            exc.run_id = run_id  # e.g. SIGTERM arriving while the run was open
        raise
    except Exception as exc:
        if is_connection_error(exc):
            raise TrackingServerError(
                f"lost the MLflow tracking server at {tracking_uri}: {_short(exc)}",
                tracking_uri=tracking_uri,
                stage="tracking",
                run_id=run_id,
            ) from exc
        raise TrainingError(f"training failed: {_short(exc)}", stage="fit", run_id=run_id) from exc

    log(f"registered {model_name} version {version} (run {run_id})")
    return {
        "status": "ok",
        "run_id": run_id,
        "model_uri": f"models:/{model_name}/{version}",
        "model_name": model_name,
        "model_version": str(version),
        "metrics": metrics,
        "device": device,
        "params": params,
        "tags": tags,
        "timing": {
            k: v for k, v in fit_info.items() if k in ("train_seconds", "train_rows_per_second")
        },
        "reused": False,
    }


def _existing_result(tracking_uri: str, name: str, input_hash: str) -> dict[str, Any] | None:
    """The result document of a READY version already trained from this input, if any."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        versions = client.search_model_versions(f"name = '{name}'")
        matches = [
            v for v in versions if v.tags.get(INPUT_HASH_TAG) == input_hash and v.status == "READY"
        ]
        if not matches:
            return None
        version = max(matches, key=lambda v: int(v.version))
        run = client.get_run(str(version.run_id))
    except Exception as exc:
        raise TrackingServerError(
            f"cannot look up existing versions of {name} at {tracking_uri}: {_short(exc)}",
            tracking_uri=tracking_uri,
        ) from exc
    final = ("roc_auc", "pr_auc", "log_loss", "brier", "f1", "rmse", "mae", "r2")
    return {
        "status": "ok",
        "run_id": version.run_id,
        "model_uri": f"models:/{name}/{version.version}",
        "model_name": name,
        "model_version": str(version.version),
        "metrics": {k: v for k, v in run.data.metrics.items() if k in final},
        "device": version.tags.get(DEVICE_TAG, ""),
        "params": dict(run.data.params),
        "tags": dict(version.tags),
        "timing": {},
        "reused": True,
    }


# --- steps ------------------------------------------------------------------------------


def _manifest(uri: str, credentials: S3Credentials) -> dict[str, Any]:
    from mlops_loop.core.snapshots import load_manifest

    try:
        return load_manifest(uri, credentials=credentials)
    except MlopsLoopError as exc:
        raise TrainingError(f"cannot read snapshot {uri}: {exc}", stage="snapshots") from exc


def _read(
    uri: str,
    credentials: S3Credentials,
    columns: list[str],
    config: DatasetConfig,
    *,
    training: bool = False,
) -> pd.DataFrame:
    """The snapshot's columns with the target encoded (core.targets) and unlabelled rows
    dropped; ``training``: the labels must also hold both classes."""
    from mlops_loop.core.snapshots import read_snapshot

    try:
        frame = read_snapshot(uri, credentials=credentials, columns=columns)
    except MlopsLoopError as exc:
        raise TrainingError(f"cannot read snapshot {uri}: {exc}", stage="data") from exc
    except (KeyError, ValueError) as exc:
        raise TrainingError(
            f"snapshot {uri} lacks columns the config needs ({exc}); expected {columns}",
            stage="data",
        ) from exc
    from mlops_loop.core.targets import encode_target, require_both_classes

    try:
        labels = encode_target(config, frame[config.target], where=f"snapshot {uri}")
        if training:
            require_both_classes(
                config, labels, frame[config.target], where=f"training snapshot {uri}"
            )
    except TargetError as exc:
        raise TrainingError(str(exc), stage="data") from exc
    keep = ~np.isnan(labels)
    if not keep.any():
        raise TrainingError(
            f"snapshot {uri} has no rows with a label ({config.target!r})", stage="data"
        )
    frame = frame[keep].reset_index(drop=True)
    frame[config.target] = (
        labels[keep].astype("int64") if config.task == "classification" else labels[keep]
    )
    return frame


# --- splits larger than training.max_rows_in_memory ---------------------------------------


@dataclass(frozen=True)
class LabelSummary:
    """The labels of a whole split, exact (computed over every labelled row)."""

    rows: int  # labelled rows
    positives: float  # classification: rows with the positive label; regression: 0
    mean: float  # positive rate, or the regression target's mean
    std: float  # population standard deviation (numpy's default)

    @classmethod
    def of(cls, labels: np.ndarray, task: str) -> LabelSummary:
        labels = np.asarray(labels, dtype="float64")
        return cls(
            rows=int(labels.size),
            positives=float(labels.sum()) if task == "classification" else 0.0,
            mean=float(labels.mean()) if labels.size else float("nan"),
            std=float(labels.std()) if labels.size else float("nan"),
        )


@dataclass
class SplitData:
    """One split as training uses it. ``frame`` holds the labelled rows (target encoded)
    when the split has at most ``max_rows_in_memory`` rows; otherwise a seeded uniform
    sample of at most that many labelled rows, and ``groups`` reads the whole split row
    group by row group. ``labels`` is always exact over the whole split."""

    uri: str
    frame: pd.DataFrame
    labels: LabelSummary
    total_rows: int  # rows in the snapshot, labelled or not
    groups: SnapshotRowGroups | None = None

    @property
    def sampled(self) -> bool:
        return len(self.frame) < self.labels.rows


class SnapshotRowGroups:
    """The row groups of a snapshot's Parquet parts, read one at a time in chunks of at
    most ``chunk_rows`` rows (a larger row group is read in slices). The part files stay
    readable for as long as ``parts`` is open (on local storage in place; from S3 each part
    is downloaded once to a temporary file, so disk, not memory, holds the split).
    ``largest_chunk`` records the most rows one read materialised."""

    def __init__(
        self,
        uri: str,
        credentials: S3Credentials,
        columns: list[str],
        manifest: dict[str, Any],
        *,
        chunk_rows: int,
        parts: contextlib.ExitStack,
    ) -> None:
        import pyarrow.parquet as pq

        from mlops_loop.core.storage import join_uri, open_storage

        have = {c["name"] for c in manifest.get("columns", [])}
        missing = [c for c in columns if c not in have]
        if missing:
            raise TrainingError(
                f"snapshot {uri} lacks columns the config needs ({missing}); expected {columns}",
                stage="data",
            )
        self.uri = uri
        self.columns = columns
        self.chunk_rows = max(1, int(chunk_rows))
        self.largest_chunk = 0
        self.groups: list[tuple[Path, int, int]] = []  # (part file, index in it, rows)
        storage = open_storage(uri, credentials)
        try:
            for part in manifest["files"]:
                path = parts.enter_context(storage.local_file(join_uri(uri, part["name"])))
                with pq.ParquetFile(path) as pfile:  # opened per read: no descriptor per part
                    for index in range(pfile.num_row_groups):
                        rows = pfile.metadata.row_group(index).num_rows
                        self.groups.append((Path(path), index, rows))
        except MlopsLoopError as exc:
            raise TrainingError(f"cannot read snapshot {uri}: {exc}", stage="data") from exc

    @property
    def rows(self) -> int:
        return sum(rows for _, _, rows in self.groups)

    def read(self, group: int, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
        """Row group ``group`` (index into ``groups``) as DataFrames of at most
        ``chunk_rows`` rows, in file order."""
        import pyarrow.parquet as pq

        path, index, _ = self.groups[group]
        with pq.ParquetFile(path) as pfile:
            for batch in pfile.iter_batches(
                batch_size=self.chunk_rows, row_groups=[index], columns=columns or self.columns
            ):
                frame = batch.to_pandas()
                self.largest_chunk = max(self.largest_chunk, len(frame))
                yield frame


def chunk_rows_for(max_rows_in_memory: int) -> int:
    """Rows read at once when streaming: a quarter of the cap, at most 65,536."""
    return max(1, min(65_536, max_rows_in_memory // 4))


def _open_split(
    uri: str,
    credentials: S3Credentials,
    columns: list[str],
    config: DatasetConfig,
    manifest: dict[str, Any],
    max_rows: int,
    *,
    seed: int,
    parts: contextlib.ExitStack,
    training: bool = False,
) -> SplitData:
    """The split in memory when the manifest says it has at most ``max_rows`` rows (as
    before); otherwise one pass over its labels (exact summary, label checks over the whole
    split) and a seeded uniform sample of ``min(max_rows, labelled rows)`` labelled rows,
    read row group by row group, and the row groups kept open for streaming."""
    total = int(manifest.get("rows", 0) or 0)
    if total <= max_rows:
        frame = _read(uri, credentials, columns, config, training=training)
        labels = LabelSummary.of(frame[config.target].to_numpy(), config.task)
        return SplitData(uri, frame, labels, total_rows=total)
    groups = SnapshotRowGroups(
        uri, credentials, columns, manifest, chunk_rows=chunk_rows_for(max_rows), parts=parts
    )
    labels, per_group = label_pass(groups, config, training=training)
    rng = np.random.default_rng(seed)
    frame = sample_rows(groups, config, per_group, min(max_rows, labels.rows), rng)
    return SplitData(uri, frame, labels, total_rows=groups.rows, groups=groups)


def encoded_chunk(
    config: DatasetConfig, chunk: pd.DataFrame, uri: str
) -> tuple[pd.DataFrame, np.ndarray]:
    """A chunk's labelled rows and their encoded labels (core.targets, as in ``_read``)."""
    from mlops_loop.core.targets import encode_target

    try:
        labels = encode_target(config, chunk[config.target], where=f"snapshot {uri}")
    except TargetError as exc:
        raise TrainingError(str(exc), stage="data") from exc
    keep = ~np.isnan(labels)
    return chunk[keep], labels[keep]


def label_pass(
    groups: SnapshotRowGroups, config: DatasetConfig, *, training: bool = False
) -> tuple[LabelSummary, list[int]]:
    """One streaming pass over the target column: the exact label summary of the whole
    split, the labelled rows per row group, and the checks ``_read`` makes, over the whole
    split: classification labels (the distinct raw labels of every chunk together must
    pass ``encode_target``) and, for ``training``, both classes present somewhere."""
    target = config.target
    rows, mean, m2, positives = 0, 0.0, 0.0, 0.0
    per_group: list[int] = []
    distinct: pd.Series = pd.Series([], dtype=object)
    for group in range(len(groups.groups)):
        labelled = 0
        for chunk in groups.read(group, [target]):
            _, labels = encoded_chunk(config, chunk, groups.uri)
            labelled += labels.size
            if not labels.size:
                continue
            # Chan et al.'s pairwise update: exact up to float64 rounding, one pass.
            chunk_mean = float(labels.mean())
            chunk_m2 = float(((labels - chunk_mean) ** 2).sum())
            n = rows + labels.size
            delta = chunk_mean - mean
            mean += delta * labels.size / n
            m2 += chunk_m2 + delta * delta * rows * labels.size / n
            rows = n
            if config.task == "classification":
                positives += float(labels.sum())
                values = pd.Series(chunk[target].dropna().unique(), dtype=object)
                if len(distinct):
                    values = pd.Series(pd.unique(pd.concat([distinct, values])), dtype=object)
                distinct = values
                if len(distinct) > MAX_DISTINCT_LABELS:  # not binary: refuse now, by name
                    _check_labels(config, distinct, groups.uri, training=training)
        per_group.append(labelled)
    if config.task == "classification":
        _check_labels(config, distinct, groups.uri, training=training)
    if not rows:
        raise TrainingError(
            f"snapshot {groups.uri} has no rows with a label ({target!r})", stage="data"
        )
    summary = LabelSummary(
        rows=rows, positives=positives, mean=mean, std=math.sqrt(max(m2, 0.0) / rows)
    )
    return summary, per_group


def _check_labels(config: DatasetConfig, distinct: pd.Series, uri: str, *, training: bool) -> None:
    """``_read``'s label checks on the distinct raw labels of a whole split: the checks only
    depend on which labels occur, so they give the same verdict as on every row."""
    from mlops_loop.core.targets import encode_target, require_both_classes

    try:
        encoded = encode_target(config, distinct, where=f"snapshot {uri}")
        if training:
            require_both_classes(config, encoded, distinct, where=f"training snapshot {uri}")
    except TargetError as exc:
        raise TrainingError(str(exc), stage="data") from exc


def sample_rows(
    groups: SnapshotRowGroups,
    config: DatasetConfig,
    per_group: list[int],
    size: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """A uniform sample (without replacement) of ``size`` labelled rows, read row group by
    row group keeping the chosen rows: how many come from each group is drawn from the
    multivariate hypergeometric distribution, then which ones uniformly within the group.
    Rows keep the split's order; the target is encoded as in ``_read``."""
    counts = np.asarray(per_group, dtype=np.int64)
    size = min(int(size), int(counts.sum()))
    take = rng.multivariate_hypergeometric(counts, size) if size else np.zeros_like(counts)
    kept: list[pd.DataFrame] = []
    for group, (count, wanted) in enumerate(zip(counts, take, strict=True)):
        if not wanted:
            continue
        chosen = np.sort(rng.choice(int(count), size=int(wanted), replace=False))
        offset = 0
        for chunk in groups.read(group):
            rows, labels = encoded_chunk(config, chunk, groups.uri)
            here = chosen[(chosen >= offset) & (chosen < offset + len(rows))] - offset
            offset += len(rows)
            if here.size:
                part = rows.iloc[here].copy()
                part[config.target] = labels[here]
                kept.append(part)
    if not kept:
        return pd.DataFrame(columns=groups.columns)
    frame = pd.concat(kept, ignore_index=True)
    if config.task == "classification":
        frame[config.target] = frame[config.target].astype("int64")
    return frame


def _experiment_id(tracking_uri: str, name: str) -> str:
    """Checks the server answers (after the client's retries) and returns the experiment."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return str(experiment.experiment_id)
        try:
            return str(client.create_experiment(name))
        except Exception:  # created concurrently by another task
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return str(experiment.experiment_id)
    except Exception as exc:
        retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "?")
        raise TrackingServerError(
            f"MLflow tracking server at {tracking_uri} did not answer (after {retries} retries): "
            f"{_short(exc)}",
            tracking_uri=tracking_uri,
        ) from exc


def _params(
    settings: TrainingSettings,
    device: str,
    train_rows: int,
    valid_rows: int,
    *,
    train_data: str = "in_memory",
    train_rows_total: int | None = None,
    valid_rows_total: int | None = None,
) -> dict[str, Any]:
    """``train_rows`` / ``valid_rows``: rows the model was fitted / validated on;
    ``*_rows_total``: labelled rows in the split; ``train_data``: ``in_memory``,
    ``streamed`` (MLP over row groups) or ``sampled`` (a seeded sample of the cap)."""
    hp = settings.hyperparameters.model_dump(mode="json")
    return {
        "train_data": train_data,
        "max_rows_in_memory": settings.max_rows_in_memory,
        "train_rows_total": train_rows if train_rows_total is None else train_rows_total,
        "valid_rows_total": valid_rows if valid_rows_total is None else valid_rows_total,
        "model_type": settings.model_type,
        "seed": settings.seed,
        "device": device,
        "class_weight": settings.class_weight,
        "cpu_threads": settings.cpu_threads if settings.cpu_threads is not None else "all",
        "train_rows": train_rows,
        "valid_rows": valid_rows,
        **{k: (",".join(map(str, v)) if isinstance(v, list) else v) for k, v in hp.items()},
    }


def _log_inputs(
    config: DatasetConfig, train_df: pd.DataFrame, valid_df: pd.DataFrame, tags: dict[str, str]
) -> None:
    """The two snapshots as MLflow datasets, from the frames in memory (a split above
    training.max_rows_in_memory is its sample): schema and profile from those rows, name,
    digest and source from the snapshot."""
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    for frame, context, uri_tag, sha_tag in (
        (train_df, "training", TRAIN_URI_TAG, TRAIN_SHA_TAG),
        (valid_df, "validation", VALID_URI_TAG, VALID_SHA_TAG),
    ):
        sha = tags[sha_tag] or "unknown"
        with warnings.catch_warnings():
            # MLflow hints about int columns in the dataset's schema and about a local
            # path's two source readings: both irrelevant for a lineage record.
            warnings.simplefilter("ignore", UserWarning)
            dataset = from_pandas(
                frame,
                source=tags[uri_tag],
                targets=config.target,
                name=f"{config.name}@{sha}",
                digest=sha[:DATASET_DIGEST_CHARS],
            )
            mlflow.log_input(dataset, context=context)


def _fit(
    config: DatasetConfig,
    settings: TrainingSettings,
    device: str,
    train_df: pd.DataFrame,
    valid_df: pd.DataFrame,
    log: Log,
) -> tuple[Any, dict[str, float]]:
    import mlflow

    from mlops_loop.training import models

    kinds = models.feature_kinds(config)
    task = config.task
    preprocessor = models.build_preprocessor(kinds, settings.model_type)
    x_train = preprocessor.fit_transform(train_df)
    x_valid = preprocessor.transform(valid_df)
    y_train = train_df[config.target].to_numpy(dtype="float64")
    y_valid = valid_df[config.target].to_numpy(dtype="float64")
    mlflow.log_param("n_model_inputs", int(x_train.shape[1]))

    if settings.model_type == "mlp":
        hp = settings.mlp
        mean, std = 0.0, 1.0
        if task == "regression":
            mean, std = float(y_train.mean()), float(y_train.std() or 1.0)
        fit = models.fit_mlp(
            np.asarray(x_train, dtype=np.float32),
            ((y_train - mean) / std).astype(np.float32),
            np.asarray(x_valid, dtype=np.float32),
            ((y_valid - mean) / std).astype(np.float32),
            hp=hp,
            task=task,
            class_weight=settings.class_weight,
            seed=settings.seed,
            device=device,
            on_epoch=_epoch_logger(hp.max_epochs, log),
        )
        return _mlp_model(
            fit, settings, x_train.shape[1], task, preprocessor, mean, std, device, log
        )

    hgb = settings.hist_gradient_boosting
    n_numeric = sum(1 for k in kinds.values() if k != "categorical")
    estimator = models.build_hist_gradient_boosting(
        hgb,
        task=task,
        class_weight=settings.class_weight,
        seed=settings.seed,
        categorical_indices=list(range(n_numeric, x_train.shape[1])),
        verbose=2,
    )
    started = time.perf_counter()
    # verbose=2: sklearn prints one line per iteration to stdout, which streams to the log.
    if hgb.early_stopping:
        estimator.fit(x_train, y_train, X_val=x_valid, y_val=y_valid)
    else:
        estimator.fit(x_train, y_train)
    seconds = time.perf_counter() - started
    _log_iterations(estimator)
    model = models.TabularModel(
        kind="hist_gradient_boosting", task=task, preprocessor=preprocessor, estimator=estimator
    )
    rows = len(train_df) * int(estimator.n_iter_)
    info = {
        "best_iteration": float(estimator.n_iter_),
        "train_seconds": seconds,
        "train_rows_per_second": rows / seconds if seconds > 0 else float("nan"),
    }
    return model, info


def _epoch_logger(max_epochs: int, log: Log) -> Callable[[Any], None]:
    import mlflow

    def on_epoch(report: Any) -> None:
        mlflow.log_metrics(report.metrics, step=report.epoch)
        shown = " ".join(
            f"{k}={v:.4f}" for k, v in report.metrics.items() if k != "epoch_rows_per_second"
        )
        rate = report.metrics.get("epoch_rows_per_second", float("nan"))
        log(f"epoch {report.epoch}/{max_epochs} {shown} rows/s={rate:,.0f}")

    return on_epoch


def _mlp_model(
    fit: Any,
    settings: TrainingSettings,
    n_inputs: int,
    task: Any,
    preprocessor: Any,
    mean: float,
    std: float,
    device: str,
    log: Log,
) -> tuple[Any, dict[str, float]]:
    from mlops_loop.training import models

    log(
        f"best epoch {fit.best_epoch} of {fit.epochs_run}"
        + (" (early stop)" if fit.stopped_early else "")
        + f"; {fit.rows_per_second:,.0f} rows/s on {device}"
    )
    model = models.TabularModel.from_mlp_fit(
        fit,
        hp=settings.mlp,
        n_inputs=n_inputs,
        task=task,
        preprocessor=preprocessor,
        target_mean=mean,
        target_std=std,
    )
    info = {
        "best_epoch": float(fit.best_epoch),
        "epochs_run": float(fit.epochs_run),
        "train_seconds": fit.train_seconds,
        "train_rows_per_second": fit.rows_per_second,
        "peak_rows_in_memory": float(fit.peak_rows),
    }
    return model, info


def _fit_streamed(
    config: DatasetConfig,
    settings: TrainingSettings,
    device: str,
    train: SplitData,
    valid: SplitData,
    log: Log,
) -> tuple[Any, dict[str, float]]:
    """The MLP on a training split larger than ``training.max_rows_in_memory``.

    The preprocessor (medians, scaling, one-hot levels) is fitted on ``train.frame``, the
    split's seeded uniform sample; the class weight and the regression target's mean and
    standard deviation come from the exact label pass (``train.labels``). Each epoch reads
    the row groups in a seeded order (``seed``, epoch), chunk by chunk, drops unlabelled
    rows, transforms the chunk and hands it to ``models.fit_mlp_stream``, whose shuffle
    buffer holds at most half the cap plus one chunk (a quarter of the cap)."""
    import mlflow

    from mlops_loop.training import models

    groups = train.groups
    assert groups is not None
    hp = settings.mlp
    task = config.task
    preprocessor = models.build_preprocessor(models.feature_kinds(config), "mlp")
    preprocessor.fit(train.frame)
    # The sample has done its work: keep only the rows of the model's input example.
    train.frame = train.frame.head(INPUT_EXAMPLE_ROWS)
    x_valid = np.asarray(preprocessor.transform(valid.frame), dtype=np.float32)
    y_valid = valid.frame[config.target].to_numpy(dtype="float64")
    n_inputs = int(x_valid.shape[1])
    mlflow.log_param("n_model_inputs", n_inputs)
    mean, std = 0.0, 1.0
    if task == "regression":
        mean, std = train.labels.mean, train.labels.std or 1.0

    def chunks(epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = np.random.default_rng([settings.seed, epoch]).permutation(len(groups.groups))
        for group in order:
            for chunk in groups.read(int(group)):
                rows, labels = encoded_chunk(config, chunk, groups.uri)
                if len(rows):
                    x = np.asarray(preprocessor.transform(rows), dtype=np.float32)
                    yield x, ((labels - mean) / std).astype(np.float32)

    fit = models.fit_mlp_stream(
        chunks,
        x_valid,
        ((y_valid - mean) / std).astype(np.float32),
        n_inputs=n_inputs,
        rows=train.labels.rows,
        positives=train.labels.positives,
        buffer_rows=settings.max_rows_in_memory // 2,
        hp=hp,
        task=task,
        class_weight=settings.class_weight,
        seed=settings.seed,
        device=device,
        on_epoch=_epoch_logger(hp.max_epochs, log),
    )
    model, info = _mlp_model(fit, settings, n_inputs, task, preprocessor, mean, std, device, log)
    info["largest_chunk_rows"] = float(groups.largest_chunk)
    return model, info


def _log_iterations(estimator: Any) -> None:
    """HistGradientBoosting's per-iteration losses as step metrics (scores are -loss)."""
    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = []
    for key, scores in (("train_loss", "train_score_"), ("valid_loss", "validation_score_")):
        for step, score in enumerate(getattr(estimator, scores, [])):
            if step > 0:  # index 0 is the constant baseline before the first tree
                metrics.append(Metric(key, -float(score), now, step))
    run = mlflow.active_run()
    assert run is not None
    for start in range(0, len(metrics), 1000):
        mlflow.MlflowClient().log_batch(run.info.run_id, metrics=metrics[start : start + 1000])


def validation_metrics(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Final metrics of a model's predictions (the output contract) on labelled rows.

    Computed by core.metrics, the code decay later compares the live metrics with.
    """
    from mlops_loop.core.metrics import metric_value

    y_true = np.asarray(y_true, dtype="float64")
    y_pred = np.asarray(y_pred, dtype="float64")
    if task == "regression":
        return {name: float(metric_value(name, y_true, y_pred)) for name in ("rmse", "mae", "r2")}
    names = ("roc_auc", "pr_auc", "log_loss", "brier", "f1")
    metrics = {name: float(metric_value(name, y_true, y_pred)) for name in names}
    if len(np.unique(y_true)) != 2:  # a ranking needs both classes
        metrics["roc_auc"] = metrics["pr_auc"] = float("nan")
    return metrics


def _log_model(model: Any, train_df: pd.DataFrame, config: DatasetConfig) -> Any:
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from mlops_loop.training import models

    kinds = models.feature_kinds(config)
    signature = ModelSignature(
        inputs=models.input_schema(config), outputs=Schema([ColSpec("double")])
    )
    with warnings.catch_warnings():
        # The signature is explicit; MLflow's hint about integer columns in the input
        # example does not apply (the schema declares numbers as double).
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        return mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT_NAME,
            python_model=models.TabularPyfuncModel(model),
            signature=signature,
            input_example=models.input_example(train_df, kinds, rows=INPUT_EXAMPLE_ROWS),
            pip_requirements=_requirements(model.kind),
        )


def _requirements(kind: str) -> list[str]:
    """Pinned from the running environment, so MLflow need not infer them (slow)."""
    from importlib.metadata import PackageNotFoundError, version

    names = ["mlflow", "pandas", "numpy", "scikit-learn", "pyarrow", "pydantic", "pyyaml"]
    if kind == "mlp":
        names.append("torch")
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            pins.append(name)
    return pins


def _register(model_uri: str, name: str, tags: dict[str, str]) -> str:
    import mlflow

    version = mlflow.register_model(model_uri, name, tags=tags)
    return str(version.version)


def _delete_version(tracking_uri: str, name: str, version: str) -> None:
    from mlflow import MlflowClient

    with contextlib.suppress(Exception):
        MlflowClient(tracking_uri=tracking_uri).delete_model_version(name, version)


def cgroup_cpu_limit(path: str = "/sys/fs/cgroup/cpu.max") -> int | None:
    """CPUs granted by a cgroup v2 quota (``docker run --cpus``), rounded up; None if unlimited.
    torch sizes its thread pool by the host's cores, which oversubscribes a limited container."""
    try:
        quota, period = Path(path).read_text(encoding="ascii").split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, -(-int(quota) // int(period)))


@contextlib.contextmanager
def _cpu_threads(threads: int | None, device: str) -> Iterator[None]:
    """Limit torch's intra-op threads and OpenMP/BLAS pools while fitting: to ``threads``
    when set, else to the container's CPU quota when it has one."""
    threads = threads if threads is not None else cgroup_cpu_limit()
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    previous = None
    if device == "cpu":
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        if previous is not None:
            import torch

            torch.set_num_threads(previous)


@contextlib.contextmanager
def _stage(stage: str, run_id: str | None) -> Iterator[None]:
    try:
        yield
    except MlopsLoopError:
        raise
    except Exception as exc:
        if is_connection_error(exc):
            raise
        raise TrainingError(f"{stage} failed: {_short(exc)}", stage=stage, run_id=run_id) from exc


def _short(exc: BaseException, limit: int = 600) -> str:
    text = f"{type(exc).__name__}: {exc}" if not isinstance(exc, MlopsLoopError) else str(exc)
    return text if len(text) <= limit else text[:limit] + " ..."

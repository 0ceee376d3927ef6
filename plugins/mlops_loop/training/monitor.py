"""The ``monitor`` command: nightly drift and decay of the champion, as run inside the
trainer image (it loads the champion, so it needs the model's libraries).

One call, :func:`run_monitor`, takes a ``MonitorRequest`` (core.trainer_protocol) and:

1. returns verdict ``no_champion`` (not an error) when the request names no champion;
2. loads the champion's reference profile from
   ``<reports_root>/profiles/<model>/<version>/profile.json``; on first use it builds it
   (core.profile.build_profile) from the champion's training snapshot (model version tag
   ``train_snapshot_uri``) and its scores on the training set's holdout (the ``holdout``
   folder next to ``train``; the validation snapshot when there is none), stores it there
   and logs it as an artifact (``drift_reference/profile.json``) of the champion's
   training run;
3. reads the recent validated snapshots twice, batch by batch (core.profile.ParquetBatches):
   once to score them with the champion (prediction drift) and collect labels, once for
   core.drift.measure_drift;
4. where recent rows carry labels, core.decay.measure_decay of the live metrics against
   the champion's validation metrics (its MLflow run);
5. writes report.json / report.html (core.drift_report.write_reports) under
   ``<reports_root>/ds=<ds>/`` and logs metrics and both files to the MLflow experiment
   ``<dataset>_monitoring``.

The result (the operator's XCom) is small JSON: ``DriftResult.summary_dict()``
plus ``decay_verdict``, ``decay_reason``, ``reasons``, report URIs, profile URI, the
champion version, and the monitoring run (``monitoring_run_id``,
``monitoring_experiment_id``, ``html_artifact_path``: the "Drift report" link of the
Airflow plugin).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlops_loop.core.config import DatasetConfig
from mlops_loop.core.storage import S3Credentials, is_s3, join_uri
from mlops_loop.core.trainer_protocol import (
    MonitorRequest,
    is_connection_error,
    no_champion_result,
    s3_credentials_from_env,
    trainer_tracking_uri,
)
from mlops_loop.exceptions import MlopsLoopError, TrackingServerError, TrainingError

Log = Callable[[str], None]

PROFILE_ARTIFACT_PATH = "drift_reference"
REPORT_ARTIFACT_PATH = "drift_report"
TRAIN_URI_TAG = "train_snapshot_uri"  # written by training/train.py
VALID_URI_TAG = "valid_snapshot_uri"


def profile_uri_for(reports_root: str, model_name: str, version: str) -> str:
    return join_uri(reports_root, "profiles", model_name, str(version), "profile.json")


def report_prefix_for(reports_root: str, ds: str) -> str:
    return join_uri(reports_root, f"ds={ds}")


def run_monitor(
    request: MonitorRequest,
    *,
    tracking_uri: str | None = None,
    credentials: S3Credentials | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Measure drift and decay of the champion on the request's recent snapshots; see the
    module doc. Raises ConfigError (bad config), TrainingError (stage ``data``: a snapshot
    or the champion's training data cannot be read; ``monitor``: drift cannot be measured)
    or TrackingServerError (MLflow down)."""
    config = request.dataset_config()
    base = {
        "status": "ok",
        "dataset": config.name,
        "model_name": request.model_name,
        "champion_version": request.champion_version,
        "ds": request.ds,
        "since_ds": request.since_ds,
        "until_ds": request.until_ds,
        "snapshots": len(request.snapshot_uris),
    }
    if request.champion_version is None:
        result = no_champion_result(
            config.name, request.model_name, request.ds, request.since_ds, request.until_ds
        )
        log(result["reasons"][0])
        return {**result, "snapshots": len(request.snapshot_uris)}

    tracking_uri = trainer_tracking_uri(tracking_uri)
    credentials = credentials if credentials is not None else s3_credentials_from_env()
    try:
        return _monitor(request, config, base, tracking_uri, credentials, log)
    except MlopsLoopError:
        raise
    except Exception as exc:
        if is_connection_error(exc):
            raise TrackingServerError(
                f"lost the MLflow tracking server at {tracking_uri}: {exc}",
                tracking_uri=tracking_uri,
            ) from exc
        raise


def _monitor(
    request: MonitorRequest,
    config: DatasetConfig,
    base: dict[str, Any],
    tracking_uri: str,
    credentials: S3Credentials,
    log: Log,
) -> dict[str, Any]:
    import mlflow

    from mlops_loop.core.decay import measure_decay
    from mlops_loop.core.drift import measure_drift
    from mlops_loop.core.drift_report import write_reports
    from mlops_loop.core.profile import monitored_features
    from mlops_loop.core.storage import open_storage
    from mlops_loop.exceptions import DriftError

    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    name, version = request.model_name, str(request.champion_version)
    model_version = client.get_model_version(name, version)
    model_uri = f"models:/{name}/{version}"
    log(f"champion {name} version {version} (run {model_version.run_id})")
    model = mlflow.pyfunc.load_model(model_uri)
    settings = config.drift

    profile_uri = profile_uri_for(request.reports_root, name, version)
    profile, built = _reference_profile(
        config, client, model_version, model, profile_uri, credentials, log
    )

    kinds = monitored_features(config, settings)
    files = _snapshot_files(request.snapshot_uris, credentials)
    scores, labels, label_scores = _score_recent(config, model, files, credentials)
    log(f"recent window {request.since_ds}..{request.until_ds}: {len(request.snapshot_uris)} snapshots, "
        f"{scores.size} rows, {labels.size} labelled")  # fmt: skip
    try:
        result = measure_drift(
            profile,
            _batches(
                files, credentials, list(kinds), [n for n, k in kinds.items() if k == "categorical"]
            ),
            config,
            settings,
            recent_scores=scores if scores.size else None,
        )
    except DriftError as exc:
        raise TrainingError(f"drift cannot be measured: {exc}", stage="monitor") from exc

    decay = None
    if labels.size:
        reference_metrics = {
            k: float(v) for k, v in client.get_run(str(model_version.run_id)).data.metrics.items()
        }
        try:
            decay = measure_decay(labels, label_scores, reference_metrics, settings, config.task)
        except DriftError as exc:
            decay = {"verdict": "insufficient_data", "reason": str(exc)}
    log(result.summary())
    if decay is not None:
        log(f"decay verdict: {decay.get('verdict')} - {decay.get('reason', '')}")

    meta = {
        "dataset": config.name,
        "ds": request.ds,
        "window": f"{request.since_ds} .. {request.until_ds}",
        "model_name": name,
        "champion_version": version,
        "profile_uri": profile_uri,
        "snapshots": list(request.snapshot_uris),
    }
    prefix = report_prefix_for(request.reports_root, request.ds)
    uris = write_reports(
        open_storage(prefix, credentials), prefix, result, decay, profile, meta=meta
    )
    log(f"drift report: {uris['html']}")
    run_id, experiment_id = _log_monitoring_run(request, config, result, decay, uris, credentials)

    summary = result.summary_dict()
    return {
        **base,
        **summary,
        "reasons": list(result.reasons)[:10],
        "decay_verdict": decay.get("verdict") if decay else None,
        "decay_reason": decay.get("reason") if decay else None,
        "report_uri": uris["html"],
        "report_json_uri": uris["json"],
        "manifest_uri": uris["manifest"],
        "profile_uri": profile_uri,
        "profile_built": built,
        "monitoring_run_id": run_id,
        "monitoring_experiment_id": experiment_id,
        "html_artifact_path": f"{REPORT_ARTIFACT_PATH}/report.html",
    }


# --- reference profile --------------------------------------------------------------------


def _reference_profile(
    config: DatasetConfig,
    client: Any,
    model_version: Any,
    model: Any,
    profile_uri: str,
    credentials: S3Credentials,
    log: Log,
) -> tuple[dict[str, Any], bool]:
    """(profile, built now?). Loads the stored one; builds, stores and logs it on first use."""
    from mlops_loop.core.profile import (
        build_profile,
        load_profile,
        monitored_features,
        save_profile,
    )
    from mlops_loop.core.storage import open_storage
    from mlops_loop.exceptions import DriftError, ReferenceProfileMissing

    storage = open_storage(profile_uri, credentials)
    try:
        return load_profile(storage, profile_uri, model_version=str(model_version.version)), False
    except ReferenceProfileMissing:
        pass
    tags = dict(model_version.tags or {})
    train_uri = tags.get(TRAIN_URI_TAG)
    if not train_uri:
        raise TrainingError(
            f"{model_version.name} version {model_version.version} has no {TRAIN_URI_TAG!r} tag: "
            "cannot find its training data to build the reference profile",
            stage="data",
        )
    score_uri = _holdout_uri(train_uri, tags.get(VALID_URI_TAG), credentials)
    log(f"building the reference profile of version {model_version.version} from {train_uri} "
        f"(scores on {score_uri})")  # fmt: skip
    settings = config.drift
    kinds = monitored_features(config, settings)
    train_files = _snapshot_files([train_uri], credentials)
    score_files = _snapshot_files([score_uri], credentials)
    scores = _score_recent(config, model, score_files, credentials)[0]
    try:
        profile = build_profile(
            _batches(
                train_files,
                credentials,
                list(kinds),
                [n for n, k in kinds.items() if k == "categorical"],
            ),
            config,
            scores=scores,
            n_bins=settings.n_bins,
            sample_size=settings.reference_sample_size,
            features=settings.features,
        )
    except DriftError as exc:
        raise TrainingError(f"cannot build the reference profile: {exc}", stage="data") from exc
    profile["model_name"] = str(model_version.name)
    profile["model_version"] = str(model_version.version)
    profile["train_snapshot_uri"] = train_uri
    profile["score_snapshot_uri"] = score_uri
    save_profile(storage, profile_uri, profile)
    _log_profile_artifact(client, model_version.run_id, profile_uri, storage)
    log(f"reference profile stored at {profile_uri} ({profile['rows']} rows)")
    return profile, True


def _holdout_uri(train_uri: str, valid_uri: str | None, credentials: S3Credentials) -> str:
    """The training set's holdout (``.../holdout`` next to ``.../train``), else the
    validation snapshot: the champion's scores on rows it was not fitted on."""
    from mlops_loop.core.snapshots import manifest_uri_of
    from mlops_loop.core.storage import open_storage

    stripped = train_uri.rstrip("/")
    if stripped.endswith("/train"):
        holdout = stripped[: -len("train")] + "holdout"
        if open_storage(holdout, credentials).exists(manifest_uri_of(holdout)):
            return holdout
    if valid_uri:
        return valid_uri
    raise TrainingError(
        f"no holdout next to {train_uri} and no validation snapshot tag: no rows to take "
        "the champion's reference scores from",
        stage="data",
    )


def _log_profile_artifact(client: Any, run_id: str, profile_uri: str, storage: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="mlops-profile-") as tmp:
        path = Path(tmp) / "profile.json"
        path.write_text(storage.read_text(profile_uri), encoding="utf-8")
        client.log_artifact(run_id, str(path), artifact_path=PROFILE_ARTIFACT_PATH)


# --- data ---------------------------------------------------------------------------------


def _snapshot_files(snapshot_uris: list[str], credentials: S3Credentials) -> list[str]:
    """Parquet part URIs of the snapshots, in manifest order."""
    from mlops_loop.core.snapshots import load_manifest

    files: list[str] = []
    for uri in snapshot_uris:
        try:
            manifest = load_manifest(uri, credentials=credentials)
        except MlopsLoopError as exc:
            raise TrainingError(f"cannot read snapshot {uri}: {exc}", stage="data") from exc
        files.extend(join_uri(uri, part["name"]) for part in manifest["files"])
    return files


def _filesystem(files: list[str], credentials: S3Credentials) -> Any:
    """A pyarrow S3 filesystem for s3:// files (None for local ones)."""
    if not files or not any(is_s3(f) for f in files):
        return None
    if not all(is_s3(f) for f in files):
        raise TrainingError("snapshots mix local and s3:// locations", stage="data")
    from pyarrow import fs

    kwargs: dict[str, Any] = {
        "access_key": credentials.aws_access_key_id,
        "secret_key": credentials.aws_secret_access_key,
        "session_token": credentials.aws_session_token,
        "region": credentials.region_name or "us-east-1",
    }
    if credentials.endpoint_url:
        parsed = urlparse(credentials.endpoint_url)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    return fs.S3FileSystem(**{k: v for k, v in kwargs.items() if v is not None})


def _batches(
    files: list[str],
    credentials: S3Credentials,
    columns: list[str],
    categorical: list[str] | None = None,
) -> Any:
    from mlops_loop.core.profile import ParquetBatches

    filesystem = _filesystem(files, credentials)
    paths = [f.removeprefix("s3://") for f in files] if filesystem is not None else files
    return ParquetBatches(
        paths, columns=columns, read_dictionary=categorical or None, filesystem=filesystem
    )


def _score_recent(
    config: DatasetConfig, model: Any, files: list[str], credentials: S3Credentials
) -> tuple[Any, Any, Any]:
    """(scores of every row, labels of the labelled rows, their scores), batch by batch."""
    import numpy as np
    import pyarrow.parquet as pq

    from mlops_loop.core.targets import encode_target
    from mlops_loop.exceptions import TargetError, TrainingError

    filesystem = _filesystem(files, credentials)
    columns = list(config.feature_columns)
    if files:
        first = files[0].removeprefix("s3://") if filesystem is not None else files[0]
        names = pq.read_schema(first, filesystem=filesystem).names
        if config.target in names:
            columns.append(config.target)
    scores, labels, label_scores = [], [], []
    for batch in _batches(files, credentials, columns):
        frame = batch.to_pandas()
        predicted = np.asarray(
            model.predict(frame[config.feature_columns]), dtype="float64"
        ).reshape(-1)
        scores.append(predicted)
        if config.target in frame.columns:
            try:
                target = encode_target(config, frame[config.target], where="recent window")
            except TargetError as exc:
                raise TrainingError(f"decay cannot be measured: {exc}", stage="data") from exc
            known = np.isfinite(target)
            labels.append(target[known])
            label_scores.append(predicted[known])

    def join(parts: list[Any]) -> Any:
        return np.concatenate(parts) if parts else np.empty(0)

    return join(scores), join(labels), join(label_scores)


# --- MLflow ------------------------------------------------------------------------------


def _log_monitoring_run(
    request: MonitorRequest,
    config: DatasetConfig,
    result: Any,
    decay: dict[str, Any] | None,
    uris: dict[str, str],
    credentials: S3Credentials,
) -> tuple[str, str]:
    """Log the run; returns its run id and experiment id."""
    import mlflow

    from mlops_loop.core.storage import open_storage

    experiment = request.experiment_name or f"{config.name}_monitoring"
    mlflow.set_experiment(experiment)
    metrics: dict[str, float] = {
        "rows": float(result.rows),
        "reference_rows": float(result.reference_rows),
        "drifted_features": float(len(result.drifted_features)),
        "warned_features": float(len(result.warned_features)),
    }
    for feature in result.features:
        if feature.psi is not None:
            metrics[f"psi.{feature.name}"] = float(feature.psi)
    if result.prediction is not None and result.prediction.psi is not None:
        metrics["psi.prediction"] = float(result.prediction.psi)
    if decay and decay.get("value") is not None:
        metrics[f"live.{decay['metric']}"] = float(decay["value"])
    tags = {
        **request.tags,
        "dataset": config.name,
        "ds": request.ds,
        "model_name": request.model_name,
        "champion_version": str(request.champion_version),
        "drift_verdict": result.verdict,
        "decay_verdict": str(decay.get("verdict")) if decay else "not measured",
        "report_uri": uris["html"],
    }
    storage = open_storage(uris["json"], credentials)
    with mlflow.start_run(run_name=f"drift ds={request.ds}", tags=tags) as run:
        mlflow.log_params(
            {
                "window": f"{request.since_ds}..{request.until_ds}",
                "snapshots": len(request.snapshot_uris),
            }
        )
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory(prefix="mlops-report-") as tmp:
            for key, file_name in (("json", "report.json"), ("html", "report.html")):
                (Path(tmp) / file_name).write_text(storage.read_text(uris[key]), encoding="utf-8")
            mlflow.log_artifacts(tmp, artifact_path=REPORT_ARTIFACT_PATH)
        return str(run.info.run_id), str(run.info.experiment_id)

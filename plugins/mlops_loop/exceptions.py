"""The package's exception types, grouped by hierarchy and stage. Each carries the context
a person needs to act.

Airflow-free: the trainer image and core modules raise these too.
"""

from __future__ import annotations

from typing import Any


class MlopsLoopError(Exception):
    """Base class for every error this package raises on purpose."""


class ConfigError(MlopsLoopError):
    """A dataset config file is missing, unreadable or invalid.

    The message names the file, the key and the problem.
    """


# --- storage --------------------------------------------------------------------------


class StorageError(MlopsLoopError):
    """A storage URI cannot be read or written (missing bucket, no permission, bad URI)."""

    def __init__(self, message: str, *, uri: str) -> None:
        super().__init__(message)
        self.uri = uri


class SnapshotNotFoundError(StorageError):
    """A snapshot URI has no ``manifest.json``: it was never written or its write was
    interrupted (a snapshot only exists once its manifest does)."""


class BucketNotFoundError(StorageError):
    """The bucket an ``s3://`` URI names does not exist on the endpoint."""

    def __init__(self, message: str, *, uri: str, bucket: str) -> None:
        super().__init__(message, uri=uri)
        self.bucket = bucket


# --- ingest and the quality gate ------------------------------------------------------


class IngestError(MlopsLoopError):
    """A landed batch cannot be turned into a snapshot (unreadable, empty, wrong format)."""

    def __init__(self, message: str, *, source_uri: str, file_uri: str | None = None) -> None:
        super().__init__(message)
        self.source_uri = source_uri
        self.file_uri = file_uri


class NoBatchError(IngestError):
    """No landed batch exists for the requested logical date."""


class SourceFileError(IngestError):
    """One landed file of a batch cannot be read: empty, wrong delimiter or encoding,
    corrupted Parquet, malformed rows. ``reason`` is a short machine-readable tag
    (``empty``, ``delimiter``, ``encoding``, ``corrupt``, ``malformed``)."""

    def __init__(self, message: str, *, source_uri: str, file_uri: str, reason: str) -> None:
        super().__init__(message, source_uri=source_uri, file_uri=file_uri)
        self.reason = reason


class MixedSchemaError(IngestError):
    """The files of one batch do not share the same columns."""


class QualityGateFailed(MlopsLoopError):
    """A snapshot failed its Great Expectations suite and was quarantined.

    ``summary`` is the readable text; ``result_uri`` and ``quarantine_uri`` say where the
    full validation result and the quarantined batch are.
    """

    def __init__(
        self,
        summary: str,
        *,
        result_uri: str,
        quarantine_uri: str,
        stats: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(summary)
        self.summary = summary
        self.result_uri = result_uri
        self.quarantine_uri = quarantine_uri
        self.stats = stats or {}


class QualitySuiteError(MlopsLoopError):
    """A Great Expectations suite file is unreadable, not valid JSON, or names an unknown
    expectation type or bad arguments. The message names the file and the expectation."""

    def __init__(self, message: str, *, suite_path: str, expectation: str | None = None) -> None:
        super().__init__(message)
        self.suite_path = suite_path
        self.expectation = expectation


class TargetError(MlopsLoopError):
    """The target column's values do not fit the config's task: text labels that are not
    the positive label and one other, a positive label that never occurs, more than two
    classes, text in a regression target. Names the column and the values found."""

    def __init__(self, message: str, *, column: str) -> None:
        super().__init__(message)
        self.column = column


class TrainingSetError(MlopsLoopError):
    """Not enough validated data to assemble a training set, or a split is too small."""


# --- running the trainer (worker side) ------------------------------------------------


class DockerEngineUnavailable(MlopsLoopError):
    """runner='docker' (the default) but no Docker engine answers at ``docker_url``.
    Raised before anything starts; runner='local' or 'auto' runs the trainer as a local
    process instead."""

    def __init__(self, message: str, *, docker_url: str = "") -> None:
        super().__init__(message)
        self.docker_url = docker_url


class GpuUnavailableError(MlopsLoopError):
    """gpu='required' but the Docker host has no NVIDIA GPU runtime (or, for the local
    runner, this machine lists no NVIDIA GPU). Raised before the trainer starts."""

    def __init__(
        self, message: str, *, docker_url: str = "", runtimes: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.docker_url = docker_url
        self.runtimes = runtimes or []


class TrainerImageNotFound(MlopsLoopError):
    """The trainer image is neither on the Docker host nor pullable."""

    def __init__(self, message: str, *, image: str) -> None:
        super().__init__(message)
        self.image = image


class TrainerResultError(MlopsLoopError):
    """The trainer's result.json is missing, unreadable or incomplete."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class TrainerContainerFailed(MlopsLoopError):
    """A trainer container (or, with the local runner, the trainer process) exited
    non-zero. ``explanation`` says what the exit code means (137: killed, likely out of
    memory...), ``logs`` holds the tail of its output and ``error`` the message from its
    result.json, when it wrote one. ``image`` is empty for a local process."""

    def __init__(
        self,
        message: str,
        *,
        exit_code: int,
        explanation: str,
        image: str,
        command: list[str],
        logs: str = "",
        error: str | None = None,
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.explanation = explanation
        self.image = image
        self.command = command
        self.logs = logs
        self.error = error


# --- inside the trainer ---------------------------------------------------------------


class TrainingError(MlopsLoopError):
    """Training could not run or finish; no model version was registered.

    ``stage`` says where it stopped (config, snapshots, tracking, fit, log_model, register);
    ``run_id`` is the MLflow run (ended as FAILED) when one had been started.
    """

    def __init__(self, message: str, *, stage: str, run_id: str | None = None) -> None:
        super().__init__(message)
        self.stage = stage
        self.run_id = run_id


class TrackingServerError(TrainingError):
    """The MLflow tracking server did not answer after the client's retries."""

    def __init__(
        self, message: str, *, tracking_uri: str, stage: str = "tracking", run_id: str | None = None
    ) -> None:
        super().__init__(message, stage=stage, run_id=run_id)
        self.tracking_uri = tracking_uri


class EvaluationError(MlopsLoopError):
    """A challenger/champion comparison cannot run on the given inputs (holdout without
    the target column, labels and scores of different lengths, missing labels)."""

    def __init__(self, message: str, *, metric: str | None = None, rows: int | None = None) -> None:
        super().__init__(message)
        self.metric = metric
        self.rows = rows


# --- the model registry ---------------------------------------------------------------


class RegistryError(MlopsLoopError):
    """A model registry operation was refused or failed; names the model and version."""

    def __init__(self, message: str, *, model_name: str, version: str | None = None) -> None:
        super().__init__(message)
        self.model_name = model_name
        self.version = version


class PromotionLockTimeout(RegistryError):
    """Another promotion or rollback of the same model held the lock for too long."""

    def __init__(
        self, message: str, *, model_name: str, lock_name: str, holder: str | None
    ) -> None:
        super().__init__(message, model_name=model_name)
        self.lock_name = lock_name
        self.holder = holder


class PromotionStale(RegistryError):
    """The champion moved between evaluation and promotion; the alias was not overwritten.
    ``expected`` is the champion the evaluation compared against, ``current`` the one now."""

    def __init__(
        self,
        message: str,
        *,
        model_name: str,
        version: str,
        expected: str | None,
        current: str | None,
    ) -> None:
        super().__init__(message, model_name=model_name, version=version)
        self.expected = expected
        self.current = current


class RollbackRefused(RegistryError):
    """A rollback target is unknown, deleted or failed validation (and force was not set)."""


class PromotionLockLost(RegistryError):
    """The promotion lock's lease ran out or another promoter took the lock over before a
    write under it; that write and every later one were not made (the champion alias did
    not move). ``holder`` is the lock's holder now, when known. Retrying is safe."""

    def __init__(
        self, message: str, *, model_name: str, lock_name: str, holder: str | None
    ) -> None:
        super().__init__(message, model_name=model_name)
        self.lock_name = lock_name
        self.holder = holder


# --- drift monitoring -----------------------------------------------------------------


class DriftError(MlopsLoopError):
    """Drift or decay monitoring cannot run on the given inputs (a monitored feature missing
    from the recent data or the profile, a bad profile, labels and scores of different
    lengths). ``feature`` names the column when one is at fault."""

    def __init__(self, message: str, *, feature: str | None = None) -> None:
        super().__init__(message)
        self.feature = feature


class ReferenceProfileMissing(DriftError):
    """The champion has no stored reference profile (or it cannot be read), so drift cannot
    be measured; build one with core.profile.build_profile from its training data."""

    def __init__(
        self, message: str, *, profile_uri: str | None = None, model_version: str | None = None
    ) -> None:
        super().__init__(message)
        self.profile_uri = profile_uri
        self.model_version = model_version


# --- trainer containers (core/containers.py, operators/docker_train.py) ---------------


class RetrainRecordError(MlopsLoopError):
    """The record of drift-triggered retrain requests (``reports/drift/retrain_requests.json``)
    cannot be read as such; ``uri`` names it. The cool-down cannot be judged without it."""

    def __init__(self, message: str, *, uri: str) -> None:
        super().__init__(message)
        self.uri = uri

"""Train a model in the trainer image: the ``train`` command of TrainerContainerOperator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from mlops_loop.operators.trainer import TrainerContainerOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from mlops_loop.core.config import DatasetConfig
    from mlops_loop.core.trainer_protocol import TrainerRequest, TrainRequest
    from mlops_loop.core.training_set import ChampionComparison


class DockerTrainOperator(TrainerContainerOperator):
    """Train a model in the trainer image (GPU when the Docker host has one).

    Validates the dataset config and the training settings with the overrides before
    any container starts, builds the train request (config, snapshot URIs, registered
    model name, seed, overrides, Airflow and image tags), mounts a local storage root
    read-only at the same path and returns the trainer's result: run_id, model_uri,
    model_name, model_version, metrics, device.

    Nothing new, nothing trained: unless ``retrain``, the operator first compares this
    run's training input (the snapshots' hashes, config hash, training settings with
    the overrides, the trainer image and its code version:
    ``core.training_set.training_input_hash``) with the ``training_input_sha256`` tag
    of the current ``champion``. When they are equal the trainer would only find the
    champion again and an evaluation would compare it with itself, so no container
    starts: the task is SKIPPED with the reason (in the log, and as the XCom
    ``up_to_date``), which skips an evaluation and promotion downstream of it. A run
    with other hyperparameters or another model type is a different input and trains.

    MLflow down: the champion comparison fails the task with TrackingServerUnavailable,
    naming the server, before any container starts, within
    ``hooks.mlflow.probe_bound_s()`` (27 s with the defaults). With ``retrain`` there is
    no comparison: the trainer itself gives up after the same client retries and exits
    with code 4 (ExitCode.TRACKING).

    :param config_path: Dataset config YAML. (templated)
    :param train_snapshot_uri: Training snapshot URI. (templated)
    :param valid_snapshot_uri: Validation snapshot URI. (templated)
    :param model_type: ``mlp`` or ``hist_gradient_boosting``; empty: the config's
        ``training.model_type``. (templated)
    :param registered_model_name: Registry name; default from the config's training
        section, else ``<dataset>_model``. (templated)
    :param seed: Random seed; default from the config's training section. (templated)
    :param hyperparameters: The DAG author's overrides of the training settings: any
        training key (``model_type``, ``device``, ...) or hyperparameter, e.g.
        ``{"max_epochs": 5}``. Never wire a trigger form's field here. (templated)
    :param form_hyperparameters: A trigger form's overrides: only hyperparameters of the
        selected model type; any other key (``registered_model_name``, ``seed``, a
        section, ...) fails the task at once, naming the key
        (``core.config.form_hyperparameters``). Applied over ``hyperparameters``.
        (templated)
    :param retrain: Train a new version even when one exists for the identical training
        input (otherwise the trainer reuses that version, and an input identical to the
        champion's skips the task). (templated; "true"/"false" ok)
    :param reason: Why this model is trained (a trigger form's reason); recorded as the
        ``reason`` tag of the run and the model version. Empty: derived from what started
        the run (the drift report and its drifted features, the validated dates, else
        the run type; ``core.triggers.run_reason``). (templated)
    :param kwargs: TrainerContainerOperator arguments (gpu, image, mlflow_conn_id,
        mem_limit, cpus, shm_size, docker_url, network_mode, runner, ...).
    """

    trainer_command = "train"
    template_fields: Sequence[str] = (
        "train_snapshot_uri",
        "valid_snapshot_uri",
        "model_type",
        "registered_model_name",
        "seed",
        "hyperparameters",
        "form_hyperparameters",
        "retrain",
        "reason",
        *TrainerContainerOperator.template_fields,
    )
    template_fields_renderers = {"hyperparameters": "json", "form_hyperparameters": "json"}

    def __init__(
        self,
        *,
        train_snapshot_uri: str,
        valid_snapshot_uri: str,
        model_type: str | None = None,
        registered_model_name: str | None = None,
        seed: int | str | None = None,
        hyperparameters: dict[str, Any] | str | None = None,
        form_hyperparameters: dict[str, Any] | str | None = None,
        retrain: bool | str = False,
        reason: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.train_snapshot_uri = train_snapshot_uri
        self.valid_snapshot_uri = valid_snapshot_uri
        self.model_type = model_type
        self.registered_model_name = registered_model_name
        self.seed = seed
        self.hyperparameters = hyperparameters
        self.form_hyperparameters = form_hyperparameters
        self.retrain = retrain
        self.reason = reason

    def build_request(self, context: Context, config: DatasetConfig) -> TrainRequest:
        from mlops_loop.core.config import (
            form_hyperparameters,
            given,
            parse_flag,
            training_settings,
        )
        from mlops_loop.core.trainer_protocol import TrainRequest, config_payload
        from mlops_loop.operators.triggers import reason_for_run

        overrides = _as_overrides(self.hyperparameters)
        if given(self.model_type):
            overrides["model_type"] = str(self.model_type).strip()
        if given(self.registered_model_name):
            overrides["registered_model_name"] = str(self.registered_model_name).strip()
        if given(self.seed):
            overrides["seed"] = int(str(self.seed))
        form = _as_overrides(self.form_hyperparameters)
        if form:  # a form tunes the selected model only (ConfigError naming any other key)
            selected = str(overrides.get("model_type") or config.training.model_type)
            overrides.update(form_hyperparameters(form, selected))
        # Raises ConfigError naming the key (training.mlp.lr ...) before any container.
        settings = training_settings(config, overrides)
        reason = reason_for_run(context, self.reason)
        tags = {"reason": reason} if reason else {}
        return TrainRequest(
            config=config_payload(config),
            train_snapshot_uri=self.train_snapshot_uri,
            valid_snapshot_uri=self.valid_snapshot_uri,
            registered_model_name=str(settings.registered_model_name),
            seed=settings.seed,
            hyperparameters={
                k: v for k, v in overrides.items() if k not in ("registered_model_name", "seed")
            },
            tags=tags,
            retrain=parse_flag(self.retrain, "retrain"),
        )

    def result_without_trainer(
        self, context: Context, config: DatasetConfig, request: TrainerRequest
    ) -> dict[str, Any] | None:
        """Skip the task (AirflowSkipException with the reason) when this run's training
        input is the champion's; None (train) otherwise or with ``retrain``."""
        from airflow.sdk.exceptions import AirflowSkipException

        train_request = cast("TrainRequest", request)  # build_request above made it
        if train_request.retrain:
            return None
        comparison = self.compare_with_champion(config, train_request)
        if not comparison.up_to_date:
            self.log.info("%s", comparison.reason)
            return None
        ti = context.get("ti") if context else None
        if ti is not None:
            ti.xcom_push(key="up_to_date", value=comparison.to_xcom())
        raise AirflowSkipException(comparison.reason)

    def compare_with_champion(
        self, config: DatasetConfig, request: TrainRequest
    ) -> ChampionComparison:
        """This request's training input against the current champion's, before anything
        starts: the snapshot manifests are read, the champion's version tags fetched and
        the code that would run named (the trainer image's labels, or the local process)."""
        from mlops_loop.core.snapshots import load_manifest
        from mlops_loop.core.training_set import (
            compare_with_champion,
            resolve_train_settings,
            training_input_hash,
        )

        credentials = self.s3_credentials(config)
        train_sha = str(
            load_manifest(request.train_snapshot_uri, credentials=credentials).get("sha256", "")
        )
        valid_sha = str(
            load_manifest(request.valid_snapshot_uri, credentials=credentials).get("sha256", "")
        )
        trainer_config, settings = resolve_train_settings(request)
        code = self.code_tags()
        name = str(settings.registered_model_name)
        champion = self.champion(name)
        champion_tags = (
            dict(self.mlflow_hook.client.get_model_version(name, champion.version).tags)
            if champion.version is not None
            else None
        )
        candidate = {
            "train_snapshot_sha256": train_sha,
            "valid_snapshot_sha256": valid_sha,
            "config_hash": trainer_config.config_hash(),
            "model_type": settings.model_type,
            "seed": str(settings.seed),
            **code,
        }
        return compare_with_champion(
            name,
            training_input_hash(settings, trainer_config, train_sha, valid_sha, code),
            candidate,
            champion.version,
            champion_tags,
        )

    def code_tags(self) -> dict[str, str]:
        """``code_version`` and ``trainer_image`` as the trainer will record them: the
        image's labels on a Docker engine (read, no container started), else the local
        process's."""
        import os
        import sys

        from mlops_loop.core.containers import image_tags, local_tags
        from mlops_loop.core.trainer_protocol import TRAINER_PYTHON_ENV

        if self._resolve_runner() == "local":
            tags = local_tags(os.environ.get(TRAINER_PYTHON_ENV) or sys.executable)
        else:
            tags = image_tags(self.image, self._inspect_image())
        return {
            "code_version": tags.get("code_version", ""),
            "trainer_image": tags.get("trainer_image", ""),
        }

    def input_paths(self, config: DatasetConfig, request: TrainerRequest) -> list[str | None]:
        return [config.root, self.train_snapshot_uri, self.valid_snapshot_uri]

    def log_result(self, result: dict[str, Any]) -> None:
        self.log.info(
            "Registered %s version %s (run %s) on %s; metrics %s",
            result.get("model_name"),
            result.get("model_version"),
            result.get("run_id"),
            result.get("device"),
            result.get("metrics"),
        )


def _as_overrides(value: Any) -> dict[str, Any]:
    """The hyperparameter overrides: a dict, its JSON text, or empty."""
    import json

    from mlops_loop.core.config import given

    if not given(value) or value == {}:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"hyperparameters must be a JSON object, got {value[:200]!r}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"hyperparameters must be an object, got {type(value).__name__}")
    return dict(value)

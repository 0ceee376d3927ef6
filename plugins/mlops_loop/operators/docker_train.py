"""Train a model in the trainer image: the ``train`` command of TrainerContainerOperator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlops_loop.operators.trainer import TrainerContainerOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from mlops_loop.core.config import DatasetConfig
    from mlops_loop.core.trainer_protocol import TrainerRequest, TrainRequest


class DockerTrainOperator(TrainerContainerOperator):
    """Train a model in the trainer image (GPU when the Docker host has one).

    Validates the dataset config and the training settings with the overrides before
    any container starts, builds the train request (config, snapshot URIs, registered
    model name, seed, overrides, Airflow and image tags), mounts a local storage root
    read-only at the same path and returns result.json: run_id, model_uri, model_name,
    model_version, metrics, device.

    :param config_path: Dataset config YAML. (templated)
    :param train_snapshot_uri: Training snapshot URI. (templated)
    :param valid_snapshot_uri: Validation snapshot URI. (templated)
    :param model_type: ``mlp`` or ``hist_gradient_boosting``; empty: the config's
        ``training.model_type``. (templated)
    :param registered_model_name: Registry name; default from the config's training
        section, else ``<dataset>_model``. (templated)
    :param seed: Random seed; default from the config's training section. (templated)
    :param hyperparameters: Overrides of the training settings, e.g. ``{"max_epochs": 5}``.
        (templated)
    :param retrain: Train a new version even when one exists for the identical training
        input (otherwise the trainer reuses that version). (templated; "true"/"false" ok)
    :param reason: Why this model is trained (a trigger form's reason); recorded as the
        ``reason`` tag of the run and the model version. (templated)
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
        "retrain",
        "reason",
        *TrainerContainerOperator.template_fields,
    )
    template_fields_renderers = {"hyperparameters": "json"}

    def __init__(
        self,
        *,
        train_snapshot_uri: str,
        valid_snapshot_uri: str,
        model_type: str | None = None,
        registered_model_name: str | None = None,
        seed: int | str | None = None,
        hyperparameters: dict[str, Any] | str | None = None,
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
        self.retrain = retrain
        self.reason = reason

    def build_request(self, context: Context, config: DatasetConfig) -> TrainRequest:
        from mlops_loop.core.config import given, parse_flag, training_settings
        from mlops_loop.core.trainer_protocol import TrainRequest, config_payload

        overrides = _as_overrides(self.hyperparameters)
        if given(self.model_type):
            overrides["model_type"] = str(self.model_type).strip()
        if given(self.registered_model_name):
            overrides["registered_model_name"] = str(self.registered_model_name).strip()
        if given(self.seed):
            overrides["seed"] = int(str(self.seed))
        # Raises ConfigError naming the key (training.mlp.lr ...) before any container.
        settings = training_settings(config, overrides)
        tags = {"reason": str(self.reason)[:500]} if given(self.reason) else {}
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

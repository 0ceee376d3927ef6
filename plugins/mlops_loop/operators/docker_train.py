"""Run trainer commands (train, later evaluate and score) in the trainer image.

``TrainerContainerOperator`` is the generic adapter: any trainer command with a request
dict, GPU decision, request/result files, exit-code explanations and cleanup. Its
``runner`` picks where the command runs: the trainer image on a Docker engine (default),
or, with no engine, the same entrypoint as a local process of the worker.
``DockerTrainOperator`` is the thin subclass for ``train``: it validates the dataset
config and training settings before any container starts and builds the train request.
The decisions themselves live in ``mlops_loop.core.containers`` (no Airflow there).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

# DockerOperator is the base class, so the docker provider (and docker-py) load with this
# module; everything else heavy is imported inside methods.
from airflow.providers.docker.operators.docker import DockerOperator

from mlops_loop.core.containers import (
    DEFAULT_TRAINER_IMAGE,
    RUNNER_ENV,
    RUNNERS,
    TRAINER_PYTHON_ENV,
)

if TYPE_CHECKING:
    from pathlib import Path

    from airflow.sdk import Context
    from pydantic import BaseModel

    from mlops_loop.core.config import DatasetConfig
    from mlops_loop.core.containers import GpuDecision, LocalTrainerProcess
    from mlops_loop.core.storage import S3Credentials

# Env vars read at run time (never at parse time) when the matching argument is left out.
IO_ROOT_ENV = "MLOPS_LOOP_TRAINER_IO_ROOT"
NETWORK_ENV = "MLOPS_LOOP_TRAINER_NETWORK"

_DOCKER_FIELDS = tuple(f for f in DockerOperator.template_fields if f != "command")


class TrainerContainerOperator(DockerOperator):
    """Run ``python -m mlops_loop.training <trainer_command>`` in the trainer image.

    The operator writes ``request`` to ``request.json`` in a fresh host folder mounted at
    ``/mlops/io``, runs the container (its output streams into the task log), reads
    ``result.json`` back and returns it as the XCom value. The container is removed in
    every outcome; ``on_kill`` stops it. A non-zero exit raises TrainerContainerFailed
    with the exit code explained and the tail of the container log.

    :param trainer_command: ``train``, ``evaluate`` or ``score``. (templated)
    :param request: JSON-serialisable request for that command. (templated)
    :param gpu: ``auto`` (GPU when the Docker host has the NVIDIA runtime, else CPU with a
        warning), ``required`` (fail before starting when it has none) or ``none``. (templated)
    :param image: Trainer image. (templated)
    :param mlflow_tracking_uri: http(s) MLflow server the container logs to; default
        ``$MLFLOW_TRACKING_URI`` of the worker. (templated)
    :param read_only_paths: Host paths bind-mounted read-only at the same path (local
        storage roots, so local URIs stay valid in the container). (templated)
    :param aws_conn_id: Airflow Connection with the S3 key (login) and secret (password),
        passed as private environment (never logged); its extra ``endpoint_url`` /
        ``region_name`` win over the two arguments below (as in mlops_loop.hooks.s3).
    :param s3_endpoint_url: S3-compatible endpoint for the container. (templated)
    :param s3_region: AWS region for the container. (templated)
    :param io_dir_root: Host folder for the per-task request/result folder; it must be
        the same path for the worker and the Docker engine. Default
        ``$MLOPS_LOOP_TRAINER_IO_ROOT`` or the system temp folder.
    :param network_mode: Container network; default ``$MLOPS_LOOP_TRAINER_NETWORK`` or
        ``host`` (reaches servers on the host's 127.0.0.1).
    :param runner: Where the command runs: ``docker`` (the trainer image; fails at once
        when no Docker engine answers), ``local`` (the same entrypoint and request/result
        files as a child process of the worker, in ``$MLOPS_LOOP_TRAINER_PYTHON`` or the
        worker's Python, which then needs ``mlops_loop[trainer]``; no container isolation:
        mem_limit, cpus, shm_size and network settings do not apply) or ``auto`` (docker
        when an engine answers, else local with a warning). Default
        ``$MLOPS_LOOP_TRAINER_RUNNER`` or ``docker``. (templated)
    :param kwargs: DockerOperator arguments (mem_limit, cpus, shm_size, docker_url,
        mounts, environment, private_environment, ...).
    """

    template_fields: Sequence[str] = (
        "trainer_command",
        "request",
        "gpu",
        "mlflow_tracking_uri",
        "read_only_paths",
        "s3_endpoint_url",
        "s3_region",
        "runner",
        *_DOCKER_FIELDS,
    )
    template_fields_renderers = {"request": "json"}
    ui_color = "#d6ecf7"

    def __init__(
        self,
        *,
        trainer_command: str,
        request: dict[str, Any] | None = None,
        gpu: str = "auto",
        image: str = DEFAULT_TRAINER_IMAGE,
        mlflow_tracking_uri: str | None = None,
        read_only_paths: list[str] | None = None,
        aws_conn_id: str | None = None,
        s3_endpoint_url: str | None = None,
        s3_region: str | None = None,
        io_dir_root: str | None = None,
        network_mode: str | None = None,
        runner: str | None = None,
        mount_tmp_dir: bool = False,
        **kwargs: Any,
    ) -> None:
        if "auto_remove" in kwargs:
            raise ValueError(
                "auto_remove is not an option here: the trainer container is always removed"
            )
        if "command" in kwargs:
            raise ValueError("command is built from trainer_command; pass trainer_command instead")
        if gpu not in ("auto", "required", "none"):
            raise ValueError(f"gpu must be 'auto', 'required' or 'none', got {gpu!r}")
        if runner is not None and runner not in RUNNERS and "{{" not in runner:
            raise ValueError(f"runner must be one of {', '.join(RUNNERS)}, got {runner!r}")
        super().__init__(
            image=image,
            command=None,
            network_mode=network_mode,
            mount_tmp_dir=mount_tmp_dir,
            auto_remove="never",
            **kwargs,
        )
        self.trainer_command = trainer_command
        self.request = request or {}
        self.gpu = gpu
        self.mlflow_tracking_uri = mlflow_tracking_uri
        self.read_only_paths = read_only_paths or []
        self.aws_conn_id = aws_conn_id
        self.s3_endpoint_url = s3_endpoint_url
        self.s3_region = s3_region
        self.io_dir_root = io_dir_root
        self.runner = runner
        self._io_dir: Path | None = None
        self._runner_used: str | None = None  # docker or local, once execute() decided
        self._process: LocalTrainerProcess | None = None

    # --- hooks for subclasses ---------------------------------------------------------

    def build_request(self, context: Context) -> BaseModel | dict[str, Any]:
        """The request to write; subclasses validate their inputs and build it here."""
        return dict(self.request)

    def container_read_only_paths(self, request: BaseModel | dict[str, Any]) -> list[str]:
        """Host paths the container must see (read-only, same path)."""
        return list(self.read_only_paths)

    def prepare_container(self, request: BaseModel | dict[str, Any]) -> None:
        """Container-only settings (extra mounts, user); not called for a local process."""

    def result_model(self) -> type[BaseModel] | None:
        """Pydantic model result.json must match (None: only ``status`` == ok)."""
        return None

    # --- run ----------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_loop.core.containers import (
            CONTAINER_IO_DIR,
            check_tracking_uri,
            container_command,
            container_environment,
            image_tags,
            local_read_only_paths,
            make_io_dir,
            read_result,
            with_tags,
            write_request,
        )

        # Everything that can be checked is checked before a container starts: the
        # command, the tracking URI, the request (config validation), the runner (is there
        # a Docker engine?), the GPU, the image.
        command = container_command(self.trainer_command)
        tracking_uri = check_tracking_uri(
            self.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"), local=True
        )
        request = self.build_request(context)
        self._runner_used = self._resolve_runner()
        local = self._runner_used == "local"
        if local:
            return self._execute_local(request, tracking_uri)
        tracking_uri = check_tracking_uri(tracking_uri)  # the container needs http(s)
        self.prepare_container(request)
        decision = self._decide_gpu()
        image_info = self._inspect_image()
        request = with_tags(
            request, {"trainer_runner": "docker", **image_tags(self.image, image_info)}
        )

        from docker.types import DeviceRequest, Mount

        self.command = command
        self.network_mode = self.network_mode or os.environ.get(NETWORK_ENV) or "host"
        self.device_requests = (
            [DeviceRequest(count=-1, capabilities=[["gpu"]])] if decision.use_gpu else None
        )
        env, secrets = container_environment(tracking_uri, self.s3_credentials())
        self.environment = {**self.environment, **env}
        self._private_environment = {**self._private_environment, **secrets}  # never logged
        self._io_dir = make_io_dir(self.io_dir_root or os.environ.get(IO_ROOT_ENV))
        try:
            write_request(self._io_dir, request)
            paths = local_read_only_paths(self.container_read_only_paths(request))
            # The user's own mounts stay; ours replace any left from an earlier execute().
            ours = {CONTAINER_IO_DIR, *paths}
            self.mounts = [
                *(m for m in self.mounts if (m.get("Target") or m.get("target")) not in ours),
                Mount(target=CONTAINER_IO_DIR, source=str(self._io_dir), type="bind"),
                *(Mount(target=p, source=p, type="bind", read_only=True) for p in paths),
            ]
            self.log.info(
                "Trainer %s in %s (image id %s), %s; read-only mounts: %s",
                self.trainer_command,
                self.image,
                image_info.get("Id", "?")[:19],
                "GPU" if decision.use_gpu else "CPU",
                paths or "none",
            )
            self._run_container(context)
            result = read_result(self._io_dir, self.result_model())
            self._check_device(result, decision)
            return result
        finally:
            self._remove_container()
            shutil.rmtree(self._io_dir, ignore_errors=True)
            self._io_dir = None

    def _execute_local(
        self, request: BaseModel | dict[str, Any], tracking_uri: str
    ) -> dict[str, Any]:
        """The same command, request and result files as a child process of the worker."""
        from mlops_loop.core.containers import (
            LocalTrainerProcess,
            container_environment,
            decide_local_gpu,
            explain_exit_code,
            local_command,
            local_environment,
            local_tags,
            log_tail,
            make_io_dir,
            nvidia_gpus,
            read_result,
            read_result_file,
            with_tags,
            write_request,
        )
        from mlops_loop.exceptions import TrainerContainerFailed, TrainerResultError

        decision = decide_local_gpu(self.gpu, [] if self.gpu == "none" else nvidia_gpus())
        (self.log.warning if decision.warn else self.log.info)("%s", decision.reason)
        python = os.environ.get(TRAINER_PYTHON_ENV) or sys.executable
        request = with_tags(request, local_tags(python))
        env, secrets = container_environment(tracking_uri, self.s3_credentials())
        process_env = local_environment(
            os.environ,
            {**(self.environment or {}), **env},
            {**self._private_environment, **secrets},  # never logged
            use_gpu=decision.use_gpu,
        )
        not_applied = [
            name
            for name, value in (
                ("mem_limit", self.mem_limit),
                ("cpus", self.cpus != 1.0),
                ("shm_size", self.shm_size),
            )
            if value
        ]
        self._io_dir = make_io_dir(self.io_dir_root or os.environ.get(IO_ROOT_ENV))
        try:
            write_request(self._io_dir, request)
            argv = local_command(self.trainer_command, self._io_dir, python)
            self.log.warning(
                "Trainer %s as a LOCAL PROCESS (%s), not in the trainer image: %s%s",
                self.trainer_command,
                python,
                "GPU" if decision.use_gpu else "CPU",
                f"; container limits not applied: {', '.join(not_applied)}" if not_applied else "",
            )
            self._process = LocalTrainerProcess(argv, env=process_env, cwd=self._io_dir)
            exit_code = self._process.stream(lambda line: self.log.info("%s", line))
            if exit_code != 0:
                explanation = explain_exit_code(exit_code)
                error = None
                with contextlib.suppress(TrainerResultError):
                    error = (read_result_file(self._io_dir) or {}).get("error")
                tail = log_tail(self._process.tail)
                message = f"trainer {self.trainer_command} failed as a local process: {explanation}"
                if error:
                    message += f"\ntrainer error: {error}"
                if tail:
                    message += f"\nlast lines of its output:\n{tail}"
                raise TrainerContainerFailed(
                    message,
                    exit_code=exit_code,
                    explanation=explanation,
                    image="",
                    command=argv,
                    logs=tail,
                    error=error,
                )
            result = read_result(self._io_dir, self.result_model())
            self._check_device(result, decision)
            return result
        finally:
            self._process = None
            shutil.rmtree(self._io_dir, ignore_errors=True)
            self._io_dir = None

    def _run_container(self, context: Context) -> None:
        from airflow.providers.docker.exceptions import DockerContainerFailedException

        from mlops_loop.core.containers import explain_exit_code, log_tail, read_result_file
        from mlops_loop.exceptions import TrainerContainerFailed, TrainerResultError

        try:
            super().execute(context)
        except DockerContainerFailedException as exc:
            state = self._container_state()
            exit_code = int(state.get("ExitCode", -1))
            explanation = explain_exit_code(
                exit_code, oom_killed=bool(state.get("OOMKilled")), mem_limit=self.mem_limit
            )
            error = None
            try:
                written = read_result_file(self._io_dir) if self._io_dir else None
                error = (written or {}).get("error")
            except TrainerResultError:
                pass
            tail = log_tail([str(line) for line in (exc.logs or [])])
            message = f"trainer {self.trainer_command} failed in {self.image}: {explanation}"
            if error:
                message += f"\ntrainer error: {error}"
            if tail:
                message += f"\nlast lines of the container log:\n{tail}"
            raise TrainerContainerFailed(
                message,
                exit_code=exit_code,
                explanation=explanation,
                image=self.image,
                command=list(self.command or []),
                logs=tail,
                error=error,
            ) from exc

    # --- Docker host --------------------------------------------------------------------

    def _resolve_runner(self) -> str:
        """docker or local, from ``runner`` (auto: docker when an engine answers)."""
        from mlops_loop.core.containers import check_runner
        from mlops_loop.exceptions import DockerEngineUnavailable

        runner = check_runner(str(self.runner or os.environ.get(RUNNER_ENV) or "docker"))
        if runner == "local":
            return runner
        try:
            self.cli  # noqa: B018 - the provider's client pings the engine when created
        except Exception as exc:  # DockerException, AirflowException from the hook
            if runner == "auto":
                self.log.warning(
                    "No Docker engine answers at %s (%s): runner='auto' runs the trainer as a "
                    "local process with the same request/result contract",
                    self.docker_url,
                    exc,
                )
                return "local"
            raise DockerEngineUnavailable(
                f"no Docker engine answers at {self.docker_url} ({exc}); start one "
                "(scripts/install_docker.sh), point docker_url at one, or set runner='local' "
                f"or 'auto' (${RUNNER_ENV}) to run the trainer as a local process",
                docker_url=str(self.docker_url),
            ) from exc
        return "docker"

    def _decide_gpu(self) -> GpuDecision:
        from mlops_loop.core.containers import decide_gpu

        info = None if self.gpu == "none" else self.cli.info()
        decision = decide_gpu(self.gpu, info, docker_url=str(self.docker_url))
        if decision.warn:
            self.log.warning("%s", decision.reason)
        else:
            self.log.info("%s", decision.reason)
        return decision

    def _inspect_image(self) -> dict[str, Any]:
        """The image's attributes; pulls it when it is not on the Docker host (or
        ``force_pull``); TrainerImageNotFound when that fails."""
        from docker.errors import APIError, ImageNotFound

        from mlops_loop.exceptions import TrainerImageNotFound

        hint = (
            "build it with include/docker/build_trainer_image.sh "
            "(prints the tag; mlops-loop/trainer:latest is tagged too) or push it to a registry the host can reach"
        )
        try:
            if self.force_pull or not self.cli.images(name=self.image):
                self.log.info("Image %s is not on the Docker host; pulling it", self.image)
                self.cli.pull(self.image)
                self.force_pull = False  # DockerOperator would pull again otherwise
            info: dict[str, Any] = self.cli.inspect_image(self.image)
            return info
        except ImageNotFound as exc:
            raise TrainerImageNotFound(
                f"trainer image {self.image} not found: {hint}", image=self.image
            ) from exc
        except APIError as exc:
            raise TrainerImageNotFound(
                f"trainer image {self.image} is not on the Docker host and could not be pulled "
                f"({exc.explanation or exc}): {hint}",
                image=self.image,
            ) from exc

    def _container_state(self) -> dict[str, Any]:
        from docker.errors import APIError

        if not self.container:
            return {}
        try:
            state: dict[str, Any] = self.cli.inspect_container(self.container["Id"])["State"]
            return state
        except APIError:
            return {}

    def _remove_container(self) -> None:
        from docker.errors import APIError, NotFound

        if not self.container:
            return
        try:
            self.cli.remove_container(self.container["Id"], force=True)
        except NotFound:
            pass
        except APIError as exc:
            self.log.warning("Could not remove container %s: %s", self.container["Id"][:12], exc)
        self.container = None  # type: ignore[assignment]

    def on_kill(self) -> None:
        if self._process is not None:
            self._process.stop()
        else:
            super().on_kill()  # stops the container
            self._remove_container()
        if self._io_dir is not None:
            shutil.rmtree(self._io_dir, ignore_errors=True)

    # --- environment --------------------------------------------------------------------

    def s3_credentials(self) -> S3Credentials | None:
        """S3 endpoint, region and keys for the container (keys from ``aws_conn_id``);
        None when nothing S3 is configured."""
        from mlops_loop.core.config import S3Settings
        from mlops_loop.hooks.s3 import s3_credentials_for

        settings = S3Settings(
            aws_conn_id=self.aws_conn_id,
            endpoint_url=self.s3_endpoint_url,
            region_name=self.s3_region,
        )
        return s3_credentials_for(settings)

    def _check_device(self, result: dict[str, Any], decision: GpuDecision) -> None:
        device = result.get("device")
        if decision.use_gpu and device != "cuda":
            self.log.warning("The trainer was given the GPU but ran on %s", device)


class DockerTrainOperator(TrainerContainerOperator):
    """Train a model in the trainer image (GPU when the Docker host has one).

    Validates the dataset config and the training settings with the ``hyperparameters``
    overrides before any container starts, builds the train request (config, snapshot
    URIs, registered model name, seed, overrides, Airflow and image tags), mounts a local
    storage root read-only at the same path, passes S3 credentials from the config's
    ``storage.s3.aws_conn_id`` as private environment, and returns result.json: run_id,
    model_uri, model_name, model_version, metrics, device.

    :param config_path: Dataset config YAML. (templated)
    :param train_snapshot_uri: Training snapshot URI. (templated)
    :param valid_snapshot_uri: Validation snapshot URI. (templated)
    :param registered_model_name: Registry name; default from the config's training
        section, else ``<dataset>_model``. (templated)
    :param seed: Random seed; default from the config's training section. (templated)
    :param hyperparameters: Overrides of the training settings, e.g. ``{"max_epochs": 5}``.
        (templated)
    :param retrain: Train a new version even when one exists for the identical training
        input (otherwise the trainer reuses that version). (templated; "true"/"false" ok)
    :param reason: Why this model is trained (a trigger form's reason); recorded as the
        ``reason`` tag of the run and the model version. (templated)
    :param kwargs: TrainerContainerOperator arguments (gpu, image, mlflow_tracking_uri,
        mem_limit, cpus, shm_size, docker_url, network_mode, ...).
    """

    template_fields: Sequence[str] = (
        "config_path",
        "train_snapshot_uri",
        "valid_snapshot_uri",
        "registered_model_name",
        "seed",
        "hyperparameters",
        "retrain",
        "reason",
        *(
            f
            for f in TrainerContainerOperator.template_fields
            if f not in ("trainer_command", "request")
        ),
    )
    template_fields_renderers = {"hyperparameters": "json"}

    def __init__(
        self,
        *,
        config_path: str,
        train_snapshot_uri: str,
        valid_snapshot_uri: str,
        registered_model_name: str | None = None,
        seed: int | str | None = None,
        hyperparameters: dict[str, Any] | None = None,
        retrain: bool | str = False,
        reason: str | None = None,
        **kwargs: Any,
    ) -> None:
        if "trainer_command" in kwargs or "request" in kwargs:
            raise ValueError("DockerTrainOperator builds its own trainer_command and request")
        super().__init__(trainer_command="train", **kwargs)
        self.config_path = config_path
        self.train_snapshot_uri = train_snapshot_uri
        self.valid_snapshot_uri = valid_snapshot_uri
        self.registered_model_name = registered_model_name
        self.seed = seed
        self.hyperparameters = hyperparameters or {}
        self.retrain = retrain
        self.reason = reason

    def build_request(self, context: Context) -> BaseModel:
        from mlops_loop.core.config import load_config, training_settings
        from mlops_loop.core.containers import dataset_config_payload
        from mlops_loop.training.train import TrainingRequest

        config = load_config(self.config_path)
        overrides = dict(self.hyperparameters or {})
        if self.registered_model_name:
            overrides["registered_model_name"] = self.registered_model_name
        if self.seed not in (None, ""):
            overrides["seed"] = int(self.seed)  # type: ignore[arg-type]
        # Raises ConfigError naming the key (training.mlp.lr ...) before any container.
        settings = training_settings(config, overrides)
        self._config = config
        hyperparameters = {
            k: v for k, v in overrides.items() if k not in ("registered_model_name", "seed")
        }
        return TrainingRequest(
            config=dataset_config_payload(config),
            train_snapshot_uri=self.train_snapshot_uri,
            valid_snapshot_uri=self.valid_snapshot_uri,
            registered_model_name=str(settings.registered_model_name),
            seed=settings.seed,
            hyperparameters=hyperparameters,
            tags=self._tags(context, config),
            retrain=_as_bool(self.retrain, "retrain"),
        )

    def container_read_only_paths(self, request: BaseModel | dict[str, Any]) -> list[str]:
        config: DatasetConfig = self._config
        return [
            *self.read_only_paths,
            config.root,
            self.train_snapshot_uri,
            self.valid_snapshot_uri,
        ]

    def s3_credentials(self) -> S3Credentials | None:
        """The dataset's S3 settings (``storage.s3``; keys from its ``aws_conn_id``
        Connection) when its storage is on S3; the operator's own arguments win."""
        from mlops_loop.hooks.s3 import dataset_s3_credentials

        if self.aws_conn_id or self.s3_endpoint_url or self.s3_region:
            return super().s3_credentials()
        return dataset_s3_credentials(self._config)

    def result_model(self) -> type[BaseModel]:
        from mlops_loop.core.containers import TrainResult

        return TrainResult

    def _tags(self, context: Context, config: DatasetConfig) -> dict[str, str]:
        """Airflow and config tags; the image's tags are added once it is inspected."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            package_version = version("mlops-loop")
        except PackageNotFoundError:
            package_version = "unknown"
        tags = {"config_hash": config.config_hash(), "mlops_loop_version": package_version}
        if self.reason:
            tags["reason"] = str(self.reason)[:500]
        ti = context.get("ti") if context else None
        if ti is not None:
            tags.update(
                airflow_dag_id=str(ti.dag_id),
                airflow_run_id=str(ti.run_id),
                airflow_task_id=str(ti.task_id),
            )
        return tags


def _as_bool(value: bool | str | None, name: str) -> bool:
    """A templated flag: a bool, or its rendered text."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")

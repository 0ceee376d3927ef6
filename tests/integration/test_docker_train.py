"""DockerTrainOperator against the REAL Docker engine and the real trainer image.

Needs a running engine (scripts/install_docker.sh) and builds the trainer image with
include/docker/build_trainer_image.sh when its tag for the current sources is missing
(seconds when it exists). Training logs to a real MLflow server on 127.0.0.1, reached from
the container through network mode ``host`` (tests/conftest.py sets
$MLOPS_LOOP_TRAINER_NETWORK; the default is ``bridge``).

The trainer boundary on the real engine: the HostConfig of a created container (all
capabilities dropped, no-new-privileges, pids and CPU limits, read-only root with a /tmp
tmpfs, a non-root user, the network, the GPU request), and the private request/result
folder (the container's uid can use it, another uid cannot even list it).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mlops_loop.core.config import STORAGE_ROOT_ENV, load_config
from mlops_loop.core.containers import (
    CONTAINER_TMP,
    TMPFS_OPTIONS,
    Owner,
    hardened_host_config,
    make_io_dir,
    write_request,
)
from mlops_loop.core.trainer_protocol import CONTAINER_IO_DIR, RESULT_FILE, TrainRequest
from mlops_loop.exceptions import GpuUnavailableError, TrainerContainerFailed, TrainerImageNotFound
from mlops_loop.operators.docker_train import DockerTrainOperator
from mlops_loop_devtools.devstack import LocalServer
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
        message = f"no Docker engine ({exc}); start one with scripts/install_docker.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
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
    # Nothing left behind: no container, no request/result folder.
    assert _test_containers(docker_client) == []
    assert list((tmp_path / "io").iterdir()) == []

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
    assert list((tmp_path / "io").iterdir()) == []


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
    assert list((tmp_path / "io").iterdir()) == []


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
    io_mount = next(m for m in api.inspected["Mounts"] if m["Destination"] == CONTAINER_IO_DIR)
    assert io_mount["RW"] is True
    assert "HOME=/tmp" in api.inspected["Config"]["Env"]
    # Created, never started, and removed with its folder.
    assert _test_containers(docker_client) == []
    assert list((tmp_path / "io").iterdir()) == []


def _run_probe(docker_client: Any, image: str, user: Owner, io_dir: Path, code: str) -> str:
    """``code`` in the trainer image as ``user`` with the trainer's defaults, the io
    folder at /mlops/io. Returns its output (stdout and stderr)."""
    settings = hardened_host_config(cpus=None, pids_limit=256)
    container = docker_client.containers.create(
        image,
        entrypoint=["python", "-c"],
        command=[code],
        user=str(user),
        network_mode="none",
        environment={"HOME": CONTAINER_TMP},
        cap_drop=settings["cap_drop"],
        security_opt=settings["security_opt"],
        pids_limit=settings["pids_limit"],
        read_only=settings["read_only"],
        tmpfs=settings["tmpfs"],
        volumes={str(io_dir): {"bind": CONTAINER_IO_DIR, "mode": "rw"}},
        labels={LABEL: "1"},
    )
    try:
        container.start()
        container.wait(timeout=120)
        return container.logs().decode()
    finally:
        container.remove(force=True)


PROBE = f"""
import json, os
try:
    request = json.load(open("{CONTAINER_IO_DIR}/request.json"))
    open("{CONTAINER_IO_DIR}/{RESULT_FILE}", "w").write(json.dumps({{"status": "ok", "token": request["token"]}}))
    print("wrote", os.getuid())
except OSError as exc:
    print("refused", type(exc).__name__, exc.errno)
"""


@pytest.mark.parametrize(
    "owner",
    [
        pytest.param(Owner(10001, 10001), id="root-worker-hands-the-folder-to-the-image-user"),
        pytest.param(Owner(4321, 4321), id="worker-uid-4321-runs-the-container-as-itself"),
    ],
)
def test_private_io_folder_is_the_containers_and_nobody_elses(
    docker_client: Any, trainer_image: str, tmp_path: Path, owner: Owner
):
    """The folder as the operator leaves it for a container running as ``owner`` (a
    worker that is not root owns it itself: simulated here by handing it to that uid):
    that container reads the request and writes the result; a container of another,
    unrelated uid (another local user) can neither read the request nor plant a result."""
    if os.geteuid() != 0:
        pytest.skip("simulating other uids needs root")
    root = tmp_path / "io"
    root.mkdir(mode=0o1777)
    root.chmod(0o1777)
    tmp_path.chmod(0o755)
    io_dir = make_io_dir(str(root), owner=owner)
    request = TrainRequest(config={}, train_snapshot_uri="/a", valid_snapshot_uri="/b")
    write_request(io_dir, request)

    intruder = _run_probe(docker_client, trainer_image, Owner(5555, 5555), io_dir, PROBE)
    assert "refused PermissionError 13" in intruder, intruder
    assert not (io_dir / RESULT_FILE).exists()

    own = _run_probe(docker_client, trainer_image, owner, io_dir, PROBE)
    assert f"wrote {owner.uid}" in own, own
    written = json.loads((io_dir / RESULT_FILE).read_text())
    assert written["token"] == request.token
    assert (io_dir / RESULT_FILE).stat().st_uid == owner.uid

"""The local-process fallback of the trainer operators (runner ``local`` / ``auto``).

The one place training runs WITHOUT the Docker engine (every other training test uses the
real engine and image): the same entrypoint, request and result files, exit codes and
MLflow logging as a child process of the worker, against a real MLflow server. The
``auto`` runner is pointed at a Docker socket that does not exist, as on a machine with
no engine.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mlops_loop.core.config import STORAGE_ROOT_ENV, load_config
from mlops_loop.core.containers import nvidia_gpus
from mlops_loop.core.trainer_protocol import TrainResult
from mlops_loop.exceptions import (
    DockerEngineUnavailable,
    GpuUnavailableError,
    TrainerContainerFailed,
    TrainerResultError,
)
from mlops_loop.operators.docker_train import DockerTrainOperator
from mlops_loop_devtools.devstack import LocalServer
from mlops_loop_devtools.sample_data import generate_batch
from tests.fixtures.background import Background
from tests.fixtures.snapshots import train_valid_snapshots

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "include" / "config" / "credit_default.yaml")
FAST = {
    "model_type": "mlp",
    "max_epochs": 3,
    "patience": 2,
    "batch_size": 128,
    "hidden_sizes": [16, 8],
}
NO_ENGINE = "unix:///nonexistent/mlops-loop-test/docker.sock"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Any:
    storage = tmp_path_factory.mktemp("local-trainer") / "storage"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(STORAGE_ROOT_ENV, str(storage))
        config = load_config(CONFIG)
        train_uri, valid_uri = train_valid_snapshots(config, seed=5)
        yield SimpleNamespace(
            storage=str(storage),
            train_uri=train_uri,
            valid_uri=valid_uri,
            holdout=generate_batch("2026-03-03", 300, seed=5),
        )


@pytest.fixture(autouse=True)
def storage_env(data: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STORAGE_ROOT_ENV, data.storage)
    monkeypatch.delenv("MLOPS_LOOP_TRAINER_RUNNER", raising=False)


def _context() -> dict[str, Any]:
    return {
        "ti": SimpleNamespace(
            dag_id="test_local_trainer", run_id="manual__2026-03-02", task_id="train"
        )
    }


def _op(data: Any, tracking_uri: str, io_root: Path, **kwargs: Any) -> DockerTrainOperator:
    args: dict[str, Any] = {
        "task_id": "train",
        "config_path": CONFIG,
        "train_snapshot_uri": data.train_uri,
        "valid_snapshot_uri": data.valid_uri,
        "hyperparameters": dict(FAST),
        "mlflow_tracking_uri": tracking_uri,
        "io_dir_root": str(io_root),
        "docker_url": NO_ENGINE,
        "runner": "auto",
    }
    args.update(kwargs)
    return DockerTrainOperator(**args)


def test_auto_without_docker_engine_trains_locally_with_the_same_contract(
    mlflow_server: LocalServer, data: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    op = _op(
        data,
        mlflow_server.url,
        tmp_path / "io",
        registered_model_name="local_trainer_test",
        mem_limit="3g",
    )

    result = op.execute(_context())

    TrainResult.model_validate(result)  # the container's result contract
    assert result["device"] == "cpu" and result["model_name"] == "local_trainer_test"
    task_log = capsys.readouterr().out
    assert "No Docker engine answers at" in task_log and NO_ENGINE in task_log
    assert "LOCAL PROCESS" in task_log and "container limits not applied: mem_limit" in task_log
    assert "epoch 1/3" in task_log and "epoch 3/3" in task_log  # streamed trainer output
    assert list((tmp_path / "io").iterdir()) == []

    import mlflow
    from mlflow import MlflowClient

    version = MlflowClient(mlflow_server.url).get_model_version(
        "local_trainer_test", result["model_version"]
    )
    assert version.tags["trainer_runner"] == "local"
    assert version.tags["airflow_dag_id"] == "test_local_trainer"
    assert version.tags["code_version"]
    mlflow.set_tracking_uri(mlflow_server.url)
    model = mlflow.pyfunc.load_model(result["model_uri"])
    config = load_config(CONFIG)
    features = data.holdout.drop(columns=[config.target])
    scores = model.predict(features)
    assert len(scores) == len(features)


def test_local_failure_is_explained_with_the_trainer_exit_code(
    mlflow_server: LocalServer, data: Any, tmp_path: Path
):
    missing = f"{data.storage}/credit_default/snapshots/{'0' * 64}"
    # retrain: straight to the trainer (the champion check would stop on the worker first).
    op = _op(
        data,
        mlflow_server.url,
        tmp_path / "io",
        runner="local",
        valid_snapshot_uri=missing,
        retrain=True,
    )

    with pytest.raises(TrainerContainerFailed) as err:
        op.execute(_context())

    assert err.value.exit_code == 3
    assert "failed as a local process" in str(err.value) and "snapshot data problem" in str(
        err.value
    )
    assert err.value.error and "0" * 64 in err.value.error  # from result.json
    assert list((tmp_path / "io").iterdir()) == []


def test_docker_runner_without_engine_says_so_before_anything_runs(data: Any, tmp_path: Path):
    op = _op(data, "http://127.0.0.1:9", tmp_path / "io", runner="docker")

    with pytest.raises(
        DockerEngineUnavailable, match=r"no Docker engine answers at .*runner='local' or 'auto'"
    ):
        op.execute(_context())

    assert not (tmp_path / "io").exists()


def test_gpu_required_without_a_gpu_fails_before_the_process(
    mlflow_server: LocalServer, data: Any, tmp_path: Path
):
    if nvidia_gpus():
        pytest.skip("this machine has an NVIDIA GPU")
    op = _op(data, mlflow_server.url, tmp_path / "io", runner="local", gpu="required")

    with pytest.raises(GpuUnavailableError, match="lists no NVIDIA GPU"):
        op.execute(_context())

    assert not (tmp_path / "io").exists()


def test_on_kill_stops_the_local_process_and_registers_nothing(
    mlflow_server: LocalServer, data: Any, tmp_path: Path
):
    slow = {**FAST, "max_epochs": 1000, "patience": 100, "batch_size": 8}
    name = "local_trainer_killed"
    op = _op(
        data,
        mlflow_server.url,
        tmp_path / "io",
        runner="local",
        hyperparameters=slow,
        registered_model_name=name,
    )
    task = Background(lambda: op.execute(_context()))
    # Kill it in the epoch loop (a kill during start-up is test_train's watchdog test).
    task.wait_for(
        lambda: op._process is not None and any("epoch 1/" in line for line in op._process.tail)
    )
    assert task.alive, f"training ended before it could be killed: {task.error}"

    op.on_kill()
    task.join()

    assert not task.alive
    assert isinstance(task.error, TrainerContainerFailed) and task.error.exit_code == 143, (
        task.error
    )
    assert list((tmp_path / "io").iterdir()) == []
    from mlflow import MlflowClient

    assert MlflowClient(mlflow_server.url).search_model_versions(f"name='{name}'") == []


# --- the trainer boundary: what the local process sees, and whose result counts ---------


def _interpreter(tmp_path: Path, body: str) -> Path:
    """A stand-in for $MLOPS_LOOP_TRAINER_PYTHON: a shell script the local runner starts
    with the trainer's arguments (``-m mlops_loop.training <cmd> --request R --result P``)."""
    path = tmp_path / "trainer-python"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_local_trainer_sees_the_allow_listed_environment_only(
    mlflow_server: LocalServer, data: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from airflow.configuration import conf
    from cryptography.fernet import Fernet

    worker_secrets = {
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        # the value Airflow already uses (this process's engine is not affected)
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": conf.get("database", "sql_alchemy_conn"),
        "AIRFLOW_CONN_WAREHOUSE_TEST": "postgres://warehouse-user:warehouse-password@db:5432/dw",
        "AWS_SECRET_ACCESS_KEY": "the-workers-own-aws-secret",
    }
    allowed = {
        "LANG": "C.UTF-8",
        "TZ": "UTC",
        "OMP_NUM_THREADS": "1",
        "HTTPS_PROXY": "http://proxy.invalid:3128",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    for name, value in {**worker_secrets, **allowed}.items():
        monkeypatch.setenv(name, value)
    dump = tmp_path / "seen.json"
    # Records what the trainer process gets (its environment, its folder), then runs it.
    record = (
        "import json, os, sys; "
        "folder = os.stat(os.path.dirname(sys.argv[2])); "
        "json.dump({'env': dict(os.environ), 'mode': folder.st_mode, 'uid': folder.st_uid}, open(sys.argv[1], 'w'))"
    )
    python = _interpreter(
        tmp_path, f'{sys.executable} -c "{record}" {dump} "$5"\nexec {sys.executable} "$@"\n'
    )
    monkeypatch.setenv("MLOPS_LOOP_TRAINER_PYTHON", str(python))
    missing = f"{data.storage}/credit_default/snapshots/{'0' * 64}"
    # A quick run: the trainer fails on a missing snapshot (exit 3) once it has started.
    op = _op(
        data,
        mlflow_server.url,
        tmp_path / "io",
        runner="local",
        valid_snapshot_uri=missing,
        retrain=True,
    )

    with pytest.raises(TrainerContainerFailed) as err:
        op.execute(_context())

    assert err.value.exit_code == 3 and "0" * 64 in (err.value.error or "")
    seen = json.loads(dump.read_text())
    env = seen["env"]
    assert "AIRFLOW__CORE__FERNET_KEY" not in env
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in env
    assert [name for name in env if name.startswith("AIRFLOW_CONN_")] == []
    assert [name for name in env if name.startswith("AIRFLOW")] == []
    for value in worker_secrets.values():
        assert value not in json.dumps(env)
    assert {k: env.get(k) for k in allowed} == allowed
    assert env["PATH"] == os.environ["PATH"] and env["HOME"] == os.environ["HOME"]
    assert env["MLFLOW_TRACKING_URI"] == mlflow_server.url  # the task's own settings
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    # Its request/result folder was private to the worker's user.
    assert stat.S_IMODE(seen["mode"]) == 0o700 and seen["uid"] == os.geteuid()


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(None, id="a-result-without-token"),
        pytest.param("another-tasks-request-token-0123456789abcdef", id="another-tasks-result"),
    ],
)
def test_a_forged_result_is_refused(
    data: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: str | None
):
    """Something other than this task's trainer writes a complete, valid-looking result
    and exits 0: the result does not carry the request's token and is refused."""
    forged = {
        "status": "ok",
        "run_id": "forged",
        "model_uri": "models:/credit_default_model/99",
        "model_name": "credit_default_model",
        "model_version": "99",
        "metrics": {"roc_auc": 0.99},
        "device": "cpu",
    }
    if token:
        forged["token"] = token
    forger = _interpreter(tmp_path, f"cat > \"$7\" <<'EOF'\n{json.dumps(forged)}\nEOF\n")
    monkeypatch.setenv("MLOPS_LOOP_TRAINER_PYTHON", str(forger))
    op = _op(data, "http://127.0.0.1:9", tmp_path / "io", runner="local", retrain=True)

    with pytest.raises(
        TrainerResultError, match=r"refusing result\.json: it does not answer this task's request"
    ):
        op.execute(_context())

    assert list((tmp_path / "io").iterdir()) == []

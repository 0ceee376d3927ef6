"""Training end to end against a real MLflow server on 127.0.0.1: the trainer's command
line (in-process and as a real subprocess), real snapshots written by ingestion, a
registered version that loads with mlflow.pyfunc; faults leave no registered version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlops_loop.core.config import DatasetConfig, load_config
from mlops_loop.core.ingest import ingest_batch
from mlops_loop.core.trainer_protocol import ExitCode
from mlops_loop.training.__main__ import main
from mlops_loop_devtools.devstack import free_port
from mlops_loop_devtools.sample_data import generate_batch, land_batch
from tests.fixtures.servers import copy_snapshot_to_s3

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "include" / "config" / "credit_default.yaml"
# One CPU thread: small models on a shared 2-core machine train much faster without
# thread contention (and the suite leaves the other core to other work).
FAST = {
    "mlp": {
        "max_epochs": 4,
        "patience": 2,
        "batch_size": 128,
        "hidden_sizes": [16, 8],
        "cpu_threads": 1,
    },
    "hist_gradient_boosting": {"max_iter": 30, "cpu_threads": 1},
}


class Data:
    def __init__(
        self, config: DatasetConfig, train_uri: str, valid_uri: str, train_sha: str, valid_sha: str
    ):
        self.config = config
        self.train_uri = train_uri
        self.valid_uri = valid_uri
        self.train_sha = train_sha
        self.valid_sha = valid_sha
        self.holdout = generate_batch("2026-03-03", 400, seed=7)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    root = tmp_path_factory.mktemp("training") / "credit_default"
    config = load_config(CONFIG, overrides={"storage": {"root": str(root)}})
    land_batch(generate_batch("2026-03-01", 2_000, seed=7), root, "2026-03-01")
    land_batch(generate_batch("2026-03-02", 500, seed=7), root, "2026-03-02")
    train = ingest_batch(config, "2026-03-01")
    valid = ingest_batch(config, "2026-03-02")
    return Data(config, train.snapshot_uri, valid.snapshot_uri, train.sha256, valid.sha256)


def request_doc(data: Data, model_type: str, name: str, **extra: Any) -> dict[str, Any]:
    config = data.config.model_dump(mode="json")
    config["config_dir"] = data.config.config_dir
    doc: dict[str, Any] = {
        "config": config,
        "train_snapshot_uri": data.train_uri,
        "valid_snapshot_uri": data.valid_uri,
        "registered_model_name": name,
        "seed": 11,
        "hyperparameters": {"model_type": model_type, **FAST[model_type]},
        "tags": {
            "airflow_dag_id": "train_credit_default",
            "airflow_run_id": "manual__2026-03-02",
            "airflow_task_id": "train",
            "trainer_image": "mlops-loop-trainer@sha256:test",
            "code_version": "test",
        },
    }
    doc.update(extra)
    return doc


def run_cli(tmp_path: Path, doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = tmp_path / f"request-{uuid.uuid4().hex[:6]}.json"
    result = tmp_path / f"result-{uuid.uuid4().hex[:6]}.json"
    request.write_text(json.dumps(doc))
    code = main(["train", "--request", str(request), "--result", str(result)])
    return code, json.loads(result.read_text())


@pytest.fixture
def tracking(mlflow_server, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    return mlflow_server.url


def versions_of(tracking_uri: str, name: str) -> list[Any]:
    from mlflow import MlflowClient

    return list(MlflowClient(tracking_uri=tracking_uri).search_model_versions(f"name='{name}'"))


@pytest.mark.parametrize("model_type", ["mlp", "hist_gradient_boosting"])
def test_trains_logs_registers_and_loads(
    model_type: str, data: Data, tracking: str, tmp_path: Path
):
    import mlflow
    from mlflow import MlflowClient

    name = f"credit_{model_type}_{uuid.uuid4().hex[:6]}"
    code, result = run_cli(tmp_path, request_doc(data, model_type, name))

    assert code == 0, result
    assert result["status"] == "ok"
    assert result["model_name"] == name and result["model_version"] == "1"
    assert result["model_uri"] == f"models:/{name}/1"
    assert result["device"] == "cpu"
    assert 0.6 < result["metrics"]["roc_auc"] <= 1.0
    assert set(result["metrics"]) >= {"roc_auc", "pr_auc", "log_loss", "brier", "f1"}

    client = MlflowClient(tracking_uri=tracking)
    version = client.get_model_version(name, "1")
    assert version.run_id == result["run_id"]
    for key, value in {
        "train_snapshot_sha256": data.train_sha,
        "valid_snapshot_sha256": data.valid_sha,
        "config_hash": data.config.config_hash(),
        "airflow_dag_id": "train_credit_default",
        "airflow_run_id": "manual__2026-03-02",
        "trainer_image": "mlops-loop-trainer@sha256:test",
        "code_version": "test",
        "seed": "11",
        "device": "cpu",
        "model_type": model_type,
    }.items():
        assert version.tags.get(key) == value, key

    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["roc_auc"] == pytest.approx(result["metrics"]["roc_auc"])
    assert run.data.params["model_type"] == model_type
    history = client.get_metric_history(result["run_id"], "valid_loss")
    assert len(history) >= 2 and [m.step for m in history] == sorted(m.step for m in history)
    inputs = {d.dataset.digest: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {data.train_sha[:32], data.valid_sha[:32]}
    contexts = {d.dataset.digest: {t.value for t in d.tags} for d in run.inputs.dataset_inputs}
    assert "training" in contexts[data.train_sha[:32]]
    assert "validation" in contexts[data.valid_sha[:32]]
    # MLflow keeps one dataset record per (name, digest) in an experiment, so the source is
    # the first URI this content was seen at; the run's tags carry this run's URIs.
    assert f"snapshots/{data.train_sha}" in inputs[data.train_sha[:32]].dataset.source
    assert run.data.tags["train_snapshot_uri"] == data.train_uri

    model = mlflow.pyfunc.load_model(result["model_uri"])
    assert model.metadata.signature is not None
    holdout = data.holdout  # raw frame, with id, timestamp and label columns
    scores = np.asarray(model.predict(holdout[data.config.feature_columns]))
    assert scores.shape == (len(holdout),)
    assert np.all((scores >= 0) & (scores <= 1))
    assert scores.std() > 0


def test_same_seed_gives_identical_mlp_metrics(data: Data, tracking: str, tmp_path: Path):
    name = f"credit_repeat_{uuid.uuid4().hex[:6]}"
    first_code, first = run_cli(tmp_path, request_doc(data, "mlp", name))
    second_code, second = run_cli(tmp_path, request_doc(data, "mlp", name, retrain=True))
    assert (first_code, second_code) == (0, 0)
    assert first["metrics"] == second["metrics"]
    assert (first["model_version"], second["model_version"]) == ("1", "2")
    assert first["tags"]["training_input_sha256"] == second["tags"]["training_input_sha256"]

    # The identical input again without retrain: the existing version is handed back.
    third_code, third = run_cli(tmp_path, request_doc(data, "mlp", name))
    assert third_code == 0 and third["reused"] is True
    assert third["model_version"] == "2" and third["run_id"] == second["run_id"]
    assert third["metrics"] == pytest.approx(second["metrics"])
    assert len(versions_of(tracking, name)) == 2

    # A different seed is a different input: trained anew.
    fourth_code, fourth = run_cli(tmp_path, request_doc(data, "mlp", name, seed=12))
    assert fourth_code == 0 and fourth["reused"] is False and fourth["model_version"] == "3"


@pytest.mark.parametrize(
    ("hyperparameters", "message"),
    [
        pytest.param({"model_type": "xgboost"}, "training.model_type", id="unknown-model-type"),
        pytest.param({"model_type": "mlp", "lr": 3.0}, "training.mlp.lr", id="lr-out-of-bounds"),
        pytest.param(
            {"model_type": "mlp", "max_iter": 5}, "training.mlp.max_iter", id="wrong-model-key"
        ),
    ],
)
def test_bad_settings_fail_before_training(
    data: Data, tracking: str, tmp_path: Path, hyperparameters, message
):
    name = f"credit_bad_{uuid.uuid4().hex[:6]}"
    doc = request_doc(data, "mlp", name)
    doc["hyperparameters"] = hyperparameters
    code, result = run_cli(tmp_path, doc)
    assert code == ExitCode.BAD_REQUEST
    assert result["status"] == "error" and message in result["error"]
    assert result["run_id"] is None
    assert versions_of(tracking, name) == []


def test_missing_snapshot_fails_clearly(data: Data, tracking: str, tmp_path: Path):
    name = f"credit_nosnap_{uuid.uuid4().hex[:6]}"
    missing = f"{data.config.root}/snapshots/{'0' * 64}"
    code, result = run_cli(tmp_path, request_doc(data, "mlp", name, train_snapshot_uri=missing))
    assert code == ExitCode.DATA
    assert missing in result["error"] and "manifest.json is missing" in result["error"]
    assert versions_of(tracking, name) == []


def test_mlflow_server_down_fails_clearly_and_registers_nothing(
    data: Data, mlflow_server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    name = f"credit_down_{uuid.uuid4().hex[:6]}"
    code, result = run_cli(tmp_path, request_doc(data, "hist_gradient_boosting", name))
    assert code == ExitCode.TRACKING
    assert dead in result["error"] and "did not answer" in result["error"]
    assert versions_of(mlflow_server.url, name) == []


def test_failure_mid_run_ends_run_failed_and_registers_nothing(
    data: Data, tracking: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Fault injection: logging the model breaks after fitting; the run is FAILED."""
    from mlflow import MlflowClient

    from mlops_loop.training import train

    def broken_log_model(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk full while writing the model")

    monkeypatch.setattr(train, "_log_model", broken_log_model)
    name = f"credit_midfail_{uuid.uuid4().hex[:6]}"
    code, result = run_cli(tmp_path, request_doc(data, "hist_gradient_boosting", name))
    assert code != 0 and result["stage"] == "log_model"
    assert "disk full" in result["error"]
    assert MlflowClient(tracking_uri=tracking).get_run(result["run_id"]).info.status == "FAILED"
    assert versions_of(tracking, name) == []


def test_command_line_as_a_subprocess(data: Data, mlflow_server, tmp_path: Path):
    """The local-process fallback runs exactly this command."""
    name = f"credit_cli_{uuid.uuid4().hex[:6]}"
    request = tmp_path / "request.json"
    result = tmp_path / "out" / "result.json"
    request.write_text(json.dumps(request_doc(data, "hist_gradient_boosting", name)))
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server.url}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlops_loop.training",
            "train",
            "--request",
            str(request),
            "--result",
            str(result),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(result.read_text())
    assert doc["status"] == "ok" and doc["model_version"] == "1"
    assert "validation: roc_auc=" in proc.stdout
    assert [p.name for p in result.parent.iterdir()] == ["result.json"]


def test_sigterm_mid_training_fails_the_run_and_registers_nothing(
    data: Data, mlflow_server, tmp_path: Path
):
    """What `docker stop` / Airflow's on_kill does: the run ends FAILED, exit code 143."""
    import signal

    from mlflow import MlflowClient

    name = f"credit_killed_{uuid.uuid4().hex[:6]}"
    doc = request_doc(data, "mlp", name)
    doc["hyperparameters"].update(max_epochs=500, patience=100)
    request = tmp_path / "request.json"
    result = tmp_path / "result.json"
    request.write_text(json.dumps(doc))
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server.url}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlops_loop.training",
            "train",
            "--request",
            str(request),
            "--result",
            str(result),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("epoch 1/"):
                proc.send_signal(signal.SIGTERM)
                break
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143
    doc = json.loads(result.read_text())
    assert doc["status"] == "error" and "SIGTERM" in doc["error"]
    assert (
        MlflowClient(tracking_uri=mlflow_server.url).get_run(doc["run_id"]).info.status == "FAILED"
    )
    assert versions_of(mlflow_server.url, name) == []


@pytest.mark.usefixtures("trainer_s3_env")
def test_trains_from_s3_snapshots(
    data: Data, tracking: str, s3_credentials, s3_bucket: str, tmp_path: Path
):
    """Snapshots on an S3 endpoint; credentials reach the trainer through the environment
    the operator sets (AWS_* and MLOPS_LOOP_S3_ENDPOINT_URL)."""
    remote = {
        local_uri: copy_snapshot_to_s3(
            s3_credentials, local_uri, f"{s3_bucket}/credit_default/snapshots/{sha}"
        )
        for local_uri, sha in ((data.train_uri, data.train_sha), (data.valid_uri, data.valid_sha))
    }

    name = f"credit_s3_{uuid.uuid4().hex[:6]}"
    doc = request_doc(
        data,
        "hist_gradient_boosting",
        name,
        train_snapshot_uri=remote[data.train_uri],
        valid_snapshot_uri=remote[data.valid_uri],
    )
    code, result = run_cli(tmp_path, doc)
    assert code == 0, result
    assert result["tags"]["train_snapshot_sha256"] == data.train_sha
    assert result["tags"]["train_snapshot_uri"].startswith("s3://")
    assert result["params"]["train_rows"] == 2_000

    missing = f"{s3_bucket}/credit_default/snapshots/{'f' * 64}"
    code, result = run_cli(
        tmp_path, request_doc(data, "mlp", f"{name}_x", train_snapshot_uri=missing)
    )
    assert code == ExitCode.DATA and missing in result["error"]


@pytest.fixture(scope="module")
def text_label_data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    """credit_default with its 0/1 target declared as text ("0"/"1" in the snapshots), so
    the positive label is the text "1"."""
    import yaml

    raw = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    for column in raw["columns"]:
        if column["name"] == raw["target"]:
            column["type"] = "string"
            column.pop("min", None), column.pop("max", None), column.pop("allowed", None)
    raw["positive_label"] = "1"
    root = tmp_path_factory.mktemp("text-labels") / "credit_default"
    raw["storage"]["root"] = str(root)
    path = root.parent / "credit_default.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    land_batch(generate_batch("2026-03-01", 1_500, seed=5), root, "2026-03-01")
    land_batch(generate_batch("2026-03-02", 500, seed=5), root, "2026-03-02")
    train, valid = ingest_batch(config, "2026-03-01"), ingest_batch(config, "2026-03-02")
    return Data(config, train.snapshot_uri, valid.snapshot_uri, train.sha256, valid.sha256)


def test_text_labels_train_against_the_positive_label(
    text_label_data: Data, tracking: str, tmp_path: Path
):
    from mlflow import MlflowClient

    from mlops_loop.core.snapshots import read_snapshot

    labels = read_snapshot(text_label_data.train_uri)[text_label_data.config.target]
    assert set(labels.unique()) == {"0", "1"}  # the snapshot holds text
    name = f"credit_text_{uuid.uuid4().hex[:6]}"
    code, result = run_cli(tmp_path, request_doc(text_label_data, "hist_gradient_boosting", name))
    assert code == 0, result
    assert 0.6 < result["metrics"]["roc_auc"] <= 1.0
    version = MlflowClient(tracking_uri=tracking).get_model_version(name, "1")
    assert float(version.tags["train_target_mean"]) == pytest.approx((labels == "1").mean())


def test_a_positive_label_missing_from_the_training_data_is_a_data_error(
    text_label_data: Data, tracking: str, tmp_path: Path
):
    name = f"credit_nopos_{uuid.uuid4().hex[:6]}"
    doc = request_doc(text_label_data, "hist_gradient_boosting", name)
    doc["config"]["positive_label"] = "yes"
    code, result = run_cli(tmp_path, doc)
    assert code == ExitCode.DATA, result
    assert "positive_label 'yes' never occurs in target 'default'" in result["error"]
    assert "['0', '1']" in result["error"]
    assert versions_of(tracking, name) == []

"""dag.test() of the training DAG: a real container from the trainer image on the real
Docker engine, logging to a real MLflow server on 127.0.0.1."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from mlops_loop.core.config import load_config
from mlops_loop.core.ingest import ingest_batch
from mlops_loop.core.snapshots import read_snapshot
from mlops_loop.core.training_set import ValidatedSnapshot, record_validated
from mlops_loop_devtools.sample_data import generate_batch, land_batch

pytestmark = [pytest.mark.integration, pytest.mark.docker]

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "include/config/credit_default.yaml"


def validated_days(days: list[str], rows: int) -> None:
    config = load_config(CONFIG)
    for ds in days:
        land_batch(generate_batch(ds, rows=rows), config.root, ds)
        snap = ingest_batch(config, ds)
        record_validated(config, ValidatedSnapshot(ds, snap.sha256, snap.snapshot_uri, snap.rows))


def test_train_dag_registers_a_loadable_version(airflow_db, tmp_path, monkeypatch, mlflow_server):
    import mlflow
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("MLOPS_LOOP_STORAGE_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    validated_days(["2026-04-01", "2026-04-02", "2026-04-03"], rows=700)
    dag = DagBag(dag_folder=str(REPO / "dags")).get_dag("mlops_train__credit_default")

    dag_run = dag.test(
        logical_date=datetime(2026, 4, 3, tzinfo=timezone.utc),
        run_conf={"model_type": "hist_gradient_boosting", "hyperparameters": {"max_iter": 30}, "reason": "test"},
    )
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert states["assemble_training_set"] == "success"
    assert states["train_challenger"] == "success"

    result = next(ti for ti in dag_run.get_task_instances() if ti.task_id == "train_challenger").xcom_pull(
        task_ids="train_challenger"
    )
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    version = client.get_model_version(result["model_name"], result["model_version"])
    for tag in ("airflow_dag_id", "airflow_run_id", "config_hash", "seed", "train_snapshot_sha256"):
        assert tag in version.tags, f"model version lacks tag {tag}: {sorted(version.tags)}"
    assert version.tags["airflow_dag_id"] == "mlops_train__credit_default"
    run = client.get_run(result["run_id"])
    assert run.data.params.get("model_type") == "hist_gradient_boosting"
    assert "roc_auc" in " ".join(run.data.metrics)

    mlflow.set_tracking_uri(mlflow_server.url)
    model = mlflow.pyfunc.load_model(f"models:/{result['model_name']}/{result['model_version']}")
    holdout = read_snapshot(result_holdout_uri(tmp_path))
    scores = model.predict(holdout[load_config(CONFIG).feature_columns])
    assert len(scores) == len(holdout)
    assert ((scores >= 0) & (scores <= 1)).all()


def result_holdout_uri(root: Path) -> str:
    return str(next((root / "credit_default" / "training_sets").glob("*/holdout")))

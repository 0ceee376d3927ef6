"""dag.test() of the drift DAG: the monitor runs in a real container from the trainer image
on the real Docker engine, against a real MLflow server on 127.0.0.1, with a champion
trained (in-process, small) and promoted on validated snapshots.

Each test uses its own registered model name (a config copy), so champions promoted by
other tests on the same session server do not matter."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mlops_loop.core.ingest import ingest_batch
from mlops_loop.core.training_set import ValidatedSnapshot, record_validated
from mlops_loop_devtools.sample_data import generate_batch, land_batch
from tests.fixtures.dataset_configs import own_config

pytestmark = [pytest.mark.integration, pytest.mark.docker]

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "include/config/credit_default.yaml"
DAG_ID = "mlops_drift__credit_default"
ASSET_NAME = "mlops_loop.credit_default.retrain_requested"


@pytest.fixture
def setup(airflow_db, tmp_path, monkeypatch, mlflow_server):
    """A config copy with its own registered model name; storage under tmp_path."""
    return own_config(tmp_path, monkeypatch, mlflow_server.url, f"drift_test_{uuid.uuid4().hex[:8]}")


def validated_days(config, days: list[str], rows: int, drift: float = 0.0) -> None:
    for ds in days:
        land_batch(generate_batch(ds, rows=rows, drift=drift), config.root, ds)
        snap = ingest_batch(config, ds)
        record_validated(config, ValidatedSnapshot(ds, snap.sha256, snap.snapshot_uri, snap.rows))


def train_champion(config, tracking_uri: str) -> dict:
    """A small model trained in-process (the trainer's own code) and promoted."""
    import mlflow

    from mlops_loop.core.registry import promote
    from mlops_loop.core.trainer_protocol import TrainRequest, config_payload
    from mlops_loop.core.training_set import assemble_training_set
    from mlops_loop.training.train import run_training

    training_set = assemble_training_set(config)
    result = run_training(
        TrainRequest(
            config=config_payload(config),
            train_snapshot_uri=training_set.train_uri,
            valid_snapshot_uri=training_set.valid_uri,
            hyperparameters={"model_type": "hist_gradient_boosting", "max_iter": 30},
        ),
        tracking_uri=tracking_uri,
    )
    promote(
        mlflow.MlflowClient(tracking_uri=tracking_uri),
        result["model_name"],
        result["model_version"],
        expected_champion=None,
        decision_uri=None,
        airflow_run=None,
        reason="test champion",
    )
    return result


def run_drift(ds: str, conf: dict | None = None) -> tuple[dict[str, str], dict]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    dag = bag.get_dag(DAG_ID)
    when = datetime.fromisoformat(ds).replace(hour=2, tzinfo=timezone.utc)
    dag_run = dag.test(logical_date=when, run_conf=conf or {})
    tis = {ti.task_id: ti for ti in dag_run.get_task_instances()}
    states = {task_id: str(ti.state) for task_id, ti in tis.items()}
    result = tis["drift_monitor"].xcom_pull(task_ids="drift_monitor") or {}
    return states, result


def retrain_events(root: str) -> list[dict]:
    """Events of the retrain_requested Asset whose report lies under ``root``."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetEvent.extra)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == ASSET_NAME)
        ).all()
    extras = [dict(r[0] or {}) for r in rows]
    return [e for e in extras if str(e.get("report_uri", "")).startswith(root)]


def test_no_champion_gives_a_clear_verdict(setup):
    config = setup
    validated_days(config, ["2026-04-12"], rows=300)
    states, result = run_drift("2026-04-12")
    assert states == {"drift_monitor": "success", "request_retraining": "skipped"}
    assert result["verdict"] == "no_champion"
    assert "no champion" in result["reasons"][0]
    assert retrain_events(config.root) == []


def test_drift_closes_the_loop_once_per_cool_down(setup, mlflow_server):
    import mlflow

    config = setup
    root = Path(config.root)
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    validated_days(config, ["2026-04-01", "2026-04-02", "2026-04-03"], rows=700)
    champion = train_champion(config, mlflow_server.url)
    name, version = champion["model_name"], champion["model_version"]
    profile = root / "reports/drift/profiles" / name / version / "profile.json"
    assert not profile.exists()

    # Same distribution: no alarm. The champion had no profile: built on first use.
    validated_days(config, ["2026-04-11", "2026-04-12"], rows=400)
    states, result = run_drift("2026-04-12")
    assert states == {"drift_monitor": "success", "request_retraining": "skipped"}, result
    assert result["verdict"] == "none" and result["drifted_features"] == []
    assert result["champion_version"] == version and result["rows"] == 800
    assert result["profile_built"] is True and profile.exists()
    stored = json.loads(profile.read_text())
    assert stored["model_version"] == version and stored["prediction"]["count"] > 0
    artifacts = [a.path for a in client.list_artifacts(champion["run_id"], "drift_reference")]
    assert artifacts == ["drift_reference/profile.json"]

    # Fewer rows than drift.min_rows in the chosen window: insufficient data, no alarm.
    states, result = run_drift("2026-04-13", {"start": "2026-04-11", "end": "2026-04-11"})
    assert states == {"drift_monitor": "success", "request_retraining": "skipped"}, result
    assert result["verdict"] == "insufficient_data" and result["rows"] == 400
    assert result["profile_built"] is False  # stored once per champion version

    # Drifted days: drift named, reports written, retraining requested with the reason.
    validated_days(config, ["2026-04-21", "2026-04-22"], rows=400, drift=1.0)
    states, result = run_drift("2026-04-22")
    assert states == {"drift_monitor": "success", "request_retraining": "success"}, result
    assert result["verdict"] == "drift"
    assert {"interest_rate", "credit_score"} <= set(result["drifted_features"])
    report_dir = root / "reports/drift/ds=2026-04-22"
    report = json.loads((report_dir / "report.json").read_text())
    assert report["verdict"] == "drift" and report["meta"]["champion_version"] == version
    html = (report_dir / "report.html").read_text()
    assert "interest_rate" in html and "<svg" in html
    assert result["report_uri"] == str(report_dir / "report.html")
    events = retrain_events(config.root)
    assert len(events) == 1, events
    assert "interest_rate" in events[0]["reason"] and events[0]["ds"] == "2026-04-22"
    assert events[0]["verdict"] == "drift"
    runs = client.search_runs(
        [client.get_experiment_by_name("credit_default_monitoring").experiment_id],
        filter_string=f"tags.model_name = '{name}' and tags.ds = '2026-04-22'",
    )
    assert len(runs) == 1 and runs[0].data.tags["drift_verdict"] == "drift"
    assert runs[0].data.metrics["psi.interest_rate"] >= 0.25

    # Still drifted the next night, inside the 72 h cool-down: no second request.
    validated_days(config, ["2026-04-23"], rows=400, drift=1.0)
    states, result = run_drift("2026-04-23")
    assert result["verdict"] == "drift"
    assert states == {"drift_monitor": "success", "request_retraining": "skipped"}
    assert len(retrain_events(config.root)) == 1
    record = json.loads((root / "reports/drift/retrain_requests.json").read_text())
    assert [r["ds"] for r in record["requests"]] == ["2026-04-22"]

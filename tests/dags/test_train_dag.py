"""dag.test() of the training DAG: a real container from the trainer image on the real
Docker engine, logging to a real MLflow server on 127.0.0.1."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mlops_loop.core.config import load_config
from mlops_loop.core.ingest import ingest_batch
from mlops_loop.core.snapshots import read_snapshot
from mlops_loop.core.training_set import ValidatedSnapshot, record_validated
from mlops_loop_devtools.sample_data import generate_batch, land_batch
from tests.fixtures.dataset_configs import REGULARISED, STUMP, own_config

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


# ------------------------------------ nothing new, nothing trained; the reason of a run


DRIFT_REASON = "drift in interest_rate, credit_score"
@pytest.fixture
def weak_config(airflow_db, tmp_path, monkeypatch, mlflow_server):
    """A config copy whose own model (a one-stump HistGradientBoosting by default) no other
    test touches; storage under tmp_path."""
    import uuid

    stump = {k: v for k, v in STUMP.items() if k != "model_type"}
    return own_config(
        tmp_path, monkeypatch, mlflow_server.url, f"train_reason_{uuid.uuid4().hex[:8]}",
        {"model_type": "hist_gradient_boosting", "hist_gradient_boosting": stump},
    )  # fmt: skip


def run_with_events(monkeypatch, day: int, events: list[tuple[str, dict]], conf: dict | None = None):
    """dag.test() of the train DAG whose run consumed ``events`` ((asset name, extra)), as
    a run the scheduler starts from asset events does: the task context's
    ``triggering_asset_events`` is read from the run's consumed events."""
    import airflow.models.dagrun as dagrun_module
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.asset import AssetEvent, AssetModel
    from sqlalchemy import select

    create = dagrun_module.get_or_create_dagrun

    def create_with_events(*, session, **kwargs):
        dag_run = create(session=session, **kwargs)
        for name, extra in events:
            asset = session.scalar(select(AssetModel).where(AssetModel.name == name))
            assert asset is not None, f"asset {name} is not registered"
            event = AssetEvent(
                asset_id=asset.id,
                extra=extra,
                source_dag_id="test_producer",
                source_run_id=f"run_{day}",
                source_task_id="produce",
                source_map_index=-1,
            )
            session.add(event)
            dag_run.consumed_asset_events.append(event)
        session.commit()
        return dag_run

    monkeypatch.setattr(dagrun_module, "get_or_create_dagrun", create_with_events)
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    dag_run = bag.get_dag("mlops_train__credit_default").test(
        logical_date=datetime(2026, 6, day, tzinfo=timezone.utc), run_conf=conf or {}
    )
    monkeypatch.setattr(dagrun_module, "get_or_create_dagrun", create)
    tis = {ti.task_id: ti for ti in dag_run.get_task_instances()}
    states = {task_id: str(ti.state) for task_id, ti in tis.items()}
    values = {
        task_id: ti.xcom_pull(task_ids=task_id) for task_id, ti in tis.items() if states[task_id] == "success"
    }
    return dag_run, states, values


def test_nothing_new_ends_early_and_the_reason_comes_from_what_started_the_run(
    weak_config, monkeypatch, mlflow_server
):
    import mlflow

    config = weak_config
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    name = config.training.registered_model_name
    validated = f"mlops_loop.{config.name}.validated"
    retrain = f"mlops_loop.{config.name}.retrain_requested"
    report = f"{config.root}/reports/drift/ds=2026-06-03/report.html"
    all_tasks = ("assemble_training_set", "train_challenger", "evaluate_challenger",
                 "approve_promotion", "promote_or_reject", "summary")  # fmt: skip

    def drift_event(ds: str, report_uri: str) -> tuple[str, dict]:
        extra = {"dataset": config.name, "reason": DRIFT_REASON, "ds": ds, "verdict": "drift",
                 "decay_verdict": "none", "report_uri": report_uri}
        return retrain, extra

    def versions() -> list[str]:
        return sorted(v.version for v in client.search_model_versions(f"name = '{name}'"))

    # 1. New validated data: trained, promoted over the baseline, the validated date as reason.
    for ds in ("2026-06-01", "2026-06-02", "2026-06-03"):
        land_batch(generate_batch(ds, rows=3000), config.root, ds)
        snap = ingest_batch(config, ds)
        record_validated(config, ValidatedSnapshot(ds, snap.sha256, snap.snapshot_uri, snap.rows))
    _, states, out = run_with_events(monkeypatch, 3, [(validated, {"dataset": config.name, "ds": "2026-06-03"})])
    assert states == dict.fromkeys(all_tasks, "success"), states
    v1 = out["train_challenger"]["model_version"]
    assert out["promote_or_reject"]["outcome"] == "promoted", out["evaluate_challenger"]["reasons"]
    tags = client.get_model_version(name, v1).tags
    assert tags["reason"] == tags["promotion_reason"] == "new validated data for 2026-06-03"

    # 2. Drift asks for retraining, but nothing is new since the champion trained: the run
    #    ends early (training, evaluation, promotion skipped) with the reason; nothing registered.
    dag_run, states, out = run_with_events(monkeypatch, 4, [drift_event("2026-06-03", report)])
    assert str(dag_run.state) == "success"
    assert states == {
        "assemble_training_set": "success",
        "train_challenger": "skipped",
        "evaluate_challenger": "skipped",
        "approve_promotion": "skipped",
        "promote_or_reject": "skipped",
        "summary": "success",
    }, states
    assert out["assemble_training_set"]["until_ds"] == "2026-06-03"
    assert out["summary"].startswith(f"nothing new for {name}: champion v{v1} was trained on this very input")
    train_ti = next(ti for ti in dag_run.get_task_instances() if ti.task_id == "train_challenger")
    skipped = train_ti.xcom_pull(task_ids="train_challenger", key="up_to_date")
    assert skipped["up_to_date"] is True and skipped["champion_version"] == v1
    assert skipped["training_input_sha256"] == tags["training_input_sha256"]
    assert versions() == [v1]

    # 3. A new validated day and a drift report of it: the window reaches that day, a
    #    challenger is trained, and the drift report is the reason on the version, in the
    #    decision record and on the promotion (the form's REGULARISED settings make the
    #    promotion certain; no reason typed, so the events give it).
    land_batch(generate_batch("2026-06-04", rows=3000), config.root, "2026-06-04")
    snap = ingest_batch(config, "2026-06-04")
    record_validated(config, ValidatedSnapshot("2026-06-04", snap.sha256, snap.snapshot_uri, snap.rows))
    report4 = report.replace("2026-06-03", "2026-06-04")
    _, states, out = run_with_events(
        monkeypatch,
        5,
        [drift_event("2026-06-04", report4), (validated, {"dataset": config.name, "ds": "2026-06-04"})],
        # The config's model type is hist_gradient_boosting: the form tunes it.
        conf={"hyperparameters": {k: v for k, v in REGULARISED.items() if k != "model_type"}},
    )
    assert states == dict.fromkeys(all_tasks, "success"), states
    assembled = out["assemble_training_set"]
    assert assembled["until_ds"] == "2026-06-04" and assembled["members"][-1]["ds"] == "2026-06-04"
    v2 = out["train_challenger"]["model_version"]
    assert v2 != v1 and out["train_challenger"]["reused"] is False
    expected = f"drift report 2026-06-04: {DRIFT_REASON} (report {report4}); new validated data for 2026-06-04"
    assert client.get_model_version(name, v2).tags["reason"] == expected
    decision = out["evaluate_challenger"]
    record = json.loads(Path(decision["decision_uri"]).read_text())
    assert record["context"]["tag.reason"] == expected
    assert decision["outcome"] == "promote", decision["reasons"]
    assert out["promote_or_reject"]["outcome"] == "promoted" and out["promote_or_reject"]["reason"] == expected
    assert client.get_model_version(name, v2).tags["promotion_reason"] == expected
    assert versions() == sorted([v1, v2])

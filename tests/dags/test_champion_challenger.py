"""dag.test() of the whole champion/challenger loop: the training DAG trains in the real
trainer container, evaluates in it against the champion, promotes or rejects through the
real MLflow registry; the rollback DAG moves the champion back.

One registered model per test (a config copy of its own, tests.fixtures.dataset_configs.
own_config: a form cannot name another model) keeps the session's MLflow server shared
with other tests without interference.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from mlops_loop.core.ingest import ingest_batch
from mlops_loop.core.training_set import ValidatedSnapshot, record_validated
from mlops_loop_devtools.sample_data import generate_batch, land_batch
from tests.fixtures.dataset_configs import REGULARISED, STUMP, own_config

pytestmark = [pytest.mark.integration, pytest.mark.docker]

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "include/config/credit_default.yaml"
REUSE_DAG = Path(__file__).with_name("reuse_dag.py")
# A deliberately weak first champion (STUMP: better than the baseline, far from good) and
# a REGULARISED boosted model, so the paired test on 3,000 holdout rows (~7% positives)
# tells them apart.


def form(settings: dict[str, Any], **conf: Any) -> dict[str, Any]:
    """A train form's conf: the model type in its own field, the rest as hyperparameters."""
    hyperparameters = {k: v for k, v in settings.items() if k != "model_type"}
    return {"model_type": settings["model_type"], "hyperparameters": hyperparameters, **conf}


def validated_days(config: Any, days: list[str], rows: int) -> None:
    for ds in days:
        land_batch(generate_batch(ds, rows=rows), config.root, ds)
        snap = ingest_batch(config, ds)
        record_validated(config, ValidatedSnapshot(ds, snap.sha256, snap.snapshot_uri, snap.rows))


def get_dag(folder: Path, dag_id: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    bag = DagBag(dag_folder=str(folder))
    assert bag.import_errors == {}, bag.import_errors
    if folder == REUSE_DAG:
        # dag.test() wants the DAG serialized; it only syncs the configured dags folder itself.
        sync_bag_to_db(bag, "dags-folder", None)
    return bag.get_dag(dag_id)


def run(dag: Any, conf: dict[str, Any], day: int) -> tuple[dict[str, str], dict[str, Any]]:
    """dag.test(); returns ({task_id: state}, {task_id: xcom return value})."""
    dag_run = dag.test(logical_date=datetime(2026, 6, day, tzinfo=timezone.utc), run_conf=conf)
    tis = dag_run.get_task_instances()
    states = {ti.task_id: str(ti.state) for ti in tis}
    values = {
        ti.task_id: ti.xcom_pull(task_ids=ti.task_id) for ti in tis if str(ti.state) == "success"
    }
    return states, values


def register_shuffled(config: Any, model_name: str, tracking_uri: str) -> str:
    """Train (in this process) and register a model on SHUFFLED labels: same pyfunc
    contract, no signal. Returns its version."""
    from mlops_loop.core.trainer_protocol import TrainRequest, config_payload
    from mlops_loop.training.train import run_training

    uris = []
    for ds, seed in (("2026-05-01", 1), ("2026-05-02", 2)):
        frame = generate_batch(ds, rows=800, seed=seed)
        frame["default"] = frame["default"].sample(frac=1.0, random_state=seed).to_numpy()
        land_batch(frame, config.root, ds)
        uris.append(ingest_batch(config, ds).snapshot_uri)  # not recorded as validated
    result = run_training(
        TrainRequest(
            config=config_payload(config),
            train_snapshot_uri=uris[0],
            valid_snapshot_uri=uris[1],
            registered_model_name=model_name,
            hyperparameters={"model_type": "hist_gradient_boosting", "max_iter": 20},
        ),
        tracking_uri=tracking_uri,
        log=lambda line: None,
    )
    return str(result["model_version"])


def champion(client: Any, name: str) -> str | None:
    from mlops_loop.core.registry import get_champion

    return get_champion(client, name)


def test_promote_reject_promote_rollback(airflow_db, tmp_path, monkeypatch, mlflow_server):
    import mlflow

    from mlops_loop.core.registry import audit_trail
    from mlops_loop.operators import PromoteModelOperator

    name = "cc_loop_model"
    config = own_config(tmp_path, monkeypatch, mlflow_server.url, name)
    config_path = Path(config.config_dir) / CONFIG.name
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    validated_days(config, ["2026-06-01", "2026-06-02", "2026-06-03"], rows=3000)
    train_dag = get_dag(REPO / "dags", "mlops_train__credit_default")
    expected_tasks = {
        "assemble_training_set",
        "train_challenger",
        "evaluate_challenger",
        "approve_promotion",  # passes at once: evaluation.approval is none
        "promote_or_reject",
        "summary",
    }

    # 1. First model: promoted over the trivial baseline.
    states, out = run(train_dag, form(STUMP, reason="first"), 3)
    assert states == dict.fromkeys(expected_tasks, "success"), states
    decision, promotion = out["evaluate_challenger"], out["promote_or_reject"]
    v1 = decision["challenger_version"]
    assert decision["outcome"] == "promote", decision["reasons"]
    assert (
        decision["compared_against"] == "baseline" and decision["expected_champion_version"] is None
    )
    assert promotion["outcome"] == "promoted" and promotion["promoted_version"] == v1
    assert champion(client, name) == v1
    reasons = "; ".join(decision["reasons"])
    assert out["summary"] == (
        f"{name}: promoted v{v1} over the baseline (no champion): {reasons} "
        f"(decision report {decision['html_uri']})"
    ) and decision["html_uri"].endswith("/report.html")
    record = json.loads(Path(decision["decision_uri"]).read_text())
    assert record["outcome"] == "promote" and record["html_uri"] == decision["html_uri"]
    assert record["context"]["tag.reason"] == "first", "the form's reason is in the decision record"
    assert (
        str(tmp_path) in decision["decision_uri"]
        and "/reports/decisions/" in decision["decision_uri"]
    )
    assert "<html" in Path(decision["html_uri"]).read_text().lower()
    tags = client.get_model_version(name, v1).tags
    assert (
        tags["validation_status"] == "passed" and tags["decision_uri"] == decision["decision_uri"]
    )
    assert tags["promotion_reason"] == "first" and tags["previous_champion"] == "none"
    assert tags["reason"] == "first", "the trigger form's reason is a version tag"
    run_info = client.get_run(client.get_model_version(name, v1).run_id)
    assert any(a.path.startswith("decision") for a in client.list_artifacts(run_info.info.run_id))

    # 2. Re-running the promote task changes nothing.
    trail = audit_trail(client, name)
    again = PromoteModelOperator(
        task_id="promote_again", decision=decision, reason="re-run"
    ).execute({})
    assert again["outcome"] == "noop" and again["promoted_version"] is None
    assert audit_trail(client, name) == trail and champion(client, name) == v1

    # 3. A much better challenger: promoted over v1.
    states, out = run(train_dag, form(REGULARISED, reason="better"), 4)
    assert states == dict.fromkeys(expected_tasks, "success"), states
    decision = out["evaluate_challenger"]
    v2 = decision["challenger_version"]
    assert decision["outcome"] == "promote", decision["reasons"]
    assert (
        decision["compared_against"] == f"champion:{v1}"
        and decision["expected_champion_version"] == v1
    )
    assert out["promote_or_reject"]["previous_champion"] == v1
    assert champion(client, name) == v2
    assert out["summary"].startswith(f"{name}: promoted v{v2} over v{v1}: "), out["summary"]

    # 4. A model trained on shuffled labels (already registered): rejected, champion stays.
    v3 = register_shuffled(config, name, mlflow_server.url)
    holdout = out["assemble_training_set"]["holdout_uri"]
    reuse = get_dag(REUSE_DAG, "mlops_reuse__evaluate_registered_version")
    conf = {
        "config_path": str(config_path),
        "holdout_snapshot_uri": holdout,
        "challenger_version": v3,
        "model_name": name,
    }
    states, out = run(reuse, conf, 5)
    assert states == {"evaluate": "success", "promote": "success"}, states
    assert out["evaluate"]["outcome"] == "reject", out["evaluate"]["reasons"]
    assert out["promote"]["outcome"] == "rejected" and out["promote"]["promoted_version"] is None
    assert champion(client, name) == v2
    assert client.get_model_version(name, v3).tags["validation_status"] == "failed"

    # 5. Rollback (of this dataset's model: the form names none): back to the previous
    #    champion, which passed validation; an unknown version is refused.
    rollback_dag = get_dag(REPO / "dags", "mlops_rollback__credit_default")
    states, out = run(rollback_dag, {"reason": "incident 42: v2 misbehaves"}, 6)
    assert states == {"rollback_champion": "success"}, states
    assert (
        out["rollback_champion"]["outcome"] == "rolled_back"
        and out["rollback_champion"]["version"] == v1
    )
    assert champion(client, name) == v1
    assert (
        client.get_model_version(name, v1).tags["rollback_reason"] == "incident 42: v2 misbehaves"
    )
    states, _ = run(rollback_dag, {"reason": "typo in version", "to_version": "999"}, 7)
    assert states == {"rollback_champion": "failed"}, states
    assert champion(client, name) == v1
    assert audit_trail(client, name)[-1]["action"] == "rollback"

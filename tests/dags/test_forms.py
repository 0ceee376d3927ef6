"""A person with one dataset's trigger forms changes nothing outside that dataset, and
what they type stays what they typed (issue 13, findings 2, 3 and 11), through the real
DAG files: dag.test() against the session's MLflow server, no trainer container (every
refusal happens before one would start).

The checks without services are in tests/unit/core/test_form_limits.py."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.dataset_configs import own_config

REPO = Path(__file__).resolve().parents[2]
TEXTS = ("0", "1e999", "None", "[1, 2]", "True", " 07 ")


def dags() -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags


def test_free_text_from_a_form_reaches_every_operator_as_typed():
    """Native rendering would read "0" as 0, "1e999" as inf and "None" as None (then
    replaced by a derived reason); every task that takes the form's reason or target
    version gets the text."""
    checked = 0
    for dag_id, dag in dags().items():
        defaults = dag.params.dump()
        for task in dag.tasks:
            for field in task.template_fields:
                value = getattr(task, field, None)
                if not isinstance(value, str):
                    continue
                for name in ("reason", "to_version"):
                    if f"params.{name}" not in value:
                        continue
                    for text in TEXTS:
                        params = {**defaults, name: text}
                        rendered = task.render_template(
                            value, {"params": params}, dag.get_template_env()
                        )
                        where = f"{dag_id}.{task.task_id}.{field}"
                        assert rendered == text and type(rendered) is str, (where, text, rendered)
                    checked += 1
    # train: train, evaluate, promote (reason); rollback: reason, to_version.
    assert checked >= 5


# ------------------------------------------------------------------------ with MLflow


def _register(client: Any, name: str, runs: int, validated: bool) -> list[str]:
    """``runs`` artifact-less versions of ``name`` (enough for alias moves); with
    ``validated`` each is tagged as having passed validation."""
    import mlflow

    if client.search_registered_models(f"name = '{name}'") == []:
        client.create_registered_model(name)
    mlflow.set_tracking_uri(client.tracking_uri)
    versions = []
    for _ in range(runs):
        with mlflow.start_run() as run:
            pass
        mv = client.create_model_version(name, f"runs:/{run.info.run_id}/m", run_id=run.info.run_id)
        if validated:
            client.set_model_version_tag(name, mv.version, "validation_status", "passed")
        versions.append(str(mv.version))
    return versions


def _promote_all(client: Any, name: str, versions: list[str]) -> None:
    from mlops_loop.core.registry import promote

    expected = None
    for version in versions:
        promote(client, name, version, expected_champion=expected, decision_uri=None,
                airflow_run=None, reason="setup")  # fmt: skip
        expected = version


def _run(dag: Any, conf: dict[str, Any], day: int) -> dict[str, Any]:
    """dag.test(); returns {task_id: task instance}."""
    run = dag.test(logical_date=datetime(2026, 7, day, tzinfo=timezone.utc), run_conf=conf)
    return {ti.task_id: ti for ti in run.get_task_instances()}


@pytest.mark.integration
def test_rollback_form_acts_on_its_dataset_only_and_on_validated_targets(
    airflow_db, tmp_path, monkeypatch, mlflow_server
):
    import mlflow

    from mlops_loop.core.registry import audit_trail, get_champion

    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    suffix = uuid.uuid4().hex[:8]
    name, other = f"forms_rollback_{suffix}", f"forms_other_{suffix}"
    own_config(tmp_path, monkeypatch, mlflow_server.url, name)
    # This dataset's model: v1 was never validated, v2 passed and is champion.
    (v1,) = _register(client, name, 1, validated=False)
    (v2,) = _register(client, name, 1, validated=True)
    _promote_all(client, name, [v1, v2])
    # Another dataset's model, where a rollback would move the champion back to o1.
    o1, o2 = _register(client, other, 2, validated=True)
    _promote_all(client, other, [o1, o2])
    trail = audit_trail(client, name)
    rollback = dags()["mlops_rollback__credit_default"]

    # 1. The form names another model, forced: refused, nobody's champion moves (were
    #    the name ignored, force would move this model's; were it honoured, the other's).
    tis = _run(
        rollback, {"reason": "incident 5: roll back", "model_name": other, "force": True}, 1
    )
    assert str(tis["rollback_champion"].state) == "failed"
    assert get_champion(client, other) == o2 and get_champion(client, name) == v2

    # dag.test() leaves a run's conf in the DAG object's params: a fresh parse for the
    # next runs (a deployment parses every run's params afresh).
    rollback = dags()["mlops_rollback__credit_default"]

    # 2. The previous champion (v1) never passed validation: refused without force.
    tis = _run(rollback, {"reason": "1e999"}, 2)
    assert str(tis["rollback_champion"].state) == "failed"
    assert tis["rollback_champion"].try_number == 1
    assert get_champion(client, name) == v2 and audit_trail(client, name) == trail

    # 3. Forced, with a reason that native rendering would have made a float: the
    #    rollback happens and the reason is recorded as typed, marked forced.
    tis = _run(rollback, {"reason": "1e999", "force": True}, 3)
    assert str(tis["rollback_champion"].state) == "success"
    result = tis["rollback_champion"].xcom_pull(task_ids="rollback_champion")
    assert result["outcome"] == "rolled_back" and result["model_name"] == name
    assert get_champion(client, name) == v1
    assert client.get_model_version(name, v1).tags["rollback_reason"] == "[forced] 1e999"
    entry = audit_trail(client, name)[-1]
    assert (entry["action"], entry["reason"], entry["forced"]) == ("rollback", "1e999", True)
    assert get_champion(client, other) == o2


@pytest.mark.integration
@pytest.mark.docker  # today's code would train in the container; the refusal starts none
def test_train_form_cannot_train_into_another_registered_model(
    airflow_db, tmp_path, monkeypatch, mlflow_server
):
    import mlflow

    from mlops_loop.core.ingest import ingest_batch
    from mlops_loop.core.training_set import ValidatedSnapshot, record_validated
    from mlops_loop_devtools.sample_data import generate_batch, land_batch

    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    suffix = uuid.uuid4().hex[:8]
    victim = f"forms_victim_{suffix}"
    config = own_config(
        tmp_path, monkeypatch, mlflow_server.url, f"forms_train_{suffix}",
        {"model_type": "hist_gradient_boosting"},
    )  # fmt: skip
    for ds in ("2026-07-01", "2026-07-02", "2026-07-03"):
        land_batch(generate_batch(ds, rows=400), config.root, ds)
        snap = ingest_batch(config, ds)
        record_validated(config, ValidatedSnapshot(ds, snap.sha256, snap.snapshot_uri, snap.rows))
    train = dags()["mlops_train__credit_default"]

    conf = {"hyperparameters": {"max_iter": 5, "registered_model_name": victim}, "reason": "0"}
    tis = _run(train, conf, 3)
    assert str(tis["assemble_training_set"].state) == "success"
    assert str(tis["train_challenger"].state) == "failed"
    assert tis["train_challenger"].try_number == 1, "a refused form is not retried"
    assert str(tis["promote_or_reject"].state) == "upstream_failed"
    assert client.search_registered_models(f"name = '{victim}'") == []
    assert client.search_model_versions(f"name = '{config.training.registered_model_name}'") == []

"""A DAG that composes the champion/challenger operators differently from dags/train.py:
evaluate and promote a version that is ALREADY registered (no training set, no training),
to show that EvaluateChallengerOperator and PromoteModelOperator stand on their own.

Loaded by tests/dags/test_reuse_dag.py and test_champion_challenger.py with
``DagBag(dag_folder=<this file>)``; it is not in dags/, so no scheduler sees it.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import DAG, Param

from mlops_loop.operators import EvaluateChallengerOperator, PromoteModelOperator

DAG_ID = "mlops_reuse__evaluate_registered_version"

with DAG(
    dag_id=DAG_ID,
    description="Evaluate and promote an already registered model version",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    tags=["mlops_loop", "test"],
    doc_md="Evaluate a registered version against the champion on a given holdout, then promote or reject it.",
    params={
        "config_path": Param(type="string", minLength=1),
        "holdout_snapshot_uri": Param(type="string", minLength=1),
        "challenger_version": Param(type=["string", "integer"]),
        "model_name": Param(None, type=["null", "string"]),
        "reason": Param("re-evaluation", type="string", minLength=1),
    },
    default_args={"retries": 0},
):
    evaluate = EvaluateChallengerOperator(
        task_id="evaluate",
        config_path="{{ params.config_path }}",
        holdout_snapshot_uri="{{ params.holdout_snapshot_uri }}",
        challenger_version="{{ params.challenger_version }}",
        model_name="{{ params.model_name }}",  # empty renders "None": the config's model
    )
    # The decision arrives as an XComArg here (dags/train.py uses a Jinja xcom_pull).
    PromoteModelOperator(task_id="promote", decision=evaluate.output, reason="{{ params.reason }}")

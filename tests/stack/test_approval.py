"""Human approval of a promotion, answered the way a person answers: through REST API v2
(``PATCH .../hitlDetails``, what the UI's Required Actions send) while a real scheduler
runs the training DAG.

Three datasets with ``evaluation.approval: required``, each training its first model
(a ``promote`` decision over the baseline, so the approval task waits):
approve (the champion moves; who and when are stored with it), reject (nothing changes;
a second answer is refused) and no answer before the timeout (nothing changes).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from mlops_loop.core.registry import audit_trail, get_champion

pytestmark = [pytest.mark.stack, pytest.mark.integration, pytest.mark.docker]

DAYS = ["2026-06-01", "2026-06-02", "2026-06-03"]
TASK = "approve_promotion"
WAITING = ("awaiting_input", "deferred")  # Airflow 3.3 parks HITL tasks in awaiting_input
SETTLE_SECONDS = 5


def overrides(timeout_hours: float = 72.0) -> dict[str, Any]:
    return {
        "training": {
            "model_type": "hist_gradient_boosting",
            "hist_gradient_boosting": {"max_iter": 30},
        },
        "evaluation": {"approval": "required", "approval_timeout_hours": timeout_hours},
    }


def start_training(stack: Any, dataset: str, timeout_hours: float = 72.0) -> str:
    """A dataset with three validated days; trigger its training DAG and wait until the
    approval task asks. Returns the run id."""
    stack.add_dataset(dataset, overrides(timeout_hours))
    stack.validated_days(dataset, DAYS)
    dag_id = f"mlops_train__{dataset}"
    run_id = stack.airflow.trigger(dag_id, conf={"reason": "approval test"})
    stack.airflow.wait_for_task(dag_id, run_id, TASK, WAITING, timeout=600)
    # Airflow 3.3.2 races an answer given within about a second of the task parking: the
    # executor's "success" for the parked try arrives after the answer re-queued it, the
    # scheduler marks the try for retry and the question is asked anew (answer lost). A
    # person cannot answer that fast; the test waits as long before answering.
    time.sleep(SETTLE_SECONDS)
    return run_id


def client(stack: Any) -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=stack.mlflow_url)


def test_approve_moves_the_champion_and_records_who(airflow_stack):
    stack, dataset = airflow_stack, "stack_approve"
    dag_id, model = f"mlops_train__{dataset}", f"{dataset}_model"
    run_id = start_training(stack, dataset)

    asked = stack.airflow.hitl_detail(dag_id, run_id, TASK)
    decision = stack.airflow.xcom(dag_id, run_id, "evaluate_challenger")
    assert decision["outcome"] == "promote"
    assert asked["options"] == ["Approve", "Reject"]
    assert asked["subject"] == f"Promote {model} version {decision['challenger_version']} to champion?"
    assert decision["html_uri"] in asked["body"]
    assert get_champion(client(stack), model) is None  # nothing moved while it waits

    answer = stack.airflow.answer_hitl(dag_id, run_id, TASK, ["Approve"])
    assert answer.status_code == 200, answer.text
    run = stack.airflow.wait_for_run(dag_id, run_id, timeout=300)
    assert run["state"] == "success"
    states = stack.airflow.task_states(dag_id, run_id)
    assert states[TASK] == states["promote_or_reject"] == "success"

    approval = stack.airflow.xcom(dag_id, run_id, TASK)
    assert approval["approval"] == "approved" and approval["by"] and approval["at"]
    version = decision["challenger_version"]
    assert get_champion(client(stack), model) == version
    tags = client(stack).get_model_version(model, version).tags
    assert (tags["approved_by"], tags["approved_at"]) == (approval["by"], approval["at"])
    last = audit_trail(client(stack), model)[-1]
    assert last["action"] == "promote" and last["approval"]["by"] == approval["by"]
    assert stack.airflow.xcom(dag_id, run_id, "summary").startswith(f"{model}: promoted v{version}")


def test_reject_changes_nothing_and_a_second_answer_is_refused(airflow_stack):
    stack, dataset = airflow_stack, "stack_reject"
    dag_id, model = f"mlops_train__{dataset}", f"{dataset}_model"
    run_id = start_training(stack, dataset)

    assert stack.airflow.answer_hitl(dag_id, run_id, TASK, ["Reject"]).status_code == 200
    run = stack.airflow.wait_for_run(dag_id, run_id, timeout=300)
    assert run["state"] == "success"  # a person's "no" is an answer, not a failure
    states = stack.airflow.task_states(dag_id, run_id)
    assert states[TASK] == "success" and states["promote_or_reject"] == "skipped"
    assert stack.airflow.xcom(dag_id, run_id, TASK)["approval"] == "rejected"
    assert get_champion(client(stack), model) is None
    assert "promote rejected by a person" in stack.airflow.xcom(dag_id, run_id, "summary")

    second = stack.airflow.answer_hitl(dag_id, run_id, TASK, ["Approve"])
    assert second.status_code == 409, second.text
    assert "already been updated" in second.json()["detail"]
    assert get_champion(client(stack), model) is None


def test_no_answer_before_the_timeout_changes_nothing(airflow_stack):
    stack, dataset = airflow_stack, "stack_approval_timeout"
    dag_id, model = f"mlops_train__{dataset}", f"{dataset}_model"
    run_id = start_training(stack, dataset, timeout_hours=20 / 3600)  # 20 s

    run = stack.airflow.wait_for_run(dag_id, run_id, timeout=300)
    assert run["state"] == "success"
    states = stack.airflow.task_states(dag_id, run_id)
    assert states[TASK] == "success" and states["promote_or_reject"] == "skipped"
    approval = stack.airflow.xcom(dag_id, run_id, TASK)
    assert approval["approval"] == "timed_out" and approval["by"] is None
    assert get_champion(client(stack), model) is None

"""The test deployment itself: healthy components sharing one database, a bounded start
that names its cause, and waits that say what the run was doing when they gave up."""

from __future__ import annotations

import pytest

from mlops_loop_devtools.airflow_stack import AirflowStackError, start_airflow_stack
from mlops_loop_devtools.devstack import free_port

pytestmark = pytest.mark.stack


def test_every_component_is_healthy_on_its_own_database(airflow_stack):
    airflow = airflow_stack.airflow
    health = airflow.health()
    assert {
        key: health[key]["status"]
        for key in ("metadatabase", "scheduler", "triggerer", "dag_processor")
    } == {
        "metadatabase": "healthy",
        "scheduler": "healthy",
        "triggerer": "healthy",
        "dag_processor": "healthy",
    }
    assert airflow.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("/" + airflow.database)
    assert airflow.env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"{airflow.url}/execution/"
    assert {
        airflow.env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"],
        airflow.env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"],
    }.isdisjoint({"8793", "8794"})


def test_a_wait_that_gives_up_names_the_task_states_and_the_scheduler_log(airflow_stack):
    airflow = airflow_stack.airflow
    dag_id = "mlops_rollback__credit_default"
    # Paused: the run is created but never scheduled.
    airflow.set_paused(dag_id, True)
    run_id = airflow.trigger(dag_id, conf={"reason": "harness test"}, unpause=False)

    with pytest.raises(
        AirflowStackError, match=r"is 'queued', not \['success'\] after 1s; tasks: "
    ) as info:
        airflow.wait_for_run(dag_id, run_id, states=["success"], timeout=1)
    assert "scheduler log tail:" in str(info.value)
    airflow.api("DELETE", f"/dags/{dag_id}/dagRuns/{run_id}")


def test_no_database_server_is_named_before_anything_starts(tmp_path):
    closed = free_port()
    with pytest.raises(AirflowStackError, match=f"PostgreSQL at .*:{closed} is not reachable"):
        start_airflow_stack(
            tmp_path, database_server=f"postgresql+psycopg2://postgres@127.0.0.1:{closed}"
        )
    assert not (tmp_path / "logs" / "scheduler.log").exists()

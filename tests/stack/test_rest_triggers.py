"""Triggering the DAGs through REST API v2 as a client does, against a real deployment:
with and without a logical date, with a date in the form, with a date in the wrong
format (refused, HTTP 400 naming it) and with a conf key the DAG does not know (the run
fails at its first task, naming the key).

One dataset (``stack_rest``, no schedule) so nothing else starts its DAGs; its train DAG
stays paused, so the ``validated`` events of these runs start no training.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from mlops_loop_devtools.sample_data import generate_batch, land_batch

pytestmark = [pytest.mark.stack, pytest.mark.integration]

DATASET = "stack_rest"
INGEST = f"mlops_ingest__{DATASET}"
DAY = "2026-04-01"


@pytest.fixture(scope="module")
def stack(airflow_stack):
    airflow_stack.add_dataset(DATASET)
    return airflow_stack


def test_ingest_without_a_logical_date_runs_for_the_day_it_runs_or_the_form_date(stack):
    airflow = stack.airflow
    root = stack.dataset_root(DATASET)
    land_batch(generate_batch(DAY, rows=600), root, DAY)
    # A run without a logical date is for the day it runs (its run_after, UTC).
    today = datetime.now(timezone.utc).date().isoformat()
    land_batch(generate_batch(today, rows=600, seed=7), root, today)

    runs = {
        "no date at all": airflow.trigger(INGEST, logical_date=None),
        "form date": airflow.trigger(INGEST, logical_date=None, conf={"ds": DAY}),
        "logical date": airflow.trigger(INGEST, logical_date=f"{DAY}T00:00:00Z"),
    }
    for case, run_id in runs.items():
        run = airflow.wait_for_run(INGEST, run_id, timeout=300)
        states = airflow.task_states(INGEST, run_id)
        assert run["state"] == "success", (case, states)
        assert states["ingest_snapshot"] == "success", (case, states)

    no_date = airflow.dag_run(INGEST, runs["no date at all"])
    assert no_date["logical_date"] is None
    assert (
        airflow.xcom(INGEST, runs["no date at all"], "ingest_snapshot")["ds"]
        == no_date["run_after"][:10]
    )
    assert airflow.xcom(INGEST, runs["form date"], "ingest_snapshot")["ds"] == DAY
    assert airflow.xcom(INGEST, runs["logical date"], "ingest_snapshot")["ds"] == DAY


@pytest.mark.parametrize(
    ("stage", "key"),
    [
        pytest.param("ingest", "ds", id="ingest-ds"),
        pytest.param("train", "until_ds", id="train-until_ds"),
        pytest.param("drift", "end", id="drift-end"),
    ],
)
def test_a_date_in_another_format_is_refused_at_trigger_time(stack, stage, key):
    dag_id = f"mlops_{stage}__{DATASET}"
    before = stack.airflow.api("GET", f"/dags/{dag_id}/dagRuns")["total_entries"]

    response = stack.airflow.trigger_request(dag_id, conf={key: "05/01/2026"})

    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert detail.startswith(f"Invalid input for param {key}: '05/01/2026' is not a 'date'"), detail
    assert stack.airflow.api("GET", f"/dags/{dag_id}/dagRuns")["total_entries"] == before


def test_a_conf_key_the_dag_does_not_know_fails_the_run_naming_it(stack):
    airflow = stack.airflow
    # Airflow itself takes any key (the run is created) ...
    run_id = airflow.trigger(INGEST, logical_date=None, conf={"dss": DAY})

    run = airflow.wait_for_run(INGEST, run_id, timeout=300)

    # ... the first task refuses it before any work: no retry, nothing downstream.
    states = airflow.task_states(INGEST, run_id)
    assert run["state"] == "failed"
    failed = sorted(task for task, state in states.items() if state == "failed")
    assert len(failed) == 1, states
    assert all(state in ("failed", "upstream_failed") for state in states.values()), states
    assert airflow.task_instances(INGEST, run_id)[failed[0]]["try_number"] == 1
    log = airflow.task_log(INGEST, run_id, failed[0])
    assert f"unknown conf key(s) 'dss' for {INGEST}: it takes ds; nothing was run" in log, log[
        -3000:
    ]

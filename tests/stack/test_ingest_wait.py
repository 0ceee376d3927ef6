"""The ingest DAG waiting for its batch under a real scheduler (reschedule mode): the run
that unpausing a scheduled DAG starts, for a date with nothing landed, ends without a
failure; a batch that lands while a run waits is ingested by that run.
"""

from __future__ import annotations

import os
import time

import pytest

from mlops_loop_devtools.sample_data import generate_batch, land_batch

pytestmark = [pytest.mark.stack, pytest.mark.integration]

DATASET = "stack_wait"
INGEST = f"mlops_ingest__{DATASET}"


@pytest.fixture(scope="module")
def stack(airflow_stack):
    # Scheduled daily, and a short wait so that a missing batch decides in seconds.
    airflow_stack.add_dataset(
        DATASET,
        {
            "schedule": "@daily",
            "source": {"on_missing": "skip", "wait_timeout_minutes": 0.25, "poke_interval_seconds": 2},
        },
    )
    return airflow_stack


def first_run(airflow, dag_id: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = airflow.api("GET", f"/dags/{dag_id}/dagRuns")["dag_runs"]
        if runs:
            return str(runs[0]["dag_run_id"])
        time.sleep(1)
    raise AssertionError(f"unpausing {dag_id} started no run within {timeout:.0f}s")


def test_unpausing_a_scheduled_ingest_dag_gives_no_failed_run(stack):
    airflow = stack.airflow
    airflow.unpause(INGEST)
    run_id = first_run(airflow, INGEST)
    run = airflow.wait_for_run(INGEST, run_id, timeout=300)
    states = airflow.task_states(INGEST, run_id)
    assert run["state"] == "success", states
    assert states == {"wait_for_batch": "skipped", "ingest_snapshot": "skipped", "quality_gate": "skipped"}
    ds = (run["logical_date"] or run["run_after"])[:10]
    log = airflow.task_log(INGEST, run_id, "wait_for_batch")
    looked_for = f"*.csv, *.csv.gz, *.csv.bz2 under {stack.dataset_root(DATASET)}/raw/ds={ds}"
    assert f"no batch for {DATASET} ds={ds} yet: looked for {looked_for}" in log, log[-3000:]
    assert f"after waiting 0.25 minutes: looked for {looked_for} (source.on_missing: skip)" in log, log[-3000:]
    airflow.set_paused(INGEST, True)


def test_a_batch_that_lands_while_the_run_waits_is_ingested(stack, tmp_path):
    airflow = stack.airflow
    ds = "2026-04-20"
    root = stack.dataset_root(DATASET)
    # A longer wait for this run: the config is read when the task runs.
    stack.add_dataset(
        DATASET,
        {"schedule": None, "source": {"on_missing": "fail", "wait_timeout_minutes": 5, "poke_interval_seconds": 2}},
    )
    run_id = airflow.trigger(INGEST, logical_date=f"{ds}T00:00:00Z")
    airflow.wait_for_task(INGEST, run_id, "wait_for_batch", ["up_for_reschedule"], timeout=180)

    land_batch(generate_batch(ds, rows=600), tmp_path, ds)
    (root / "raw").mkdir(parents=True, exist_ok=True)
    os.rename(tmp_path / "raw" / f"ds={ds}", root / "raw" / f"ds={ds}")

    run = airflow.wait_for_run(INGEST, run_id, timeout=300)
    states = airflow.task_states(INGEST, run_id)
    assert run["state"] == "success", states
    assert states == {"wait_for_batch": "success", "ingest_snapshot": "success", "quality_gate": "success"}
    assert airflow.xcom(INGEST, run_id, "wait_for_batch")["files"] == ["part-000.csv"]
    log = airflow.task_log(INGEST, run_id, "wait_for_batch")
    assert f"no batch for {DATASET} ds={ds} yet" in log
    assert f"batch for {DATASET} ds={ds} has landed: 1 csv file(s)" in log

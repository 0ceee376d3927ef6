"""The whole loop on the production shape of the deployment, driven only through REST API
v2: CeleryExecutor with two workers (``default`` and ``compute`` queues, each with its own
HOME, TMPDIR and task log folder), metadata on a fresh PostgreSQL database, broker on
Redis, MLflow on PostgreSQL with artifacts in S3, and the dataset's storage root on the S3
server (``storage.s3.aws_conn_id`` -> ``AIRFLOW_CONN_MLOPS_S3``). Nothing the tasks share
lives on a worker's disk.

Ingests for three dates and one bad batch (the gate fails it and quarantines it); the
``validated`` Asset event starts training by itself; the first model becomes champion;
drifted dates land and are ingested; the drift DAG requests retraining through the
``retrain_requested`` Asset; that event starts training again (a stronger model, promoted);
a person approves its promotion through ``PATCH .../hitlDetails``; the rollback DAG moves
the champion back. Training, evaluation and drift scoring ran on the
compute worker, everything else on the default worker.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from mlops_loop_devtools.sample_data import generate_batch
from tests.fixtures.celery_stack import COMPUTE_QUEUE, CeleryStack, celery_stack  # noqa: F401
from tests.fixtures.dataset_configs import REGULARISED, STUMP

pytestmark = [
    pytest.mark.stack,
    pytest.mark.celery_stack,
    pytest.mark.integration,
    pytest.mark.docker,
]

DATASET = "celery_loop"
MODEL = f"{DATASET}_model"
INGEST, TRAIN, DRIFT, ROLLBACK = (
    f"mlops_{s}__{DATASET}" for s in ("ingest", "train", "drift", "rollback")
)
ROWS = 3000
GOOD_DAYS = ["2026-05-01", "2026-05-02", "2026-05-03"]
BAD_DAY = "2026-05-04"
DRIFTED_DAYS = ["2026-05-10", "2026-05-11"]
COMPUTE_TASKS = {"train_challenger", "evaluate_challenger", "drift_monitor"}
APPROVAL = "approve_promotion"
WAITING = ("awaiting_input", "deferred")  # Airflow 3.3 parks HITL tasks in awaiting_input


def hgb(settings: dict[str, Any]) -> dict[str, Any]:
    """A training section from tests.fixtures.dataset_configs' model settings."""
    params = {k: v for k, v in settings.items() if k != "model_type"}
    return {"model_type": settings["model_type"], "hist_gradient_boosting": params}


# A weak first champion (a one-stump booster: better than the baseline, far from good), so
# the retrained, regularised model clearly wins and there is a champion to roll back to.
# The drift DAG's cron never fires between its start date and now (29 February 2028
# first), so unpausing it starts nothing but the run triggered here.
CONFIG_OVERRIDES = {"training": hgb(STUMP), "drift": {"schedule": "0 2 29 2 *"}}


def runs_of(stack: CeleryStack, dag_id: str) -> list[dict[str, Any]]:
    body = stack.airflow.api("GET", f"/dags/{dag_id}/dagRuns?limit=100&order_by=run_after")
    return list(body["dag_runs"])


def wait_for_new_run(
    stack: CeleryStack, dag_id: str, known: set[str], run_type: str, timeout: float = 180
) -> str:
    """The id of a run of ``dag_id`` not in ``known`` (of ``run_type``), once it exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in runs_of(stack, dag_id):
            if run["dag_run_id"] not in known and run["run_type"] == run_type:
                return str(run["dag_run_id"])
        stack.airflow.check_alive()
        time.sleep(2)
    raise AssertionError(
        f"no new {run_type} run of {dag_id} within {timeout:.0f}s; runs: "
        f"{[(r['dag_run_id'], r['state']) for r in runs_of(stack, dag_id)]}; import errors: "
        f"{stack.airflow.api('GET', '/importErrors')['import_errors']}\n"
        f"scheduler log tail:\n{stack.airflow.log_tail('scheduler')}"
    )


def ingest(stack: CeleryStack, days: list[str]) -> dict[str, str]:
    """Trigger one ingest run per day at once; wait for all; ``{ds: run state}``."""
    run_ids = {ds: stack.airflow.trigger(INGEST, logical_date=f"{ds}T00:00:00Z") for ds in days}
    return {
        ds: stack.airflow.wait_for_run(INGEST, run_id, timeout=400)["state"]
        for ds, run_id in run_ids.items()
    }


def assert_ran_where_routed(stack: CeleryStack, dag_id: str, run_id: str) -> set[str]:
    """Each task instance that ran: on the compute queue and worker for model work, on
    the default ones otherwise. Returns the hostnames seen."""
    compute, default = stack.worker("compute"), stack.worker("default")
    hosts = set()
    for task_id, ti in stack.airflow.task_instances(dag_id, run_id).items():
        if ti["state"] in ("skipped", None) or not ti.get("hostname"):
            continue
        worker = compute if task_id in COMPUTE_TASKS else default
        assert (ti["queue"], ti["hostname"]) == (worker.spec.queues[0], worker.hostname), (
            task_id,
            ti,
        )
        assert task_id in worker.task_ids_logged(dag_id), (task_id, worker.task_log_files(dag_id))
        hosts.add(ti["hostname"])
    return hosts


def champion(stack: CeleryStack) -> str | None:
    import mlflow

    from mlops_loop.core.registry import get_champion

    return get_champion(mlflow.MlflowClient(tracking_uri=stack.mlflow_url), MODEL)


def test_the_loop_on_celery_workers(celery_stack: CeleryStack, tmp_path: Path) -> None:  # noqa: F811
    import mlflow

    from mlops_loop.core.registry import audit_trail

    stack, airflow = celery_stack, celery_stack.airflow
    started = time.monotonic()
    timings: dict[str, float] = {}
    client = mlflow.MlflowClient(tracking_uri=stack.mlflow_url)

    # --- ingest: two good days and a bad batch; training stays paused, so no event yet.
    for seed, ds in enumerate(GOOD_DAYS):
        stack.land(DATASET, ds, generate_batch(ds, rows=ROWS, seed=seed), tmp_path)
    stack.land(
        DATASET, BAD_DAY, generate_batch(BAD_DAY, rows=ROWS, corrupt="out_of_range"), tmp_path
    )
    states = ingest(stack, [*GOOD_DAYS[:2], BAD_DAY])
    assert states == {GOOD_DAYS[0]: "success", GOOD_DAYS[1]: "success", BAD_DAY: "failed"}
    bad_run = next(r for r in runs_of(stack, INGEST) if r["logical_date"].startswith(BAD_DAY))
    bad_states = airflow.task_states(INGEST, bad_run["dag_run_id"])
    assert bad_states["ingest_snapshot"] == "success" and bad_states["quality_gate"] == "failed"
    assert stack.keys(f"{DATASET}/quarantine/ds={BAD_DAY}/"), "bad batch not quarantined"
    # A default-worker task's log, read through the api-server (served by that worker).
    good_run = next(r for r in runs_of(stack, INGEST) if r["logical_date"].startswith(GOOD_DAYS[0]))
    log = airflow.task_log(INGEST, good_run["dag_run_id"], "wait_for_batch")
    assert f"batch for {DATASET} ds={GOOD_DAYS[0]} has landed: 1 csv file(s)" in log, log[-3000:]
    timings["ingest"] = time.monotonic() - started

    # --- the third day's validated event starts training by itself.
    airflow.unpause(TRAIN)
    assert ingest(stack, GOOD_DAYS[2:]) == {GOOD_DAYS[2]: "success"}
    first = wait_for_new_run(stack, TRAIN, set(), "asset_triggered")
    run = airflow.wait_for_run(TRAIN, first, timeout=600)
    assert run["state"] == "success", airflow.task_states(TRAIN, first)
    trained = airflow.xcom(TRAIN, first, "train_challenger")
    v1 = str(trained["model_version"])
    assert airflow.xcom(TRAIN, first, "evaluate_challenger")["outcome"] == "promote"
    assert champion(stack) == v1
    hosts = assert_ran_where_routed(stack, TRAIN, first)
    assert hosts == {stack.worker("compute").hostname, stack.worker("default").hostname}
    # Only the first training ran: the other validated events came while it was paused.
    assert [r["dag_run_id"] for r in runs_of(stack, TRAIN)] == [first]
    timings["first training"] = time.monotonic() - started

    # --- drifted days land and are ingested (training paused: their events start nothing);
    # the retrained model is the stronger one (tasks read the config when they run), and
    # its promotion waits for a person's approval.
    airflow.set_paused(TRAIN, True)
    for seed, ds in enumerate(DRIFTED_DAYS, start=10):
        stack.land(DATASET, ds, generate_batch(ds, rows=ROWS, seed=seed, drift=1.0), tmp_path)
    assert ingest(stack, DRIFTED_DAYS) == dict.fromkeys(DRIFTED_DAYS, "success")
    stack.write_config(
        DATASET,
        {**CONFIG_OVERRIDES, "training": hgb(REGULARISED), "evaluation": {"approval": "required"}},
    )
    airflow.unpause(TRAIN)

    drift_run = airflow.trigger(DRIFT, logical_date=f"{DRIFTED_DAYS[-1]}T02:00:00Z")
    assert airflow.wait_for_run(DRIFT, drift_run, timeout=400)["state"] == "success", (
        airflow.task_states(DRIFT, drift_run)
    )
    assert airflow.task_states(DRIFT, drift_run) == {
        "drift_monitor": "success",
        "request_retraining": "success",
    }
    report = airflow.xcom(DRIFT, drift_run, "drift_monitor")
    assert report["verdict"] == "drift" and report["champion_version"] == v1
    assert {"interest_rate", "credit_score"} <= set(report["drifted_features"])
    assert_ran_where_routed(stack, DRIFT, drift_run)
    timings["drift"] = time.monotonic() - started

    # --- the retrain event starts training by itself; the stronger model is promoted.
    second = wait_for_new_run(stack, TRAIN, {first}, "asset_triggered")
    airflow.wait_for_task(TRAIN, second, APPROVAL, WAITING, timeout=600)
    assert champion(stack) == v1  # nothing moves while it waits
    # Airflow 3.3.2 loses an answer given within about a second of the task parking
    # (tests/stack/test_approval.py); a person cannot answer that fast either.
    time.sleep(5)
    answer = airflow.answer_hitl(TRAIN, second, APPROVAL, ["Approve"])
    assert answer.status_code == 200, answer.text
    run = airflow.wait_for_run(TRAIN, second, timeout=600)
    assert run["state"] == "success", airflow.task_states(TRAIN, second)
    v2 = str(airflow.xcom(TRAIN, second, "train_challenger")["model_version"])
    decision = airflow.xcom(TRAIN, second, "evaluate_challenger")
    assert decision["outcome"] == "promote", decision
    assert v2 != v1 and champion(stack) == v2
    assert airflow.xcom(TRAIN, second, APPROVAL)["approval"] == "approved"
    assert_ran_where_routed(stack, TRAIN, second)
    timings["retraining"] = time.monotonic() - started

    # --- roll back to the previous champion, through the rollback DAG's form.
    rollback = airflow.trigger(ROLLBACK, conf={"reason": "celery stack test rollback"})
    assert airflow.wait_for_run(ROLLBACK, rollback, timeout=300)["state"] == "success", (
        airflow.task_states(ROLLBACK, rollback)
    )
    assert champion(stack) == v1
    last = audit_trail(client, MODEL)[-1]
    assert last["action"] == "rollback" and "celery stack test rollback" in str(last)
    timings["rollback"] = time.monotonic() - started

    # --- the registry: two versions, each traceable to its Airflow run.
    versions = {v.version: v for v in client.search_model_versions(f"name='{MODEL}'")}
    assert set(versions) == {v1, v2}
    tags = versions[v2].tags
    assert any(second in str(value) for value in tags.values()), tags
    # Artifacts went through the server to S3 (the server's bucket), not to a local disk.
    assert client.list_artifacts(trained["run_id"]), "no artifacts logged for the first run"

    # --- storage: everything on S3 under the dataset's root.
    keys = stack.keys(f"{DATASET}/")
    for ds in [*GOOD_DAYS, BAD_DAY, *DRIFTED_DAYS]:
        assert any(k.startswith(f"{DATASET}/raw/ds={ds}/") for k in keys), ds
    manifests = [
        k for k in keys if k.startswith(f"{DATASET}/snapshots/") and k.endswith("/manifest.json")
    ]
    assert len(manifests) >= len(GOOD_DAYS) + len(DRIFTED_DAYS)
    assert any(k.startswith(f"{DATASET}/reports/quality/") for k in keys)
    assert any(k.startswith(f"{DATASET}/reports/decisions/") for k in keys)
    assert f"{DATASET}/reports/drift/ds={DRIFTED_DAYS[-1]}/report.json" in keys
    assert (
        stack.read_json(f"{DATASET}/reports/drift/ds={DRIFTED_DAYS[-1]}/report.json")["verdict"]
        == "drift"
    )

    # --- each worker kept its own local folders; nothing else wrote task logs.
    default, compute = stack.worker("default"), stack.worker("compute")
    assert default.root != compute.root
    assert compute.task_ids_logged() >= COMPUTE_TASKS
    assert not (COMPUTE_TASKS & default.task_ids_logged())
    assert {"ingest_snapshot", "quality_gate", "assemble_training_set", "promote_or_reject"} <= (
        default.task_ids_logged()
    )
    assert compute.spec.queues[0] == COMPUTE_QUEUE
    print(f"celery loop timings (s since start): {timings}")

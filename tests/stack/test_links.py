"""The plugin's links as a person sees them: DAGs run by a real scheduler, links computed
by a real api-server (``GET .../taskInstances/{task_id}/links``).

One dataset (``stack_links``), in order: the drift DAG before any champion and the train
DAG before any validated data (tasks that produced nothing to link: the link is null and
the answer 200); then three validated days, the train DAG (train, evaluate and promote in
the trainer container: model version and decision report links) and the drift DAG again
(drift report link).
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = [pytest.mark.stack, pytest.mark.integration, pytest.mark.docker]

DATASET = "stack_links"
MODEL = f"{DATASET}_model"
TRAIN, DRIFT = f"mlops_train__{DATASET}", f"mlops_drift__{DATASET}"
DAYS = ["2026-06-01", "2026-06-02", "2026-06-03"]
# Small and quick: a few boosting rounds, no drift window beyond the three days.
OVERRIDES = {
    "training": {
        "model_type": "hist_gradient_boosting",
        "hist_gradient_boosting": {"max_iter": 30},
    },
    "drift": {"window_days": 3, "min_rows": 100},
}


def artifact_view(base: str, experiment_id: str, run_id: str, path: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}/artifactPath/{path}"


def finished(stack: Any, dag_id: str, **trigger: Any) -> str:
    run_id = stack.airflow.trigger(dag_id, **trigger)
    stack.airflow.wait_for_run(dag_id, run_id, timeout=600)
    return run_id


def wait_for_all_runs(stack: Any, dag_id: str) -> None:
    """Unpausing a DAG with a cron schedule also starts its latest scheduled run: let it
    end before the next step, so that it cannot see the champion of a later step."""
    for run in stack.airflow.api("GET", f"/dags/{dag_id}/dagRuns")["dag_runs"]:
        stack.airflow.wait_for_run(dag_id, run["dag_run_id"], timeout=300)


def test_links_from_the_api_server(airflow_stack):
    import mlflow

    stack = airflow_stack
    airflow = stack.airflow
    stack.add_dataset(DATASET, OVERRIDES)
    mlflow_url = stack.mlflow_url
    client = mlflow.MlflowClient(tracking_uri=mlflow_url)

    # Nothing to link yet: no champion to monitor, no data to train on.
    no_champion = finished(stack, DRIFT, conf={"ds": DAYS[-1]})
    wait_for_all_runs(stack, DRIFT)
    assert airflow.task_states(DRIFT, no_champion)["drift_monitor"] == "success"
    assert airflow.xcom(DRIFT, no_champion, "drift_monitor")["verdict"] == "no_champion"
    response = airflow.links_request(DRIFT, no_champion, "drift_monitor")
    assert response.status_code == 200
    assert response.json()["extra_links"] == {"Drift report": None}

    no_data = finished(stack, TRAIN, conf={"until_ds": "2026-05-01"})
    states = airflow.task_states(TRAIN, no_data)
    assert states["assemble_training_set"] == "failed"
    assert states["train_challenger"] == "upstream_failed"
    response = airflow.links_request(TRAIN, no_data, "train_challenger")
    assert response.status_code == 200
    assert response.json()["extra_links"] == {"MLflow model version": None}
    assert airflow.links(TRAIN, no_data, "promote_or_reject") == {
        "Decision report": None,
        "MLflow model version": None,
    }

    # Three validated days, then a training run that promotes over the baseline.
    stack.validated_days(DATASET, DAYS)

    trained = finished(stack, TRAIN, conf={"reason": "links test"})
    states = airflow.task_states(TRAIN, trained)
    assert states["train_challenger"] == states["evaluate_challenger"] == "success", states
    train = airflow.xcom(TRAIN, trained, "train_challenger")
    decision = airflow.xcom(TRAIN, trained, "evaluate_challenger")
    promotion = airflow.xcom(TRAIN, trained, "promote_or_reject")
    assert decision["outcome"] == "promote", decision["reasons"]
    version = train["model_version"]
    run = client.get_run(client.get_model_version(MODEL, version).run_id)
    assert decision["artifact_run_id"] == run.info.run_id
    version_url = f"{mlflow_url}/#/models/{MODEL}/versions/{version}"
    report_url = artifact_view(
        mlflow_url,
        run.info.experiment_id,
        run.info.run_id,
        f"decision/{decision['decision_id']}/report.html",
    )
    # The report is really there, under that artifact path of that run.
    assert "report.html" in {
        f.path.rsplit("/", 1)[-1]
        for f in client.list_artifacts(run.info.run_id, f"decision/{decision['decision_id']}")
    }

    assert airflow.links(TRAIN, trained, "train_challenger") == {
        "MLflow model version": version_url
    }
    assert airflow.links(TRAIN, trained, "evaluate_challenger") == {
        "Decision report": report_url,
        "MLflow model version": version_url,
    }
    assert promotion["promoted_version"] == version
    assert airflow.links(TRAIN, trained, "promote_or_reject") == {
        "Decision report": report_url,
        "MLflow model version": version_url,
    }
    assert airflow.links(TRAIN, trained, "assemble_training_set") == {}

    # With a champion, the drift DAG logs its report to the monitoring experiment.
    monitored = finished(stack, DRIFT, conf={"ds": DAYS[-1]})
    result = airflow.xcom(DRIFT, monitored, "drift_monitor")
    monitoring = client.get_run(result["monitoring_run_id"])
    assert client.get_experiment(monitoring.info.experiment_id).name == f"{DATASET}_monitoring"
    assert "report.html" in {
        f.path.rsplit("/", 1)[-1]
        for f in client.list_artifacts(monitoring.info.run_id, "drift_report")
    }
    assert airflow.links(DRIFT, monitored, "drift_monitor") == {
        "Drift report": artifact_view(
            mlflow_url,
            monitoring.info.experiment_id,
            monitoring.info.run_id,
            "drift_report/report.html",
        )
    }

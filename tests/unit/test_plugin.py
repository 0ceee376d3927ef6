"""The Airflow plugin loads, builds MLflow links from task results and attaches them to the\ntasks of the real train DAG that register or judge a model version."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "plugins" / "mlops_loop_plugin.py"


@pytest.fixture(scope="module")
def plugin():
    spec = importlib.util.spec_from_file_location("mlops_loop_plugin", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("env", "result", "expected"),
    [
        pytest.param("http://mlflow:5000/", {"model_name": "m x", "model_version": "3"},
                     "http://mlflow:5000/#/models/m%20x/versions/3", id="model-version"),
        pytest.param("http://mlflow:5000", {"run_id": "abc", "experiment_id": "7"},
                     "http://mlflow:5000/#/experiments/7/runs/abc", id="run"),
        pytest.param("http://mlflow:5000", {"status": "ok"}, "", id="nothing-to-link"),
        pytest.param("sqlite:///mlflow.db", {"model_name": "m", "model_version": "1"}, "", id="no-ui-for-file-stores"),
        pytest.param("http://mlflow:5000", None, "", id="no-xcom"),
    ],
)
def test_model_version_url(plugin, monkeypatch, env, result, expected):
    monkeypatch.delenv("MLOPS_LOOP_MLFLOW_UI_URL", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
    assert plugin.model_version_url(result) == expected


@pytest.fixture(scope="module")
def served_train_dag():
    """The real train DAG as the webserver gets it: parsed from dags/, serialized and
    deserialized. Deserialization attaches plugin links to operators whose class matches
    a link's ``operators`` exactly (name and module), not to subclasses."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    dag = bag.get_dag("mlops_train__credit_default")
    return DagSerialization.from_dict(DagSerialization.to_dict(dag))


@pytest.mark.parametrize("task_id", ["train_challenger", "evaluate_challenger"])
def test_train_dag_tasks_that_register_or_judge_a_version_get_the_link(
    plugin, served_train_dag, task_id
):
    assert plugin.MlopsLoopPlugin.name == "mlops_loop"
    task = served_train_dag.get_task(task_id)
    assert [link.name for link in task.operator_extra_links] == ["MLflow model version"]
    (link,) = task.operator_extra_links
    assert type(link).__name__ == "MlflowModelVersionLink"


def test_assembling_the_training_set_gets_no_link(served_train_dag):
    assert served_train_dag.get_task("assemble_training_set").operator_extra_links == []

"""The Airflow plugin: URLs built from task results, the MLflow UI address, reading a
task's result from the metadata database as the api-server does, and which tasks of the
real DAGs get which links. tests/stack/test_links.py checks the same links end to end,
as the api-server's links endpoint returns them."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "plugins" / "mlops_loop_plugin.py"
UI = "http://mlflow:5000"


@pytest.fixture(scope="module")
def plugin():
    spec = importlib.util.spec_from_file_location("mlops_loop_plugin", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("base", "result", "expected"),
    [
        pytest.param("http://mlflow:5000/", {"model_name": "m x", "model_version": "3"},
                     "http://mlflow:5000/#/models/m%20x/versions/3", id="trained-version"),
        pytest.param(UI, {"model_name": "m", "challenger_version": "4", "outcome": "reject"},
                     f"{UI}/#/models/m/versions/4", id="judged-version"),
        pytest.param(UI, {"model_name": "m", "promoted_version": "5", "outcome": "promoted"},
                     f"{UI}/#/models/m/versions/5", id="promoted-version"),
        pytest.param(UI, {"model_name": "m", "promoted_version": None, "outcome": "rejected"},
                     "", id="rejected-promotion-names-no-version"),
        pytest.param(UI, {"run_id": "abc", "experiment_id": "7"},
                     f"{UI}/#/experiments/7/runs/abc", id="run"),
        pytest.param(UI, {"status": "ok"}, "", id="nothing-to-link"),
        pytest.param("sqlite:///mlflow.db", {"model_name": "m", "model_version": "1"}, "",
                     id="no-ui-for-file-stores"),
        pytest.param(UI, None, "", id="no-result"),
        pytest.param(UI, "a string", "", id="not-a-dict"),
    ],
)  # fmt: skip
def test_model_version_url(plugin, base, result, expected):
    assert plugin.model_version_url(base, result) == expected


EVALUATED = {
    "html_uri": "/data/credit_default/reports/decisions/d1/report.html",
    "artifact_run_id": "r1",
    "artifact_experiment_id": "2",
    "html_artifact_path": "decision/d1/report.html",
}


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        pytest.param(EVALUATED, f"{UI}/#/experiments/2/runs/r1/artifactPath/decision/d1/report.html",
                     id="mlflow-copy-of-a-local-record"),
        pytest.param({**EVALUATED, "html_uri": "s3://bucket/x/report.html"},
                     f"{UI}/#/experiments/2/runs/r1/artifactPath/decision/d1/report.html",
                     id="mlflow-copy-of-an-s3-record"),
        pytest.param({"html_uri": "/data/report.html"}, "", id="local-file-without-copy"),
        pytest.param({"html_uri": "s3://bucket/report.html", "artifact_run_id": None}, "",
                     id="s3-without-copy"),
        pytest.param({"html_uri": "https://reports.example/d1.html"}, "https://reports.example/d1.html",
                     id="http-record-as-it-is"),
        pytest.param({"outcome": "rejected"}, "", id="nothing-to-link"),
        pytest.param(None, "", id="no-result"),
    ],
)  # fmt: skip
def test_decision_report_url(plugin, result, expected):
    assert plugin.decision_report_url(UI, result) == expected


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        pytest.param({"monitoring_run_id": "m1", "monitoring_experiment_id": "9",
                      "html_artifact_path": "drift_report/report.html",
                      "report_uri": "/data/reports/drift/ds=2026-06-03/report.html"},
                     f"{UI}/#/experiments/9/runs/m1/artifactPath/drift_report/report.html",
                     id="monitoring-run"),
        pytest.param({"verdict": "no_champion", "report_uri": None}, "", id="no-champion-no-report"),
        pytest.param({"monitoring_run_id": "m1", "report_uri": "/data/report.html"}, "",
                     id="run-without-experiment"),
    ],
)  # fmt: skip
def test_drift_report_url(plugin, result, expected):
    assert plugin.drift_report_url(UI, result) == expected


def test_mlflow_ui_url_prefers_the_ui_setting_then_the_connection_then_the_env(plugin, monkeypatch):
    monkeypatch.delenv("MLOPS_LOOP_MLFLOW_CONN_ID", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000/")
    monkeypatch.delenv("MLOPS_LOOP_MLFLOW_UI_URL", raising=False)
    assert plugin.mlflow_ui_url() == "http://tracking:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://alice:s3cret@tracking:5000/")
    assert plugin.mlflow_ui_url() == "https://tracking:5000"  # a link never carries credentials

    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_DEFAULT",
        '{"conn_type": "http", "host": "mlflow.internal", "port": 5001}',
    )
    assert plugin.mlflow_ui_url() == "http://mlflow.internal:5001"

    monkeypatch.setenv("MLOPS_LOOP_MLFLOW_UI_URL", "https://mlflow.example.com/")
    assert plugin.mlflow_ui_url() == "https://mlflow.example.com"


def test_links_are_built_from_the_task_result(plugin, monkeypatch):
    """get_link reads the result (task_result: the metadata database, as the api-server
    can) and builds the URL; tests/stack/test_links.py runs the database read for real."""
    monkeypatch.setenv("MLOPS_LOOP_MLFLOW_UI_URL", UI)
    results = {
        "evaluate": {"model_name": "m", "challenger_version": "2", **EVALUATED},
        "none": None,
    }
    monkeypatch.setattr(plugin, "task_result", lambda key: results[key.task_id])
    key = SimpleNamespace(dag_id="d", task_id="evaluate", run_id="r", map_index=-1)

    assert (
        plugin.MlflowModelVersionLink().get_link(None, ti_key=key) == f"{UI}/#/models/m/versions/2"
    )
    assert plugin.DecisionReportLink().get_link(None, ti_key=key) == (
        f"{UI}/#/experiments/2/runs/r1/artifactPath/decision/d1/report.html"
    )
    assert plugin.DriftReportLink().get_link(None, ti_key=key) == ""
    key.task_id = "none"
    assert plugin.DecisionReportLink().get_link(None, ti_key=key) == ""


def test_a_result_that_cannot_be_read_gives_no_link_and_no_error(plugin, monkeypatch, caplog):
    def broken(key):
        raise RuntimeError("database gone")

    monkeypatch.setattr(plugin, "task_result", broken)
    key = SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=-1)
    assert plugin.MlflowModelVersionLink().get_link(None, ti_key=key) == ""
    assert "cannot read the result" in caplog.text


def test_a_task_with_no_result_gets_no_link(plugin, airflow_db, monkeypatch):
    monkeypatch.setenv("MLOPS_LOOP_MLFLOW_UI_URL", UI)
    key = SimpleNamespace(dag_id="no_such_dag", task_id="t", run_id="r", map_index=-1)
    assert plugin.task_result(key) is None
    for link in plugin.MlopsLoopPlugin.operator_extra_links:
        assert link.get_link(None, ti_key=key) == ""


def test_loading_the_plugin_imports_no_operator():
    """Every Airflow process loads the plugin; the operators its links name are imported
    only when the api-server reads a DAG with its links."""
    code = (
        "import json, runpy, sys\n"
        f"runpy.run_path({str(PLUGIN)!r})\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'docker'"
        " or m.startswith(('mlops_loop.operators', 'mlops_loop.core')))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


@pytest.fixture(scope="module")
def served_dags():
    """The real DAGs as the api-server gets them: parsed from dags/, serialized and
    deserialized. Deserialization attaches plugin links to operators whose class matches
    a link's ``operators`` exactly (name and module), not to subclasses."""
    from airflow import plugins_manager
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    # Plugins load once per process (cached): load them afresh from this repository, as an
    # api-server starting now would, whatever an earlier test in the session loaded.
    plugins_manager._get_plugins.cache_clear()
    plugins_manager._get_extra_operators_links_plugins.cache_clear()
    names = [link.name for link in plugins_manager.get_operator_extra_links()]
    assert "Decision report" in names, plugins_manager.get_import_errors()
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    # A process-wide switch: reading a DAG from the database without links (as dag.test()
    # and the scheduler do) turns it off for every later deserialization. The api-server
    # reads DAGs with links on.
    previous = DagSerialization._load_operator_extra_links
    DagSerialization._load_operator_extra_links = True
    try:
        return {
            dag_id: DagSerialization.from_dict(DagSerialization.to_dict(dag))
            for dag_id, dag in bag.dags.items()
            if dag_id.endswith("__credit_default")
        }
    finally:
        DagSerialization._load_operator_extra_links = previous


@pytest.mark.parametrize(
    ("dag_id", "task_id", "links"),
    [
        pytest.param("mlops_train__credit_default", "train_challenger", ["MLflow model version"],
                     id="train"),
        pytest.param("mlops_train__credit_default", "evaluate_challenger",
                     ["Decision report", "MLflow model version"], id="evaluate"),
        pytest.param("mlops_train__credit_default", "promote_or_reject",
                     ["Decision report", "MLflow model version"], id="promote"),
        pytest.param("mlops_drift__credit_default", "drift_monitor", ["Drift report"], id="drift"),
        pytest.param("mlops_train__credit_default", "assemble_training_set", [], id="assemble"),
        pytest.param("mlops_drift__credit_default", "request_retraining", [], id="request-retraining"),
        pytest.param("mlops_ingest__credit_default", "ingest_snapshot", [], id="ingest"),
    ],
)  # fmt: skip
def test_tasks_of_the_real_dags_get_their_links(plugin, served_dags, dag_id, task_id, links):
    assert plugin.MlopsLoopPlugin.name == "mlops_loop"
    task = served_dags[dag_id].get_task(task_id)
    assert sorted(link.name for link in task.operator_extra_links) == links


def test_every_concrete_model_operator_is_named(plugin):
    """Airflow matches the exact class: each operator that produces a linked result is
    listed, the base class is not (it is never a task's class)."""
    from mlops_loop.operators import (
        DockerTrainOperator,
        DriftMonitorOperator,
        EvaluateChallengerOperator,
        PromoteModelOperator,
    )
    from mlops_loop.operators.trainer import TrainerContainerOperator

    named = {op for link in plugin.MlopsLoopPlugin.operator_extra_links for op in link.operators}
    assert named == {
        DockerTrainOperator,
        DriftMonitorOperator,
        EvaluateChallengerOperator,
        PromoteModelOperator,
    }
    assert TrainerContainerOperator not in named

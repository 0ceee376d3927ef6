"""Airflow plugin: links from a task to what it produced.

=====================  ================================================  ======================================
link                   on (exact operator classes)                       opens
=====================  ================================================  ======================================
MLflow model version   DockerTrainOperator, EvaluateChallengerOperator,  the registered version (trained,
                       PromoteModelOperator                              judged or promoted); else the run
Decision report        EvaluateChallengerOperator, PromoteModelOperator  the decision record's report.html in
                                                                         the MLflow artifact view of the
                                                                         challenger's run
Drift report           DriftMonitorOperator                              the drift report.html in the MLflow
                                                                         artifact view of the monitoring run
=====================  ================================================  ======================================

How they are computed: Airflow 3 attaches a plugin's links when the api-server
deserializes a DAG, to tasks whose operator class is one of the link's ``operators``
exactly (a subclass gets nothing), and calls ``get_link`` in the api-server process.
There the task SDK's XCom access does not work (it talks to a task supervisor), so the
links read the task's return value from the metadata database, as Airflow's own
``XComOperatorLink`` does, and build the URL from it. A task that returned nothing
(failed, skipped, not run yet) or whose result names nothing to open gets no link:
the endpoint answers 200 with ``null`` for it, never an error.

The MLflow UI address: ``$MLOPS_LOOP_MLFLOW_UI_URL`` (set it where the tasks' tracking
server is not the address a browser uses), else the tracking server of the MLflow
connection (mlops_loop.hooks.mlflow: ``$MLOPS_LOOP_MLFLOW_CONN_ID`` or ``mlflow_default``),
else ``$MLFLOW_TRACKING_URI``; only an ``http(s)`` address gives links. A report stored
on S3 or a local disk is opened through its MLflow copy; a report whose URI is already
``http(s)`` is linked as it is.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

log = logging.getLogger(__name__)

UI_URL_ENV = "MLOPS_LOOP_MLFLOW_UI_URL"


# ------------------------------------------------------------------ URLs from a result


def _is_http(uri: Any) -> bool:
    return isinstance(uri, str) and uri.startswith(("http://", "https://"))


def artifact_view_url(base: str, experiment_id: Any, run_id: Any, path: Any) -> str:
    """The MLflow UI page of one artifact of a run (HTML is shown rendered)."""
    if not (_is_http(base) and experiment_id and run_id and path):
        return ""
    return (
        f"{base.rstrip('/')}/#/experiments/{quote(str(experiment_id))}/runs/{quote(str(run_id))}"
        f"/artifactPath/{quote(str(path))}"
    )


def model_version_url(base: str, result: Any) -> str:
    """The model version a task's result names (trained ``model_version``, judged
    ``challenger_version``, ``promoted_version``), else its run; '' if none."""
    if not _is_http(base) or not isinstance(result, Mapping):
        return ""
    base = base.rstrip("/")
    name = result.get("model_name") or result.get("challenger_name")
    version = (
        result.get("model_version")
        or result.get("challenger_version")
        or result.get("promoted_version")
    )
    if name and version:
        return f"{base}/#/models/{quote(str(name))}/versions/{quote(str(version))}"
    if result.get("run_id") and result.get("experiment_id"):
        return f"{base}/#/experiments/{quote(str(result['experiment_id']))}/runs/{quote(str(result['run_id']))}"
    return ""


def _report_url(base: str, result: Any, experiment_key: str, run_key: str, uri_key: str) -> str:
    """A report's HTML: its copy in an MLflow run (``result[experiment_key]``,
    ``result[run_key]``, ``html_artifact_path``), else ``result[uri_key]`` when a browser
    can open it; '' if none."""
    if not isinstance(result, Mapping):
        return ""
    url = artifact_view_url(
        base, result.get(experiment_key), result.get(run_key), result.get("html_artifact_path")
    )
    return url or (result[uri_key] if _is_http(result.get(uri_key)) else "")


def decision_report_url(base: str, result: Any) -> str:
    """The decision record's HTML: its MLflow copy (``artifact_experiment_id``,
    ``artifact_run_id``), else ``html_uri``; see _report_url."""
    return _report_url(base, result, "artifact_experiment_id", "artifact_run_id", "html_uri")


def drift_report_url(base: str, result: Any) -> str:
    """The drift report's HTML: its copy in the monitoring run (``monitoring_experiment_id``,
    ``monitoring_run_id``), else ``report_uri``; see _report_url."""
    return _report_url(base, result, "monitoring_experiment_id", "monitoring_run_id", "report_uri")


# ------------------------------------------------------------ what the api-server reads


def mlflow_ui_url() -> str:
    """The MLflow UI address for links (see the module doc for the order); '' if none."""
    explicit = os.environ.get(UI_URL_ENV)
    if explicit:
        return explicit.rstrip("/")
    uri = _connection_tracking_uri() or os.environ.get("MLFLOW_TRACKING_URI") or ""
    from mlops_loop.core.trainer_protocol import split_credentials

    return split_credentials(uri)[0].rstrip("/")  # a link never carries credentials


def _connection_tracking_uri() -> str:
    from mlops_loop.hooks.mlflow import (
        DEFAULT_CONN_ENV,
        MlflowHook,
        tracking_server_from_connection,
    )

    conn_id = os.environ.get(DEFAULT_CONN_ENV) or MlflowHook.default_conn_name
    try:
        from airflow.models.connection import Connection

        conn = Connection.get_connection_from_secrets(conn_id)
        return tracking_server_from_connection(conn).uri
    except Exception:  # no such connection (the usual case), or unusable: use the env
        return ""


def task_result(ti_key: Any) -> Any:
    """The task instance's return value, read from the metadata database (what the
    api-server can read); None when the task returned nothing."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            XComModel.get_many(
                key="return_value",
                run_id=ti_key.run_id,
                dag_ids=ti_key.dag_id,
                task_ids=ti_key.task_id,
                map_indexes=ti_key.map_index,
            ).with_only_columns(XComModel.value)
        ).first()
    if row is None:
        return None
    value = row.value
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class _Operators:
    """A link's ``operators``, by class name in mlops_loop.operators, imported when Airflow
    first reads them: only where it deserializes DAGs with their links (the api-server).
    Every Airflow process loads this plugin (tasks, scheduler); none of them pays for the
    operator modules, the Docker client or the config models there.

    Airflow 3 matches plugin links on the exact class: name each concrete operator."""

    def __init__(self, *names: str) -> None:
        self.names = names

    def __get__(self, link: Any, owner: Any = None) -> list[type]:
        try:
            import mlops_loop.operators as operators

            return [getattr(operators, name) for name in self.names]
        except Exception:  # a link must never break reading a DAG
            log.exception("cannot import the operators %s for a link", self.names)
            return []


class _ResultLink(BaseOperatorLink):
    """A link computed from the task's return value by ``url(base, result)``."""

    name = ""

    @staticmethod
    def url(base: str, result: Any) -> str:
        raise NotImplementedError

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        try:
            result = task_result(ti_key)
        except Exception:  # a link must never break the task page
            log.exception("%s: cannot read the result of %s", self.name, ti_key)
            return ""
        if result is None:
            return ""
        return self.url(mlflow_ui_url(), result)


class MlflowModelVersionLink(_ResultLink):
    name = "MLflow model version"
    url = staticmethod(model_version_url)
    operators = _Operators(
        "DockerTrainOperator", "EvaluateChallengerOperator", "PromoteModelOperator"
    )


class DecisionReportLink(_ResultLink):
    name = "Decision report"
    url = staticmethod(decision_report_url)
    operators = _Operators("EvaluateChallengerOperator", "PromoteModelOperator")


class DriftReportLink(_ResultLink):
    name = "Drift report"
    url = staticmethod(drift_report_url)
    operators = _Operators("DriftMonitorOperator")


class MlopsLoopPlugin(AirflowPlugin):
    name = "mlops_loop"
    operator_extra_links = [MlflowModelVersionLink(), DecisionReportLink(), DriftReportLink()]

"""Airflow plugin: links from task instances to what they produced in MLflow.

``MLflow model version`` appears on tasks whose return value names a registered model
version (training, evaluation, promotion); the base URL is ``$MLOPS_LOOP_MLFLOW_UI_URL``,
else ``$MLFLOW_TRACKING_URI``. Links are computed from the task's XCom when the task ends.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink


def mlflow_ui_url() -> str:
    return (os.environ.get("MLOPS_LOOP_MLFLOW_UI_URL") or os.environ.get("MLFLOW_TRACKING_URI") or "").rstrip("/")


def model_version_url(result: Any) -> str:
    """UI address of the model version (or run) named in a task's return value; '' if none."""
    base = mlflow_ui_url()
    if not base.startswith("http") or not isinstance(result, dict):
        return ""
    name = result.get("model_name") or result.get("challenger_name")
    version = result.get("model_version") or result.get("challenger_version")
    if name and version:
        return f"{base}/#/models/{quote(str(name))}/versions/{quote(str(version))}"
    if result.get("run_id") and result.get("experiment_id"):
        return f"{base}/#/experiments/{result['experiment_id']}/runs/{result['run_id']}"
    return ""


class MlflowModelVersionLink(BaseOperatorLink):
    name = "MLflow model version"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return model_version_url(XCom.get_value(ti_key=ti_key, key="return_value"))


def _linked_operators() -> list[type]:
    # Airflow 3 matches plugin links on the exact class: name each concrete operator.
    from mlops_loop.operators import DockerTrainOperator, EvaluateChallengerOperator

    return [DockerTrainOperator, EvaluateChallengerOperator]


MlflowModelVersionLink.operators = _linked_operators()


class MlopsLoopPlugin(AirflowPlugin):
    name = "mlops_loop"
    operator_extra_links = [MlflowModelVersionLink()]

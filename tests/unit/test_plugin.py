"""The Airflow plugin loads and builds MLflow links from task results."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "mlops_loop_plugin.py"


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


def test_plugin_registers_the_link_for_trainer_operators(plugin):
    assert plugin.MlopsLoopPlugin.name == "mlops_loop"
    (link,) = plugin.MlopsLoopPlugin.operator_extra_links
    assert [op.__name__ for op in link.operators] == ["TrainerContainerOperator"]

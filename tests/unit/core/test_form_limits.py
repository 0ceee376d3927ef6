"""A trigger form stays inside its dataset (issue 13, findings 2, 3 and 11), without
services: the form's hyperparameters are the selected model type's only, the rollback
operator acts on its dataset's model only, and free text from a form stays text under the
DAGs' native rendering. The DAG-level runs are in tests/dags/test_forms.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_loop.core.config import (
    HYPERPARAMETERS,
    MODEL_TYPES,
    TrainingSettings,
    form_hyperparameters,
    load_config,
)
from mlops_loop.dag_configs import form_text, is_final
from mlops_loop.exceptions import ConfigError, RollbackRefused

REPO = Path(__file__).resolve().parents[3]
CONFIG = str(REPO / "include" / "config" / "credit_default.yaml")
DEAD_SERVER = "http://127.0.0.1:9"  # nothing listens: a registry call would fail loudly

# ----------------------------------------------------------- finding 2: form hyperparameters


def test_every_model_type_has_its_hyperparameters_and_none_is_a_training_setting():
    assert set(HYPERPARAMETERS) == set(MODEL_TYPES)
    for model_type, cls in HYPERPARAMETERS.items():
        assert TrainingSettings.model_fields[model_type].annotation is cls
        assert not set(cls.model_fields) & set(TrainingSettings.model_fields), model_type


@pytest.mark.parametrize(
    ("model_type", "values"),
    [
        pytest.param("mlp", {"max_epochs": 20, "lr": 0.001, "hidden_sizes": [8]}, id="mlp"),
        pytest.param("hist_gradient_boosting", {"max_iter": 30, "early_stopping": False}, id="hgb"),
        pytest.param("mlp", {}, id="nothing"),
    ],
)
def test_the_selected_model_types_hyperparameters_pass(model_type, values):
    assert form_hyperparameters(values, model_type) == values


@pytest.mark.parametrize(
    ("model_type", "values", "key", "why"),
    [
        pytest.param("mlp", {"registered_model_name": "other_model"}, "registered_model_name",
                     "a training setting", id="registered-model-name"),
        pytest.param("mlp", {"experiment_name": "other"}, "experiment_name",
                     "a training setting", id="experiment-name"),
        pytest.param("mlp", {"seed": 1}, "seed", "a training setting", id="seed"),
        pytest.param("mlp", {"device": "cpu"}, "device", "a training setting", id="device"),
        pytest.param("mlp", {"window": {"window_days": 1}}, "window", "a training setting",
                     id="window-section"),
        pytest.param("mlp", {"mlp": {"lr": 0.1}}, "mlp", "a training setting", id="own-section"),
        pytest.param("mlp", {"model_type": "mlp"}, "model_type", "model_type field",
                     id="model-type"),
        pytest.param("mlp", {"max_iter": 3}, "max_iter",
                     "a hyperparameter of hist_gradient_boosting, not of the selected model type mlp",
                     id="other-model-types"),
        pytest.param("hist_gradient_boosting", {"lr": 0.1}, "lr",
                     "a hyperparameter of mlp", id="other-model-types-hgb"),
        pytest.param("mlp", {"epochs": 3}, "epochs", "not a hyperparameter", id="unknown"),
    ],
)  # fmt: skip
def test_anything_else_is_refused_naming_the_key(model_type, values, key, why):
    fine = {"mlp": "max_epochs", "hist_gradient_boosting": "max_iter"}[model_type]
    with pytest.raises(ConfigError) as caught:
        form_hyperparameters({fine: 2, **values}, model_type)
    message = str(caught.value)
    assert f"'{key}': " in message and why in message, message
    assert fine not in message.split("\n", 1)[1], "an allowed key is not named"
    assert is_final(caught.value), "a refused form fails at once, without retries"


def test_every_refused_key_is_named():
    with pytest.raises(ConfigError) as caught:
        form_hyperparameters({"registered_model_name": "x", "experiment_name": "y"}, "mlp")
    assert "'registered_model_name'" in str(caught.value)
    assert "'experiment_name'" in str(caught.value)


# The train operator: the form's hyperparameters are limited, the DAG author's are not.


def _train_op(**kwargs):
    from mlops_loop.operators.docker_train import DockerTrainOperator

    args = {
        "task_id": "train",
        "config_path": CONFIG,
        "train_snapshot_uri": "/data/credit_default/snapshots/aaa",
        "valid_snapshot_uri": "/data/credit_default/snapshots/bbb",
        "docker_url": "unix:///nonexistent/docker.sock",
        "mlflow_tracking_uri": "http://127.0.0.1:1",
    }
    return DockerTrainOperator(**{**args, **kwargs})


@pytest.mark.parametrize(
    "form",
    [
        pytest.param({"registered_model_name": "other_dataset_model"}, id="dict"),
        pytest.param('{"registered_model_name": "other_dataset_model"}', id="json-text"),
        pytest.param({"max_epochs": 2, "mlp": {"lr": 0.5}}, id="nested-section"),
    ],
)
def test_the_train_operator_refuses_a_form_that_leaves_the_model(form):
    config = load_config(CONFIG)
    with pytest.raises(ConfigError, match="hyperparameters from the trigger form refused"):
        _train_op(form_hyperparameters=form).build_request({}, config)


def test_the_train_operator_takes_the_forms_model_type_and_its_hyperparameters():
    config = load_config(CONFIG)  # training.model_type: see the config; the form chooses
    op = _train_op(model_type="hist_gradient_boosting", form_hyperparameters={"max_iter": 5})
    request = op.build_request({}, config)
    assert request.hyperparameters == {"model_type": "hist_gradient_boosting", "max_iter": 5}
    assert request.registered_model_name == "credit_default_model"
    with pytest.raises(ConfigError, match="'lr': a hyperparameter of mlp"):
        _train_op(
            model_type="hist_gradient_boosting", form_hyperparameters={"lr": 0.1}
        ).build_request({}, config)
    # Bounds are still checked after the key check.
    with pytest.raises(ConfigError, match=r"training\.hist_gradient_boosting\.max_iter"):
        _train_op(
            model_type="hist_gradient_boosting", form_hyperparameters={"max_iter": 0}
        ).build_request({}, config)


def test_the_dag_author_keeps_full_control():
    """The operator's own arguments are the DAG author's, not a form's: not limited."""
    config = load_config(CONFIG)
    op = _train_op(
        hyperparameters={"device": "cpu", "model_type": "mlp", "max_epochs": 3},
        registered_model_name="authors_model",
        seed="9",
        form_hyperparameters={"max_epochs": 2},
    )
    request = op.build_request({}, config)
    assert request.registered_model_name == "authors_model" and request.seed == 9
    assert request.hyperparameters == {"device": "cpu", "model_type": "mlp", "max_epochs": 2}


# --------------------------------------------------- finding 3: the rollback's registered model


def test_rollback_of_a_dataset_refuses_another_model_before_any_registry_call():
    from mlops_loop.operators.promote import RollbackChampionOperator

    op = RollbackChampionOperator(
        task_id="r",
        config_path=CONFIG,
        model_name="someone_elses_model",
        reason="incident 9",
        mlflow_tracking_uri=DEAD_SERVER,
    )
    with pytest.raises(
        RollbackRefused, match="not the registered model of dataset 'credit_default'"
    ) as caught:
        op.execute({})
    assert is_final(caught.value)


# ------------------------------------------------------------ finding 11: free text stays text

TEXTS = ["0", "1e999", "None", "", "[1, 2]", "{'a': 1}", "True", "  0  ", "it's \"quoted\"\nline 2",
         "😀 emoji \ud800 lone surrogate", "\\x41 backslash"]  # fmt: skip


@pytest.mark.parametrize("text", TEXTS)
def test_form_text_renders_as_that_very_text_under_native_rendering(text):
    from airflow.sdk import DAG, Param
    from airflow.sdk.definitions.context import render_template_as_native

    from mlops_loop.dag_configs import DatasetEntry, dag_arguments

    entry = DatasetEntry(name="d", path=CONFIG, schedule=None)
    params = {"reason": Param("", type="string")}
    dag = DAG(schedule=None, **dag_arguments(entry, "t", description="", doc="", params=params))
    template = dag.get_template_env().from_string(form_text("reason"))
    rendered = render_template_as_native(template, {"params": {"reason": text}})
    assert rendered == text and type(rendered) is str
    # None stays None: an empty optional field reaches the operator as None.
    assert render_template_as_native(template, {"params": {"reason": None}}) is None


def test_form_text_takes_a_field_name_only():
    with pytest.raises(ValueError, match="identifier"):
        form_text("reason }}{{ 1")

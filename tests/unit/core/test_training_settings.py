"""The `training:` section: typed, bounded, and overridable per run with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from mlops_loop.core.config import (
    MlpHyperparameters,
    TrainingSettings,
    load_config,
    training_settings,
)
from mlops_loop.exceptions import ConfigError

CONFIG = Path(__file__).resolve().parents[3] / "include" / "config" / "credit_default.yaml"


@pytest.fixture(scope="module")
def config():
    return load_config(CONFIG)


def test_demo_config_has_typed_training_section(config):
    assert isinstance(config.training, TrainingSettings)
    assert config.training.model_type == "mlp"
    assert config.training.registered_model_name == "credit_default_model"
    assert config.training.mlp.patience == 4


def test_defaults_when_the_section_is_left_out(tmp_path):
    import yaml

    raw = yaml.safe_load(CONFIG.read_text())
    del raw["training"]
    raw["storage"]["root"] = str(tmp_path / "data")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    settings = training_settings(load_config(tmp_path / "c.yaml"))
    assert settings.registered_model_name == "credit_default_model"
    assert settings.experiment_name == "credit_default"
    assert settings.model_type == "mlp"
    assert settings.mlp == MlpHyperparameters()


def test_overrides_route_to_the_selected_model(config):
    settings = training_settings(
        config, {"model_type": "hist_gradient_boosting", "max_iter": 7, "seed": 3, "device": "cpu"}
    )
    assert settings.model_type == "hist_gradient_boosting"
    assert settings.hyperparameters.max_iter == 7  # type: ignore[union-attr]
    assert settings.hist_gradient_boosting.max_iter == 7
    assert settings.mlp == config.training.mlp  # untouched
    assert (settings.seed, settings.device) == (3, "cpu")


def test_nested_section_override_merges(config):
    settings = training_settings(config, {"mlp": {"max_epochs": 2}, "lr": 0.01})
    assert settings.mlp.max_epochs == 2
    assert settings.mlp.lr == 0.01
    assert settings.mlp.hidden_sizes == config.training.mlp.hidden_sizes


def test_explicit_names_are_kept(config):
    settings = training_settings(config, {"registered_model_name": "x.y-z", "experiment_name": "exp"})
    assert (settings.registered_model_name, settings.experiment_name) == ("x.y-z", "exp")


def test_config_itself_is_not_changed(config):
    before = config.config_hash()
    training_settings(config, {"max_epochs": 2})
    assert config.config_hash() == before


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        pytest.param({"model_type": "xgboost"}, "training.model_type", id="unknown-model-type"),
        pytest.param({"lr": 0.0}, "training.mlp.lr", id="lr-zero"),
        pytest.param({"lr": 2.0}, "training.mlp.lr", id="lr-too-big"),
        pytest.param({"dropout": 1.0}, "training.mlp.dropout", id="dropout-one"),
        pytest.param({"batch_size": 4}, "training.mlp.batch_size", id="batch-too-small"),
        pytest.param({"max_epochs": 0}, "training.mlp.max_epochs", id="no-epochs"),
        pytest.param({"hidden_sizes": []}, "training.mlp.hidden_sizes", id="no-layers"),
        pytest.param({"hidden_sizes": [64, 0]}, "training.mlp.hidden_sizes", id="zero-width"),
        pytest.param({"max_epochs": "many"}, "training.mlp.max_epochs", id="not-a-number"),
        pytest.param({"max_iter": 10}, "training.mlp.max_iter", id="other-models-key"),
        pytest.param(
            {"model_type": "hist_gradient_boosting", "learning_rate": -1},
            "training.hist_gradient_boosting.learning_rate",
            id="hgb-negative-rate",
        ),
        pytest.param(
            {"model_type": "hist_gradient_boosting", "max_leaf_nodes": 1},
            "training.hist_gradient_boosting.max_leaf_nodes",
            id="hgb-one-leaf",
        ),
        pytest.param({"seed": -1}, "training.seed", id="negative-seed"),
        pytest.param({"device": "tpu"}, "training.device", id="unknown-device"),
        pytest.param({"cpu_threads": 0}, "training.cpu_threads", id="zero-threads"),
        pytest.param({"registered_model_name": "bad name!"}, "training.registered_model_name", id="bad-name"),
    ],
)
def test_bad_overrides_name_the_key(config, overrides, key):
    with pytest.raises(ConfigError) as err:
        training_settings(config, overrides)
    assert key in str(err.value)
    assert "credit_default" in str(err.value)


def test_unknown_model_type_in_the_file_fails_at_load(tmp_path):
    text = CONFIG.read_text().replace("model_type: mlp", "model_type: random_forest")
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "training.model_type" in str(err.value) and str(path) in str(err.value)


def test_bad_hyperparameter_in_the_file_fails_at_load(tmp_path):
    text = CONFIG.read_text().replace("batch_size: 256", "batch_size: 1")
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"training\.mlp\.batch_size"):
        load_config(path)


def test_model_validate_rejects_out_of_bounds_directly():
    with pytest.raises(ValidationError):
        TrainingSettings.model_validate({"mlp": {"patience": 0}})
    assert TrainingSettings.model_validate({}).hyperparameters == MlpHyperparameters()

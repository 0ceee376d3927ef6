"""operators/docker_train.py and its base operators/trainer.py without a Docker engine:
construction, template fields, the train request, and the checks that must fail before
any container (or the engine) is touched. The real runs are in
tests/integration/test_docker_train.py; the container-failure path against a client of
the Docker API's shape is in test_trainer.py."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from airflow.providers.docker.operators.docker import DockerOperator

from mlops_loop.core.config import load_config
from mlops_loop.exceptions import ConfigError
from mlops_loop.operators.docker_train import DockerTrainOperator
from mlops_loop.operators.trainer import TrainerContainerOperator

REPO = Path(__file__).resolve().parents[3]
CONFIG = str(REPO / "include" / "config" / "credit_default.yaml")
# No engine listens here: anything that talks to Docker fails at once.
NO_ENGINE = "unix:///nonexistent/docker.sock"


def _train_op(**kwargs) -> DockerTrainOperator:
    args = {
        "task_id": "train",
        "config_path": CONFIG,
        "train_snapshot_uri": "/data/credit_default/snapshots/aaa",
        "valid_snapshot_uri": "/data/credit_default/snapshots/bbb",
        "docker_url": NO_ENGINE,
        "mlflow_tracking_uri": "http://127.0.0.1:1",
    }
    args.update(kwargs)
    return DockerTrainOperator(**args)


def _constructor_args(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is object or "__init__" not in vars(klass):
            continue
        names |= {p for p in inspect.signature(klass.__init__).parameters if p not in ("self", "kwargs", "args")}
        if klass is DockerOperator:
            break
    return names


@pytest.mark.parametrize(
    "cls", [TrainerContainerOperator, DockerTrainOperator], ids=["base", "train"]
)
def test_template_fields_are_constructor_args(cls):
    fields = set(cls.template_fields)
    assert len(fields) == len(cls.template_fields), "duplicate template field"
    assert fields <= _constructor_args(cls)
    assert "command" not in fields  # built from trainer_command, never templated


def test_train_operator_templates_its_inputs_and_dockers():
    fields = set(DockerTrainOperator.template_fields)
    assert {"config_path", "train_snapshot_uri", "valid_snapshot_uri", "seed", "hyperparameters", "gpu", "model_type"} <= fields
    assert {"image", "environment", "mounts", "container_name"} <= fields
    assert not {"trainer_command", "request"} & fields  # not arguments of this class


def test_constructor_only_stores():
    op = _train_op(seed="{{ params.seed }}", hyperparameters={"max_epochs": 2}, mem_limit="2g", cpus=2.0)
    assert op.seed == "{{ params.seed }}"
    assert op.hyperparameters == {"max_epochs": 2}
    assert (op.mem_limit, op.cpus, op.gpu, op.image) == ("2g", 2.0, "auto", "mlops-loop/trainer:latest")
    assert op.network_mode is None  # resolved in execute (env or host)
    assert op.mount_tmp_dir is False
    assert op.auto_remove == "never"  # removal is the operator's own finally
    assert not op.hook.client_created


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"gpu": "yes"}, "gpu must be", id="bad-gpu"),
        pytest.param({"auto_remove": "force"}, "always removed", id="auto-remove"),
        pytest.param({"command": "train"}, "command is not an argument here", id="command"),
        pytest.param({"trainer_command": "score"}, "DockerTrainOperator runs 'train'", id="trainer-command"),
        pytest.param({"request": {}}, "builds its own typed request", id="request"),
    ],
)
def test_constructor_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _train_op(**kwargs)


def test_gpu_none_never_asks_the_docker_host():
    decision = _train_op(gpu="none")._decide_gpu()
    assert decision.use_gpu is False


def test_gpu_auto_asks_the_docker_host():
    # The real path beside the one above: "auto" does contact the engine (none here).
    with pytest.raises(Exception, match="connection to any given Docker hosts"):
        _train_op(gpu="auto")._decide_gpu()


CONFIG_OBJ = load_config(CONFIG)


def test_build_request_from_config():
    op = _train_op(seed="7", hyperparameters={"max_epochs": 2})
    request = op.build_request({}, CONFIG_OBJ)
    config = CONFIG_OBJ
    assert request.train_snapshot_uri == "/data/credit_default/snapshots/aaa"
    assert request.registered_model_name == "credit_default_model"
    assert request.seed == 7
    assert request.hyperparameters == {"max_epochs": 2}
    assert request.config["config_dir"] == config.config_dir
    assert op.common_tags({}, config)["config_hash"] == config.config_hash()
    assert op.input_paths(config, request)[0] == config.root


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({}, {}, id="nothing"),
        pytest.param({"model_type": None, "hyperparameters": None}, {}, id="empty-form"),
        pytest.param({"model_type": "None", "hyperparameters": "{}"}, {}, id="rendered-empty"),
        pytest.param(
            {"model_type": "hist_gradient_boosting"},
            {"model_type": "hist_gradient_boosting"},
            id="model-type",
        ),
        pytest.param(
            {"model_type": "mlp", "hyperparameters": '{"max_epochs": 3}'},
            {"model_type": "mlp", "max_epochs": 3},
            id="json-text",
        ),
    ],
)
def test_model_type_and_overrides_from_a_form(kwargs, expected):
    assert _train_op(**kwargs).build_request({}, CONFIG_OBJ).hyperparameters == expected


def test_hyperparameters_must_be_an_object():
    with pytest.raises(ValueError, match="hyperparameters must be an object, got list"):
        _train_op(hyperparameters="[1, 2]").build_request({}, CONFIG_OBJ)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(False, False, id="default"),
        pytest.param(True, True, id="bool"),
        pytest.param("True", True, id="rendered-true"),
        pytest.param("false", False, id="rendered-false"),
    ],
)
def test_retrain_flag_reaches_the_request(value, expected):
    assert _train_op(retrain=value).build_request({}, CONFIG_OBJ).retrain is expected


def test_retrain_flag_rejects_other_text():
    with pytest.raises(ValueError, match="retrain must be true or false"):
        _train_op(retrain="sometimes").build_request({}, CONFIG_OBJ)


def test_registered_model_name_override():
    request = _train_op(registered_model_name="other_model").build_request({}, CONFIG_OBJ)
    assert request.registered_model_name == "other_model"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"hyperparameters": {"lr": -1}}, "training.mlp.lr", id="bad-hyperparameter"),
        pytest.param({"hyperparameters": {"model_type": "xgboost"}}, "unknown model type", id="bad-model-type"),
        pytest.param({"config_path": "/nonexistent/config.yaml"}, "does not exist", id="missing-config"),
    ],
)
def test_execute_rejects_bad_training_input_before_docker(kwargs, match):
    # docker_url points nowhere: reaching Docker would raise DockerException instead.
    with pytest.raises(ConfigError, match=match):
        _train_op(**kwargs).execute({})


def test_execute_rejects_missing_tracking_uri_before_docker(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
    with pytest.raises(ConfigError, match="no MLflow tracking server: define the Airflow connection"):
        _train_op(mlflow_tracking_uri=None).execute({})


def test_base_operator_needs_a_command():
    with pytest.raises(TypeError, match="names no trainer_command"):
        TrainerContainerOperator(task_id="x", config_path=CONFIG, docker_url=NO_ENGINE)


def test_unknown_trainer_command_fails_before_docker():
    class Predict(TrainerContainerOperator):
        trainer_command = "predict"

    op = Predict(task_id="x", config_path=CONFIG, docker_url=NO_ENGINE, mlflow_tracking_uri="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="must be one of train, evaluate, monitor, got 'predict'"):
        op.execute({})


def test_retrain_never_consults_the_champion():
    # retrain asks for a new version whatever the champion was trained on: no registry,
    # storage or Docker call (all three would fail here) before the trainer runs.
    op = _train_op(retrain=True)
    assert op.result_without_trainer({}, CONFIG_OBJ, op.build_request({}, CONFIG_OBJ)) is None


def test_champion_check_reads_the_snapshots_before_anything_else():
    # Without retrain the check starts by reading the split manifests: a missing one fails
    # naming it, before the registry or the Docker engine is asked.
    from mlops_loop.exceptions import SnapshotNotFoundError

    with pytest.raises(SnapshotNotFoundError, match="/data/credit_default/snapshots/aaa"):
        op = _train_op()
        op.result_without_trainer({}, CONFIG_OBJ, op.build_request({}, CONFIG_OBJ))

"""``compute_queue``: the tasks that load models (training, evaluation, drift scoring) go to
the dataset's Celery queue, so a GPU worker can take them; every other task stays on
Airflow's default queue."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlops_loop import dag_configs
from mlops_loop.core import config as core_config
from mlops_loop.core.config import load_config
from mlops_loop.dag_configs import CONFIG_DIR_ENV
from mlops_loop.exceptions import ConfigError
from tests.fixtures.dataset_configs import credit_default_copy

REPO = Path(__file__).resolve().parents[2]
MODEL_TASKS = {"train_challenger", "evaluate_challenger", "drift_monitor"}


def write(folder: Path, name: str, **overrides: object) -> Path:
    raw = credit_default_copy(f"{name}_model", {"name": name, **overrides})
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def dagbag(tmp_path, monkeypatch):
    """The repository's DAG files over three configs: one routed to ``gpu``, one without
    a queue, one with a queue name that is not valid."""
    folder = tmp_path / "config"
    folder.mkdir()
    write(folder, "routed", compute_queue="gpu")
    write(folder, "unrouted")
    write(folder, "bad_queue", compute_queue="gpu workers")
    monkeypatch.setenv(CONFIG_DIR_ENV, str(folder))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag


def test_model_tasks_go_to_the_configured_queue_and_nothing_else(dagbag):
    from airflow.configuration import conf

    default = conf.get("operators", "default_queue")
    queues: dict[str, dict[str, str]] = {}
    for dag_id, dag in dagbag.dags.items():
        dataset = dag_id.split("__", 1)[1]
        for task in dag.tasks:
            queues.setdefault(dataset, {})[f"{dag_id}.{task.task_id}"] = task.queue
    routed = {key for key, queue in queues["routed"].items() if queue == "gpu"}
    assert {key.rsplit(".", 1)[1] for key in routed} == MODEL_TASKS
    # Every model task of the routed dataset, in the train and drift DAGs, and nothing else.
    assert routed == {
        "mlops_train__routed.train_challenger",
        "mlops_train__routed.evaluate_challenger",
        "mlops_drift__routed.drift_monitor",
    }
    assert {q for key, q in queues["routed"].items() if key not in routed} == {default}
    # No queue, or one that is not valid: everything on the default queue.
    assert set(queues["unrouted"].values()) == {default}
    assert set(queues["bad_queue"].values()) == {default}


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        pytest.param("gpu", True, id="plain"),
        pytest.param("gpu-a100.workers_1", True, id="dots-dashes-underscores"),
        pytest.param(None, True, id="left-out-default-queue"),
        pytest.param("gpu workers", False, id="space"),
        pytest.param("gpu,cpu", False, id="comma-would-be-two-queues"),
        pytest.param("", False, id="empty"),
        pytest.param("-gpu", False, id="leading-dash"),
        pytest.param("q" * 101, False, id="too-long"),
        pytest.param(7, False, id="not-text"),
    ],
)
def test_queue_name_is_checked_at_load(tmp_path, value, accepted):
    path = write(tmp_path, "queued", compute_queue=value)
    entry = dag_configs.dataset_entries(tmp_path)[0]
    if accepted:
        assert load_config(path).compute_queue == value
        assert entry.compute_queue == value
        return
    with pytest.raises(ConfigError, match=r"compute_queue: .*(Celery queue name|valid string)"):
        load_config(path)
    # The DAG file still parses; the tasks stay on the default queue and the first one
    # fails with the message above.
    assert entry.compute_queue is None
    assert entry.compute_queue_args() == {}


def test_queue_is_routing_not_part_of_the_config_hash(tmp_path):
    plain = load_config(write(tmp_path, "plain"))
    routed = load_config(write(tmp_path, "plain", compute_queue="gpu"))
    assert routed.compute_queue == "gpu"
    # Moving the work to a GPU worker must not make an unchanged model count as new.
    assert routed.config_hash() == plain.config_hash()


def test_parse_time_pattern_is_the_config_pattern():
    assert dag_configs.QUEUE_PATTERN == core_config.QUEUE_PATTERN

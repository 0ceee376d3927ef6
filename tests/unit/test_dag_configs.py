"""Config discovery for DAG files, the entries read from configs, and the shared DAG and
task arguments (retries)."""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from pathlib import Path

import pytest

from mlops_loop import dag_configs
from mlops_loop.core.trainer_protocol import ExitCode
from mlops_loop.dag_configs import (
    CONFIG_DIR_ENV,
    DEFAULT_DRIFT_SCHEDULE,
    config_dir,
    dag_arguments,
    dataset_entries,
    task_defaults,
)
from mlops_loop.exceptions import (
    ConfigError,
    NoBatchError,
    PromotionLockTimeout,
    QualityGateFailed,
    StorageError,
    TrainerContainerFailed,
)

CONFIG = "name: {name}\nschedule: '@daily'\n"


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An Astro-style project: <project>/dags beside <project>/include/config."""
    (tmp_path / "dags").mkdir()
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(tmp_path / "dags"))
    monkeypatch.delenv(CONFIG_DIR_ENV, raising=False)
    monkeypatch.setattr(dag_configs, "_warned", set())
    return tmp_path


def write_config(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(CONFIG.format(name=name))
    return path


@pytest.mark.parametrize(
    ("explicit", "beside_dags", "expected"),
    [
        pytest.param("explicit", True, "explicit", id="variable-wins-over-the-project-layout"),
        pytest.param("explicit", False, "explicit", id="variable-alone"),
        pytest.param(None, True, "include/config", id="beside-the-dags-folder"),
    ],
)
def test_config_folder_discovery(project, monkeypatch, explicit, beside_dags, expected):
    if beside_dags:
        write_config(project / "include" / "config", "beside")
    if explicit:
        write_config(project / explicit, "explicit")
        monkeypatch.setenv(CONFIG_DIR_ENV, str(project / explicit))
    assert config_dir() == project / expected
    assert [e.path for e in dataset_entries()] == [
        str((project / expected / ("explicit" if explicit else "beside")).with_suffix(".yaml"))
    ]


@pytest.mark.parametrize(
    ("explicit", "make_folder", "message"),
    [
        pytest.param("missing", False, "no dataset config folder at", id="variable-names-no-folder"),
        pytest.param(None, False, "no dataset config folder at", id="nothing-beside-the-dags-folder"),
        pytest.param(None, True, "no *.yaml dataset config in", id="empty-folder"),
    ],
)
def test_no_configs_means_no_dags_and_one_warning(
    project, monkeypatch, caplog, explicit, make_folder, message
):
    if explicit:
        monkeypatch.setenv(CONFIG_DIR_ENV, str(project / explicit))
    if make_folder:
        (project / "include" / "config").mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger=dag_configs.__name__):
        assert dataset_entries() == []
        assert dataset_entries() == []  # a second DAG file in the same process
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert message in warnings[0] and CONFIG_DIR_ENV in warnings[0]


def test_repository_configs_are_found_through_the_variable():
    # tests/conftest.py (like scripts/env.sh) points the variable at include/config/.
    names = [e.name for e in dataset_entries()]
    assert "credit_default" in names


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "name: loans\nschedule: '0 6 * * *'\ndrift: {schedule: '0 3 * * *'}\n",
            ("loans", "0 6 * * *", "0 3 * * *"),
            id="schedules-from-the-file",
        ),
        pytest.param("name: loans\n", ("loans", "@daily", DEFAULT_DRIFT_SCHEDULE), id="defaults"),
        pytest.param("schedule: null\n", ("cfg", None, DEFAULT_DRIFT_SCHEDULE), id="no-name-no-schedule"),
        pytest.param("name: [unclosed\n", ("cfg", "@daily", DEFAULT_DRIFT_SCHEDULE), id="unreadable-still-listed"),
        pytest.param("- a list\n", ("cfg", "@daily", DEFAULT_DRIFT_SCHEDULE), id="not-a-mapping"),
    ],
)
def test_entry_from_a_config_file(tmp_path, text, expected):
    (tmp_path / "cfg.yaml").write_text(text)
    (entry,) = dataset_entries(tmp_path)
    assert (entry.name, entry.schedule, entry.drift_schedule) == expected
    assert entry.path == str((tmp_path / "cfg.yaml").resolve())


def test_dag_arguments_name_tag_and_document_the_stage(tmp_path):
    (entry,) = dataset_entries(write_config(tmp_path, "loans").parent)
    args = dag_arguments(
        entry, "ingest", description="d", doc="{name} at {path}: {schedule}", params={}
    )
    assert args["dag_id"] == "mlops_ingest__loans"
    assert args["tags"] == ["mlops_loop", "ingest", "loans"]
    assert args["doc_md"] == f"loans at {entry.path}: @daily"
    assert args["catchup"] is False and args["render_template_as_native_obj"] is True
    assert "schedule" not in args  # each DAG file states its schedule itself


def test_task_defaults_retry_with_exponential_backoff():
    defaults = task_defaults()
    assert defaults["retries"] == 2
    assert defaults["retry_delay"] == timedelta(minutes=1)
    assert defaults["retry_exponential_backoff"] == 2.0
    assert defaults["max_retry_delay"] == timedelta(minutes=10)


def _trainer_exit(code: int) -> TrainerContainerFailed:
    return TrainerContainerFailed("x", exit_code=code, explanation="", image="i", command=[])


@pytest.mark.parametrize(
    ("error", "action"),
    [
        pytest.param(QualityGateFailed("bad", result_uri="r", quarantine_uri="q"), "fail", id="quality-gate"),
        pytest.param(NoBatchError("none", source_uri="s"), "fail", id="no-batch"),
        pytest.param(ConfigError("bad key"), "fail", id="config"),
        pytest.param(StorageError("timeout", uri="s3://b/k"), "default", id="storage-retries"),
        pytest.param(PromotionLockTimeout("busy", model_name="m", lock_name="l", holder=None), "default", id="lock-retries"),
        pytest.param(_trainer_exit(ExitCode.BAD_REQUEST), "fail", id="trainer-bad-request"),
        pytest.param(_trainer_exit(ExitCode.DATA), "fail", id="trainer-data"),
        pytest.param(_trainer_exit(ExitCode.TRACKING), "default", id="trainer-tracking-retries"),
        pytest.param(_trainer_exit(ExitCode.UNEXPECTED), "default", id="trainer-bug-retries"),
        pytest.param(_trainer_exit(137), "default", id="trainer-killed-retries"),
        pytest.param(ConnectionError("reset"), "default", id="network-retries"),
    ],
)
def test_data_errors_fail_at_once_other_errors_retry(error, action):
    decision = task_defaults()["retry_policy"].evaluate(error, try_number=1, max_tries=3)
    assert decision.action.value == action


@pytest.mark.parametrize(
    ("conf", "error"),
    [
        pytest.param(None, None, id="no-conf"),
        pytest.param({}, None, id="empty-conf"),
        pytest.param({"ds": "2026-05-01"}, None, id="known-key"),
        pytest.param({"dss": "2026-05-01"}, "unknown conf key(s) 'dss' for mlops_ingest__x: it takes ds", id="misspelt"),
        pytest.param({"ds": None, "b": 1, "a": 2}, "unknown conf key(s) 'a', 'b' for", id="several"),
    ],
)  # fmt: skip
def test_every_task_rejects_a_conf_key_its_dag_does_not_know(conf, error):
    from types import SimpleNamespace

    from airflow.sdk import Param

    hook = task_defaults()["pre_execute"]
    dag = SimpleNamespace(dag_id="mlops_ingest__x", params={"ds": Param(None)})
    context = {"dag_run": SimpleNamespace(conf=conf), "dag": dag, "task": SimpleNamespace(params={})}
    if error is None:
        hook(context)
    else:
        with pytest.raises(ConfigError, match=re.escape(error)):
            hook(context)

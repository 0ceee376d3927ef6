"""What the DAG files share: the dataset configs to turn into DAGs, the DAG arguments and
the task defaults (retries), so that each DAG file only lists its operators.

DAG files run on every scheduler parse, so this reads only each YAML file's ``name``,
``schedule``, ``drift.schedule`` and ``compute_queue`` with PyYAML; the full typed validation
(core.config.load_config) happens when a task runs, where a bad config fails that task
with a message naming the key.

The config folder, first match:

1. ``$MLOPS_LOOP_CONFIG_DIR``;
2. ``include/config/`` beside Airflow's DAGs folder (``[core] dags_folder``): the
   Astro-style project layout, ``<project>/dags`` next to ``<project>/include``.

No folder (or no config in it): the DAG files define no DAGs and one warning names
``MLOPS_LOOP_CONFIG_DIR``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml
from airflow.sdk import Param, RetryDecision, RetryPolicy

from mlops_loop import QUEUE_PATTERN
from mlops_loop.exceptions import (
    BucketNotFoundError,
    ConfigError,
    DriftError,
    EvaluationError,
    IngestError,
    PromotionStale,
    QualityGateFailed,
    QualitySuiteError,
    RetrainRecordError,
    RollbackRefused,
    SnapshotNotFoundError,
    TrainerContainerFailed,
    TrainingSetError,
)

log = logging.getLogger(__name__)

CONFIG_DIR_ENV = "MLOPS_LOOP_CONFIG_DIR"
DEFAULT_DRIFT_SCHEDULE = "0 2 * * *"  # core.config.DriftSettings.schedule's default
START_DATE = datetime(2026, 1, 1, tzinfo=timezone.utc)

# Transient faults (a storage or tracking server that times out, a container engine that
# restarts) are retried with growing pauses: 1, 2 minutes. Every stage may run again
# with the same result (content-addressed outputs, compare-and-set promotion); a DAG sets
# retries=0 on a task where that does not hold and says why in its doc.
TASK_RETRIES = 2
FIRST_RETRY_DELAY = timedelta(minutes=1)
MAX_RETRY_DELAY = timedelta(minutes=10)
# Errors that say the input is wrong (bad data, a bad config, a refused registry change):
# the same input fails the same way, so a retry would only delay the message.
FINAL_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    IngestError,
    SnapshotNotFoundError,
    BucketNotFoundError,
    QualityGateFailed,
    QualitySuiteError,
    TrainingSetError,
    EvaluationError,
    DriftError,
    RetrainRecordError,
    RollbackRefused,
    PromotionStale,
)
# The trainer's exit codes for the same kind of error (core.trainer_protocol.ExitCode
# BAD_REQUEST and DATA; not imported here, it would load pydantic at parse time).
FINAL_TRAINER_EXIT_CODES = (2, 3)

_warned: set[str] = set()


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    path: str
    schedule: str | None
    drift_schedule: str | None = DEFAULT_DRIFT_SCHEDULE
    compute_queue: str | None = None

    def compute_queue_args(self) -> dict[str, str]:
        """``queue=`` for the tasks that load models (training, evaluation, drift scoring):
        the config's ``compute_queue``, or nothing, which leaves Airflow's default queue."""
        return {"queue": self.compute_queue} if self.compute_queue else {}


def _dags_folder() -> Path | None:
    try:
        from airflow.sdk.configuration import conf
    except ImportError:  # the task SDK without its configuration module
        return None
    folder = conf.get("core", "dags_folder", fallback=None)
    return Path(folder).expanduser() if folder else None


def config_dir() -> Path | None:
    """The folder whose YAML files become DAGs (see the module doc for the order), or None
    when neither rule names one."""
    explicit = os.environ.get(CONFIG_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    dags_folder = _dags_folder()
    return dags_folder.parent / "include" / "config" if dags_folder else None


def _warn_once(message: str) -> None:
    # Every DAG file asks; one warning per process is enough.
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def dataset_entries(directory: str | Path | None = None) -> list[DatasetEntry]:
    """One entry per ``*.yaml``/``*.yml`` file of ``directory`` (default: config_dir()),
    sorted by name. A file that cannot be read still yields an entry (named after the
    file) so its DAG shows up and its first task reports the real error instead of the
    DAG silently vanishing. No folder or no file: no entries, and a warning."""
    folder = Path(directory) if directory else config_dir()
    if folder is None or not folder.is_dir():
        _warn_once(
            f"mlops_loop: no dataset config folder at {folder or '(none)'}, so no mlops_loop "
            f"DAGs; set {CONFIG_DIR_ENV} to the folder of the dataset YAML files"
        )
        return []
    paths = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    if not paths:
        _warn_once(
            f"mlops_loop: no *.yaml dataset config in {folder}, so no mlops_loop DAGs "
            f"(folder from {CONFIG_DIR_ENV} or beside the DAGs folder)"
        )
    return [_entry(path) for path in paths]


def _entry(path: Path) -> DatasetEntry:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        raw = {}
    if not isinstance(raw, dict):
        raw = {}
    drift = raw.get("drift")
    drift_schedule = (
        drift.get("schedule", DEFAULT_DRIFT_SCHEDULE)
        if isinstance(drift, dict)
        else DEFAULT_DRIFT_SCHEDULE
    )
    # A bad queue name routes nothing: the tasks stay on the default queue, where the
    # first one fails loading the config, naming compute_queue.
    queue = raw.get("compute_queue")
    valid_queue = isinstance(queue, str) and re.fullmatch(QUEUE_PATTERN, queue) is not None
    return DatasetEntry(
        name=str(raw.get("name") or path.stem),
        path=str(path.resolve()),
        schedule=raw.get("schedule", "@daily"),
        drift_schedule=drift_schedule,
        compute_queue=queue if valid_queue else None,
    )


def is_final(error: BaseException) -> bool:
    """The error says the input is wrong: FINAL_ERRORS, or a trainer that exited with one
    of FINAL_TRAINER_EXIT_CODES (its own exceptions stay inside its process)."""
    if isinstance(error, TrainerContainerFailed):
        return error.exit_code in FINAL_TRAINER_EXIT_CODES
    return isinstance(error, FINAL_ERRORS)


class FinalErrorsFailAtOnce(RetryPolicy):
    """Fail at once when is_final(); otherwise the task's retries apply."""

    def evaluate(
        self, exception: BaseException, try_number: int, max_tries: int, context: Any = None
    ) -> RetryDecision:
        if is_final(exception):
            return RetryDecision.fail("the input is wrong: the same input fails the same way")
        return RetryDecision.default()


def reject_unknown_conf(context: Any) -> None:
    """``pre_execute`` of every task: a run whose conf names a key that the DAG has no
    Param for fails before any work, naming the key and the keys the DAG takes.

    Airflow accepts any conf key at trigger time (``POST .../dagRuns`` answers 200 and
    the key becomes an untyped param), so a misspelt ``{"dss": "2026-05-01"}`` would
    otherwise run for the run's own date without a word. Params that are in the DAG are
    checked by Airflow itself when the run is created (HTTP 400 on a bad value)."""
    dag_run = context.get("dag_run")
    conf = getattr(dag_run, "conf", None) or {}
    task = context.get("task")
    dag = context.get("dag") or getattr(task, "dag", None)
    known = set(getattr(dag, "params", None) or {}) | set(getattr(task, "params", None) or {})
    unknown = sorted(str(key) for key in conf if key not in known)
    if unknown:
        dag_id = getattr(dag, "dag_id", "this DAG")
        raise ConfigError(
            f"unknown conf key(s) {', '.join(map(repr, unknown))} for {dag_id}: it takes "
            f"{', '.join(sorted(known)) or 'no conf'}; nothing was run"
        )


def task_defaults() -> dict[str, Any]:
    """``default_args`` of every mlops_loop DAG: retries with exponential backoff for
    transient faults; errors that say the input is wrong fail at once; a conf key the
    DAG does not know fails the first task (reject_unknown_conf)."""
    return {
        "retries": TASK_RETRIES,
        "retry_delay": FIRST_RETRY_DELAY,
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": MAX_RETRY_DELAY,
        "retry_policy": FinalErrorsFailAtOnce(),
        "pre_execute": reject_unknown_conf,
    }


def dag_arguments(
    entry: DatasetEntry,
    stage: str,
    *,
    description: str,
    doc: str,
    params: dict[str, Param],
    max_active_runs: int = 1,
) -> dict[str, Any]:
    """Keyword arguments for ``DAG(...)`` of one stage of one dataset, all but the
    schedule: dag id ``mlops_<stage>__<dataset>``, tags, ``doc`` formatted with the entry's
    ``name``, config ``path``, ``schedule`` and ``drift_schedule``, and task_defaults().

    Templates render to native objects, so an empty form field reaches the operator as
    None (it then uses its default) and a JSON field as a dict. Native rendering reads
    any rendered text as a Python literal ("0" becomes 0, "1e999" inf, "None" None), so
    free text is passed with form_text(), which keeps it text (the ``as_text`` filter)."""
    return {
        "dag_id": f"mlops_{stage}__{entry.name}",
        "description": description,
        "start_date": START_DATE,
        "catchup": False,
        "max_active_runs": max_active_runs,
        "tags": ["mlops_loop", stage, entry.name],
        "doc_md": doc.format(
            name=entry.name,
            path=entry.path,
            schedule=entry.schedule,
            drift_schedule=entry.drift_schedule,
        ),
        "render_template_as_native_obj": True,
        "user_defined_filters": {"as_text": as_text},
        "params": params,
        "default_args": task_defaults(),
    }


def as_text(value: Any) -> str:
    """Jinja filter ``as_text`` of every mlops_loop DAG: the value as a Python string
    literal, which native rendering reads back as exactly that text, so free text from a
    form stays text (``"0"`` stays ``"0"``, ``"1e999"`` stays ``"1e999"``). None (an
    empty optional field) renders None. Only for DAGs that render natively
    (dag_arguments); elsewhere the quotes would stay."""
    if value is None:
        return "None"
    return repr(str(value))


def form_text(name: str) -> str:
    """The template of the form's free-text field ``name`` for an operator argument:
    rendered as that text (as_text), never as a number, a list or None."""
    if not name.isidentifier():
        raise ValueError(f"a form field name must be an identifier, got {name!r}")
    return "{{ params." + name + " | as_text }}"


def date_param(title: str, description: str) -> Param:
    """An optional ``YYYY-MM-DD`` field of the trigger form; empty means None."""
    return Param(None, type=["null", "string"], format="date", title=title, description=description)


def choice_param(
    choices: Sequence[str], *, default_label: str, title: str, description: str
) -> Param:
    """An optional choice of the trigger form: a dropdown of ``choices`` whose first
    entry, ``""`` shown as ``default_label``, means "not given" (operators treat an empty
    value as their default, see core.config.given).

    Not ``None`` in the enum: the form would show it as a literal "null" option. The type
    admits null so that choosing the default entry is not flagged as a missing required
    value by the form; clearing the dropdown (null) is refused with the allowed values."""
    if not choices or "" in choices:
        raise ValueError(f"choices must be non-empty values, got {list(choices)!r}")
    return Param(
        "",
        type=["null", "string"],
        enum=["", *choices],
        values_display={"": default_label, **{choice: choice for choice in choices}},
        title=title,
        description=description,
    )

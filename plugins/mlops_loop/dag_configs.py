"""Find the dataset configs that DAG files turn into DAGs, cheaply enough for parse time.

DAG files run on every scheduler parse, so this reads only each YAML file's ``name``,
``schedule`` and ``drift.schedule`` with PyYAML; the full typed validation
(core.config.load_config) happens when a task runs, where a bad config fails that task
with a message naming the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

CONFIG_DIR_ENV = "MLOPS_LOOP_CONFIG_DIR"
DEFAULT_DRIFT_SCHEDULE = "0 2 * * *"  # core.config.DriftSettings.schedule's default
# Repository layout: plugins/mlops_loop/dag_configs.py -> <repo>/include/config
_REPO_CONFIG_DIR = Path(__file__).resolve().parents[2] / "include" / "config"


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    path: str
    schedule: str | None
    drift_schedule: str | None = DEFAULT_DRIFT_SCHEDULE


def config_dir() -> Path:
    """``$MLOPS_LOOP_CONFIG_DIR`` if set, else the repository's include/config/."""
    return Path(os.environ.get(CONFIG_DIR_ENV) or _REPO_CONFIG_DIR)


def dataset_entries(directory: str | Path | None = None) -> list[DatasetEntry]:
    """One entry per ``*.yaml``/``*.yml`` file, sorted by name. A file that cannot be read
    still yields an entry (named after the file) so its DAG shows up and its first task
    reports the real error instead of the DAG silently vanishing."""
    folder = Path(directory) if directory else config_dir()
    entries = []
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            raw = {}
        if not isinstance(raw, dict):
            raw = {}
        name = str(raw.get("name") or path.stem)
        schedule = raw.get("schedule", "@daily")
        drift = raw.get("drift")
        drift_schedule = (
            drift.get("schedule", DEFAULT_DRIFT_SCHEDULE)
            if isinstance(drift, dict)
            else DEFAULT_DRIFT_SCHEDULE
        )
        entries.append(
            DatasetEntry(
                name=name,
                path=str(path.resolve()),
                schedule=schedule,
                drift_schedule=drift_schedule,
            )
        )
    return entries

"""Shared test setup. Fixtures live in tests/fixtures/ and are registered here.

Airflow reads its configuration when first imported, so the project-local Airflow home
(SQLite, under the ignored .local/ folder) is set here, before any test module imports it.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("AIRFLOW_HOME", str(REPO / ".local" / "airflow-test"))
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("MLOPS_LOOP_CONFIG_DIR", str(REPO / "include" / "config"))
# GE and tqdm progress bars only add noise to test logs.
os.environ.setdefault("TQDM_DISABLE", "1")
# Trainer containers default to the bridge network, but the MLflow and S3 servers the
# tests start listen on the host's 127.0.0.1 only (and this machine's dockerd runs with
# --bridge=none), so the tests' containers share the host's network. Tests of the
# default itself unset it (tests/unit/operators/test_trainer.py).
os.environ.setdefault("MLOPS_LOOP_TRAINER_NETWORK", "host")

pytest_plugins = ["tests.fixtures.servers", "tests.fixtures.airflow_db", "tests.fixtures.airflow_stack"]


def pytest_configure(config):
    # tests/test_compose.py: the docker-compose stack built locally and started for real.
    config.addinivalue_line(
        "markers",
        "compose: starts the docker-compose stack (docker-compose.local.yml) and runs an ingest",
    )
    # tests/stack/test_web_ui.py: the web UI in Debian's chromium (Playwright).
    config.addinivalue_line(
        "markers",
        "browser: drives the Airflow web UI in a headless chromium (tests/stack/test_web_ui.py)",
    )

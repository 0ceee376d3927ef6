"""Secrets end to end: ingest, train, evaluate, promote and drift through the DAGs
(dag.test(), the real trainer image on the real Docker engine) with the storage on S3
(keys from an Airflow Connection) and MLflow credentials in the MLflow Connection (a
password and a token, and a user name and a second password written into its URI). The
test servers ignore the MLflow credentials; the S3 server takes any key.

Then every place a secret could end up is searched for each of them: the task logs
(what dag.test prints, Python logging, log files under $AIRFLOW_HOME/logs), the rendered
templates (rendered_task_instance_fields) and the XCom values, the whole Airflow metadata
database file, the trainer's request of every trainer run (the JSON that goes into the
container's environment, copied as it is built), MLflow (params and tags of every run, the registered model's and its
versions' tags, and every file of the server: its database, artifacts and log), and
every object in the bucket (the snapshots, the decision report and the drift report
among them). None may be found, nor the base64 form of a basic-auth header.

The MLflow user name is an identity rather than a secret: MLflow records the signed-in
user as each run's ``mlflow.user`` tag (as its own auth server does), and that is the one
place it may appear; everywhere else it is searched for like the secrets. Logs are
searched at the level Airflow logs tasks at (``logging.logging_level``, INFO): a library's
DEBUG output (botocore's request headers name the access key id) is not a task log.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from mlops_loop.core.storage import S3Credentials, S3Storage
from mlops_loop_devtools.sample_data import generate_batch, land_batch
from tests.fixtures.dataset_configs import REGULARISED, credit_default_copy

pytestmark = [pytest.mark.integration, pytest.mark.docker]

REPO = Path(__file__).resolve().parents[2]
DAYS = ["2026-07-01", "2026-07-02", "2026-07-03"]

_RUN = uuid.uuid4().hex[:12]
S3_KEY = f"AKIASECRETS{_RUN.upper()}"
S3_SECRET = f"s3-secret-key-{_RUN}"
MLFLOW_PASSWORD = f"mlflow-conn-password-{_RUN}"
MLFLOW_TOKEN = f"mlflow-conn-token-{_RUN}"
URI_USER = f"mlflow-uri-user-{_RUN}"
URI_PASSWORD = f"mlflow-uri-password-{_RUN}"
USER_NAME = "MLflow URI user"
SECRETS = {
    "S3 access key": S3_KEY,
    "S3 secret key": S3_SECRET,
    "MLflow connection password": MLFLOW_PASSWORD,
    "MLflow connection token": MLFLOW_TOKEN,
    USER_NAME: URI_USER,
    "MLflow URI password": URI_PASSWORD,
    # What a leaked basic-auth header would hold (user from the URI, the connection's
    # password, which wins over the URI's).
    "basic-auth header": base64.b64encode(f"{URI_USER}:{MLFLOW_PASSWORD}".encode()).decode(),
    "basic-auth header (URI password)": base64.b64encode(
        f"{URI_USER}:{URI_PASSWORD}".encode()
    ).decode(),
}


def found_in(data: str | bytes, but: tuple[str, ...] = ()) -> list[str]:
    """The names of the secrets in ``data`` (less those named in ``but``)."""
    raw = data.encode("utf-8", errors="replace") if isinstance(data, str) else data
    return [name for name, secret in SECRETS.items() if name not in but and secret.encode() in raw]


def files_found_in(
    folder: Path, since: float | None = None, but: tuple[str, ...] = ()
) -> dict[str, list[str]]:
    hits = {}
    for path in folder.rglob("*"):
        if not path.is_file() or (since is not None and path.stat().st_mtime < since):
            continue
        if names := found_in(path.read_bytes(), but):
            hits[str(path)] = names
    return hits


@pytest.fixture
def secret_setup(airflow_db, tmp_path, monkeypatch, s3_server, s3_bucket, mlflow_server):
    """credit_default on S3 through the Connection ``secrets_s3``; MLflow through
    ``mlflow_default`` with credentials; nothing from the machine's environment."""
    import yaml

    name = f"secrets_{_RUN}"
    raw = credit_default_copy(name, {"training": {"model_type": "hist_gradient_boosting"}})
    raw["storage"] = {"root": f"{s3_bucket}/credit_default", "s3": {"aws_conn_id": "secrets_s3"}}
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / "credit_default.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("MLOPS_LOOP_CONFIG_DIR", str(config_dir))
    for variable in (
        "MLOPS_LOOP_STORAGE_ROOT",
        "MLFLOW_TRACKING_URI",
        "MLOPS_LOOP_MLFLOW_CONN_ID",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv(
        "AIRFLOW_CONN_SECRETS_S3",
        json.dumps(
            {
                "conn_type": "aws",
                "login": S3_KEY,
                "password": S3_SECRET,
                "extra": {"endpoint_url": s3_server.url, "region_name": "us-east-1"},
            }
        ),
    )
    mlflow_uri = mlflow_server.url.replace("http://", f"http://{URI_USER}:{URI_PASSWORD}@")
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_DEFAULT",
        json.dumps(
            {
                "conn_type": "http",
                "host": mlflow_uri,
                "password": MLFLOW_PASSWORD,
                "extra": {"token": MLFLOW_TOKEN},
            }
        ),
    )
    credentials = S3Credentials(
        endpoint_url=s3_server.url,
        region_name="us-east-1",
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
    )
    return name, f"{s3_bucket}/credit_default", credentials


@pytest.fixture
def request_files(tmp_path, monkeypatch) -> Path:
    """Every request the operators give a trainer container (the JSON of its
    $MLOPS_LOOP_TRAINER_REQUEST), or write for a local trainer process, copied to a file."""
    import mlops_loop.core.containers as containers

    kept = tmp_path / "requests"
    kept.mkdir()
    build, write = containers.request_environment, containers.write_request

    def keep(text: str) -> None:
        (kept / f"{len(list(kept.iterdir())):02d}-request.json").write_text(text)

    def build_and_keep(request: Any) -> dict[str, str]:
        env = build(request)
        keep(next(iter(env.values())))
        return env

    def write_and_keep(io_dir: Any, request: Any) -> Path:
        target = write(io_dir, request)
        keep(target.read_text())
        return target

    monkeypatch.setattr(containers, "request_environment", build_and_keep)
    monkeypatch.setattr(containers, "write_request", write_and_keep)
    return kept


def run_dag(dag_id: str, ds: str, conf: dict[str, Any] | None = None) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    when = datetime.fromisoformat(ds).replace(hour=2, tzinfo=timezone.utc)
    return bag.get_dag(dag_id).test(logical_date=when, run_conf=conf or {})


def outcome(dag_run: Any) -> tuple[dict[str, str], dict[str, Any]]:
    tis = {ti.task_id: ti for ti in dag_run.get_task_instances()}
    states = {task_id: str(ti.state) for task_id, ti in tis.items()}
    values = {t: ti.xcom_pull(task_ids=t) for t, ti in tis.items() if states[t] == "success"}
    return states, values


def airflow_records(run_ids: list[str]) -> dict[str, str]:
    """The rendered templates and XCom values of these runs, as text per row."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as RTIF
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    rows: dict[str, str] = {}
    with create_session() as session:
        for r in session.scalars(select(RTIF).where(RTIF.run_id.in_(run_ids))):
            rows[f"rendered {r.dag_id}/{r.task_id}"] = json.dumps(r.rendered_fields, default=str)
        for x in session.scalars(select(XComModel).where(XComModel.run_id.in_(run_ids))):
            rows[f"xcom {x.dag_id}/{x.task_id}/{x.key}"] = json.dumps(x.value, default=str)
    return rows


def mlflow_records(client: Any, name: str) -> dict[str, str]:
    """Params and tags of every run of the model's experiments and of the monitoring
    experiment (less ``mlflow.user``: the signed-in user, see the module doc), the registered
    model's tags and its versions' tags, as text."""
    rows: dict[str, str] = {}
    model = client.get_registered_model(name)
    rows[f"model {name}"] = json.dumps({"tags": model.tags, "description": model.description})
    experiments = set()
    for version in client.search_model_versions(f"name = '{name}'"):
        rows[f"version {version.version}"] = json.dumps(
            {"tags": version.tags, "source": version.source, "description": version.description}
        )
        experiments.add(client.get_run(version.run_id).info.experiment_id)
    monitoring = client.get_experiment_by_name("credit_default_monitoring")
    if monitoring is not None:
        experiments.add(monitoring.experiment_id)
    runs = client.search_runs(sorted(experiments), max_results=1000)
    assert runs, "no MLflow runs to search"
    for run in runs:
        tags = {k: v for k, v in run.data.tags.items() if k != "mlflow.user"}
        rows[f"run {run.info.run_id}"] = json.dumps(
            {"params": run.data.params, "tags": tags, "name": run.info.run_name}
        )
    return rows


def test_no_secret_reaches_a_log_template_request_file_mlflow_or_report(
    secret_setup, request_files, s3_server, mlflow_server, capfd, caplog
):
    import mlflow
    from airflow.configuration import conf

    name, root, credentials = secret_setup
    storage = S3Storage(credentials)
    landing = Path(os.environ["MLOPS_LOOP_CONFIG_DIR"]).parent / "landing"
    for ds in DAYS:
        for path in land_batch(generate_batch(ds, rows=3000), landing, ds):
            storage.upload(path, f"{root}/raw/ds={ds}/{path.name}")
    # From here on only the DAG runs: what they log, at the level Airflow logs tasks at.
    started = time.time()
    capfd.readouterr()
    caplog.clear()
    caplog.set_level(conf.get("logging", "logging_level", fallback="INFO").upper())

    # 1. Three days landed on S3, ingested by the ingest DAG (quality gate included).
    run_ids = []
    for ds in DAYS:
        dag_run = run_dag("mlops_ingest__credit_default", ds)
        states, _ = outcome(dag_run)
        assert set(states.values()) == {"success"}, states
        run_ids.append(dag_run.run_id)

    # 2. Train, evaluate and promote through the train DAG (trainer containers).
    regularised = {k: v for k, v in REGULARISED.items() if k != "model_type"}
    dag_run = run_dag(
        "mlops_train__credit_default",
        DAYS[-1],
        {
            "model_type": "hist_gradient_boosting",
            "hyperparameters": regularised,
            "reason": "secrets test",
        },
    )
    states, values = outcome(dag_run)
    run_ids.append(dag_run.run_id)
    assert set(states.values()) == {"success"}, states
    decision = values["evaluate_challenger"]
    assert values["promote_or_reject"]["outcome"] == "promoted", decision["reasons"]

    # 3. Drift of the new champion (monitor container): the drift report.
    dag_run = run_dag("mlops_drift__credit_default", DAYS[-1])
    states, values = outcome(dag_run)
    run_ids.append(dag_run.run_id)
    assert states["drift_monitor"] == "success", states
    drift = values["drift_monitor"]
    assert drift["champion_version"] is not None and drift["report_uri"].startswith(root)

    logs = capfd.readouterr()
    leaks: dict[str, list[str]] = {}

    # Task logs: what dag.test printed (each task's log), Python logging, log files.
    assert "Trainer train in" in logs.out + logs.err  # the trainer runs' logs were captured
    assert "MLflow server http://" in logs.out + logs.err
    for where, text in (("stdout", logs.out), ("stderr", logs.err), ("logging", caplog.text)):
        if names := found_in(text):
            leaks[where] = names
    home = Path(os.environ["AIRFLOW_HOME"])
    leaks.update(files_found_in(home / "logs", since=started) if (home / "logs").exists() else {})

    # Rendered templates and XCom values of the runs, and the whole metadata database.
    records = airflow_records(run_ids)
    assert any(
        key.startswith("rendered mlops_train__credit_default/train_challenger") for key in records
    )
    assert any(
        key.startswith("rendered mlops_train__credit_default/evaluate_challenger")
        for key in records
    )
    for key, text in records.items():
        if names := found_in(text):
            leaks[key] = names
    from airflow import settings

    database = Path(str(settings.engine.url.database))
    for path in database.parent.glob(database.name + "*"):  # the file, its -wal and -journal
        if names := found_in(path.read_bytes()):
            leaks[str(path)] = names

    # The trainer's request files: train, evaluate and monitor.
    kept = sorted(request_files.iterdir())
    commands = [json.loads(p.read_text()) for p in kept]
    assert len(kept) == 3, [p.name for p in kept]
    assert {"train_snapshot_uri", "holdout_snapshot_uri", "snapshot_uris"} <= {
        k for c in commands for k in c
    }
    leaks.update(files_found_in(request_files))

    # MLflow: params and tags of runs and versions, and every file the server keeps.
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    for key, text in mlflow_records(client, name).items():
        if names := found_in(text):
            leaks[f"mlflow {key}"] = names
    leaks.update(files_found_in(mlflow_server.log_path.parent, but=(USER_NAME,)))  # mlflow.user

    # Everything in the bucket, the decision and drift reports (HTML and JSON) among it.
    objects = [o.uri for o in storage.list(f"{root}/")]
    reports = [decision["html_uri"], drift["report_uri"]]
    assert set(reports) <= set(objects), reports
    for uri in reports:
        assert "<html" in storage.read_text(uri).lower()
    for uri in objects:
        if names := found_in(storage.read_bytes(uri)):
            leaks[uri] = names

    assert leaks == {}, json.dumps(leaks, indent=2)

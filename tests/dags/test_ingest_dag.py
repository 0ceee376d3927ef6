"""dag.test() runs of the ingest DAG on good and bad batches: local layout and S3."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mlops_loop.core.storage import S3Storage, sha256_file
from mlops_loop_devtools.sample_data import generate_batch, land_batch

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "mlops_ingest__credit_default"


def load_dag(dag_id: str = DAG_ID):
    from airflow.dag_processing.dagbag import DagBag

    # Only the ingest DAG file: the other DAG files are test_dag_files.py's business.
    bag = DagBag(dag_folder=str(REPO / "dags" / "ingest.py"))
    assert bag.import_errors == {}
    return bag.get_dag(dag_id)


def run(dag, ds: str) -> dict[str, str]:
    return states(run_dag(dag, ds))


def run_dag(dag, ds: str, conf: dict | None = None):
    when = datetime.fromisoformat(ds).replace(tzinfo=timezone.utc)
    return dag.test(logical_date=when, run_conf=conf)


def states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def config_dir_with_source(tmp_path: Path, monkeypatch, **source) -> Path:
    """The demo config with ``source`` settings replaced, as the only dataset config."""
    import yaml

    raw = yaml.safe_load((REPO / "include/config/credit_default.yaml").read_text())
    raw["source"].update(source)
    raw["quality"]["suite"] = str(REPO / "include/expectations/credit_default.json")
    folder = tmp_path / "configs"
    folder.mkdir(exist_ok=True)
    (folder / "credit_default.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("MLOPS_LOOP_CONFIG_DIR", str(folder))
    monkeypatch.setenv("MLOPS_LOOP_STORAGE_ROOT", str(tmp_path / "data"))
    return tmp_path / "data" / "credit_default"


def asset_events(name: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetEvent.extra).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == name)
        ).all()
    return [dict(r[0] or {}) for r in rows]


def test_good_and_corrupted_batches_on_local_storage(airflow_db, tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_LOOP_STORAGE_ROOT", str(tmp_path))
    root = tmp_path / "credit_default"
    good, bad = "2026-02-01", "2026-02-02"
    land_batch(generate_batch(good, rows=800), root, good)
    bad_files = land_batch(generate_batch(bad, rows=800, corrupt="out_of_range"), root, bad)
    raw_before = {p: sha256_file(p) for p in bad_files}
    dag = load_dag()

    assert run(dag, good) == {
        "wait_for_batch": "success",
        "ingest_snapshot": "success",
        "quality_gate": "success",
    }
    manifests = list((root / "snapshots").glob("*/manifest.json"))
    assert len(manifests) == 1
    assert json.loads(manifests[0].read_text())["rows"] == 800
    assert list((root / "reports" / "quality").rglob("index.html"))
    events = [e for e in asset_events("mlops_loop.credit_default.validated") if e.get("ds") == good]
    assert events and events[-1]["snapshot_uri"].startswith(str(root / "snapshots"))

    # Re-running the same date writes nothing new, and the gate, finding this snapshot
    # already validated for the date, is skipped: no second `validated` event.
    again = run_dag(dag, good)
    assert states(again) == {"wait_for_batch": "success", "ingest_snapshot": "success", "quality_gate": "skipped"}
    assert str(again.state) == "success"
    assert len(list((root / "snapshots").glob("*/manifest.json"))) == 1
    assert [e for e in asset_events("mlops_loop.credit_default.validated") if e.get("ds") == good] == events

    outcome = run(dag, bad)
    assert outcome == {"wait_for_batch": "success", "ingest_snapshot": "success", "quality_gate": "failed"}
    quarantined = list((root / "quarantine" / f"ds={bad}").rglob("*.csv"))
    assert quarantined, "the failed batch was not copied to quarantine"
    summary = next((root / "quarantine" / f"ds={bad}").rglob("summary.txt")).read_text()
    assert any(line.startswith("- age: ") for line in summary.splitlines()), summary
    assert {p: sha256_file(p) for p in bad_files} == raw_before




def test_ingest_dag_on_s3_through_an_airflow_connection(
    airflow_db, tmp_path, monkeypatch, s3_server, s3_credentials, s3_bucket
):
    import yaml

    # A dataset config that names an Airflow Connection for its S3 store.
    raw = yaml.safe_load((REPO / "include/config/credit_default.yaml").read_text())
    raw["storage"] = {"root": f"{s3_bucket}/credit_default", "s3": {"aws_conn_id": "mlops_test_s3"}}
    raw["quality"].pop("suite")  # the suite path is relative to the repo config folder
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / "credit_default.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("MLOPS_LOOP_CONFIG_DIR", str(config_dir))
    monkeypatch.delenv("MLOPS_LOOP_STORAGE_ROOT", raising=False)
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLOPS_TEST_S3",
        json.dumps({
            "conn_type": "aws",
            "login": s3_credentials.aws_access_key_id,
            "password": s3_credentials.aws_secret_access_key,
            "extra": {"endpoint_url": s3_server.url, "region_name": "us-east-1"},
        }),
    )
    storage = S3Storage(s3_credentials)
    ds = "2026-02-03"
    for path in land_batch(generate_batch(ds, rows=600), tmp_path / "landing", ds):
        storage.upload(path, f"{s3_bucket}/credit_default/raw/ds={ds}/{path.name}")

    assert run(load_dag(), ds) == {
        "wait_for_batch": "success",
        "ingest_snapshot": "success",
        "quality_gate": "success",
    }
    keys = [o.uri for o in storage.list(f"{s3_bucket}/credit_default/")]
    assert any(k.endswith("/manifest.json") and "/snapshots/" in k for k in keys)
    assert any("/reports/quality/" in k and k.endswith("result.json") for k in keys)


# --- waiting for the batch -------------------------------------------------------------
# dag.test() runs each task in this process; task logs go to stdout (structlog), so the
# tests read them with capfd.


def test_missing_batch_with_on_missing_skip_ends_without_a_failure(airflow_db, tmp_path, monkeypatch, capfd):
    root = config_dir_with_source(
        tmp_path, monkeypatch, on_missing="skip", wait_timeout_minutes=0.05, poke_interval_seconds=1
    )
    ds = "2026-02-11"
    started = time.monotonic()
    dag_run = run_dag(load_dag(), ds)
    assert states(dag_run) == {"wait_for_batch": "skipped", "ingest_snapshot": "skipped", "quality_gate": "skipped"}
    assert str(dag_run.state) == "success"
    assert time.monotonic() - started >= 3  # it waited for the timeout, rescheduling
    looked_for = f"*.csv, *.csv.gz, *.csv.bz2 under {root}/raw/ds={ds}"
    text = capfd.readouterr().out
    assert f"no batch for credit_default ds={ds} yet: looked for {looked_for}" in text
    assert f"no batch for credit_default ds={ds} after waiting 0.05 minutes: looked for {looked_for}" in text
    assert "(source.on_missing: skip)" in text


def test_missing_batch_with_on_missing_fail_fails_naming_the_files(airflow_db, tmp_path, monkeypatch, capfd):
    root = config_dir_with_source(
        tmp_path, monkeypatch, on_missing="fail", wait_timeout_minutes=0.02, poke_interval_seconds=1
    )
    ds = "2026-02-12"
    # Something landed, but not a batch of the configured format: the message says so.
    (root / "raw" / f"ds={ds}").mkdir(parents=True)
    (root / "raw" / f"ds={ds}" / "notes.txt").write_text("late\n")
    dag_run = run_dag(load_dag(), ds)
    assert states(dag_run) == {
        "wait_for_batch": "failed",
        "ingest_snapshot": "upstream_failed",
        "quality_gate": "upstream_failed",
    }
    assert str(dag_run.state) == "failed"
    assert (
        f"no batch for credit_default ds={ds} after waiting 0.02 minutes: looked for "
        f"*.csv, *.csv.gz, *.csv.bz2 under {root}/raw/ds={ds}; found only ['notes.txt'] "
        "(source.on_missing: fail)"
    ) in capfd.readouterr().out


def test_an_explicit_date_does_not_wait_and_fails_at_once(airflow_db, tmp_path, monkeypatch, capfd):
    # on_missing skip and a long wait: an explicitly requested date still fails at once.
    root = config_dir_with_source(
        tmp_path, monkeypatch, on_missing="skip", wait_timeout_minutes=60, poke_interval_seconds=60
    )
    ds = "2026-02-13"
    started = time.monotonic()
    dag_run = run_dag(load_dag(), "2026-02-14", conf={"ds": ds})
    assert time.monotonic() - started < 60
    assert states(dag_run)["wait_for_batch"] == "failed"
    assert str(dag_run.state) == "failed"
    assert (
        f"no batch for credit_default ds={ds}: looked for *.csv, *.csv.gz, *.csv.bz2 under "
        f"{root}/raw/ds={ds}. The date was given explicitly, so the run did not wait"
    ) in capfd.readouterr().out


def sensor_rescheduled(ds: str) -> bool:
    """The wait_for_batch task of the run for ``ds`` is waiting for its next look."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        state = session.scalar(
            select(TaskInstance.state)
            .join(DagRun, (DagRun.dag_id == TaskInstance.dag_id) & (DagRun.run_id == TaskInstance.run_id))
            .where(TaskInstance.dag_id == DAG_ID, TaskInstance.task_id == "wait_for_batch")
            .where(DagRun.logical_date == datetime.fromisoformat(ds).replace(tzinfo=timezone.utc))
        )
    return str(state) == "up_for_reschedule"


def test_a_batch_that_lands_while_waiting_is_ingested(airflow_db, tmp_path, monkeypatch, capfd):
    root = config_dir_with_source(
        tmp_path, monkeypatch, on_missing="fail", wait_timeout_minutes=2, poke_interval_seconds=1
    )
    ds = "2026-02-15"
    staging = tmp_path / "upstream"
    land_batch(generate_batch(ds, rows=600), staging, ds)

    def land_later() -> None:
        # Once the sensor has looked and rescheduled itself, the batch lands.
        deadline = time.monotonic() + 120
        while not sensor_rescheduled(ds) and time.monotonic() < deadline:
            time.sleep(0.2)
        (root / "raw").mkdir(parents=True, exist_ok=True)
        # Upstream writes elsewhere and moves the finished folder in: no half-written file.
        os.rename(staging / "raw" / f"ds={ds}", root / "raw" / f"ds={ds}")

    dag = load_dag()
    # Import in this thread first: two threads importing Airflow modules at once deadlock.
    assert not sensor_rescheduled(ds)
    lander = threading.Thread(target=land_later)
    lander.start()
    try:
        dag_run = run_dag(dag, ds)
    finally:
        lander.join()
    assert states(dag_run) == {"wait_for_batch": "success", "ingest_snapshot": "success", "quality_gate": "success"}
    text = capfd.readouterr().out
    assert f"no batch for credit_default ds={ds} yet" in text
    assert f"batch for credit_default ds={ds} has landed: 1 csv file(s)" in text

"""dag.test() runs of the ingest DAG on good and bad batches: local layout and S3."""

from __future__ import annotations

import json
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

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag.get_dag(dag_id)


def run(dag, ds: str) -> dict[str, str]:
    when = datetime.fromisoformat(ds).replace(tzinfo=timezone.utc)
    dag_run = dag.test(logical_date=when)
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


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

    assert run(dag, good) == {"ingest_snapshot": "success", "quality_gate": "success"}
    manifests = list((root / "snapshots").glob("*/manifest.json"))
    assert len(manifests) == 1
    assert json.loads(manifests[0].read_text())["rows"] == 800
    assert list((root / "reports" / "quality").rglob("index.html"))
    events = [e for e in asset_events("mlops_loop.credit_default.validated") if e.get("ds") == good]
    assert events and events[-1]["snapshot_uri"].startswith(str(root / "snapshots"))

    # Re-running the same date writes nothing new.
    assert run(dag, good)["ingest_snapshot"] == "success"
    assert len(list((root / "snapshots").glob("*/manifest.json"))) == 1

    states = run(dag, bad)
    assert states == {"ingest_snapshot": "success", "quality_gate": "failed"}
    quarantined = list((root / "quarantine" / f"ds={bad}").rglob("*.csv"))
    assert quarantined, "the failed batch was not copied to quarantine"
    summary = next((root / "quarantine" / f"ds={bad}").rglob("summary.txt")).read_text()
    assert any(line.startswith("- age: ") for line in summary.splitlines()), summary
    assert {p: sha256_file(p) for p in bad_files} == raw_before


def test_missing_batch_fails_the_run(airflow_db, tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_LOOP_STORAGE_ROOT", str(tmp_path))
    states = run(load_dag(), "2026-02-10")
    assert states["ingest_snapshot"] == "failed"
    assert states["quality_gate"] == "upstream_failed"


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

    assert run(load_dag(), ds) == {"ingest_snapshot": "success", "quality_gate": "success"}
    keys = [o.uri for o in storage.list(f"{s3_bucket}/credit_default/")]
    assert any(k.endswith("/manifest.json") and "/snapshots/" in k for k in keys)
    assert any("/reports/quality/" in k and k.endswith("result.json") for k in keys)

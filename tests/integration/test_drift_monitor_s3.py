"""The trainer's monitor command on S3 storage, in-process (no Docker): snapshots streamed
from an S3-compatible endpoint through pyarrow's S3 filesystem, the reference profile and
the reports written back to S3. The container path is covered by tests/dags/test_drift_dag.py."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from mlops_loop.core.config import load_config
from mlops_loop.core.storage import S3Storage
from mlops_loop_devtools.sample_data import generate_batch, land_batch

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "include/config/credit_default.yaml"


def test_monitor_reads_and_writes_s3(tmp_path, monkeypatch, s3_server, s3_credentials, s3_bucket, mlflow_server):
    import mlflow
    import yaml

    from mlops_loop.core.ingest import ingest_batch
    from mlops_loop.core.registry import promote
    from mlops_loop.core.trainer_protocol import MonitorRequest, TrainRequest, config_payload
    from mlops_loop.core.training_set import (
        ValidatedSnapshot,
        assemble_training_set,
        record_validated,
        validated_snapshots,
    )
    from mlops_loop.training.monitor import run_monitor
    from mlops_loop.training.train import run_training

    monkeypatch.delenv("MLOPS_LOOP_STORAGE_ROOT", raising=False)
    raw = yaml.safe_load(CONFIG.read_text())
    raw["storage"] = {"root": f"{s3_bucket}/credit_default", "s3": {"endpoint_url": s3_server.url}}
    raw["quality"].pop("suite")
    raw["training"]["registered_model_name"] = f"drift_s3_{uuid.uuid4().hex[:8]}"
    (tmp_path / "credit_default.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(tmp_path / "credit_default.yaml")
    storage = S3Storage(s3_credentials)

    def validated_days(days: list[str], rows: int, drift: float = 0.0) -> None:
        for ds in days:
            for path in land_batch(generate_batch(ds, rows=rows, drift=drift), tmp_path / "landing", ds):
                storage.upload(path, f"{config.root}/raw/ds={ds}/{path.name}")
            snap = ingest_batch(config, ds, credentials=s3_credentials)
            entry = ValidatedSnapshot(ds, snap.sha256, snap.snapshot_uri, snap.rows)
            record_validated(config, entry, credentials=s3_credentials)

    validated_days(["2026-05-01", "2026-05-02", "2026-05-03"], rows=600)
    training_set = assemble_training_set(config, credentials=s3_credentials)
    trained = run_training(
        TrainRequest(
            config=config_payload(config),
            train_snapshot_uri=training_set.train_uri,
            valid_snapshot_uri=training_set.valid_uri,
            hyperparameters={"model_type": "hist_gradient_boosting", "max_iter": 20},
        ),
        tracking_uri=mlflow_server.url,
        credentials=s3_credentials,
    )
    name, version = trained["model_name"], trained["model_version"]
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    promote(client, name, version, expected_champion=None, decision_uri=None, airflow_run=None, reason="test")

    validated_days(["2026-05-10", "2026-05-11"], rows=400, drift=1.0)
    snapshots = validated_snapshots(config, credentials=s3_credentials, since_ds="2026-05-05", until_ds="2026-05-11")
    reports_root = f"{config.root}/reports/drift"
    result = run_monitor(
        MonitorRequest(
            config=config_payload(config),
            model_name=name,
            champion_version=version,
            snapshot_uris=[s.snapshot_uri for s in snapshots],
            ds="2026-05-11",
            since_ds="2026-05-05",
            until_ds="2026-05-11",
            reports_root=reports_root,
        ),
        tracking_uri=mlflow_server.url,
        credentials=s3_credentials,
        log=lambda _: None,
    )
    assert result["verdict"] == "drift" and result["rows"] == 800
    assert "interest_rate" in result["drifted_features"]
    assert result["profile_built"] is True
    assert result["report_uri"] == f"{reports_root}/ds=2026-05-11/report.html"
    assert storage.exists(f"{reports_root}/profiles/{name}/{version}/profile.json")
    report = json.loads(storage.read_text(f"{reports_root}/ds=2026-05-11/report.json"))
    assert report["verdict"] == "drift"
    assert storage.exists(f"{reports_root}/ds=2026-05-11/manifest.json")

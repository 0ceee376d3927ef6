"""Ingest + quality gate: one DAG per dataset config in include/config/."""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import DAG, Param

from mlops_loop.assets import validated_asset
from mlops_loop.dag_configs import dataset_entries
from mlops_loop.operators import DataQualityOperator, IngestSnapshotOperator

DOC = """
### Ingest `{name}`

Reads the batch that landed for the logical date (`raw/ds=YYYY-MM-DD/` under the
dataset's storage root, or the configured source), writes an immutable content-addressed
Parquet snapshot, and runs the Great Expectations suite on it.

* **pass**: the validation result and Data Docs go to `reports/quality/ds=.../`, and the
  asset `mlops_loop.{name}.validated` gets an event carrying the snapshot URI (the
  training DAG is scheduled on it).
* **fail**: the batch and the result are copied to `quarantine/ds=.../`, the task fails
  with a readable summary, and nothing downstream runs. Landed data is never changed.

Re-running a date is safe: the same landed files give the same snapshot hash and nothing
new is written. Trigger with a date to re-ingest it. Config: `{path}`.
"""

for entry in dataset_entries():
    with DAG(
        dag_id=f"mlops_ingest__{entry.name}",
        description=f"Ingest and quality-gate daily batches of {entry.name}",
        schedule=entry.schedule,
        start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
        catchup=False,
        max_active_runs=4,
        tags=["mlops_loop", "ingest", entry.name],
        doc_md=DOC.format(name=entry.name, path=entry.path),
        params={
            "ds": Param(
                None,
                type=["null", "string"],
                format="date",
                title="Date to (re-)ingest",
                description="Partition ds=YYYY-MM-DD to read. Empty: the run's logical date.",
            ),
        },
        default_args={"retries": 0},
    ):
        ingest = IngestSnapshotOperator(
            task_id="ingest_snapshot",
            config_path=entry.path,
            ds="{{ params.ds or ds }}",
        )
        gate = DataQualityOperator(
            task_id="quality_gate",
            config_path=entry.path,
            snapshot_uri="{{ ti.xcom_pull(task_ids='ingest_snapshot')['snapshot_uri'] }}",
            ds="{{ params.ds or ds }}",
            outlets=[validated_asset(entry.name)],
        )
        ingest >> gate

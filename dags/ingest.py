"""Ingest + quality gate: one DAG per dataset config (see mlops_loop.dag_configs)."""

from __future__ import annotations

from airflow.sdk import DAG

from mlops_loop.assets import validated_asset
from mlops_loop.dag_configs import dag_arguments, dataset_entries, date_param
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

Retries: both tasks retry transient faults (storage timeouts) twice with growing pauses.
A data failure is final and fails at once: a missing or unreadable batch, and a batch
that fails the quality gate (the same batch fails the same way).
"""

for entry in dataset_entries():
    with DAG(
        schedule=entry.schedule,
        **dag_arguments(
            entry,
            "ingest",
            description=f"Ingest and quality-gate daily batches of {entry.name}",
            doc=DOC,
            max_active_runs=4,
            params={
                "ds": date_param(
                    "Date to (re-)ingest",
                    "Partition ds=YYYY-MM-DD to read. Empty: the run's logical date.",
                ),
            },
        )
    ):
        ingest = IngestSnapshotOperator(
            task_id="ingest_snapshot",
            config_path=entry.path,
            ds="{{ params.ds }}",
        )
        gate = DataQualityOperator(
            task_id="quality_gate",
            config_path=entry.path,
            snapshot_uri="{{ ti.xcom_pull(task_ids='ingest_snapshot')['snapshot_uri'] }}",
            ds="{{ params.ds }}",
            outlets=[validated_asset(entry.name)],
        )
        ingest >> gate

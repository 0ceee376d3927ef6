"""Ingest + quality gate: one DAG per dataset config (see mlops_loop.dag_configs)."""

from __future__ import annotations

from airflow.sdk import DAG

from mlops_loop.assets import validated_asset
from mlops_loop.dag_configs import dag_arguments, dataset_entries, date_param
from mlops_loop.operators import DataQualityOperator, IngestSnapshotOperator, WaitForBatchSensor

DOC = """
### Ingest `{name}`

Waits for the batch of the logical date to land (`raw/ds=YYYY-MM-DD/` under the
dataset's storage root, or the configured source), writes an immutable content-addressed
Parquet snapshot, and runs the Great Expectations suite on it.

* **waiting**: `wait_for_batch` looks every `source.poke_interval_seconds` and frees its
  worker slot in between (reschedule mode). Its log names the files it looks for. After
  `source.wait_timeout_minutes` with nothing landed, `source.on_missing` decides: `skip`
  (default) skips the run's tasks, so a date with nothing to do is no failed run; `fail`
  fails the run naming the files. A run triggered with a **date** in the form does not
  wait: it looks once and fails at once when the batch is missing.

* **pass**: the validation result and Data Docs go to `reports/quality/ds=.../`, and the
  asset `mlops_loop.{name}.validated` gets an event carrying the snapshot URI (the
  training DAG is scheduled on it).
* **fail**: the batch and the result are copied to `quarantine/ds=.../`, the task fails
  with a readable summary, and nothing downstream runs. Landed data is never changed.

Re-running a date is safe: the same landed files give the same snapshot hash and nothing
new is written; when that snapshot is already the date's validated one, the gate is
skipped and emits no second `validated` event (no second training run). A changed batch
for the date gets a new snapshot that supersedes the old one: training sets use the
newest validated snapshot of each date. Trigger with a date to re-ingest it.
Config: `{path}`.

Retries: every task retries transient faults (storage timeouts) twice with growing
pauses. A data failure is final and fails at once: a missing batch (after the wait), an
unreadable batch, and a batch that fails the quality gate (the same batch fails the same
way).
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
                    "Partition ds=YYYY-MM-DD to read; given, the run does not wait for it. "
                    "Empty: the run's logical date, waiting for its batch to land.",
                ),
            },
        )
    ):
        wait = WaitForBatchSensor(
            task_id="wait_for_batch",
            config_path=entry.path,
            ds="{{ params.ds }}",
        )
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
        wait >> ingest >> gate

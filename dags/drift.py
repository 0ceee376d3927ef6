"""Drift and decay monitoring: one DAG per dataset config, nightly (the config's
``drift.schedule``) or from the trigger form; over policy it requests retraining through
the dataset's ``retrain_requested`` Asset."""

from __future__ import annotations

from airflow.sdk import DAG

from mlops_loop.assets import retrain_requested_asset
from mlops_loop.dag_configs import dag_arguments, dataset_entries, date_param
from mlops_loop.operators import DriftMonitorOperator, RequestRetrainingOperator

DOC = """
### Drift monitor `{name}`

1. **drift_monitor**: the trainer image (it loads the champion) compares the validated
   snapshots of the last `drift.window_days` days with the champion's reference profile
   (built once per champion version from its training data, stored under
   `reports/drift/profiles/`): PSI, KS / chi-square with Benjamini-Hochberg per feature,
   prediction-score drift, and decay of live metrics where labels have arrived. The report
   (`report.html` to read, `report.json`) goes to `reports/drift/ds=YYYY-MM-DD/` and to the
   MLflow experiment `{name}_monitoring`. No champion yet: verdict `no_champion`, nothing runs.
2. **request_retraining**: drift or decay over policy (`drift.retrain_on`) and outside the
   cool-down (`drift.cool_down_hours`, recorded in `reports/drift/retrain_requests.json`):
   an event on `mlops_loop.{name}.retrain_requested` (the training DAG runs on it) carrying
   the reason. Otherwise the task is skipped with the reason.

Schedule: `{drift_schedule}`. Trigger form: a report date, or a window (start and end). Config: `{path}`.

Retries: both tasks retry transient faults twice with growing pauses. A re-run of
**drift_monitor** rewrites the report of its date; **request_retraining** writes its
record last, so a retry after a failed read or write decides the same. Data the monitor
cannot use (a feature missing, no reference profile) fails at once.
"""

for entry in dataset_entries():
    with DAG(
        schedule=entry.drift_schedule,
        **dag_arguments(
            entry,
            "drift",
            description=f"Nightly drift and decay of the {entry.name} champion; requests retraining",
            doc=DOC,
            params={
                "ds": date_param(
                    "Report date",
                    "The window ends here and the report is filed under it. "
                    "Empty: the run's logical date (or the day it runs, without one).",
                ),
                "start": date_param(
                    "Window start", "First date of recent data. Empty: window_days before the end."
                ),
                "end": date_param(
                    "Window end",
                    "Last date of recent data (and the report date; wins over it). "
                    "Empty: the report date.",
                ),
            },
        )
    ):
        monitor = DriftMonitorOperator(
            task_id="drift_monitor",
            config_path=entry.path,
            **entry.compute_queue_args(),
            ds="{{ params.ds }}",
            window_end="{{ params.end }}",
            since_ds="{{ params.start }}",
            mem_limit="4g",
        )
        request = RequestRetrainingOperator(
            task_id="request_retraining",
            config_path=entry.path,
            drift_result="{{ ti.xcom_pull(task_ids='drift_monitor') }}",
            outlets=[retrain_requested_asset(entry.name)],
        )
        monitor >> request

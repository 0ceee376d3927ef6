"""Drift and decay monitoring: one DAG per dataset config, nightly (the config's
``drift.schedule``) or from the trigger form; over policy it requests retraining through
the dataset's ``retrain_requested`` Asset."""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import DAG, Param

from mlops_loop.assets import retrain_requested_asset
from mlops_loop.dag_configs import dataset_entries
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

Schedule: `{schedule}`. Trigger form: a report date, or a window (start and end). Config: `{path}`.
"""

for entry in dataset_entries():
    with DAG(
        dag_id=f"mlops_drift__{entry.name}",
        description=f"Nightly drift and decay of the {entry.name} champion; requests retraining",
        schedule=entry.drift_schedule,
        start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
        catchup=False,
        max_active_runs=1,
        tags=["mlops_loop", "drift", entry.name],
        doc_md=DOC.format(name=entry.name, path=entry.path, schedule=entry.drift_schedule),
        render_template_as_native_obj=True,
        params={
            "ds": Param(
                None,
                type=["null", "string"],
                format="date",
                title="Report date",
                description="The window ends here and the report is filed under it. "
                "Empty: the run's logical date (or the day it runs, without one).",
            ),
            "start": Param(
                None,
                type=["null", "string"],
                format="date",
                title="Window start",
                description="First date of recent data. Empty: window_days before the end.",
            ),
            "end": Param(
                None,
                type=["null", "string"],
                format="date",
                title="Window end",
                description="Last date of recent data (and the report date; wins over it). "
                "Empty: the report date.",
            ),
        },
        default_args={"retries": 0},
    ):
        monitor = DriftMonitorOperator(
            task_id="drift_monitor",
            config_path=entry.path,
            # A manual run may have no logical date (no `ds`): then the day it runs for.
            ds="{{ params.end or params.ds or (ds if ds is defined else dag_run.run_after | ds) }}",
            since_ds="{{ params.start or '' }}",
            mem_limit="4g",
        )
        request = RequestRetrainingOperator(
            task_id="request_retraining",
            config_path=entry.path,
            drift_result="{{ ti.xcom_pull(task_ids='drift_monitor') }}",
            outlets=[retrain_requested_asset(entry.name)],
        )
        monitor >> request

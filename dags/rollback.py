"""Rollback: one manual DAG per dataset config that moves the champion alias back."""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import DAG, Param

from mlops_loop.dag_configs import dataset_entries
from mlops_loop.operators import RollbackChampionOperator

DOC = """
### Roll back the champion of `{name}`

Manual only. Moves the MLflow alias `champion` of the registered model back to the
previous champion (the version it replaced, from the audit trail on the registered model)
or to the version you name.

* **reason** is required and is recorded on the version (`rollback_reason`) and in the
  audit trail, with this run's id and the time.
* A named version must have passed validation (`validation_status=passed`); a previous
  champion must not have failed it. Tick **force** to override (the reason is then marked
  `[forced]`).
* An unknown or deleted version is refused and the task fails naming it; the champion
  does not move.

Empty model name: the config's `training.registered_model_name`. Config: `{path}`.
"""

for entry in dataset_entries():
    with DAG(
        dag_id=f"mlops_rollback__{entry.name}",
        description=f"Roll back the champion model of {entry.name}",
        schedule=None,
        start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
        catchup=False,
        max_active_runs=1,
        tags=["mlops_loop", "rollback", entry.name],
        doc_md=DOC.format(name=entry.name, path=entry.path),
        params={
            "model_name": Param(
                None,
                type=["null", "string"],
                title="Registered model",
                description="Empty: the config's training.registered_model_name.",
            ),
            "reason": Param(
                "",
                type="string",
                minLength=5,
                maxLength=500,
                title="Reason",
                description="Why roll back (required; recorded in the audit trail).",
            ),
            "to_version": Param(
                None,
                type=["null", "string", "integer"],
                title="Target version",
                description="Empty: the previous champion.",
            ),
            "force": Param(
                False,
                type="boolean",
                title="Force",
                description="Allow a target that did not pass validation.",
            ),
        },
        default_args={"retries": 0},
    ):
        RollbackChampionOperator(
            task_id="rollback_champion",
            config_path=entry.path,
            model_name="{{ params.model_name or '' }}",
            reason="{{ params.reason }}",
            to_version="{{ params.to_version if params.to_version is not none else '' }}",
            force="{{ params.force }}",
        )

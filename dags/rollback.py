"""Rollback: one manual DAG per dataset config that moves the champion alias back."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from mlops_loop.dag_configs import dag_arguments, dataset_entries
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

No retries: without a target version the alias moves to the champion before the current
one, so a retry after a move that did happen would roll back one step further. Trigger
again after reading the audit trail instead.
"""

for entry in dataset_entries():
    with DAG(
        schedule=None,
        **dag_arguments(
            entry,
            "rollback",
            description=f"Roll back the champion model of {entry.name}",
            doc=DOC,
            params={
                "model_name": Param(
                    None,
                    type=["null", "string"],
                    title="Registered model",
                    description="Empty: the config's training.registered_model_name.",
                ),
                # No default: the form asks for it (a required field) and a trigger
                # without it is refused, instead of an empty default that fails its schema.
                "reason": Param(
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
        )
    ):
        RollbackChampionOperator(
            task_id="rollback_champion",
            config_path=entry.path,
            model_name="{{ params.model_name }}",
            reason="{{ params.reason }}",
            to_version="{{ params.to_version }}",
            force="{{ params.force }}",
            retries=0,
        )

"""Rollback: one manual DAG per dataset config that moves the champion alias back."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from mlops_loop.dag_configs import dag_arguments, dataset_entries, form_text
from mlops_loop.operators import RollbackChampionOperator

DOC = """
### Roll back the champion of `{name}`

Manual only. Moves the MLflow alias `champion` of this dataset's registered model (the
config's `training.registered_model_name`, else `{name}_model`) back to the previous
champion (the version it replaced, from the audit trail on the registered model) or to
the version you name. The form names no model: this DAG acts on no other model, and a
`model_name` in the run's conf is refused.

* **reason** is required and is recorded as typed on the version (`rollback_reason`)
  and in the audit trail, with this run's id and the time.
* The target, named or the previous champion, must have passed validation
  (`validation_status=passed`); failed, inconclusive and never validated versions are
  refused. Tick **force** to override: the reason is then marked `[forced]` on the
  version and the audit entry records `forced`.
* An unknown or deleted version is refused and the task fails naming it; the champion
  does not move.

Config: `{path}`.

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
                    description="Empty: the previous champion. Either must have passed "
                    "validation unless Force is ticked.",
                ),
                "force": Param(
                    False,
                    type="boolean",
                    title="Force",
                    description="Allow a target that did not pass validation (failed, "
                    "inconclusive or never validated); recorded as forced with the reason.",
                ),
            },
        ),
    ):
        # The model is the dataset's (from config_path), never the form's.
        RollbackChampionOperator(
            task_id="rollback_champion",
            config_path=entry.path,
            reason=form_text("reason"),
            to_version=form_text("to_version"),
            force="{{ params.force }}",
            retries=0,
        )

"""Training: one DAG per dataset config, run when new data is validated, when drift asks
for retraining, or from the trigger form. Trains a challenger, evaluates it against the
champion on a fresh holdout and promotes it (compare-and-set) or rejects it."""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Param, task

from mlops_loop.assets import retrain_requested_asset, validated_asset
from mlops_loop.dag_configs import (
    choice_param,
    dag_arguments,
    dataset_entries,
    date_param,
    form_text,
)
from mlops_loop.operators import (
    AssembleTrainingSetOperator,
    DockerTrainOperator,
    EvaluateChallengerOperator,
    PromoteModelOperator,
    PromotionApprovalOperator,
)

DOC = """
### Train `{name}`

1. **assemble_training_set**: the validated snapshots of the configured window
   (`training.window`), split by time: the newest validated date is the holdout, older
   data becomes train and validation. The set is content-addressed under `training_sets/`.
   The window ends at `until_ds` or the newest validated date, and never before the date
   of the event that started the run (a drift report's date).
2. **train_challenger**: nothing new, nothing trained: when the training set, config,
   code (trainer image) and training settings are exactly those the current champion was
   trained on, this task is skipped with the reason before any container starts, and so
   are evaluation and promotion; the summary says why. Otherwise the trainer image runs
   in a Docker container (GPU when the Docker host has the NVIDIA runtime), logs
   parameters, per-epoch metrics, datasets and
   the model to MLflow, and registers a new version of the registered model. With
   `MLOPS_LOOP_TRAINER_RUNNER=auto` on a worker without a Docker engine, the same trainer
   runs as a local process instead (the task log says so).
3. **evaluate_challenger**: reads the current `champion` alias, then (in the trainer image
   again: anything that loads a model runs there) scores the challenger and the champion
   on the same holdout rows, compares them with a paired test plus guardrails, floors and
   a latency/size budget (config `evaluation`), writes a decision record (JSON + HTML under
   `reports/decisions/`, and as MLflow artifacts) and tags the challenger version. Without
   a champion the challenger must beat a trivial baseline.
4. **approve_promotion**: with `evaluation.approval: required` and a `promote` decision,
   waits (without holding a worker slot) for a person to Approve or Reject in the UI's
   Required Actions, which show the decision summary and report path; no answer within
   `evaluation.approval_timeout_hours` rejects. Reject or timeout skips the promotion:
   nothing changes. Otherwise (the default `approval: none`, or another outcome) it passes
   at once.
5. **promote_or_reject**: when the decision is `promote` (and approved, where approval is
   required), moves `champion` to the challenger only if the champion is still the one
   evaluated against (compare-and-set; otherwise the task fails as *stale* and nothing
   changes). Other outcomes change nothing. Who approved and when is stored with the
   promotion (`approved_by`, `approved_at` tags and the audit trail).
6. **summary**: one line: promoted vN over vM, or rejected with the reasons (or by whom),
   and the decision report's path; or why nothing was trained.

The reason recorded on the model version, the decision record and the promotion is the
form's `reason`, or else what started the run: the drift report (date, drifted features,
report path) or the newly validated dates.

Runs on the assets `mlops_loop.{name}.validated` and `mlops_loop.{name}.retrain_requested`,
or from the trigger form: choose a model type, override hyperparameters of that model
type (checked against their bounds before any container starts) and say why. The form
stays inside this dataset: the hyperparameters object takes only the selected model
type's hyperparameters; any other key (`registered_model_name`, `experiment_name`,
`seed`, `device`, a section such as `mlp`, another model type's hyperparameter) fails
the training task at once, naming the key. The registered model, experiment and every
other training setting come from the config. The reason is kept as typed text.
Config: `{path}`.

Retries: every task retries transient faults (storage, tracking server, container
engine) twice with growing pauses, because each may run again with the same result: the
training set is content-addressed, training on identical input reuses the version it
registered, evaluation on the same holdout with the same seed decides the same, and a
promotion that already happened is a no-op (the challenger already is champion). Not
enough validated data, bad or refused hyperparameters and a stale champion fail at once.
"""

for entry in dataset_entries():
    with DAG(
        schedule=validated_asset(entry.name) | retrain_requested_asset(entry.name),
        **dag_arguments(
            entry,
            "train",
            description=f"Train a challenger for {entry.name}",
            doc=DOC,
            params={
                "model_type": choice_param(
                    ["mlp", "hist_gradient_boosting"],
                    default_label="As configured (training.model_type)",
                    title="Model type",
                    description="Which model to train; the first entry keeps the config's "
                    "training.model_type.",
                ),
                "hyperparameters": Param(
                    {},
                    type="object",
                    title="Hyperparameter overrides",
                    description="Hyperparameters of the selected model type only, for "
                    'example {"max_epochs": 20, "lr": 0.001} (mlp) or {"max_iter": 100} '
                    "(hist_gradient_boosting); each is checked against its bounds before a "
                    "container starts. Any other key (registered_model_name, seed, device, "
                    "...) fails the run, naming it: those come from the dataset config.",
                ),
                "until_ds": date_param(
                    "Train on validated data up to", "Empty: the most recent validated date."
                ),
                # Optional: with type "string" alone the UI holds the Trigger button until
                # something is typed.
                "reason": Param(
                    None,
                    type=["null", "string"],
                    maxLength=500,
                    title="Reason",
                    description="Why this run; recorded with the model version, the decision "
                    "record and the promotion. Empty: what started the run (the validated "
                    "date, the drift report and its drifted features).",
                ),
            },
        ),
    ):
        assemble = AssembleTrainingSetOperator(
            task_id="assemble_training_set",
            config_path=entry.path,
            until_ds="{{ params.until_ds }}",
        )
        train = DockerTrainOperator(
            task_id="train_challenger",
            config_path=entry.path,
            **entry.compute_queue_args(),
            train_snapshot_uri="{{ ti.xcom_pull(task_ids='assemble_training_set')['train_uri'] }}",
            valid_snapshot_uri="{{ ti.xcom_pull(task_ids='assemble_training_set')['valid_uri'] }}",
            model_type="{{ params.model_type }}",
            form_hyperparameters="{{ params.hyperparameters }}",
            reason=form_text("reason"),
            gpu="auto",
            mem_limit="4g",
            shm_size=256 * 1024 * 1024,
        )
        evaluate = EvaluateChallengerOperator(
            task_id="evaluate_challenger",
            config_path=entry.path,
            **entry.compute_queue_args(),
            holdout_snapshot_uri="{{ ti.xcom_pull(task_ids='assemble_training_set')['holdout_uri'] }}",
            model_name="{{ ti.xcom_pull(task_ids='train_challenger')['model_name'] }}",
            challenger_version="{{ ti.xcom_pull(task_ids='train_challenger')['model_version'] }}",
            reason=form_text("reason"),
            mem_limit="4g",
        )
        approve = PromotionApprovalOperator(
            task_id="approve_promotion",
            config_path=entry.path,
            decision="{{ ti.xcom_pull(task_ids='evaluate_challenger') }}",
        )
        promote = PromoteModelOperator(
            task_id="promote_or_reject",
            decision="{{ ti.xcom_pull(task_ids='evaluate_challenger') }}",
            # The decision is trainer output: it must be about this dataset's model and
            # the version this run trained.
            config_path=entry.path,
            challenger_version="{{ ti.xcom_pull(task_ids='train_challenger')['model_version'] }}",
            approval="{{ ti.xcom_pull(task_ids='approve_promotion') }}",
            reason=form_text("reason"),
        )

        # none_failed: also after a run that ended early (training skipped, nothing new).
        @task(task_id="summary", trigger_rule="none_failed")
        def summary(decision: dict | None, promotion: dict | None, ti: Any = None) -> str:
            from mlops_loop.core.decision_report import summarize

            up_to_date = ti.xcom_pull(task_ids="train_challenger", key="up_to_date")
            approval = ti.xcom_pull(task_ids="approve_promotion")
            if up_to_date:
                line = up_to_date["reason"]
            elif promotion is None and approval and approval.get("approval") != "approved":
                line = summarize(
                    {**(decision or {}), "outcome": f"promote {approval['approval']} by a person"},
                    None,
                )
            else:
                line = summarize(decision or {}, promotion)
            print(line)
            return line

        assemble >> train >> evaluate >> approve >> promote
        summary(evaluate.output, promote.output)  # type: ignore[arg-type]  # XComArgs resolve at run time

"""Score a challenger against the current champion: the ``evaluate`` command.

Anything that loads a model runs where the trainer runs (the models need torch and
scikit-learn; the Airflow worker stays light): this operator only reads the current
champion from the MLflow registry and builds the request. The comparison itself is
``mlops_loop.training.evaluate`` and ``mlops_loop.core.compare.decide``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlops_loop.operators.trainer import TrainerContainerOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from mlops_loop.core.config import DatasetConfig
    from mlops_loop.core.trainer_protocol import EvaluateRequest, TrainerRequest


class EvaluateChallengerOperator(TrainerContainerOperator):
    """Evaluate a registered challenger version against the champion on one holdout.

    Just before the trainer starts, the operator reads the ``champion`` alias of the
    registered model: that version is what the trainer scores beside the challenger and
    what a later PromoteModelOperator expects to find (compare-and-set). No champion (or
    a deleted one): the challenger is compared with the trivial baseline. The trainer
    scores both models on the same holdout rows, decides (config ``evaluation`` section),
    writes the decision record (JSON + HTML under
    ``{storage root}/reports/decisions/<decision_id>/`` and as MLflow artifacts of the
    challenger's run) and tags the challenger version with its validation status.

    Returns the decision: ``outcome`` (promote | reject | insufficient_data), ``reasons``,
    ``decision_id``, ``decision_uri``, ``html_uri``, ``model_name``,
    ``challenger_version``, ``expected_champion_version``, metric values, CI, guardrails,
    ``measurements`` (latency per 1k rows, model size). A holdout without the target
    column fails the task with the trainer's error.

    MLflow down: the champion lookup (the worker's MlflowHook client, with the trainer's
    timeouts and retries) fails the task with TrackingServerUnavailable, naming the
    server, before the trainer starts: within ``hooks.mlflow.probe_bound_s()`` (27 s with
    the defaults; about 7 s when the connection is refused). Nothing is written: no
    decision record, no validation tag, no container (docs/security.md, "MLflow down").

    :param config_path: Dataset config YAML. (templated)
    :param holdout_snapshot_uri: Holdout snapshot (the training set's ``holdout``). (templated)
    :param challenger_version: Registered version to evaluate. (templated)
    :param model_name: Registered model; default the config's
        ``training.registered_model_name``. (templated)
    :param reason: Why this evaluation runs; recorded in the decision record (context
        ``tag.reason``). Empty: derived from what started the run (the drift report and
        its drifted features, the validated dates, else the run type). (templated)
    :param kwargs: TrainerContainerOperator arguments (image, mlflow_conn_id, mem_limit,
        cpus, docker_url, network_mode, runner, ...); ``gpu`` defaults to ``none``.
    """

    trainer_command = "evaluate"
    template_fields: Sequence[str] = (
        "holdout_snapshot_uri",
        "challenger_version",
        "model_name",
        "reason",
        *TrainerContainerOperator.template_fields,
    )
    ui_color = "#e3d7f4"
    default_gpu = "none"  # scoring is cheap on the CPU; gpu="auto" opts in

    def __init__(
        self,
        *,
        holdout_snapshot_uri: str,
        challenger_version: str | int,
        model_name: str | None = None,
        reason: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.holdout_snapshot_uri = holdout_snapshot_uri
        self.challenger_version = challenger_version
        self.model_name = model_name
        self.reason = reason

    def build_request(self, context: Context, config: DatasetConfig) -> EvaluateRequest:
        from mlops_loop.core.config import given
        from mlops_loop.core.trainer_protocol import EvaluateRequest, config_payload
        from mlops_loop.operators.triggers import reason_for_run

        if not given(self.challenger_version):
            raise ValueError(
                "challenger_version is empty: which registered version should be evaluated?"
            )
        name = self.resolve_model_name(config, self.model_name)
        reason = reason_for_run(context, self.reason)
        return EvaluateRequest(
            config=config_payload(config),
            holdout_snapshot_uri=self.holdout_snapshot_uri,
            model_name=name,
            challenger_version=str(self.challenger_version).strip(),
            expected_champion_version=self.champion(name).version,
            tags={"reason": reason} if reason else {},
        )

    def input_paths(self, config: DatasetConfig, request: TrainerRequest) -> list[str | None]:
        return [config.root, self.holdout_snapshot_uri]

    def output_paths(self, config: DatasetConfig) -> list[str]:
        from mlops_loop.core.decision_report import decisions_root

        return [decisions_root(config.root)]

    def log_result(self, result: dict[str, Any]) -> None:
        self.log.info(
            "Decision %s for %s v%s (against %s): %s; record %s",
            result.get("decision_id"),
            result.get("model_name"),
            result.get("challenger_version"),
            result.get("compared_against"),
            result.get("outcome"),
            result.get("html_uri"),
        )

"""Move the ``champion`` alias: promotion after an evaluation, and manual rollback.

Both run on the Airflow worker and only talk to the MLflow registry (no model is loaded):
the logic is ``mlops_loop.core.registry.promote`` / ``rollback`` (compare-and-set under a
registry lock, with an audit trail). A stale promotion (the champion moved since the
evaluation) FAILS the task by default: the alias is left alone and the error says what
changed, so nobody mistakes the run for a promotion; re-run the evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from mlops_loop.hooks.mlflow import MlflowServerArguments

if TYPE_CHECKING:
    from airflow.sdk import Context


def _airflow_run(context: Context | None) -> str | None:
    ti = context.get("ti") if context else None
    return None if ti is None else f"{ti.dag_id}/{ti.run_id}/{ti.task_id}"


# Keys of an evaluation result that locate its decision report (html_uri in storage, the
# MLflow copy); a promotion result repeats them.
DECISION_REPORT_KEYS = (
    "html_uri",
    "artifact_run_id",
    "artifact_experiment_id",
    "html_artifact_path",
)


class PromoteModelOperator(MlflowServerArguments, BaseOperator):
    """Promote the evaluated challenger to ``champion`` when the decision says so.

    The decision is the EvaluateChallengerOperator's XCom (``decision``, templated) or a
    stored decision record (``decision_uri``). Unless its outcome is ``promote`` nothing
    changes (logged; returns outcome ``rejected``). Otherwise
    ``core.registry.promote`` moves the alias only if the champion still is the one the
    evaluation compared against (``expected_champion_version``): the version gets
    previous_champion, decision_uri, airflow_run, promoted_at and promotion_reason tags and
    the model an audit entry. Re-running after a promotion is a ``noop``.

    Returns ``{outcome: promoted | noop | stale | rejected, promoted_version,
    previous_champion, model_name, why, decision_id, summary}`` (and the recorded
    ``reason`` when the decision was ``promote``).

    :param decision: The evaluation's decision dict. (templated)
    :param decision_uri: Instead of ``decision``: URI of a stored ``decision.json``. (templated)
    :param approval: The PromotionApprovalOperator's record; ``approved`` stores who and when
        with the promotion (``approved_by`` / ``approved_at`` tags, audit entry), ``rejected``
        or ``timed_out`` changes nothing. (templated)
    :param reason: Why (recorded on the version as ``promotion_reason`` and in the audit
        trail). Empty: derived from what started the run (the drift report and its drifted
        features, the validated dates, else the run type), else the decision's reasons.
        (templated)
    :param model_name: Registered model; default the decision's ``model_name``. (templated)
    :param config_path: Dataset config YAML: a decision about any model but this dataset's
        ``training.registered_model_name`` is refused (the decision is the trainer's
        output, and the trainer runs code from model artifacts). (templated)
    :param challenger_version: The version this run trained (the train task's XCom): a
        decision about another version is refused. (templated)
    :param mlflow_conn_id: Airflow Connection of the MLflow server (mlops_loop.hooks.mlflow);
        default ``$MLOPS_LOOP_MLFLOW_CONN_ID`` or ``mlflow_default``, else
        ``$MLFLOW_TRACKING_URI``.
    :param mlflow_tracking_uri: Use this MLflow server instead. (templated)
    :param fail_on_stale: Fail the task when the champion moved since the evaluation
        (default); False ends the task successfully with outcome ``stale`` and a warning.
    """

    template_fields: Sequence[str] = (
        "decision",
        "decision_uri",
        "reason",
        "approval",
        "model_name",
        "config_path",
        "challenger_version",
        "mlflow_tracking_uri",
    )
    template_fields_renderers = {"decision": "json", "approval": "json"}
    ui_color = "#f4e3c1"

    def __init__(
        self,
        *,
        decision: dict[str, Any] | str | None = None,
        decision_uri: str | None = None,
        reason: str = "",
        approval: dict[str, Any] | str | None = None,
        model_name: str | None = None,
        config_path: str | None = None,
        challenger_version: str | int | None = None,
        mlflow_conn_id: str | None = None,
        mlflow_tracking_uri: str | None = None,
        fail_on_stale: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if decision is None and not decision_uri:
            raise ValueError("pass decision (the evaluate task's XCom) or decision_uri")
        self.decision = decision
        self.decision_uri = decision_uri
        self.reason = reason
        self.approval = approval
        self.model_name = model_name
        self.config_path = config_path
        self.challenger_version = challenger_version
        self.mlflow_conn_id = mlflow_conn_id
        self.mlflow_tracking_uri = mlflow_tracking_uri
        self.fail_on_stale = fail_on_stale

    def _check_subject(self, name: str, decision: Mapping[str, Any]) -> None:
        """Refuse a decision about another dataset's model or another version than this
        run trained: the decision comes from the trainer, which loads model artifacts."""
        from mlops_loop.core.config import given, load_config, training_settings
        from mlops_loop.exceptions import RegistryError

        if given(self.config_path):
            config = load_config(str(self.config_path))
            own = str(training_settings(config).registered_model_name)
            if name != own:
                raise RegistryError(
                    f"the decision is about model {name!r}, not {own!r}, the registered model "
                    f"of dataset {config.name!r}: refused, the champion does not move",
                    model_name=name,
                )
        if given(self.challenger_version):
            trained = str(self.challenger_version).strip()
            decided = str(decision.get("challenger_version") or "").strip()
            if decided != trained:
                raise RegistryError(
                    f"the decision is about version {decided or 'none'} of {name!r}, but this "
                    f"run trained version {trained}: refused, the champion does not move",
                    model_name=name,
                    version=decided or None,
                )

    def _load_decision(self) -> dict[str, Any]:
        from mlops_loop.core.decision_report import as_decision

        decision = as_decision(self.decision)
        if decision is not None:
            return decision
        if not self.decision_uri:
            raise ValueError("the decision rendered empty and no decision_uri was given")
        from mlops_loop.core.decision_report import read_decision_record
        from mlops_loop.core.storage import open_storage

        return read_decision_record(open_storage(self.decision_uri), self.decision_uri)

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_loop.core.config import given
        from mlops_loop.core.decision_report import as_decision, summarize
        from mlops_loop.exceptions import PromotionStale

        decision = self._load_decision()
        name = self.model_name or decision.get("model_name")
        if not name:
            raise ValueError("no model_name: pass it or use a decision that names the model")
        self._check_subject(str(name), decision)
        outcome = decision.get("outcome")
        # The approval task's record (operators/approval.py), when the DAG has one.
        approval = as_decision(self.approval) if given(self.approval) else None
        if (
            outcome == "promote"
            and approval
            and approval.get("approval") in ("rejected", "timed_out")
        ):
            decision = {**decision, "outcome": f"promote {approval['approval']} by a person"}
            outcome = decision["outcome"]
        base = {
            "model_name": name,
            "decision_id": decision.get("decision_id"),
            # Where the decision report is, for the task's "Decision report" link.
            **{key: decision.get(key) for key in DECISION_REPORT_KEYS if decision.get(key)},
        }
        if outcome != "promote":
            result = {
                **base,
                "outcome": "rejected",
                "promoted_version": None,
                "previous_champion": decision.get("expected_champion_version"),
                "why": f"decision {outcome}: " + "; ".join(map(str, decision.get("reasons") or [])),
            }
            result["summary"] = summarize(decision, result)
            self.log.info("Not promoting: %s", result["summary"])
            return result

        from mlops_loop.core.registry import promote
        from mlops_loop.operators.triggers import reason_for_run

        reason = reason_for_run(context, self.reason) or (
            f"decision {decision.get('decision_id')}: "
            + "; ".join(map(str, decision.get("reasons") or []))
        )
        promotion = promote(
            self.mlflow_hook.client,
            str(name),
            str(decision["challenger_version"]),
            expected_champion=decision.get("expected_champion_version"),
            decision_uri=decision.get("decision_uri") or self.decision_uri,
            airflow_run=_airflow_run(context),
            reason=reason,
            approval=approval,
        )
        result = {
            **base,
            "outcome": promotion.outcome,
            "promoted_version": promotion.version if promotion.outcome == "promoted" else None,
            "previous_champion": promotion.previous_champion,
            "why": promotion.detail,
            "reason": reason,
            "approval": approval,
        }
        result["summary"] = summarize(decision, result)
        if promotion.outcome == "stale":
            if self.fail_on_stale:
                raise PromotionStale(
                    f"stale promotion of {name} v{decision['challenger_version']}: {promotion.detail}",
                    model_name=str(name),
                    version=str(decision["challenger_version"]),
                    expected=promotion.expected_champion,
                    current=promotion.current_champion,
                )
            self.log.warning("%s", result["summary"])
        else:
            self.log.info("%s", result["summary"])
        return result


class RollbackChampionOperator(MlflowServerArguments, BaseOperator):
    """Move ``champion`` back to the previous champion (from the audit trail) or to a named
    version, through ``core.registry.rollback``.

    Refuses (RollbackRefused, the task fails at once) an empty reason, an unknown or
    deleted version and a target (named, or the previous champion) that did not pass
    validation (``validation_status`` other than ``passed``, or none), unless ``force``;
    a forced rollback is marked ``[forced]`` with its reason on the version and in the
    audit trail. Returns ``{outcome: rolled_back | noop, model_name, version,
    previous_champion, why, audit_seq}``.

    With ``config_path`` the operator acts on that dataset's registered model only (the
    rollback DAGs pass only the config: a form names no model): a ``model_name`` that is
    not the config's ``training.registered_model_name`` is refused.

    :param model_name: Registered model; empty: the ``training.registered_model_name`` of
        ``config_path``; with ``config_path`` it must be that name. (templated)
    :param config_path: Dataset config YAML whose training section names the model.
        (templated)
    :param reason: Why (required; recorded on the version and in the audit trail). Text
        stays text: pass a string. (templated)
    :param to_version: Target version; empty means the previous champion. (templated)
    :param force: Allow a target that did not pass validation (the reason is required
        and recorded as forced). (templated)
    :param mlflow_conn_id: Airflow Connection of the MLflow server (mlops_loop.hooks.mlflow).
    :param mlflow_tracking_uri: Use this MLflow server instead. (templated)
    """

    template_fields: Sequence[str] = (
        "model_name",
        "config_path",
        "reason",
        "to_version",
        "force",
        "mlflow_tracking_uri",
    )
    ui_color = "#f7d6d6"

    def __init__(
        self,
        *,
        model_name: str | None = None,
        config_path: str | None = None,
        reason: str,
        to_version: str | int | None = None,
        force: bool | str = False,
        mlflow_conn_id: str | None = None,
        mlflow_tracking_uri: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not model_name and not config_path:
            raise ValueError(
                "pass model_name or config_path (whose training section names the model)"
            )
        if not reason or not str(reason).strip():
            raise ValueError("a rollback needs a reason")
        self.model_name = model_name
        self.config_path = config_path
        self.reason = reason
        self.to_version = to_version
        self.force = force
        self.mlflow_conn_id = mlflow_conn_id
        self.mlflow_tracking_uri = mlflow_tracking_uri

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_loop.core.config import given, load_config, parse_flag, training_settings
        from mlops_loop.core.registry import rollback
        from mlops_loop.exceptions import RollbackRefused

        name = str(self.model_name).strip() if given(self.model_name) else None
        if given(self.config_path):
            config = load_config(str(self.config_path))
            own = str(training_settings(config).registered_model_name)
            if name is not None and name != own:
                raise RollbackRefused(
                    f"model {name!r} is not the registered model of dataset {config.name!r} "
                    f"({own!r}): a rollback of this dataset acts on {own!r} only; the "
                    "champion does not move",
                    model_name=name,
                )
            name = own
        if not name:
            raise ValueError("model_name rendered empty and no config_path was given")
        to_version = str(self.to_version).strip() if given(self.to_version) else None
        force = parse_flag(self.force, "force")
        result = rollback(
            self.mlflow_hook.client,
            str(name),
            to_version=to_version,
            reason=str(self.reason),
            force=force,
            airflow_run=_airflow_run(context),
        )
        self.log.info("%s", result.detail)
        return {
            "outcome": result.outcome,
            "model_name": result.model_name,
            "version": result.version,
            "previous_champion": result.previous_champion,
            "why": result.detail,
            "audit_seq": result.audit_seq,
        }

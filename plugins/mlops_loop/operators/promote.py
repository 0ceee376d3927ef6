"""Move the ``champion`` alias: promotion after an evaluation, and manual rollback.

Both run on the Airflow worker and only talk to the MLflow registry (no model is loaded):
the logic is ``mlops_loop.core.registry.promote`` / ``rollback`` (compare-and-set under a
registry lock, with an audit trail). A stale promotion (the champion moved since the
evaluation) FAILS the task by default: the alias is left alone and the error says what
changed, so nobody mistakes the run for a promotion; re-run the evaluation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


def _tracking_uri(explicit: str | None) -> str:
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ValueError(
            "no MLflow tracking URI: pass mlflow_tracking_uri or set MLFLOW_TRACKING_URI"
        )
    return uri


def _airflow_run(context: Context | None) -> str | None:
    ti = context.get("ti") if context else None
    return None if ti is None else f"{ti.dag_id}/{ti.run_id}/{ti.task_id}"


def as_decision(value: Any) -> dict[str, Any] | None:
    """A decision dict from what templating produced: a dict, its JSON text or its
    Python repr (a DAG without ``render_template_as_native_obj``); None when empty."""
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            import ast

            parsed = ast.literal_eval(value)
        if isinstance(parsed, dict):
            return parsed
    raise ValueError(
        f"decision must be a dict (the evaluate task's XCom), got {type(value).__name__}"
    )


def summarize(decision: Mapping[str, Any], promotion: Mapping[str, Any] | None) -> str:
    """One line for the log and the run's summary: what happened and where the record is."""
    name = decision.get("model_name", "model")
    challenger = decision.get("challenger_version")
    against = decision.get("expected_champion_version")
    reasons = "; ".join(map(str, decision.get("reasons") or [])) or "no reasons recorded"
    record = decision.get("html_uri") or decision.get("decision_uri") or "no record"
    outcome = (promotion or {}).get("outcome")
    if outcome == "promoted":
        head = f"{name}: promoted v{challenger} over {'v' + str(against) if against else 'the baseline (no champion)'}"
    elif outcome == "noop":
        head = f"{name}: v{challenger} already is champion; nothing changed"
    elif outcome == "stale":
        head = f"{name}: NOT promoted v{challenger}: {promotion.get('why') if promotion else ''}"
    else:
        head = f"{name}: {decision.get('outcome', 'rejected')} v{challenger}: {reasons}"
        return f"{head} (decision report {record})"
    return f"{head}: {reasons} (decision report {record})"


class PromoteModelOperator(BaseOperator):
    """Promote the evaluated challenger to ``champion`` when the decision says so.

    The decision is the EvaluateChallengerOperator's XCom (``decision``, templated) or a
    stored decision record (``decision_uri``). Unless its outcome is ``promote`` nothing
    changes (logged; returns outcome ``rejected``). Otherwise
    ``core.registry.promote`` moves the alias only if the champion still is the one the
    evaluation compared against (``expected_champion_version``): the version gets
    previous_champion, decision_uri, airflow_run, promoted_at and promotion_reason tags and
    the model an audit entry. Re-running after a promotion is a ``noop``.

    Returns ``{outcome: promoted | noop | stale | rejected, promoted_version,
    previous_champion, model_name, why, decision_id, summary}``.

    :param decision: The evaluation's decision dict. (templated)
    :param decision_uri: Instead of ``decision``: URI of a stored ``decision.json``. (templated)
    :param reason: Why (recorded on the version and in the audit trail). (templated)
    :param model_name: Registered model; default the decision's ``model_name``. (templated)
    :param mlflow_tracking_uri: MLflow server; default ``$MLFLOW_TRACKING_URI``. (templated)
    :param fail_on_stale: Fail the task when the champion moved since the evaluation
        (default); False ends the task successfully with outcome ``stale`` and a warning.
    """

    template_fields: Sequence[str] = (
        "decision",
        "decision_uri",
        "reason",
        "model_name",
        "mlflow_tracking_uri",
    )
    template_fields_renderers = {"decision": "json"}
    ui_color = "#f4e3c1"

    def __init__(
        self,
        *,
        decision: dict[str, Any] | str | None = None,
        decision_uri: str | None = None,
        reason: str = "",
        model_name: str | None = None,
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
        self.model_name = model_name
        self.mlflow_tracking_uri = mlflow_tracking_uri
        self.fail_on_stale = fail_on_stale

    def _load_decision(self) -> dict[str, Any]:
        decision = as_decision(self.decision)
        if decision is not None:
            return decision
        if not self.decision_uri:
            raise ValueError("the decision rendered empty and no decision_uri was given")
        from mlops_loop.core.decision_report import read_decision_record
        from mlops_loop.core.storage import open_storage

        return read_decision_record(open_storage(self.decision_uri), self.decision_uri)

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_loop.exceptions import PromotionStale

        decision = self._load_decision()
        name = self.model_name or decision.get("model_name")
        if not name:
            raise ValueError("no model_name: pass it or use a decision that names the model")
        outcome = decision.get("outcome")
        base = {"model_name": name, "decision_id": decision.get("decision_id")}
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

        from mlflow import MlflowClient

        from mlops_loop.core.registry import promote

        reason = self.reason or f"decision {decision.get('decision_id')}: " + "; ".join(
            map(str, decision.get("reasons") or [])
        )
        promotion = promote(
            MlflowClient(tracking_uri=_tracking_uri(self.mlflow_tracking_uri)),
            str(name),
            str(decision["challenger_version"]),
            expected_champion=decision.get("expected_champion_version"),
            decision_uri=decision.get("decision_uri") or self.decision_uri,
            airflow_run=_airflow_run(context),
            reason=reason,
        )
        result = {
            **base,
            "outcome": promotion.outcome,
            "promoted_version": promotion.version if promotion.outcome == "promoted" else None,
            "previous_champion": promotion.previous_champion,
            "why": promotion.detail,
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


class RollbackChampionOperator(BaseOperator):
    """Move ``champion`` back to the previous champion (from the audit trail) or to a named
    version, through ``core.registry.rollback``.

    Refuses (RollbackRefused, the task fails) an empty reason, an unknown or deleted
    version, a named version that did not pass validation and a previous champion that
    failed it, unless ``force``. Returns ``{outcome: rolled_back | noop, model_name,
    version, previous_champion, why, audit_seq}``.

    :param model_name: Registered model; empty: the ``training.registered_model_name`` of
        ``config_path``. (templated)
    :param config_path: Dataset config YAML naming the model when ``model_name`` is
        empty. (templated)
    :param reason: Why (required; recorded on the version and in the audit trail). (templated)
    :param to_version: Target version; empty means the previous champion. (templated)
    :param force: Allow a target that did not pass validation. (templated)
    :param mlflow_tracking_uri: MLflow server; default ``$MLFLOW_TRACKING_URI``. (templated)
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
        self.mlflow_tracking_uri = mlflow_tracking_uri

    def execute(self, context: Context) -> dict[str, Any]:
        from mlflow import MlflowClient

        from mlops_loop.core.registry import rollback

        name = self.model_name
        if not name:
            if not self.config_path:
                raise ValueError("model_name rendered empty and no config_path was given")
            from mlops_loop.core.config import load_config, training_settings

            name = str(training_settings(load_config(self.config_path)).registered_model_name)
        to_version = None if self.to_version in (None, "", "None") else str(self.to_version).strip()
        force = (
            self.force
            if isinstance(self.force, bool)
            else str(self.force).strip().lower() in ("true", "1", "yes")
        )
        result = rollback(
            MlflowClient(tracking_uri=_tracking_uri(self.mlflow_tracking_uri)),
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

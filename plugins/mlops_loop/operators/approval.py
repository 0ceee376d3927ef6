"""A person approves a promotion before the champion moves (config ``evaluation.approval``).

Built on Airflow's human-in-the-loop ApprovalOperator: the task waits in the
``awaiting_input`` state without holding a worker slot, shows the decision summary and
the report link in the UI's Required Actions, and resumes when someone answers (or the
timeout takes the default). Approve: the promotion runs (still compare-and-set). Reject
or timeout: the promotion is skipped and nothing changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class PromotionApprovalOperator(ApprovalOperator):
    """Wait for a person to approve a ``promote`` decision, when the config asks for it.

    Does not wait (returns at once) when ``evaluation.approval`` is ``none`` or the decision
    is not ``promote``. Otherwise asks "Approve" / "Reject" with the decision summary and
    report link, for at most ``evaluation.approval_timeout_hours``; a timeout takes
    "Reject". Reject and timeout skip the promotion task.

    Returns the approval record the promotion stores with the champion: ``approval``
    (``not_required``, ``not_needed``, ``approved``, ``rejected`` or ``timed_out``), ``by``
    (the user who answered), ``at`` (when), ``decision_id``.

    :param config_path: Dataset config YAML. (templated)
    :param decision: The evaluation's decision dict (its XCom). (templated)
    """

    template_fields: Sequence[str] = ("config_path", "decision", *ApprovalOperator.template_fields)
    template_fields_renderers = {"decision": "json"}
    ui_color = "#fff3bf"

    def __init__(
        self,
        *,
        config_path: str,
        decision: dict[str, Any] | str,
        subject: str = "Approve the promotion",
        **kwargs: Any,
    ) -> None:
        for fixed in ("defaults", "response_timeout"):
            if fixed in kwargs:
                raise ValueError(
                    f"{fixed} is not an argument here: the dataset config's evaluation section "
                    "sets the timeout, and a timeout always rejects"
                )
        super().__init__(subject=subject, defaults=[ApprovalOperator.REJECT], **kwargs)
        self.config_path = config_path
        self.decision = decision

    def execute(self, context: Context) -> Any:
        from mlops_loop.core.config import load_config
        from mlops_loop.core.decision_report import approval_request, as_decision

        config = load_config(self.config_path)
        decision = as_decision(self.decision) or {}
        decision_id = decision.get("decision_id")
        if config.evaluation.approval != "required":
            self.log.info("evaluation.approval is %s: no approval needed", config.evaluation.approval)
            return {"approval": "not_required", "by": None, "at": None, "decision_id": decision_id}
        if decision.get("outcome") != "promote":
            self.log.info("The decision is %s, not promote: nothing to approve", decision.get("outcome"))
            return {"approval": "not_needed", "by": None, "at": None, "decision_id": decision_id}
        self.subject, self.body = approval_request(decision)
        self.response_timeout = timedelta(hours=config.evaluation.approval_timeout_hours)
        self.log.info(
            "Waiting up to %s for a person to approve: %s", self.response_timeout, self.subject
        )
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        from mlops_loop.core.decision_report import as_decision

        if "error" in event:  # no answer and no default: the base class raises
            return super().execute_complete(context=context, event=event)
        chosen = list(event.get("chosen_options") or [])
        user = event.get("responded_by_user") or {}
        at: Any = event.get("responded_at")  # a datetime from the API, text once serialised
        if event.get("timedout"):
            verdict = "timed_out"
        else:
            verdict = "approved" if chosen == [ApprovalOperator.APPROVE] else "rejected"
        record = {
            "approval": verdict,
            "by": user.get("name") or user.get("id"),
            "at": at.isoformat() if isinstance(at, datetime) else at,
            "decision_id": (as_decision(self.decision) or {}).get("decision_id"),
        }
        self.log.info("Promotion %s by %s at %s", verdict, record["by"] or "nobody", record["at"])
        # Pushed first: on reject the base class ends the task by skipping the promotion
        # (an exception in Airflow 3), so a return value would never be stored.
        context["ti"].xcom_push(key="return_value", value=record)
        super().execute_complete(context=context, event=event)  # validates; skips on reject
        return record

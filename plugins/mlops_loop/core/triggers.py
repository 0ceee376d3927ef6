"""What started a run: its asset events as plain data, the reason derived from them and the
dates they name.

Airflow-free. An operator turns ``context["triggering_asset_events"]`` into
:class:`TriggerEvent` objects (``mlops_loop.operators.triggers``) and makes one call here:

* :func:`run_reason`: the reason recorded on the model version, the decision record and
  the promotion. A reason typed into the trigger form wins; otherwise the events say why
  (the drift report's date, the drifted features and the report; the newly validated
  dates); otherwise the kind of run (manual, scheduled, ...).
* :func:`event_dates`: the ``ds`` the events carry, which the training window must reach.

Event extras, as written by the producers: ``validated`` (``DataQualityOperator``):
dataset, ds, snapshot_uri, sha256, result_uri; ``retrain_requested``
(``core.retrain.RetrainDecision.asset_extra``): dataset, reason, ds, verdict,
decay_verdict, report_uri.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlops_loop.core.config import given

MAX_REASON_CHARS = 500  # the reason tag's limit on model versions and in the trigger form
VALIDATED = "validated"
RETRAIN_REQUESTED = "retrain_requested"
_DS = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SHOWN_DATES = 5  # validated dates named one by one before "and N more"

# What a run without a form reason and without events was, by Airflow's run type.
RUN_TYPE_REASONS = {
    "manual": "manual run (no reason given)",
    "scheduled": "scheduled run",
    "backfill": "backfill run",
    "asset_triggered": "asset-triggered run (its events carried no details)",
    "asset_materialization": "asset materialization run",
    "operator_triggered": "triggered by another DAG (no reason given)",
}


@dataclass(frozen=True)
class TriggerEvent:
    """One asset event that started the run, as plain data.

    :param asset: the asset's name, e.g. ``mlops_loop.credit_default.retrain_requested``.
    :param extra: the event's extra.
    :param source: ``<dag_id>/<run_id>`` of the run that emitted it, when known.
    """

    asset: str
    extra: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def kind(self) -> str:
        """``validated``, ``retrain_requested`` or ``other``, from the asset's name."""
        suffix = self.asset.rsplit(".", 1)[-1]
        return suffix if suffix in (VALIDATED, RETRAIN_REQUESTED) else "other"

    @property
    def ds(self) -> str | None:
        """The event's ``ds`` when it is a date ``YYYY-MM-DD`` (None otherwise)."""
        value = self.extra.get("ds")
        return value if isinstance(value, str) and _DS.match(value) else None


def event_dates(events: Iterable[TriggerEvent]) -> list[str]:
    """The distinct ``ds`` of the validated and retrain_requested events, oldest first."""
    return sorted({e.ds for e in events if e.kind != "other" and e.ds})


def run_reason(
    form_reason: str | None,
    events: Sequence[TriggerEvent] = (),
    run_type: str | None = None,
) -> str:
    """Why this run happened, in one line of at most ``MAX_REASON_CHARS`` characters.

    1. ``form_reason`` when given (typed into the trigger form or passed to the operator);
    2. else the events: one phrase per retrain request (``drift report <ds>: <its
       reason> (report <uri>)``), then one for the newly validated dates; other assets
       are named;
    3. else the run type (``manual run (no reason given)``, ``scheduled run``, ...);
    4. else ``""``: nothing is known (the caller keeps its own default).
    """
    if given(form_reason):
        return _clip(" ".join(str(form_reason).split()))
    phrases: list[str] = []
    for event in events:
        if event.kind == RETRAIN_REQUESTED:
            phrase = _retrain_phrase(event)
        elif event.kind == "other":
            phrase = f"asset event {event.asset}" + (f" from {event.source}" if event.source else "")
        else:
            continue
        if phrase not in phrases:
            phrases.append(phrase)
    validated = sorted({e.ds or "an unknown date" for e in events if e.kind == VALIDATED})
    if validated:
        shown = ", ".join(validated[:_SHOWN_DATES])
        more = len(validated) - _SHOWN_DATES
        phrases.append(
            "new validated data for " + shown + (f" and {more} more dates" if more > 0 else "")
        )
    if phrases:
        return _clip("; ".join(phrases))
    kind = getattr(run_type, "value", run_type)
    if kind:
        return RUN_TYPE_REASONS.get(str(kind), f"{kind} run")
    return ""


def _retrain_phrase(event: TriggerEvent) -> str:
    extra = event.extra
    cause = str(extra.get("reason") or "").strip()
    if not cause:
        verdicts = [
            f"{name} {extra[key]}"
            for name, key in (("drift verdict", "verdict"), ("decay verdict", "decay_verdict"))
            if extra.get(key)
        ]
        cause = "retraining requested" + (f" ({', '.join(verdicts)})" if verdicts else "")
    head = f"drift report {event.ds}" if event.ds else "drift monitor"
    report = str(extra.get("report_uri") or "").strip()
    return f"{head}: {cause}" + (f" (report {report})" if report else "")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."

"""The retraining policy and its record: whether drift or decay starts retraining, at most
once per cool-down, and where the requests are recorded.

Airflow-free. ``RequestRetrainingOperator`` is one call::

    decision = request_retraining(config, drift_result, now=run_time(context), run_id=...)

which reads ``<root>/reports/drift/retrain_requests.json``, decides with
:func:`should_retrain` (the config's ``drift.retrain_on`` and ``drift.cool_down_hours``)
and, when it fires, appends the request (atomic rewrite). ``now`` is the run's time, never
the clock, so a re-run of a run decides the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mlops_loop.core.drift import DriftResult
from mlops_loop.core.profile import PREDICTION
from mlops_loop.exceptions import DriftError, RetrainRecordError

if TYPE_CHECKING:
    from mlops_loop.core.config import DatasetConfig, DriftSettings
    from mlops_loop.core.storage import S3Credentials, Storage

RETRAIN_RECORD_NAME = "retrain_requests.json"
# Keys of the retrain_requested Asset event extra (what the training DAG can read).
ASSET_EXTRA_KEYS = ("dataset", "reason", "ds", "verdict", "decay_verdict", "report_uri")


# --------------------------------------------------------------------------- where and when


def drift_reports_root(config: DatasetConfig) -> str:
    """``<root>/reports/drift``: reports, reference profiles and the retrain record."""
    from mlops_loop.core.storage import join_uri

    return join_uri(config.root, "reports", "drift")


def drift_window(ds: str, window_days: int, since_ds: str | None = None) -> tuple[str, str]:
    """(since, until): ``[ds - window_days + 1, ds]`` unless ``since_ds`` is given."""
    from mlops_loop.core.config import check_ds

    def day(text: str) -> date:
        try:
            return date.fromisoformat(check_ds(text))
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a date YYYY-MM-DD: {exc}") from exc

    until = day(ds)
    since = day(since_ds) if since_ds else until - timedelta(days=window_days - 1)
    if since > until:
        raise ValueError(f"window start {since} is after its end {until}")
    return since.isoformat(), until.isoformat()


# --------------------------------------------------------------------------- policy


def should_retrain(
    result: DriftResult | dict[str, Any] | None,
    decay: dict[str, Any] | None,
    last_trigger_time: datetime | None,
    now: datetime,
    settings: DriftSettings,
) -> tuple[bool, str]:
    """Whether drift / decay is over policy and outside the cool-down, with the reason.

    ``now`` is passed in (the run's logical time), never read from the clock, so a re-run
    decides the same. ``last_trigger_time``: the previous drift-triggered retraining.
    """
    verdict = (
        result.verdict if isinstance(result, DriftResult) else (result or {}).get("verdict")
    ) or "none"
    causes = []
    if "drift" in settings.retrain_on and verdict == "drift":
        if isinstance(result, DriftResult):
            names = result.drifted_features + (
                [PREDICTION] if result.prediction_verdict == "drift" else []
            )
        else:
            names = list((result or {}).get("drifted_features", []))
            if (result or {}).get("prediction_verdict") == "drift":
                names.append(PREDICTION)
        causes.append(f"drift in {', '.join(names)}")
    if "decay" in settings.retrain_on and decay is not None and decay.get("verdict") == "decay":
        causes.append(f"decay: {decay.get('reason', '')}")
    if not causes:
        decay_verdict = decay.get("verdict") if decay else "not measured"
        return False, f"not over policy (drift verdict {verdict}, decay verdict {decay_verdict})"
    cause = "; ".join(causes)
    if last_trigger_time is not None:
        if (last_trigger_time.tzinfo is None) != (now.tzinfo is None):
            raise DriftError("last_trigger_time and now must both be timezone-aware or both naive")
        next_allowed = last_trigger_time + timedelta(hours=settings.cool_down_hours)
        if now < next_allowed:
            return False, (
                f"{cause}; but in cool-down: last drift-triggered retraining at "
                f"{last_trigger_time.isoformat()}, next allowed at {next_allowed.isoformat()}"
            )
    return True, cause


# --------------------------------------------------------------------------- the record


def read_retrain_requests(storage: Storage, uri: str) -> list[dict[str, Any]]:
    """The recorded drift-triggered retrain requests, oldest first ([] when none yet)."""
    from mlops_loop.core.storage import read_json

    if not storage.exists(uri):
        return []
    try:
        doc = read_json(storage, uri)
    except ValueError as exc:
        raise RetrainRecordError(
            f"retrain request record {uri} is not JSON: {exc}", uri=uri
        ) from exc
    requests = doc.get("requests") if isinstance(doc, dict) else None
    if not isinstance(requests, list) or not all(
        isinstance(r, dict) and isinstance(r.get("time"), str) for r in requests
    ):
        raise RetrainRecordError(
            f"retrain request record {uri} has no list of requests with a 'time' each", uri=uri
        )
    return requests


def last_retrain_time(requests: list[dict[str, Any]]) -> datetime | None:
    """The latest request time (timezone-aware ISO strings in the record)."""
    times = [datetime.fromisoformat(r["time"]) for r in requests]
    return max(times) if times else None


def record_retrain_request(
    storage: Storage, uri: str, entry: dict[str, Any]
) -> list[dict[str, Any]]:
    """Append ``entry`` (must carry ``time``) and rewrite the record atomically."""
    from mlops_loop.core.storage import write_json

    requests = [*read_retrain_requests(storage, uri), dict(entry)]
    write_json(storage, uri, {"format": 1, "requests": requests})
    return requests


# --------------------------------------------------------------------------- the request


@dataclass(frozen=True)
class RetrainDecision:
    """Whether retraining fires and why; ``entry`` is the recorded request when it fires,
    ``record_uri`` the record it was checked against (None when no record was needed)."""

    fire: bool
    reason: str
    entry: dict[str, Any] | None = None
    record_uri: str | None = None

    @property
    def asset_extra(self) -> dict[str, Any]:
        """The ``retrain_requested`` Asset event extra ({} when it did not fire)."""
        return {k: self.entry[k] for k in ASSET_EXTRA_KEYS} if self.entry else {}


def request_retraining(
    config: DatasetConfig,
    drift_result: dict[str, Any],
    now: datetime,
    *,
    run_id: str | None = None,
    credentials: S3Credentials | None = None,
) -> RetrainDecision:
    """Decide whether the drift monitor's result starts retraining; record it when it does.

    ``drift_result``: the monitor result (verdict, drifted_features, prediction_verdict,
    decay_verdict, decay_reason, ds, report_uri, champion_version). ``now``: the run's time
    (``core.config.run_time``). A result without a champion never fires. Otherwise
    :func:`should_retrain` decides against the last request in the record; a request that
    fires is appended with ``time=now`` and ``airflow_run_id=run_id``. Raises
    :class:`RetrainRecordError` for a corrupt record (rather than retraining blindly).
    """
    from mlops_loop.core.storage import join_uri, open_storage

    if drift_result.get("verdict") == "no_champion":
        return RetrainDecision(False, "no champion: nothing to retrain from drift")
    uri = join_uri(drift_reports_root(config), RETRAIN_RECORD_NAME)
    storage = open_storage(uri, credentials)
    decay = {
        "verdict": drift_result.get("decay_verdict"),
        "reason": drift_result.get("decay_reason") or "",
    }
    last = last_retrain_time(read_retrain_requests(storage, uri))
    fire, reason = should_retrain(drift_result, decay, last, now, config.drift)
    if not fire:
        return RetrainDecision(False, reason, record_uri=uri)
    entry = {
        "time": now.isoformat(),
        "dataset": config.name,
        "reason": reason,
        "ds": drift_result.get("ds"),
        "verdict": drift_result.get("verdict"),
        "decay_verdict": drift_result.get("decay_verdict"),
        "report_uri": drift_result.get("report_uri"),
        "champion_version": drift_result.get("champion_version"),
        "airflow_run_id": run_id,
    }
    record_retrain_request(storage, uri, entry)
    return RetrainDecision(True, reason, entry, uri)

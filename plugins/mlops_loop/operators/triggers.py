"""What started a run, read from an Airflow task context as plain data for
``mlops_loop.core.triggers`` (which knows nothing of Airflow).

``context["triggering_asset_events"]`` maps each asset (and asset alias) to the events of
it that the run consumed; each event has ``asset.name``, ``extra``, ``source_dag_id`` and
``source_run_id``. A run started from the form or the REST API has none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlops_loop.core.triggers import TriggerEvent, run_reason


def trigger_events(context: Mapping[str, Any] | None) -> list[TriggerEvent]:
    """The run's triggering asset events, each once (an event reached through an asset
    alias is listed under the alias too), oldest first."""
    mapping = (context or {}).get("triggering_asset_events") or {}
    seen: set[tuple[str, str, str]] = set()
    found: list[tuple[str, TriggerEvent]] = []
    for asset_key in list(mapping):  # a snapshot of the keys: the accessor is a defaultdict inside
        for event in mapping[asset_key] or ():
            asset = str(getattr(getattr(event, "asset", None), "name", "") or "")
            dag_id, run_id = getattr(event, "source_dag_id", None), getattr(event, "source_run_id", None)
            when = str(getattr(event, "timestamp", "") or "")
            identity = (asset, when, f"{dag_id}/{run_id}")
            if identity in seen:
                continue
            seen.add(identity)
            found.append(
                (
                    when,
                    TriggerEvent(
                        asset=asset,
                        extra=dict(getattr(event, "extra", None) or {}),
                        source=f"{dag_id}/{run_id}" if dag_id and run_id else "",
                    ),
                )
            )
    return [event for _, event in sorted(found, key=lambda item: item[0])]


def reason_for_run(context: Mapping[str, Any] | None, explicit: Any = None) -> str:
    """``explicit`` when given, else the reason derived from the run's triggering events,
    else from its run type; ``""`` when the context says nothing (see
    ``core.triggers.run_reason``)."""
    dag_run = (context or {}).get("dag_run")
    run_type = getattr(dag_run, "run_type", None) if dag_run is not None else None
    return run_reason(explicit, trigger_events(context), run_type=run_type)

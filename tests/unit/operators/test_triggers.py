"""operators/triggers.py: the run's triggering asset events read from a task context built
with the task SDK's own accessor (what ``context["triggering_asset_events"]`` is in a
task), and the reason the train, evaluate and promote operators record."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mlops_loop.operators.triggers import reason_for_run, trigger_events

REPO = Path(__file__).resolve().parents[3]
CONFIG = str(REPO / "include" / "config" / "credit_default.yaml")
T0 = datetime(2026, 4, 22, 2, tzinfo=timezone.utc)
REPORT = "/data/credit_default/reports/drift/ds=2026-04-22/report.html"
DRIFT_EXTRA = {
    "dataset": "credit_default",
    "reason": "drift in interest_rate, credit_score",
    "ds": "2026-04-22",
    "verdict": "drift",
    "decay_verdict": "none",
    "report_uri": REPORT,
}


def event(name: str, extra: dict[str, Any], minutes: int = 0, aliases: tuple[str, ...] = ()) -> Any:
    from airflow.sdk.api.datamodels._generated import (
        AssetAliasReferenceAssetEventDagRun,
        AssetReferenceAssetEventDagRun,
    )
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult

    from mlops_loop.assets import retrain_requested_asset, validated_asset

    asset = (validated_asset if name.endswith("validated") else retrain_requested_asset)(
        "credit_default"
    )
    return AssetEventDagRunReferenceResult(
        asset=AssetReferenceAssetEventDagRun(name=asset.name, uri=asset.uri, extra={}),
        extra=extra,
        source_task_id="t",
        source_dag_id="mlops_drift__credit_default",
        source_run_id=f"scheduled__{minutes}",
        source_map_index=-1,
        source_aliases=[AssetAliasReferenceAssetEventDagRun(name=a) for a in aliases],
        timestamp=T0 + timedelta(minutes=minutes),
    )


def context(*events: Any, run_type: str = "asset_triggered") -> dict[str, Any]:
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    return {
        "triggering_asset_events": TriggeringAssetEventsAccessor.build(events),
        "dag_run": SimpleNamespace(run_type=run_type),
    }


def test_events_from_the_task_sdk_accessor_once_each_oldest_first():
    ctx = context(
        event("mlops_loop.credit_default.validated", {"ds": "2026-04-23"}, minutes=5),
        event("mlops_loop.credit_default.retrain_requested", DRIFT_EXTRA, aliases=("an_alias",)),
    )
    events = trigger_events(ctx)
    assert [(e.kind, e.ds) for e in events] == [
        ("retrain_requested", "2026-04-22"),
        ("validated", "2026-04-23"),
    ]
    assert events[0].source == "mlops_drift__credit_default/scheduled__0"
    assert reason_for_run(ctx) == (
        f"drift report 2026-04-22: drift in interest_rate, credit_score (report {REPORT}); "
        "new validated data for 2026-04-23"
    )


@pytest.mark.parametrize(
    ("ctx", "explicit", "expected"),
    [
        pytest.param(None, None, "", id="no-context"),
        pytest.param({}, "", "", id="empty-context"),
        pytest.param({}, "typed", "typed", id="explicit"),
        pytest.param(
            {"dag_run": SimpleNamespace(run_type="manual")},
            "None",
            "manual run (no reason given)",
            id="manual-run-empty-form",
        ),
    ],
)
def test_reason_for_run_without_events(ctx, explicit, expected):
    assert trigger_events(ctx) == []
    assert reason_for_run(ctx, explicit) == expected


def test_train_request_carries_the_derived_reason_and_the_form_wins():
    from mlops_loop.core.config import load_config
    from mlops_loop.operators.docker_train import DockerTrainOperator

    config = load_config(CONFIG)
    ctx = context(event("mlops_loop.credit_default.retrain_requested", DRIFT_EXTRA))

    def op(reason: str | None) -> DockerTrainOperator:
        return DockerTrainOperator(
            task_id="train",
            config_path=CONFIG,
            train_snapshot_uri="/t",
            valid_snapshot_uri="/v",
            reason=reason,
            docker_url="unix:///nonexistent/docker.sock",
        )

    derived = op("").build_request(ctx, config).tags["reason"]
    assert derived.startswith("drift report 2026-04-22: drift in interest_rate, credit_score")
    assert REPORT in derived
    assert op("a person's reason").build_request(ctx, config).tags == {"reason": "a person's reason"}
    assert op(None).build_request({}, config).tags == {}


def test_evaluate_request_carries_the_reason(monkeypatch):
    from mlops_loop.core.config import load_config
    from mlops_loop.core.registry import ChampionStatus
    from mlops_loop.operators.evaluate import EvaluateChallengerOperator

    op = EvaluateChallengerOperator(
        task_id="evaluate",
        config_path=CONFIG,
        holdout_snapshot_uri="/h",
        challenger_version="2",
        reason="{{ params.reason }}",
    )
    assert "reason" in op.template_fields
    # The champion lookup is the registry's (tested against a real server elsewhere).
    monkeypatch.setattr(
        op, "champion", lambda name: ChampionStatus(name, "present", "1", "champion is version 1")
    )
    op.reason = ""  # what an empty form field renders to
    ctx = context(event("mlops_loop.credit_default.retrain_requested", DRIFT_EXTRA))
    request = op.build_request(ctx, load_config(CONFIG))
    assert request.tags["reason"].startswith("drift report 2026-04-22: drift in interest_rate")
    assert request.expected_champion_version == "1"

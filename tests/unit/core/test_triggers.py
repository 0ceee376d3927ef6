"""core/triggers.py: the reason of a run from what started it, and the dates its events name."""

from __future__ import annotations

import pytest

from mlops_loop.core.triggers import MAX_REASON_CHARS, TriggerEvent, event_dates, run_reason

VALIDATED = "mlops_loop.credit_default.validated"
RETRAIN = "mlops_loop.credit_default.retrain_requested"
REPORT = "/data/credit_default/reports/drift/ds=2026-04-22/report.html"


def validated(ds: str, sha: str = "ab" * 32) -> TriggerEvent:
    return TriggerEvent(
        VALIDATED,
        {"dataset": "credit_default", "ds": ds, "snapshot_uri": f"/s/{sha}", "sha256": sha},
        source="mlops_ingest__credit_default/scheduled__x",
    )


def drift(ds: str = "2026-04-22", **extra) -> TriggerEvent:
    base = {
        "dataset": "credit_default",
        "reason": "drift in interest_rate, credit_score",
        "ds": ds,
        "verdict": "drift",
        "decay_verdict": "none",
        "report_uri": REPORT,
    }
    return TriggerEvent(RETRAIN, {**base, **extra})


@pytest.mark.parametrize(
    ("form", "events", "run_type", "expected"),
    [
        pytest.param("new features", [], "manual", "new features", id="form-reason"),
        pytest.param(
            "  spaces \n and lines ", [], "manual", "spaces and lines", id="form-reason-one-line"
        ),
        pytest.param("why", [drift()], "asset_triggered", "why", id="form-wins-over-events"),
        pytest.param(
            "",
            [drift()],
            "asset_triggered",
            f"drift report 2026-04-22: drift in interest_rate, credit_score (report {REPORT})",
            id="drift-event",
        ),
        pytest.param(
            None,
            [drift(reason="", verdict="none", decay_verdict="decay", report_uri=None)],
            "asset_triggered",
            "drift report 2026-04-22: retraining requested (drift verdict none, decay verdict decay)",
            id="drift-event-without-reason",
        ),
        pytest.param(
            "None",
            [validated("2026-04-02"), validated("2026-04-01")],
            "asset_triggered",
            "new validated data for 2026-04-01, 2026-04-02",
            id="validated-dates-sorted-once",
        ),
        pytest.param(
            "",
            [validated("2026-04-23"), drift(), drift()],
            "asset_triggered",
            f"drift report 2026-04-22: drift in interest_rate, credit_score (report {REPORT}); "
            "new validated data for 2026-04-23",
            id="drift-first-then-validated-duplicates-once",
        ),
        pytest.param(
            "",
            [validated(f"2026-04-0{d}") for d in range(1, 8)],
            None,
            "new validated data for 2026-04-01, 2026-04-02, 2026-04-03, 2026-04-04, "
            "2026-04-05 and 2 more dates",
            id="many-dates-counted",
        ),
        pytest.param(
            "",
            [TriggerEvent("other.asset", {}, source="d/r")],
            "asset_triggered",
            "asset event other.asset from d/r",
            id="unknown-asset",
        ),
        pytest.param("", [], "manual", "manual run (no reason given)", id="manual-no-reason"),
        pytest.param("", [], "scheduled", "scheduled run", id="scheduled"),
        pytest.param(
            "",
            [],
            "asset_triggered",
            "asset-triggered run (its events carried no details)",
            id="asset-run-without-events",
        ),
        pytest.param("", [], "something_new", "something_new run", id="unknown-run-type"),
        pytest.param("", [], None, "", id="nothing-known"),
    ],
)
def test_run_reason(form, events, run_type, expected):
    assert run_reason(form, events, run_type=run_type) == expected


def test_run_reason_accepts_an_enum_run_type():
    from enum import Enum

    class RunType(str, Enum):
        MANUAL = "manual"

    assert run_reason(None, [], RunType.MANUAL) == "manual run (no reason given)"


def test_run_reason_is_clipped_to_the_tag_limit():
    long = drift(reason="drift in " + ", ".join(f"feature_{i}" for i in range(200)))
    reason = run_reason("", [long])
    assert len(reason) == MAX_REASON_CHARS and reason.endswith("...")
    assert len(run_reason("x" * 2000, [])) == MAX_REASON_CHARS


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        pytest.param([], [], id="none"),
        pytest.param([drift("2026-04-22"), validated("2026-04-21")], ["2026-04-21", "2026-04-22"], id="both-kinds"),
        pytest.param([validated("2026-04-21"), validated("2026-04-21")], ["2026-04-21"], id="once"),
        pytest.param([drift(ds="22.04.2026"), drift(ds=None)], [], id="not-a-date-ignored"),
        pytest.param([TriggerEvent("other", {"ds": "2026-04-01"})], [], id="other-asset-ignored"),
    ],
)
def test_event_dates(events, expected):
    assert event_dates(events) == expected


@pytest.mark.parametrize(
    ("asset", "kind"),
    [
        (VALIDATED, "validated"),
        (RETRAIN, "retrain_requested"),
        ("mlops_loop.credit_default.something", "other"),
        ("", "other"),
    ],
)
def test_event_kind_from_the_asset_name(asset, kind):
    assert TriggerEvent(asset).kind == kind

"""core/retrain.py: the retraining policy (cool-down, causes), the retrain request record
and the one call the operator makes, request_retraining; the drift window."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mlops_loop.core.config import DriftSettings, load_config
from mlops_loop.core.retrain import (
    ASSET_EXTRA_KEYS,
    RETRAIN_RECORD_NAME,
    drift_reports_root,
    drift_window,
    last_retrain_time,
    read_retrain_requests,
    record_retrain_request,
    request_retraining,
    should_retrain,
)
from mlops_loop.core.storage import LocalStorage
from mlops_loop.exceptions import DriftError, RetrainRecordError

REPO = Path(__file__).resolve().parents[3]
CONFIG = str(REPO / "include" / "config" / "credit_default.yaml")
T0 = datetime(2026, 4, 22, 2, tzinfo=timezone.utc)


# --------------------------------------------------------------------------- policy

NOW = datetime(2026, 3, 10, 2, 0, tzinfo=timezone.utc)


DRIFT = {"verdict": "drift", "drifted_features": ["x"], "prediction_verdict": None}


NONE = {"verdict": "none", "drifted_features": []}


DECAY = {"verdict": "decay", "reason": "roc_auc down"}


@pytest.mark.parametrize(
    ("result", "decay", "last", "retrain_on", "expected", "text"),
    [
        pytest.param(
            DRIFT, None, None, ["drift", "decay"], True, "drift in x", id="drift-first-time"
        ),
        pytest.param(
            DRIFT,
            None,
            NOW - timedelta(hours=2),
            ["drift", "decay"],
            False,
            "cool-down",
            id="drift-in-cool-down",
        ),
        pytest.param(
            DRIFT,
            None,
            NOW - timedelta(hours=25),
            ["drift", "decay"],
            True,
            "drift in x",
            id="drift-after-cool-down",
        ),
        pytest.param(NONE, None, None, ["drift", "decay"], False, "not over policy", id="nothing"),
        pytest.param(
            {"verdict": "warn"},
            None,
            None,
            ["drift", "decay"],
            False,
            "not over policy",
            id="warn-only",
        ),
        pytest.param(
            NONE, DECAY, None, ["drift", "decay"], True, "decay: roc_auc down", id="decay"
        ),
        pytest.param(
            NONE, DECAY, None, ["drift"], False, "not over policy", id="decay-not-in-policy"
        ),
    ],
)
def test_should_retrain(result, decay, last, retrain_on, expected, text) -> None:
    s = DriftSettings(cool_down_hours=24, retrain_on=retrain_on)
    retrain, reason = should_retrain(result, decay, last, NOW, s)
    assert retrain is expected and text in reason


def test_should_retrain_rejects_mixed_timezones() -> None:
    with pytest.raises(DriftError, match="timezone"):
        should_retrain(DRIFT, None, datetime(2026, 3, 9), NOW, DriftSettings())


# --------------------------------------------------------------------------- the record


def test_record_round_trip_and_corrupt_record(tmp_path):
    storage, uri = LocalStorage(), str(tmp_path / "retrain_requests.json")
    assert read_retrain_requests(storage, uri) == []
    assert last_retrain_time([]) is None
    record_retrain_request(storage, uri, {"time": T0.isoformat(), "reason": "a"})
    record_retrain_request(
        storage, uri, {"time": (T0 + timedelta(days=4)).isoformat(), "reason": "b"}
    )
    requests = read_retrain_requests(storage, uri)
    assert [r["reason"] for r in requests] == ["a", "b"]
    assert last_retrain_time(requests) == T0 + timedelta(days=4)
    assert not list(tmp_path.glob("*.tmp*")), "atomic write left a temp file"

    Path(uri).write_text("{not json")
    with pytest.raises(RetrainRecordError, match="not JSON") as info:
        read_retrain_requests(storage, uri)
    assert info.value.uri == uri
    Path(uri).write_text(json.dumps({"requests": [{"reason": "no time"}]}))
    with pytest.raises(RetrainRecordError, match="'time'"):
        read_retrain_requests(storage, uri)


# --------------------------------------------------------------------------- request_retraining

MONITOR_RESULT = {
    "verdict": "drift",
    "prediction_verdict": None,
    "drifted_features": ["interest_rate"],
    "decay_verdict": "none",
    "decay_reason": "roc_auc fine",
    "ds": "2026-04-22",
    "report_uri": "/r/ds=2026-04-22/report.html",
    "champion_version": "3",
}


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_LOOP_STORAGE_ROOT", str(tmp_path))
    return load_config(CONFIG)


@pytest.mark.parametrize(
    ("result", "fires", "reason"),
    [
        pytest.param(MONITOR_RESULT, True, "drift in interest_rate", id="drift"),
        pytest.param(
            {**MONITOR_RESULT, "verdict": "warn", "drifted_features": []},
            False,
            "not over policy",
            id="warn",
        ),
        pytest.param(
            {
                **MONITOR_RESULT,
                "verdict": "none",
                "drifted_features": [],
                "decay_verdict": "decay",
                "decay_reason": "roc_auc 0.61 [0.58, 0.64] below 0.68",
            },
            True,
            "decay: roc_auc 0.61",
            id="decay-only",
        ),
        pytest.param({"verdict": "no_champion"}, False, "no champion", id="no-champion"),
    ],
)
def test_request_retraining_truth_table(config, result, fires, reason) -> None:
    uri = Path(drift_reports_root(config)) / RETRAIN_RECORD_NAME
    decision = request_retraining(config, result, T0, run_id="scheduled__x")
    assert decision.fire is fires and reason in decision.reason
    if fires:
        assert decision.entry is not None and decision.record_uri == str(uri)
        assert (
            decision.entry["time"] == T0.isoformat()
            and decision.entry["airflow_run_id"] == "scheduled__x"
        )
        assert set(decision.asset_extra) == set(ASSET_EXTRA_KEYS)
        assert read_retrain_requests(LocalStorage(), str(uri)) == [decision.entry]
    else:
        assert decision.entry is None and decision.asset_extra == {}
        assert not uri.exists()


def test_request_retraining_at_most_once_per_cool_down(config) -> None:
    cool_down = timedelta(hours=config.drift.cool_down_hours)
    assert request_retraining(config, MONITOR_RESULT, T0).fire
    again = request_retraining(config, MONITOR_RESULT, T0 + cool_down - timedelta(minutes=1))
    assert not again.fire and "cool-down" in again.reason
    assert request_retraining(config, MONITOR_RESULT, T0 + cool_down).fire
    uri = Path(drift_reports_root(config)) / RETRAIN_RECORD_NAME
    assert len(json.loads(uri.read_text())["requests"]) == 2


# --------------------------------------------------------------------------- the window


@pytest.mark.parametrize(
    "ds, days, since, expected",
    [
        pytest.param("2026-04-22", 7, None, ("2026-04-16", "2026-04-22"), id="default-window"),
        pytest.param("2026-03-01", 2, None, ("2026-02-28", "2026-03-01"), id="across-month"),
        pytest.param("2026-04-22", 1, None, ("2026-04-22", "2026-04-22"), id="one-day"),
        pytest.param(
            "2026-04-22", 7, "2026-04-01", ("2026-04-01", "2026-04-22"), id="explicit-start"
        ),
    ],
)
def test_drift_window(ds, days, since, expected):
    assert drift_window(ds, days, since) == expected


def test_drift_window_rejects_bad_dates():
    with pytest.raises(ValueError, match="after its end"):
        drift_window("2026-04-01", 7, "2026-04-02")
    with pytest.raises(Exception, match="2026-13-01"):
        drift_window("2026-13-01", 7)

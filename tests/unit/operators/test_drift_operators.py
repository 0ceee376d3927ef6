"""operators/drift.py without Docker or MLflow: the retrain decision, the cool-down record,
the Asset event extra, construction. The record, the policy and the window themselves are
tested in tests/unit/core/test_retrain.py; the real runs are in tests/dags/test_drift_dag.py."""

from __future__ import annotations

import inspect
import json
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowSkipException

from mlops_loop.assets import retrain_requested_asset
from mlops_loop.core.retrain import ASSET_EXTRA_KEYS, read_retrain_requests
from mlops_loop.core.storage import LocalStorage
from mlops_loop.exceptions import RetrainRecordError
from mlops_loop.operators.drift import DriftMonitorOperator, RequestRetrainingOperator

REPO = Path(__file__).resolve().parents[3]
CONFIG = str(REPO / "include" / "config" / "credit_default.yaml")
COOL_DOWN = timedelta(hours=72)  # drift.cool_down_hours in credit_default.yaml
T0 = datetime(2026, 4, 22, 2, tzinfo=timezone.utc)
ASSET = retrain_requested_asset("credit_default")

DRIFT = {
    "verdict": "drift",
    "prediction_verdict": "drift",
    "drifted_features": ["interest_rate", "age"],
    "warned_features": [],
    "decay_verdict": "none",
    "decay_reason": "roc_auc fine",
    "ds": "2026-04-22",
    "report_uri": "/r/ds=2026-04-22/report.html",
    "champion_version": "3",
}


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MLOPS_LOOP_STORAGE_ROOT", str(tmp_path))
    return tmp_path / "credit_default"


def record_path(root: Path) -> Path:
    return root / "reports" / "drift" / "retrain_requests.json"


def context(now: datetime | None) -> dict:
    return {
        "data_interval_end": now,
        "logical_date": now,
        "ti": SimpleNamespace(run_id=f"scheduled__{now}"),
        "outlet_events": defaultdict(SimpleNamespace),
    }


def request(result: dict | str, ctx: dict) -> dict:
    op = RequestRetrainingOperator(
        task_id="request_retraining", config_path=CONFIG, drift_result=result, outlets=[ASSET]
    )
    return op.execute(ctx)


@pytest.mark.parametrize(
    "result, fires",
    [
        pytest.param(DRIFT, True, id="drift"),
        pytest.param({**DRIFT, "verdict": "warn", "drifted_features": []}, False, id="warn"),
        pytest.param({**DRIFT, "verdict": "none", "drifted_features": []}, False, id="none"),
        pytest.param(
            {**DRIFT, "verdict": "insufficient_data", "drifted_features": []}, False, id="insufficient"
        ),
        pytest.param(
            {
                **DRIFT,
                "verdict": "none",
                "drifted_features": [],
                "decay_verdict": "decay",
                "decay_reason": "roc_auc 0.61 [0.58, 0.64] below 0.68",
            },
            True,
            id="decay-only",
        ),
        pytest.param({"verdict": "no_champion", "reasons": ["none yet"]}, False, id="no-champion"),
    ],
)
def test_decision_truth_table(root, result, fires):
    ctx = context(T0)
    if fires:
        entry = request(result, ctx)
        extra = ctx["outlet_events"][ASSET].extra
        assert set(extra) == set(ASSET_EXTRA_KEYS)
        assert extra["reason"] == entry["reason"] and extra["ds"] == "2026-04-22"
        assert read_retrain_requests(LocalStorage(), str(record_path(root)))[-1]["time"] == T0.isoformat()
    else:
        with pytest.raises(AirflowSkipException):
            request(result, ctx)
        assert ASSET not in ctx["outlet_events"]
        assert not record_path(root).exists()


def test_drift_reason_names_the_features(root):
    ctx = context(T0)
    entry = request(DRIFT, ctx)
    assert "interest_rate" in entry["reason"] and "prediction" in entry["reason"]
    assert entry["verdict"] == "drift" and entry["report_uri"] == DRIFT["report_uri"]


def test_at_most_one_request_per_cool_down(root):
    request(DRIFT, context(T0))
    later = T0 + COOL_DOWN - timedelta(minutes=1)
    ctx = context(later)
    with pytest.raises(AirflowSkipException, match="cool-down"):
        request(DRIFT, ctx)
    assert ASSET not in ctx["outlet_events"]
    assert len(json.loads(record_path(root).read_text())["requests"]) == 1

    # A re-run of the run that fired decides the same way (no second request).
    with pytest.raises(AirflowSkipException, match="cool-down"):
        request(DRIFT, context(T0))

    ctx = context(T0 + COOL_DOWN)
    request(DRIFT, ctx)
    assert ctx["outlet_events"][ASSET].extra["verdict"] == "drift"
    times = [r["time"] for r in json.loads(record_path(root).read_text())["requests"]]
    assert times == [T0.isoformat(), (T0 + COOL_DOWN).isoformat()]


def test_now_comes_from_the_run_not_the_clock(root):
    # A run for a date long past still decides by its own logical time.
    request(DRIFT, context(datetime(2020, 1, 1, tzinfo=timezone.utc)))
    request(DRIFT, context(datetime(2020, 1, 5, tzinfo=timezone.utc)))
    assert len(json.loads(record_path(root).read_text())["requests"]) == 2


def test_drift_result_as_json_text_and_bad_results(root):
    request(json.dumps(DRIFT), context(T0))
    with pytest.raises(ValueError, match="verdict"):
        request({"rows": 3}, context(T0))
    with pytest.raises(ValueError, match="not a result"):
        request("None", context(T0))


def test_corrupt_record_fails_the_task_instead_of_retraining_blindly(root):
    record_path(root).parent.mkdir(parents=True)
    record_path(root).write_text("[]")
    with pytest.raises(RetrainRecordError):
        request(DRIFT, context(T0))


def _constructor_args(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is object or "__init__" not in vars(klass):
            continue
        names |= {p for p in inspect.signature(klass.__init__).parameters if p not in ("self", "kwargs", "args")}
        if klass is DockerOperator:
            break
    return names


@pytest.mark.parametrize("cls", [DriftMonitorOperator, RequestRetrainingOperator])
def test_template_fields_are_constructor_args(cls):
    fields = tuple(cls.template_fields)
    assert len(set(fields)) == len(fields), "duplicate template field"
    assert set(fields) <= _constructor_args(cls)


def test_monitor_operator_builds_its_own_command():
    op = DriftMonitorOperator(task_id="drift_monitor", config_path=CONFIG, ds="2026-04-22")
    assert op.trainer_command == "monitor" and op.gpu == "none"
    assert {"config_path", "ds", "since_ds", "model_name"} <= set(op.template_fields)
    with pytest.raises(ValueError, match="DriftMonitorOperator runs 'monitor'"):
        DriftMonitorOperator(task_id="x", config_path=CONFIG, trainer_command="train")


def test_the_outlet_is_the_asset_the_training_dag_listens_to(airflow_db):
    # Read from the real DAG files: the drift DAG's request_retraining task emits ASSET, and
    # the train DAG of the same dataset runs on ANY of its assets, so ASSET alone starts it.
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.definitions.asset import AssetAny

    assert isinstance(ASSET, Asset) and ASSET.name == "mlops_loop.credit_default.retrain_requested"
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    request = bag.get_dag("mlops_drift__credit_default").get_task("request_retraining")
    schedule = bag.get_dag("mlops_train__credit_default").timetable.asset_condition
    assert request.outlets == [ASSET]
    assert isinstance(schedule, AssetAny) and ASSET in schedule.objects, schedule

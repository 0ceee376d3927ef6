"""Every target type the config accepts, through the real DAG files with dag.test():
text labels with a rare positive class (``positive_label: "yes"``), a boolean target and a
regression target, each on generated data shaped like users' own (tests/fixtures/own_data.py:
no timestamp column, an integer id, mixed feature types, 350 rows a day).

For each dataset: batches are ingested and quality-gated (two dates through the ingest
DAG, the rest with core.ingest as tests/dags/test_drift_dag.py does), the training DAG
trains in the trainer container, evaluates against the trivial baseline and promotes, then
drifted days with labels are ingested and the drift DAG measures feature drift, prediction
drift and decay. Bad input: a third text label stops at the gate; text labels that never
hold ``positive_label`` fail the train task with the trainer's data exit code, at once.

Each test has its own config folder ($MLOPS_LOOP_CONFIG_DIR), storage under tmp_path and a
registered model name of its own on the session's MLflow server.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlops_loop.core.config import DatasetConfig, load_config
from mlops_loop.core.ingest import ingest_batch
from mlops_loop.core.training_set import ValidatedSnapshot, record_validated, validated_snapshots
from mlops_loop_devtools.sample_data import land_batch
from tests.fixtures.own_data import BATCHES, CONFIGS, HOLDOUT_DAYS, write_config

pytestmark = [pytest.mark.integration, pytest.mark.docker]

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
ROWS = 350
TRAIN_DAYS = [f"2026-03-0{d}" for d in range(1, 7)]  # 6 days: 3 of them the holdout
DAG_INGESTED = TRAIN_DAYS[:2]  # through the ingest DAG; the others with core.ingest
DRIFT_DAYS = ["2026-03-20", "2026-03-21"]  # outside the training window's reach
TRAIN_TASKS = (
    "assemble_training_set",
    "train_challenger",
    "evaluate_challenger",
    "approve_promotion",
    "promote_or_reject",
    "summary",
)
INGEST_TASKS = ("wait_for_batch", "ingest_snapshot", "quality_gate")


@dataclass(frozen=True)
class Case:
    name: str
    fmt: str
    metric: str  # the decision's primary metric and the decay metric
    baseline: str  # what the first model's baseline predicts
    shifted: str  # the feature the drifted days move
    positive: Any = None  # the positive label (classification)


CASES = {
    "churn_text": Case("churn_text", "csv", "roc_auc", "positive rate", "monthly_fee", "yes"),
    "churn_bool": Case("churn_bool", "parquet", "roc_auc", "positive rate", "monthly_fee", True),
    "demand_reg": Case("demand_reg", "csv", "rmse", "mean", "price"),
}


# --------------------------------------------------------------------------- helpers


def own_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_url: str | None, raw: dict[str, Any]
) -> DatasetConfig:
    """``raw`` as the only config the DAG files read; storage under tmp_path."""
    path = write_config(raw, tmp_path / "configs")
    monkeypatch.setenv("MLOPS_LOOP_CONFIG_DIR", str(path.parent))
    monkeypatch.setenv("MLOPS_LOOP_STORAGE_ROOT", str(tmp_path / "data"))
    if mlflow_url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_url)
    return load_config(path)


def model_name(name: str) -> str:
    return f"{name}_{uuid.uuid4().hex[:8]}"


def land(config: DatasetConfig, case: Case, ds: str, **kwargs: Any) -> None:
    land_batch(BATCHES[case.name](ds, ROWS, **kwargs), config.root, ds, fmt=case.fmt)


def ingest_directly(config: DatasetConfig, days: list[str]) -> None:
    """Snapshot and mark validated without the DAG (what the gate records on a pass)."""
    for ds in days:
        snap = ingest_batch(config, ds)
        record_validated(config, ValidatedSnapshot(ds, snap.sha256, snap.snapshot_uri, snap.rows))


def run_dag(
    file: str, dag_id: str, ds: str, conf: dict[str, Any] | None = None, hour: int = 0
) -> tuple[dict[str, str], dict[str, Any], Any]:
    """dag.test() of ``dag_id`` from ``dags/<file>`` at ``ds``; returns ({task: state},
    {task: XCom return value of the tasks that succeeded}, the task instances by id)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS / file))
    assert bag.import_errors == {}, bag.import_errors
    dag = bag.get_dag(dag_id)
    assert dag is not None, f"{dag_id} not in {sorted(bag.dag_ids)}"
    when = datetime.fromisoformat(ds).replace(hour=hour, tzinfo=timezone.utc)
    dag_run = dag.test(logical_date=when, run_conf=conf or {})
    tis = {ti.task_id: ti for ti in dag_run.get_task_instances()}
    states = {task_id: str(ti.state) for task_id, ti in tis.items()}
    values = {
        task_id: ti.xcom_pull(task_ids=task_id)
        for task_id, ti in tis.items()
        if states[task_id] == "success"
    }
    return states, values, tis


def encoded_target(config: DatasetConfig, case: Case, values: Any) -> np.ndarray:
    """The target as the model sees it, computed here independently of core.targets."""
    if config.task == "regression":
        return np.asarray(values, dtype="float64")
    return np.asarray([v == case.positive for v in values], dtype="float64")


def quality_expectations(root: Path, ds: str) -> dict[str, dict[str, Any]]:
    """The gate's expectation results of ``ds`` (type|column -> result)."""
    result = json.loads(
        next((root / "reports/quality" / f"ds={ds}").rglob("result.json")).read_text()
    )
    found = {}
    for item in result["results"]:
        exp = item["expectation_config"]
        kind = exp.get("type") or exp.get("expectation_type")
        found[f"{kind}|{exp['kwargs'].get('column', '')}"] = item
    return found


# --------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("name", list(CASES))
def test_target_type_end_to_end(name, airflow_db, tmp_path, monkeypatch, mlflow_server):
    import mlflow

    from mlops_loop.core.registry import CHAMPION_ALIAS, get_champion
    from mlops_loop.core.snapshots import read_snapshot

    case = CASES[name]
    registered = model_name(name)
    config = own_dataset(tmp_path, monkeypatch, mlflow_server.url, CONFIGS[name](registered))
    root = Path(config.root)
    assert config.timestamp_column is None and config.id_column is not None
    assert config.evaluation.primary_metric == case.metric
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)

    # 1. Ingest: two dates through the ingest DAG (snapshot + derived quality suite).
    for ds in TRAIN_DAYS:
        land(config, case, ds)
    for ds in DAG_INGESTED:
        states, values, _ = run_dag("ingest.py", f"mlops_ingest__{name}", ds)
        assert states == dict.fromkeys(INGEST_TASKS, "success"), states
        assert values["ingest_snapshot"]["rows"] == ROWS
    gate = quality_expectations(root, DAG_INGESTED[0])
    assert gate[f"expect_column_values_to_be_unique|{config.id_column}"]["success"]
    labels_check = gate.get(f"expect_column_unique_value_count_to_be_between|{config.target}")
    if config.task == "classification":
        assert labels_check is not None and labels_check["success"], sorted(gate)
    else:
        assert labels_check is None  # a regression target has no label-count check
    ingest_directly(config, TRAIN_DAYS[len(DAG_INGESTED) :])
    assert [v.ds for v in validated_snapshots(config)] == TRAIN_DAYS

    # 2. Train, evaluate against the trivial baseline, promote.
    states, out, _ = run_dag(
        "train.py", f"mlops_train__{name}", TRAIN_DAYS[-1], {"reason": f"first {name} model"}
    )
    assert states == dict.fromkeys(TRAIN_TASKS, "success"), states
    training_set = out["assemble_training_set"]
    assert training_set["rows"]["holdout"] == HOLDOUT_DAYS * ROWS
    assert training_set["rows"]["holdout"] >= config.evaluation.min_holdout_rows
    decision, promotion = out["evaluate_challenger"], out["promote_or_reject"]
    version = decision["challenger_version"]
    assert out["train_challenger"]["model_name"] == registered
    assert decision["outcome"] == "promote", decision["reasons"]
    assert decision["compared_against"] == "baseline"
    assert decision["primary_metric"] == case.metric
    assert decision["n_rows"] == HOLDOUT_DAYS * ROWS
    assert decision["ci_low"] > 0, decision  # improvement over the baseline, whole interval
    assert promotion["outcome"] == "promoted" and promotion["promoted_version"] == version
    assert get_champion(client, registered) == version
    assert client.get_model_version_by_alias(registered, CHAMPION_ALIAS).version == version
    assert out["summary"].startswith(f"{registered}: promoted v{version} over the baseline")

    # The baseline predicts the TRAINING positive rate / mean (not the holdout's).
    train = read_snapshot(training_set["train_uri"])
    train_mean = float(encoded_target(config, case, train[config.target]).mean())
    tag = float(client.get_model_version(registered, version).tags["train_target_mean"])
    assert tag == pytest.approx(train_mean, rel=1e-9)
    notes = [n for n in decision["notes"] if n.startswith("baseline: predicts the training")]
    assert len(notes) == 1, decision["notes"]
    match = re.fullmatch(
        rf"baseline: predicts the training {case.baseline} (\S+) for every row", notes[0]
    )
    assert match, notes[0]
    assert float(match.group(1)) == pytest.approx(train_mean, rel=1e-3)
    holdout = read_snapshot(training_set["holdout_uri"])
    y = encoded_target(config, case, holdout[config.target])
    assert abs(y.mean() - train_mean) > 1e-6  # the two means differ, so the check means something
    if case.metric == "rmse":
        baseline_rmse = math.sqrt(float(np.mean((y - train_mean) ** 2)))
        assert decision["reference_value"] == pytest.approx(baseline_rmse, rel=1e-6)
        assert decision["challenger_value"] < 0.5 * baseline_rmse
    else:
        assert 0.05 < train_mean < 0.4
        assert decision["reference_value"] == pytest.approx(0.5)  # a constant score
        assert decision["challenger_value"] > 0.75

    # 3. Drifted days with labels: a feature moves, the target stops following the features.
    for ds in DRIFT_DAYS:
        land(config, case, ds, drifted=True)
    ingest_directly(config, DRIFT_DAYS)
    states, values, _ = run_dag("drift.py", f"mlops_drift__{name}", DRIFT_DAYS[-1], hour=2)
    result = values.get("drift_monitor") or {}
    assert states == {"drift_monitor": "success", "request_retraining": "success"}, (states, result)
    assert result["champion_version"] == version
    assert result["rows"] == len(DRIFT_DAYS) * ROWS
    assert result["verdict"] == "drift", result
    assert case.shifted in result["drifted_features"], result
    assert result["prediction_verdict"] == "drift", result  # the model's scores moved too
    assert result["decay_verdict"] == "decay", result
    report = json.loads(Path(result["report_json_uri"]).read_text())
    prediction = report["drift"]["prediction"]
    assert prediction is not None and prediction["n"] == len(DRIFT_DAYS) * ROWS
    assert prediction["psi"] is not None and math.isfinite(prediction["psi"])
    decay = report["decay"]
    assert decay["metric"] == case.metric and decay["verdict"] == "decay", decay
    assert decay["n"] == len(DRIFT_DAYS) * ROWS
    assert decay["ci_low"] <= decay["value"] <= decay["ci_high"], decay
    if case.metric == "rmse":
        assert decay["ci_low"] > decay["threshold"] > decay["reference"], decay
    else:
        assert decay["ci_high"] < decay["threshold"] < decay["reference"], decay
        assert decay["value"] == pytest.approx(0.5, abs=0.12)  # labels at random now


# --------------------------------------------------------------------------- bad input


def test_a_third_text_label_is_quarantined_by_the_gate(airflow_db, tmp_path, monkeypatch):
    case = CASES["churn_text"]
    config = own_dataset(
        tmp_path, monkeypatch, None, CONFIGS["churn_text"](model_name("churn_text"))
    )
    root = Path(config.root)
    ds = "2026-03-10"
    frame = BATCHES[case.name](ds, ROWS)
    frame.loc[frame.index[::10], "churned"] = "maybe"  # a third label on 35 rows
    land_batch(frame, root, ds, fmt=case.fmt)

    states, _, _ = run_dag("ingest.py", "mlops_ingest__churn_text", ds)
    assert states == {
        "wait_for_batch": "success",
        "ingest_snapshot": "success",
        "quality_gate": "failed",
    }, states
    quarantine = root / "quarantine" / f"ds={ds}"
    assert list(quarantine.rglob("*.csv")), "the batch was not copied to quarantine"
    summary = next(quarantine.rglob("summary.txt")).read_text()
    assert (
        "- churned: expect_column_unique_value_count_to_be_between: "
        "expected distinct values <= 2, observed 3"
    ) in summary.splitlines(), summary
    assert validated_snapshots(config) == []


def test_text_labels_without_the_positive_label_fail_the_train_task_at_once(
    airflow_db, tmp_path, monkeypatch, mlflow_server, capfd
):
    case = CASES["churn_text"]
    raw = CONFIGS["churn_text"](model_name("churn_text"))
    raw["training"]["window"] = {"window_days": 14, "holdout_days": 1}
    config = own_dataset(tmp_path, monkeypatch, mlflow_server.url, raw)
    days = ["2026-03-11", "2026-03-12", "2026-03-13"]
    for ds in days:
        # Capitalised labels: "Yes" is not positive_label "yes" (labels compare exactly).
        frame = BATCHES[case.name](ds, 200, labels=("Yes", "No"))
        land_batch(frame, config.root, ds, fmt=case.fmt)
    ingest_directly(config, days)
    capfd.readouterr()

    states, _, tis = run_dag("train.py", "mlops_train__churn_text", days[-1], {"reason": "bad"})
    assert states["assemble_training_set"] == "success", states
    assert states["train_challenger"] == "failed", states  # not up_for_retry
    assert tis["train_challenger"].try_number == 1  # no retry for a data error
    assert {
        states[t] for t in ("evaluate_challenger", "approve_promotion", "promote_or_reject")
    } == {"upstream_failed"}, states
    text = capfd.readouterr().out
    assert "exit code 3: snapshot data problem" in text, text[-4000:]
    assert "positive_label 'yes' never occurs in target 'churned'" in text, text[-4000:]
    assert "'No', 'Yes'" in text  # the labels found

"""dag.test() of tests/dags/reuse_dag.py: EvaluateChallengerOperator + PromoteModelOperator
on versions that are ALREADY registered (no training in the DAG), in the real trainer
container against a real MLflow server. Also the evaluation's bad inputs: a holdout
without the target column, a holdout too small to decide, a champion that was deleted."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from mlops_loop.core.config import load_config
from mlops_loop.core.ingest import ingest_batch
from mlops_loop_devtools.sample_data import generate_batch, land_batch
from tests.fixtures.dataset_configs import REGULARISED

pytestmark = [pytest.mark.integration, pytest.mark.docker]

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "include/config/credit_default.yaml"
REUSE_DAG = Path(__file__).with_name("reuse_dag.py")
DAG_ID = "mlops_reuse__evaluate_registered_version"
MODEL = "reuse_dag_model"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, mlflow_server: Any) -> Iterator[dict[str, Any]]:
    """One model trained in this process and registered; holdout snapshots (ingested, not
    part of any training set): a normal one, a tiny one, one without the target column."""
    from mlops_loop.core.trainer_protocol import TrainRequest, config_payload
    from mlops_loop.training.train import run_training

    root = tmp_path_factory.mktemp("reuse")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_LOOP_STORAGE_ROOT", str(root))
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
        config = load_config(CONFIG)

        def snapshot(ds: str, rows: int, drop_target: bool = False) -> str:
            frame = generate_batch(ds, rows=rows)
            if drop_target:
                frame = frame.drop(columns=[config.target])
            land_batch(frame, config.root, ds)
            return ingest_batch(config, ds).snapshot_uri

        train, valid = snapshot("2026-07-01", 5000), snapshot("2026-07-02", 1000)
        result = run_training(
            TrainRequest(
                config=config_payload(config),
                train_snapshot_uri=train,
                valid_snapshot_uri=valid,
                registered_model_name=MODEL,
                hyperparameters=dict(REGULARISED),
            ),
            tracking_uri=mlflow_server.url,
            log=lambda line: None,
        )
        yield {
            "root": root,
            "version": str(result["model_version"]),
            "holdout": snapshot("2026-07-03", 3000),
            "tiny": snapshot("2026-07-04", 60),
            "no_target": snapshot("2026-07-05", 600, drop_target=True),
        }


@pytest.fixture
def env(
    world: dict[str, Any], mlflow_server: Any, monkeypatch: pytest.MonkeyPatch, airflow_db: Any
) -> Any:
    import mlflow

    monkeypatch.setenv("MLOPS_LOOP_STORAGE_ROOT", str(world["root"]))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    return mlflow.MlflowClient(tracking_uri=mlflow_server.url)


def run(conf: dict[str, Any], day: int) -> tuple[dict[str, str], dict[str, Any]]:
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    bag = DagBag(dag_folder=str(REUSE_DAG))
    assert bag.import_errors == {}, bag.import_errors
    # dag.test() wants the DAG serialized; it only syncs the configured dags folder itself.
    sync_bag_to_db(bag, "dags-folder", None)
    dag_run = bag.get_dag(DAG_ID).test(
        logical_date=datetime(2026, 7, day, tzinfo=timezone.utc),
        run_conf={"config_path": str(CONFIG), **conf},
    )
    tis = dag_run.get_task_instances()
    states = {ti.task_id: str(ti.state) for ti in tis}
    return states, {
        ti.task_id: ti.xcom_pull(task_ids=ti.task_id) for ti in tis if str(ti.state) == "success"
    }


def copy_version(client: Any, source_name: str, version: str, name: str) -> str:
    """A new version of ``name`` with the same model files (no training)."""
    mv = client.get_model_version(source_name, version)
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    return str(
        client.create_model_version(
            name,
            mv.source,
            run_id=mv.run_id,
            model_id=mv.source.removeprefix("models:/")
            if mv.source.startswith("models:/m-")
            else None,
        ).version
    )


def test_evaluates_and_promotes_an_already_registered_version(world, env):
    from mlops_loop.core.registry import get_champion

    name = "reuse_promote_model"
    version = copy_version(env, MODEL, world["version"], name)
    states, out = run(
        {
            "holdout_snapshot_uri": world["holdout"],
            "challenger_version": version,
            "model_name": name,
        },
        10,
    )
    assert states == {"evaluate": "success", "promote": "success"}, states
    decision = out["evaluate"]
    assert decision["outcome"] == "promote", decision["reasons"]
    assert decision["n_rows"] == 3000 and decision["compared_against"] == "baseline"
    assert decision["measurements"]["challenger_model_size_mb"] > 0
    assert decision["decision_uri"].startswith(str(world["root"]))
    assert os.path.exists(decision["decision_uri"]) and os.path.exists(decision["html_uri"])
    assert out["promote"]["outcome"] == "promoted" and get_champion(env, name) == version


def test_too_small_holdout_is_insufficient_data_not_a_promotion(world, env):
    from mlops_loop.core.registry import get_champion

    name = "reuse_tiny_model"
    version = copy_version(env, MODEL, world["version"], name)
    states, out = run(
        {"holdout_snapshot_uri": world["tiny"], "challenger_version": version, "model_name": name},
        11,
    )
    assert states == {"evaluate": "success", "promote": "success"}, states
    assert out["evaluate"]["outcome"] == "insufficient_data"
    assert "too small" in " ".join(out["evaluate"]["reasons"])
    assert out["promote"]["outcome"] == "rejected" and out["promote"]["promoted_version"] is None
    assert get_champion(env, name) is None
    assert env.get_model_version(name, version).tags["validation_status"] == "inconclusive"


def test_holdout_without_target_fails_with_a_clear_error(world, env, caplog, capfd):
    conf = {
        "holdout_snapshot_uri": world["no_target"],
        "challenger_version": world["version"],
        "model_name": MODEL,
    }
    states, _ = run(conf, 12)
    assert states["evaluate"] == "failed", states
    assert states["promote"] != "success"
    captured = capfd.readouterr()
    text = caplog.text + captured.out + captured.err
    assert "holdout has no target column ['default']" in text


def test_champion_pointing_at_a_deleted_version_counts_as_no_champion(world, env):
    from mlops_loop.core.registry import get_champion, promote

    name = "reuse_deleted_champion_model"
    old = copy_version(env, MODEL, world["version"], name)
    new = copy_version(env, MODEL, world["version"], name)
    promote(
        env, name, old, expected_champion=None, decision_uri=None, airflow_run=None, reason="setup"
    )
    env.delete_model_version(name, old)
    states, out = run(
        {"holdout_snapshot_uri": world["holdout"], "challenger_version": new, "model_name": name},
        13,
    )
    assert states == {"evaluate": "success", "promote": "success"}, states
    decision = out["evaluate"]
    assert (
        decision["compared_against"] == "baseline" and decision["expected_champion_version"] is None
    )
    assert any("deleted" in r for r in decision["reasons"]), decision["reasons"]
    assert decision["outcome"] == "promote"
    assert get_champion(env, name) == new


def test_unknown_challenger_version_is_refused_as_a_bad_request(world, env):
    from mlops_loop.exceptions import TrainerContainerFailed
    from mlops_loop.operators.evaluate import EvaluateChallengerOperator

    op = EvaluateChallengerOperator(
        task_id="evaluate",
        config_path=str(CONFIG),
        holdout_snapshot_uri=world["holdout"],
        model_name=MODEL,
        challenger_version="999",
    )
    with pytest.raises(TrainerContainerFailed) as err:
        op.execute({})

    assert err.value.exit_code == 2, err.value
    assert "not in the registry" in (err.value.error or ""), err.value

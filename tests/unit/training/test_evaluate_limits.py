"""training/evaluate.py refuses a holdout too big for evaluation.max_holdout_memory_mb
before reading or scoring it (core/compare.py:holdout_memory_mb estimates from the
holdout's manifest), and the refusal fails the task at once (exit code 3, final)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops_loop.core.compare import holdout_memory_mb
from mlops_loop.core.config import load_config
from mlops_loop.core.ingest import ingest_batch
from mlops_loop.core.trainer_protocol import EvaluateRequest, ExitCode, config_payload
from mlops_loop.exceptions import EvaluationError
from mlops_loop_devtools.sample_data import generate_batch, land_batch

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def holdout(tmp_path):
    """A 300-row credit-default snapshot and a config whose limit it exceeds."""
    config = load_config(
        REPO / "include/config/credit_default.yaml",
        overrides={
            "storage": {"root": str(tmp_path / "data")},
            "evaluation": {"max_holdout_memory_mb": 0.01},
        },
    )
    land_batch(generate_batch("2026-03-01", rows=300), config.root, "2026-03-01")
    return config, ingest_batch(config, "2026-03-01")


def request_for(config, snap) -> EvaluateRequest:
    return EvaluateRequest(
        config=config_payload(config),
        holdout_snapshot_uri=snap.snapshot_uri,
        model_name="credit_default_model",
        challenger_version="1",
    )


def test_too_big_a_holdout_is_refused_before_it_is_read_or_scored(holdout, monkeypatch):
    from mlops_loop.core import snapshots
    from mlops_loop.training import evaluate

    config, snap = holdout

    def no_reading(*args, **kwargs):
        raise AssertionError("the holdout was read")

    monkeypatch.setattr(snapshots, "read_snapshot", no_reading)
    monkeypatch.setattr(evaluate, "score", no_reading)
    logged: list[str] = []
    estimate = holdout_memory_mb(300, 16)
    with pytest.raises(EvaluationError) as caught:
        # An unreachable tracking server: the refusal comes before any MLflow call.
        evaluate.run_evaluation(request_for(config, snap), tracking_uri="http://127.0.0.1:9", log=logged.append)
    message = str(caught.value)
    assert "evaluation.max_holdout_memory_mb" in message
    assert "300 rows x 16 columns" in message and f"{estimate:,.0f} MB" in message
    assert "training.window.holdout_days" in message and "nothing was scored" in message
    assert caught.value.rows == 300
    assert logged == []


def test_the_refusal_exits_as_a_final_data_error(holdout, tmp_path, monkeypatch):
    from mlops_loop.dag_configs import FINAL_TRAINER_EXIT_CODES
    from mlops_loop.training.__main__ import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    config, snap = holdout
    request = tmp_path / "request.json"
    request.write_text(request_for(config, snap).model_dump_json())
    code = main(["evaluate", "--request", str(request), "--result", str(tmp_path / "result.json")])
    assert code == ExitCode.DATA and code in FINAL_TRAINER_EXIT_CODES
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["error_type"] == "EvaluationError"
    assert "evaluation.max_holdout_memory_mb" in result["error"]


def test_a_holdout_within_the_limit_is_read(holdout, monkeypatch):
    """With the default limit the same holdout passes the check (and goes on to MLflow,
    which is not there: the failure is the tracking server's, after the holdout was read)."""
    from mlops_loop.exceptions import TrackingServerError
    from mlops_loop.training import evaluate

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    config, snap = holdout
    config = config.model_copy(update={"evaluation": config.evaluation.model_copy(update={"max_holdout_memory_mb": 3072.0})})
    logged: list[str] = []
    with pytest.raises(TrackingServerError):
        evaluate.run_evaluation(request_for(config, snap), tracking_uri="http://127.0.0.1:9", log=logged.append)
    assert logged and "300 rows" in logged[0] and "evaluation.max_holdout_memory_mb 3,072" in logged[0]


@pytest.mark.parametrize(
    ("rows", "columns", "expected"),
    [
        pytest.param(0, 16, 0.0, id="empty"),
        pytest.param(2**20, 0, 128.0, id="per-row-bytes-only"),
        pytest.param(2**20, 16, 16 * 72 + 128, id="per-cell-and-per-row"),
    ],
)
def test_holdout_memory_mb(rows, columns, expected):
    assert holdout_memory_mb(rows, columns) == pytest.approx(expected)


def test_holdout_memory_mb_rejects_negative_sizes():
    with pytest.raises(ValueError, match="rows and columns must be >= 0"):
        holdout_memory_mb(-1, 3)

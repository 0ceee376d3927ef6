"""core/trainer_protocol.py: the typed requests and results both sides share, the config
payload, the S3 and MLflow environment, and the trainer-side helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops_loop.core.config import DatasetConfig, load_config
from mlops_loop.core.storage import S3Credentials
from mlops_loop.core.trainer_protocol import (
    COMMANDS,
    EXIT_CODE_MEANINGS,
    EvaluateRequest,
    ExitCode,
    MonitorRequest,
    TrainRequest,
    check_command,
    config_payload,
    no_champion_result,
    parse_request,
    s3_credentials_from_env,
    s3_environment,
    trainer_tracking_uri,
)
from mlops_loop.exceptions import ConfigError, TrainingError

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "include" / "config" / "credit_default.yaml"


def test_config_payload_round_trips():
    config = load_config(CONFIG)
    payload = json.loads(json.dumps(config_payload(config)))
    assert payload["config_dir"] == config.config_dir
    rebuilt = DatasetConfig.model_validate(payload)
    assert rebuilt == config
    assert rebuilt.root == config.root


def _docs() -> dict[str, dict]:
    config = config_payload(load_config(CONFIG))
    return {
        "train": {"config": config, "train_snapshot_uri": "/s/a", "valid_snapshot_uri": "/s/b"},
        "evaluate": {
            "config": config,
            "holdout_snapshot_uri": "/s/h",
            "model_name": "m",
            "challenger_version": "2",
        },
        "monitor": {
            "config": config,
            "model_name": "m",
            "champion_version": "1",
            "snapshot_uris": ["/s/a"],
            "ds": "2026-01-05",
            "reports_root": "/r",
        },
    }


@pytest.mark.parametrize(
    ("command", "model"),
    [
        pytest.param("train", TrainRequest, id="train"),
        pytest.param("evaluate", EvaluateRequest, id="evaluate"),
        pytest.param("monitor", MonitorRequest, id="monitor"),
    ],
)
def test_parse_request_gives_the_command_model(command, model):
    request = parse_request(command, _docs()[command])
    assert type(request) is model
    assert request.dataset_config().name == "credit_default"
    # What the worker writes is what the trainer reads back.
    assert parse_request(command, json.loads(request.model_dump_json())) == request


@pytest.mark.parametrize(
    ("command", "change", "match"),
    [
        pytest.param("train", {"valid_snapshot_uri": ""}, r"valid_snapshot_uri", id="empty-uri"),
        pytest.param("train", {"registered_model": "x"}, r"registered_model: Extra", id="unknown-key"),
        pytest.param("evaluate", {"model_name": None}, r"model_name", id="no-model"),
        pytest.param("monitor", {"ds": "05/01/2026"}, r"ds: String should match", id="bad-date"),
    ],
)
def test_parse_request_names_the_bad_field(command, change, match):
    doc = {**_docs()[command], **change}
    with pytest.raises(ConfigError, match=rf"invalid {command} request: .*{match}"):
        parse_request(command, doc)


def test_dataset_config_error_names_the_key():
    doc = _docs()["train"]
    doc["config"] = {**doc["config"], "target": 5}
    request = parse_request("train", doc)
    with pytest.raises(ConfigError, match=r"invalid dataset config in the TrainRequest:\n  target"):
        request.dataset_config()


def test_unknown_command_is_refused():
    with pytest.raises(ValueError, match="must be one of train, evaluate, monitor, got 'score'"):
        check_command("score")
    assert set(COMMANDS) == {"train", "evaluate", "monitor"}


def test_every_exit_code_has_a_meaning():
    assert set(EXIT_CODE_MEANINGS) == set(ExitCode)
    assert ExitCode.DATA == 3 and ExitCode.TERMINATED == 143


def test_no_champion_result_matches_the_monitor_result_model():
    result = no_champion_result("d", "m", "2026-01-05", "2025-12-30", "2026-01-05")
    COMMANDS["monitor"][1].model_validate(result)
    assert result["verdict"] == "no_champion" and result["champion_version"] is None


# --- environment -----------------------------------------------------------------------


def test_s3_environment_local_storage():
    assert s3_environment(None) == ({}, {})


def test_s3_environment_keeps_keys_private():
    creds = S3Credentials(
        endpoint_url="http://127.0.0.1:9000",
        region_name="us-east-1",
        aws_access_key_id="AKIA-test",
        aws_secret_access_key="s3cr3t",
    )
    env, secrets = s3_environment(creds)
    assert env == {
        "MLOPS_LOOP_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    assert secrets == {"AWS_ACCESS_KEY_ID": "AKIA-test", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}
    assert "s3cr3t" not in repr(env)


def test_s3_environment_default_chain_passes_no_keys():
    env, secrets = s3_environment(S3Credentials(region_name="eu-west-1"))
    assert env == {"AWS_DEFAULT_REGION": "eu-west-1"}
    assert secrets == {}


def test_s3_credentials_round_trip_through_the_environment():
    creds = S3Credentials(
        endpoint_url="http://127.0.0.1:9000",
        region_name="eu-west-1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
        aws_session_token="t",
    )
    env, secrets = s3_environment(creds)
    back = s3_credentials_from_env({**env, **secrets})
    assert (back.endpoint_url, back.region_name) == ("http://127.0.0.1:9000", "eu-west-1")
    assert (back.aws_access_key_id, back.aws_secret_access_key, back.aws_session_token) == (
        "k",
        "s",
        "t",
    )
    assert s3_credentials_from_env({}).endpoint_url is None


def test_s3_credentials_from_env_hides_keys_in_repr():
    creds = s3_credentials_from_env(
        {
            "AWS_ACCESS_KEY_ID": "key-id-123",
            "AWS_SECRET_ACCESS_KEY": "secret-456",
            "AWS_DEFAULT_REGION": "eu-west-1",
            "MLOPS_LOOP_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        }
    )
    assert (creds.aws_access_key_id, creds.aws_secret_access_key) == ("key-id-123", "secret-456")
    assert (creds.region_name, creds.endpoint_url) == ("eu-west-1", "http://127.0.0.1:9000")
    assert "secret-456" not in repr(creds) and "key-id-123" not in repr(creds)


def test_trainer_tracking_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    with pytest.raises(TrainingError, match="no MLflow tracking server: set MLFLOW_TRACKING_URI"):
        trainer_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://m:5000")
    assert trainer_tracking_uri() == "http://m:5000"
    assert trainer_tracking_uri("http://other") == "http://other"
    import os

    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "60"

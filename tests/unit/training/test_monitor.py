"""training/monitor.py without MLflow or Docker: request checks, the no-champion result,
where profiles and reports go, and which rows give the reference scores. The real runs
(profile on first use, drift, decay, reports, MLflow) are in tests/dags/test_drift_dag.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops_loop.core.config import load_config
from mlops_loop.core.trainer_protocol import NO_CHAMPION, ExitCode, config_payload, parse_request
from mlops_loop.exceptions import ConfigError, TrainingError
from mlops_loop.training.__main__ import main
from mlops_loop.training.monitor import (
    _holdout_uri,
    profile_uri_for,
    report_prefix_for,
    run_monitor,
)

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "include" / "config" / "credit_default.yaml"


def request_doc(**overrides) -> dict:
    doc = {
        "config": config_payload(load_config(CONFIG)),
        "model_name": "credit_default_model",
        "champion_version": None,
        "snapshot_uris": [],
        "ds": "2026-04-22",
        "since_ds": "2026-04-16",
        "until_ds": "2026-04-22",
        "reports_root": "/data/credit_default/reports/drift",
    }
    doc.update(overrides)
    return doc


def test_no_champion_is_a_verdict_not_an_error(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # not needed without a champion
    result = run_monitor(parse_request("monitor", request_doc()), log=lambda _: None)
    assert result["status"] == "ok" and result["verdict"] == NO_CHAMPION
    assert result["champion_version"] is None and "no champion" in result["reasons"][0]


def test_command_line_monitor_without_champion(tmp_path):
    (tmp_path / "request.json").write_text(json.dumps(request_doc()))
    code = main(["monitor", "--request", str(tmp_path / "request.json"), "--result", str(tmp_path / "result.json")])
    assert code == ExitCode.OK
    assert json.loads((tmp_path / "result.json").read_text())["verdict"] == NO_CHAMPION


def test_command_line_in_a_container_request_from_env_result_signed_on_stdout(
    monkeypatch, capsys
):
    """The container's transport: the request in $MLOPS_LOOP_TRAINER_REQUEST (gone from
    the environment once read), the result as the last stdout line, signed, never the token."""
    from mlops_loop.core.containers import read_result_output
    from mlops_loop.core.trainer_protocol import REQUEST_ENV, MonitorResult

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    doc = request_doc()
    token = parse_request("monitor", doc).token
    monkeypatch.setenv(REQUEST_ENV, json.dumps({**doc, "token": token}))
    code = main(["monitor", "--request-env", "--result-stdout"])
    assert code == ExitCode.OK
    assert REQUEST_ENV not in __import__("os").environ  # nothing it starts inherits the token
    out = capsys.readouterr().out
    assert token not in out
    assert out.splitlines()[-1].startswith("MLOPS_LOOP_RESULT/1 ")
    result = read_result_output(iter([out.encode()]), MonitorResult, token=token)
    assert result["verdict"] == NO_CHAMPION


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(None, "is not set", id="unset"),
        pytest.param("{not json", "cannot read request", id="not-json"),
        pytest.param('{"token": "' + "k" * 32 + '", "ds": "x"}', "invalid monitor request", id="invalid"),
    ],
)
def test_command_line_bad_request_from_env_prints_an_error_line(monkeypatch, capsys, value, message):
    from mlops_loop.core.containers import answer_in_output
    from mlops_loop.core.trainer_protocol import REQUEST_ENV

    monkeypatch.delenv(REQUEST_ENV, raising=False)
    if value is not None:
        monkeypatch.setenv(REQUEST_ENV, value)
    assert main(["monitor", "--request-env", "--result-stdout"]) == ExitCode.BAD_REQUEST
    out = capsys.readouterr().out.encode()
    if value and "token" in value:  # the token was readable: the error answers the request
        error, refused = answer_in_output(iter([out]), "k" * 32)
        assert not refused and error is not None and message in error["error"]
    else:  # no token to sign with: the line is there, unsigned, and answers nothing
        assert answer_in_output(iter([out]), "k" * 32) == (None, True)
        assert message in out.decode()


@pytest.mark.parametrize(
    "overrides, names",
    [
        pytest.param({"ds": "22.04.2026"}, "ds", id="bad-ds"),
        pytest.param({"model_name": ""}, "model_name", id="empty-model"),
        pytest.param({"unknown": 1}, "unknown", id="extra-key"),
    ],
)
def test_bad_requests_name_the_field(overrides, names):
    with pytest.raises(ConfigError, match=names):
        parse_request("monitor", request_doc(**overrides))


def test_bad_request_exit_code(tmp_path):
    (tmp_path / "request.json").write_text(json.dumps(request_doc(ds="yesterday")))
    code = main(["monitor", "--request", str(tmp_path / "request.json"), "--result", str(tmp_path / "result.json")])
    assert code == ExitCode.BAD_REQUEST
    assert "ds" in json.loads((tmp_path / "result.json").read_text())["error"]


def test_locations():
    assert profile_uri_for("s3://b/ds/reports/drift", "m", "3") == "s3://b/ds/reports/drift/profiles/m/3/profile.json"
    assert report_prefix_for("/r/reports/drift", "2026-04-22") == "/r/reports/drift/ds=2026-04-22"


def _snapshot(folder: Path) -> str:
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    return str(folder)


def test_reference_scores_come_from_the_holdout_next_to_train(tmp_path):
    train = _snapshot(tmp_path / "training_sets/abc/train")
    valid = _snapshot(tmp_path / "training_sets/abc/valid")
    assert _holdout_uri(train, valid, None) == valid  # no holdout written
    holdout = _snapshot(tmp_path / "training_sets/abc/holdout")
    assert _holdout_uri(train, valid, None) == holdout
    assert _holdout_uri(str(tmp_path / "snapshots/xyz"), valid, None) == valid
    with pytest.raises(TrainingError, match="no holdout"):
        _holdout_uri(str(tmp_path / "snapshots/xyz"), None, None)

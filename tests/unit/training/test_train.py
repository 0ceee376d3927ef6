"""Orchestration helpers and the command line, without any server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops_loop.core.config import load_config, training_settings
from mlops_loop.core.trainer_protocol import ExitCode, TrainRequest
from mlops_loop.exceptions import (
    ConfigError,
    DriftError,
    EvaluationError,
    PromotionLockTimeout,
    RegistryError,
    TargetError,
    TrackingServerError,
    TrainingError,
)
from mlops_loop.training import train
from mlops_loop.training.__main__ import (
    Terminated,
    exit_code_for,
    main,
)

CONFIG = Path(__file__).resolve().parents[3] / "include" / "config" / "credit_default.yaml"


@pytest.fixture(scope="module")
def config():
    return load_config(CONFIG)


def request(config, **extra):
    doc = {
        "config": {**config.model_dump(mode="json"), "config_dir": config.config_dir},
        "train_snapshot_uri": "/nowhere/a",
        "valid_snapshot_uri": "/nowhere/b",
    }
    doc.update(extra)
    return TrainRequest.model_validate(doc)


@pytest.mark.parametrize(
    ("change", "same"),
    [
        pytest.param({}, True, id="identical"),
        pytest.param({"train": "other"}, False, id="other-train-snapshot"),
        pytest.param({"overrides": {"seed": 1}}, False, id="other-seed"),
        pytest.param({"tags": {"code_version": "v2"}}, False, id="other-code"),
        pytest.param({"tags": {"trainer_image": "img@sha256:2"}}, False, id="other-image"),
        pytest.param(
            {"tags": {"airflow_run_id": "another run"}}, True, id="airflow-ids-do-not-count"
        ),
    ],
)
def test_training_input_hash(config, change, same):
    base_tags = {"code_version": "v1", "trainer_image": "img@sha256:1", "airflow_run_id": "r1"}

    def digest(train_sha="a", overrides=None, tags=None):
        settings = training_settings(config, overrides)
        return train.training_input_hash(
            settings, config, train_sha, "b", {**base_tags, **(tags or {})}
        )

    kwargs = {
        "train_sha": change.get("train", "a"),
        "overrides": change.get("overrides"),
        "tags": change.get("tags"),
    }
    assert (digest() == digest(**kwargs)) is same


def test_cpu_threads_are_restored():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    with train._cpu_threads(1, "cpu"):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        pytest.param(ConfigError("x"), ExitCode.BAD_REQUEST, id="config"),
        pytest.param(TrainingError("x", stage="snapshots"), ExitCode.DATA, id="snapshot"),
        pytest.param(TrainingError("x", stage="data"), ExitCode.DATA, id="data"),
        pytest.param(TrainingError("x", stage="fit"), ExitCode.FAILED, id="fit"),
        pytest.param(
            TrackingServerError("x", tracking_uri="http://h"), ExitCode.TRACKING, id="tracking"
        ),
        pytest.param(Terminated("x", stage="interrupted"), ExitCode.TERMINATED, id="sigterm"),
        pytest.param(
            RegistryError("x", model_name="m", version="9"),
            ExitCode.BAD_REQUEST,
            id="unknown-version",
        ),
        pytest.param(EvaluationError("x"), ExitCode.DATA, id="evaluation-data"),
        pytest.param(DriftError("x", feature="age"), ExitCode.DATA, id="drift-data"),
        pytest.param(TargetError("x", column="label"), ExitCode.DATA, id="target-labels"),
        pytest.param(
            PromotionLockTimeout("x", model_name="m", lock_name="l", holder=None),
            ExitCode.BAD_REQUEST,
            id="registry-subclass",
        ),
        pytest.param(RuntimeError("x"), ExitCode.UNEXPECTED, id="bug"),
    ],
)
def test_exit_codes(exc, code):
    assert exit_code_for(exc) == code


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(None, "cannot read request", id="missing-file"),
        pytest.param("{not json", "cannot read request", id="not-json"),
        pytest.param("[1, 2]", "must hold a JSON object", id="not-an-object"),
        pytest.param('{"config": {}}', "train_snapshot_uri", id="missing-fields"),
        pytest.param(
            '{"config": {}, "train_snapshot_uri": "a", "valid_snapshot_uri": "b", "colour": 1}',
            "colour",
            id="unknown-field",
        ),
    ],
)
def test_bad_request_files_write_an_error_result(tmp_path, content, message):
    req = tmp_path / "request.json"
    if content is not None:
        req.write_text(content)
    result = tmp_path / "out" / "result.json"
    code = main(["train", "--request", str(req), "--result", str(result)])
    assert code == ExitCode.BAD_REQUEST
    doc = json.loads(result.read_text())
    assert doc["status"] == "error" and message in doc["error"]
    assert [p.name for p in result.parent.iterdir()] == ["result.json"]  # atomic: no temp left


def test_no_tracking_uri_fails_before_anything(config, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(TrainingError, match="MLFLOW_TRACKING_URI"):
        train.run_training(request(config))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param("max 100000\n", None, id="unlimited"),
        pytest.param("200000 100000\n", 2, id="two-cpus"),
        pytest.param("150000 100000\n", 2, id="one-and-a-half-rounds-up"),
        pytest.param("50000 100000\n", 1, id="half-a-cpu"),
        pytest.param(None, None, id="no-cgroup-file"),
    ],
)
def test_cgroup_cpu_limit(tmp_path, content, expected):
    path = tmp_path / "cpu.max"
    if content is not None:
        path.write_text(content)
    assert train.cgroup_cpu_limit(str(path)) == expected


def test_sigterm_ends_the_process_even_when_library_code_swallows_it():
    # Code that catches Exception around the point where SIGTERM lands (optional imports,
    # retry loops) swallows Terminated; the watchdog still ends the process with 143.
    import signal
    import subprocess
    import sys

    script = (
        "import signal, time\n"
        "import mlops_loop.training.__main__ as m\n"
        "m.TERMINATE_GRACE_SECONDS = 0.5\n"
        "signal.signal(signal.SIGTERM, m._on_sigterm)\n"
        "ready = False\n"
        "while True:\n"
        "    try:\n"  # 'ready' is printed inside the try, so the signal always lands in it
        "        if not ready:\n"
        "            ready = True\n"
        "            print('ready', flush=True)\n"
        "        time.sleep(0.05)\n"
        "    except Exception:\n"
        "        pass\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == ExitCode.TERMINATED
        assert "after SIGTERM: exiting" in (proc.stderr.read() if proc.stderr else "")
    finally:
        proc.kill()

"""core/containers.py: GPU decisions, exit-code explanations, request/result files, and
the local-process runner (real child processes)."""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from mlops_loop.core.containers import (
    LocalTrainerProcess,
    check_runner,
    check_tracking_uri,
    container_command,
    decide_gpu,
    decide_local_gpu,
    exit_code_of,
    explain_exit_code,
    local_command,
    local_environment,
    local_read_only_paths,
    log_tail,
    make_io_dir,
    nvidia_runtime_available,
    read_result,
    read_result_file,
    write_request,
)
from mlops_loop.core.trainer_protocol import (
    CONTAINER_IO_DIR,
    RESULT_FILE,
    ExitCode,
    TrainRequest,
    TrainResult,
)
from mlops_loop.exceptions import GpuUnavailableError, TrainerResultError

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "include" / "config" / "credit_default.yaml"

CPU_HOST = {"Runtimes": {"runc": {"path": "runc"}, "io.containerd.runc.v2": {}}, "DefaultRuntime": "runc"}
GPU_HOST = {"Runtimes": {"runc": {"path": "runc"}, "nvidia": {"path": "nvidia-container-runtime"}}}
GPU_DEFAULT_RUNTIME = {"Runtimes": {"runc": {}}, "DefaultRuntime": "nvidia"}


# --- GPU -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        pytest.param(CPU_HOST, False, id="runc-only"),
        pytest.param(GPU_HOST, True, id="nvidia-runtime"),
        pytest.param(GPU_DEFAULT_RUNTIME, True, id="nvidia-default-runtime"),
        pytest.param({}, False, id="no-runtimes-key"),
        pytest.param({"Runtimes": None}, False, id="runtimes-null"),
    ],
)
def test_nvidia_runtime_available(info, expected):
    assert nvidia_runtime_available(info) is expected


@pytest.mark.parametrize(
    ("mode", "info", "use_gpu", "warn"),
    [
        pytest.param("auto", GPU_HOST, True, False, id="auto-gpu-host"),
        pytest.param("auto", CPU_HOST, False, True, id="auto-cpu-host-warns"),
        pytest.param("required", GPU_HOST, True, False, id="required-gpu-host"),
        pytest.param("none", GPU_HOST, False, False, id="none-gpu-host"),
        pytest.param("none", None, False, False, id="none-never-asks-host"),
    ],
)
def test_decide_gpu(mode, info, use_gpu, warn):
    decision = decide_gpu(mode, info)
    assert (decision.use_gpu, decision.warn) == (use_gpu, warn)
    assert decision.reason


def test_required_gpu_on_cpu_host_fails_naming_the_problem():
    with pytest.raises(GpuUnavailableError, match="no NVIDIA GPU runtime") as err:
        decide_gpu("required", CPU_HOST, docker_url="unix://var/run/docker.sock")
    assert err.value.runtimes == ["io.containerd.runc.v2", "runc"]
    assert "unix://var/run/docker.sock" in str(err.value)


def test_auto_gpu_warning_names_the_runtimes():
    assert "runc" in decide_gpu("auto", CPU_HOST).reason


@pytest.mark.parametrize("mode", ["yes", "cuda", "", "AUTO"])
def test_unknown_gpu_mode_is_rejected(mode):
    with pytest.raises(ValueError, match="gpu must be one of"):
        decide_gpu(mode, CPU_HOST)


def test_auto_without_host_info_is_an_error():
    with pytest.raises(ValueError, match="needs the Docker host"):
        decide_gpu("auto", None)


# --- exit codes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kwargs", "expected"),
    [
        pytest.param(0, {}, "success", id="0-success"),
        pytest.param(1, {}, "unexpected error", id="1-unexpected"),
        pytest.param(2, {}, "rejected its request", id="2-bad-request"),
        pytest.param(3, {}, "snapshot data problem", id="3-data"),
        pytest.param(4, {}, "MLflow tracking server was unreachable", id="4-tracking"),
        pytest.param(5, {}, "registering the model failed", id="5-fit-log-register"),
        pytest.param(125, {}, "could not be started", id="125-docker"),
        pytest.param(126, {}, "cannot be executed", id="126-not-executable"),
        pytest.param(127, {}, "entrypoint was not found", id="127-not-found"),
        pytest.param(137, {"mem_limit": "512m"}, "likely out of memory (mem_limit 512m)", id="137-killed"),
        pytest.param(137, {}, "no mem_limit set", id="137-no-limit"),
        pytest.param(137, {"oom_killed": True, "mem_limit": "20m"}, "out of memory (mem_limit 20m)", id="137-oom"),
        pytest.param(139, {}, "segmentation fault", id="139-segv"),
        pytest.param(134, {}, "aborted (SIGABRT)", id="134-abort"),
        pytest.param(143, {}, "terminated (SIGTERM)", id="143-term"),
        pytest.param(130, {}, "killed by SIGINT", id="130-int"),
        pytest.param(9, {}, "exited with an error status", id="9-other"),
        pytest.param(-1, {}, "did not report", id="negative"),
    ],
)
def test_explain_exit_code(code, kwargs, expected):
    text = explain_exit_code(code, **kwargs)
    assert text.startswith(f"exit code {code}")
    assert expected in text


def test_oom_flag_wins_over_the_code():
    # The kernel can OOM-kill a child while PID 1 exits 1: Docker's flag still says OOM.
    assert "running out of memory" in explain_exit_code(1, oom_killed=True, mem_limit="1g")


@pytest.mark.parametrize("code", list(ExitCode), ids=lambda c: c.name)
def test_every_trainer_exit_code_has_its_own_explanation(code):
    # The trainer's codes (trainer_protocol.ExitCode) must not fall through to the generic text.
    assert "exited with an error status" not in explain_exit_code(int(code))


def test_log_tail_keeps_last_non_empty_lines():
    lines = [f"line {i}" for i in range(50)] + ["", "   "]
    assert log_tail(lines, max_lines=3) == "line 47\nline 48\nline 49"
    assert log_tail([]) == ""


# --- command and request -------------------------------------------------------------


def test_container_command():
    assert container_command("train") == [
        "train",
        "--request",
        f"{CONTAINER_IO_DIR}/request.json",
        "--result",
        f"{CONTAINER_IO_DIR}/result.json",
    ]
    with pytest.raises(ValueError, match="must be one of train, evaluate, monitor"):
        container_command("predict")


def test_write_request_is_json_readable_by_others(tmp_path):
    request = TrainRequest(
        config={}, train_snapshot_uri="/data/snapshots/a", valid_snapshot_uri="/data/snapshots/b",
        tags={"airflow_dag_id": "d"},
    )  # fmt: skip
    path = write_request(tmp_path, request)
    data = json.loads(path.read_text())
    assert data["train_snapshot_uri"] == "/data/snapshots/a"
    assert data["tags"] == {"airflow_dag_id": "d"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["request.json"]  # no temp file left




# --- io folder and result ------------------------------------------------------------


def test_make_io_dir_is_fresh_and_writable_by_other_users(tmp_path):
    a = make_io_dir(str(tmp_path / "io"))
    b = make_io_dir(str(tmp_path / "io"))
    assert a != b and a.parent == b.parent == tmp_path / "io"
    assert stat.S_IMODE(a.stat().st_mode) == 0o777


GOOD_RESULT = {
    "status": "ok",
    "run_id": "r1",
    "model_uri": "models:/m/1",
    "model_name": "m",
    "model_version": "1",
    "metrics": {"roc_auc": 0.8},
    "device": "cpu",
}


def _write_result(io_dir: Path, payload: object) -> None:
    (io_dir / RESULT_FILE).write_text(payload if isinstance(payload, str) else json.dumps(payload))


def test_read_result_ok_keeps_extra_keys(tmp_path):
    _write_result(tmp_path, {**GOOD_RESULT, "params": {"lr": 0.1}})
    assert read_result(tmp_path, TrainResult)["params"] == {"lr": 0.1}


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        pytest.param(None, "wrote no result.json", id="missing"),
        pytest.param("{not json", "not valid JSON", id="bad-json"),
        pytest.param([1, 2], "must be a JSON object", id="not-object"),
        pytest.param({"status": "error", "error": "boom"}, "status='error': boom", id="status-error"),
        pytest.param({k: v for k, v in GOOD_RESULT.items() if k != "model_version"}, "model_version", id="incomplete"),
        pytest.param({**GOOD_RESULT, "device": "tpu"}, "device", id="bad-device"),
    ],
)
def test_read_result_rejects(tmp_path, payload, match):
    if payload is not None:
        _write_result(tmp_path, payload)
    with pytest.raises(TrainerResultError, match=match) as err:
        read_result(tmp_path, TrainResult)
    assert err.value.path == str(tmp_path / RESULT_FILE)


def test_read_result_file_absent_is_none(tmp_path):
    assert read_result_file(tmp_path) is None


# --- mounts and tracking URI ---------------------------------------------------------


@pytest.mark.parametrize(
    ("uris", "expected"),
    [
        pytest.param(["/data/root", "/data/root/snapshots/a", "/data/root/snapshots/b"], ["/data/root"], id="nested"),
        pytest.param(["/data/a", "/data/ab"], ["/data/a", "/data/ab"], id="prefix-is-not-parent"),
        pytest.param(["s3://bucket/root", "/data/x/"], ["/data/x"], id="s3-skipped-trailing-slash"),
        pytest.param(["file:///data/y", None, ""], ["/data/y"], id="file-uri"),
        pytest.param(["http://host/x"], [], id="other-scheme"),
    ],
)
def test_local_read_only_paths(uris, expected):
    assert local_read_only_paths(uris) == expected


def test_local_read_only_paths_are_absolute():
    assert local_read_only_paths(["relative/dir"]) == [os.path.abspath("relative/dir")]


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        pytest.param(None, "no MLflow tracking URI", id="missing"),
        pytest.param("sqlite:///mlflow.db", "not an http", id="sqlite"),
        pytest.param("/tmp/mlruns", "not an http", id="path"),
    ],
)
def test_check_tracking_uri_rejects(uri, match):
    with pytest.raises(ValueError, match=match):
        check_tracking_uri(uri)


def test_check_tracking_uri_accepts_http():
    assert check_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


# --- environment ---------------------------------------------------------------------


# --- the local-process runner ----------------------------------------------------------


def test_check_runner():
    assert [check_runner(r) for r in ("docker", "local", "auto")] == ["docker", "local", "auto"]
    with pytest.raises(ValueError, match="MLOPS_LOOP_TRAINER_RUNNER"):
        check_runner("kubernetes")


def test_local_command_uses_host_io_paths(tmp_path: Path):
    argv = local_command("evaluate", tmp_path, python="/opt/trainer/bin/python")
    assert argv == [
        "/opt/trainer/bin/python",
        "-m",
        "mlops_loop.training",
        "evaluate",
        "--request",
        str(tmp_path / "request.json"),
        "--result",
        str(tmp_path / "result.json"),
    ]
    assert local_command("train", tmp_path)[0] == sys.executable
    with pytest.raises(ValueError, match="trainer command"):
        local_command("predict", tmp_path)


def test_decide_local_gpu():
    gpu0 = ["GPU 0: NVIDIA A100 (UUID: GPU-1)"]
    assert decide_local_gpu("none", gpu0).use_gpu is False
    assert decide_local_gpu("auto", gpu0).use_gpu is True
    assert decide_local_gpu("required", gpu0).use_gpu is True
    fallback = decide_local_gpu("auto", [])
    assert (fallback.use_gpu, fallback.warn) == (False, True)
    with pytest.raises(GpuUnavailableError, match="lists no NVIDIA GPU"):
        decide_local_gpu("required", [])


def test_local_environment_hides_cuda_without_gpu_and_adds_secrets():
    env = local_environment({"PATH": "/bin", "AWS_ACCESS_KEY_ID": "old"}, {"MLFLOW_TRACKING_URI": "http://m"},
                            {"AWS_ACCESS_KEY_ID": "new"}, use_gpu=False)  # fmt: skip
    assert env["PATH"] == "/bin" and env["MLFLOW_TRACKING_URI"] == "http://m"
    assert env["AWS_ACCESS_KEY_ID"] == "new" and env["CUDA_VISIBLE_DEVICES"] == ""
    assert "CUDA_VISIBLE_DEVICES" not in local_environment({}, {}, {}, use_gpu=True)


def test_exit_code_of_signals_follows_the_container_convention():
    assert [exit_code_of(rc) for rc in (0, 3, -9, -15)] == [0, 3, 137, 143]


def test_local_process_streams_lines_and_returns_its_exit_code(tmp_path: Path):
    script = "import sys\nfor i in range(3):\n    print(f'line {i}', flush=True)\nsys.exit(3)"
    lines: list[str] = []
    proc = LocalTrainerProcess([sys.executable, "-c", script], env=dict(os.environ), cwd=tmp_path)
    assert proc.stream(lines.append) == 3
    assert lines == ["line 0", "line 1", "line 2"] and proc.tail == lines


def test_local_process_stop_ends_the_whole_process_group(tmp_path: Path):
    # The child starts a grandchild (like a data-loader worker) and both ignore nothing:
    # stop() must end both, and the exit code must say SIGTERM.
    pid_file = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time\n"
        f"g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(g.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(300)\n"
    )
    proc = LocalTrainerProcess([sys.executable, "-c", script], env=dict(os.environ))
    codes: list[int] = []
    reader = threading.Thread(target=lambda: codes.append(proc.stream(lambda line: None)))
    reader.start()
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    grandchild = int(pid_file.read_text())

    proc.stop(grace_seconds=10)
    reader.join(timeout=30)

    assert codes == [143]
    deadline = time.monotonic() + 10
    while _alive(grandchild):
        if time.monotonic() > deadline:
            pytest.fail("the grandchild process outlived stop()")
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for an init that may not reap it."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat_line.rsplit(")", 1)[1].split()[0] != "Z"

"""core/containers.py: GPU decisions, exit-code explanations, the container's request
(environment) and result line (stdout), the local runner's request/result files, where
the Docker host is, and the local-process runner (real child processes)."""

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
    LOCAL_ENV_ALLOWED,
    MAX_RESULT_BYTES,
    TRAINER_IMAGE_USER,
    LocalTrainerProcess,
    Owner,
    allowed_worker_environment,
    answer_in_output,
    check_cpus,
    check_pids_limit,
    check_runner,
    check_storage_reachable,
    check_tracking_uri,
    container_command,
    decide_container_user,
    decide_gpu,
    decide_local_gpu,
    docker_host_is_local,
    exit_code_of,
    explain_exit_code,
    hand_over,
    hardened_host_config,
    image_user,
    is_named_network,
    last_result_line,
    local_command,
    local_environment,
    local_read_only_paths,
    log_tail,
    make_io_dir,
    missing_network_message,
    nvidia_runtime_available,
    parse_user,
    read_only_root_hint,
    read_result,
    read_result_file,
    read_result_output,
    request_environment,
    resolve_network,
    result_answers,
    write_request,
)
from mlops_loop.core.trainer_protocol import (
    MAX_REQUEST_BYTES,
    REQUEST_ENV,
    RESULT_FILE,
    RESULT_MARKER,
    ExitCode,
    TrainRequest,
    TrainResult,
    result_line,
)
from mlops_loop.exceptions import GpuUnavailableError, TrainerResultError

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "include" / "config" / "credit_default.yaml"

CPU_HOST = {
    "Runtimes": {"runc": {"path": "runc"}, "io.containerd.runc.v2": {}},
    "DefaultRuntime": "runc",
}
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
        pytest.param(
            137, {"mem_limit": "512m"}, "likely out of memory (mem_limit 512m)", id="137-killed"
        ),
        pytest.param(137, {}, "no mem_limit set", id="137-no-limit"),
        pytest.param(
            137,
            {"oom_killed": True, "mem_limit": "20m"},
            "out of memory (mem_limit 20m)",
            id="137-oom",
        ),
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
    # No path: the request comes from the environment, the result goes to stdout.
    assert container_command("train") == ["train", "--request-env", "--result-stdout"]
    with pytest.raises(ValueError, match="must be one of train, evaluate, monitor"):
        container_command("predict")


def _request() -> TrainRequest:
    return TrainRequest(
        config={}, train_snapshot_uri="/data/snapshots/a", valid_snapshot_uri="/data/snapshots/b",
        tags={"airflow_dag_id": "d"},
    )  # fmt: skip


def test_write_request_is_private_json_with_its_token(tmp_path):
    request = _request()
    path = write_request(tmp_path, request)
    data = json.loads(path.read_text())
    assert data["train_snapshot_uri"] == "/data/snapshots/a"
    assert data["tags"] == {"airflow_dag_id": "d"}
    assert data["token"] == request.token and len(request.token) >= 32
    assert request.token not in repr(request)  # never in a log line by accident
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["request.json"]  # no temp file left


def test_request_environment_carries_the_whole_request():
    request = _request()
    env = request_environment(request)
    assert list(env) == [REQUEST_ENV]
    assert "\n" not in env[REQUEST_ENV]
    assert TrainRequest.model_validate(json.loads(env[REQUEST_ENV])) == request


def test_a_request_too_large_for_one_environment_variable_is_refused():
    request = _request().model_copy(update={"hyperparameters": {"x": "y" * MAX_REQUEST_BYTES}})
    with pytest.raises(ValueError, match=r"over the 98304 a container environment variable"):
        request_environment(request)


def test_every_request_gets_its_own_token():
    assert len({_request().token for _ in range(20)}) == 20


# --- io folder and result ------------------------------------------------------------


def test_make_io_dir_is_fresh_and_private_to_the_worker(tmp_path):
    root = tmp_path / "io"
    a = make_io_dir(str(root))
    b = make_io_dir(str(root))
    assert a != b and a.parent == b.parent == root
    for folder in (a, b):
        info = folder.stat()
        assert stat.S_IMODE(info.st_mode) == 0o700  # nobody else can list, read or write
        assert (info.st_uid, info.st_gid) == (os.geteuid(), os.getegid())


def test_make_io_dir_in_a_world_writable_root_is_still_private(tmp_path):
    root = tmp_path / "shared"
    root.mkdir()
    root.chmod(0o1777)  # like /tmp
    assert stat.S_IMODE(make_io_dir(str(root)).stat().st_mode) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can hand a folder to another uid")
def test_make_io_dir_handed_to_the_container_user_when_root(tmp_path):
    owner = Owner(10001, 10001)
    folder = make_io_dir(str(tmp_path / "io"), owner=owner)
    path = write_request(folder, _request())
    for entry in (folder, path):
        info = entry.stat()
        assert (info.st_uid, info.st_gid) == (10001, 10001)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


TOKEN = "t" * 43
GOOD_RESULT = {
    "status": "ok",
    "token": TOKEN,
    "run_id": "r1",
    "model_uri": "models:/m/1",
    "model_name": "m",
    "model_version": "1",
    "metrics": {"roc_auc": 0.8},
    "device": "cpu",
}


def _write_result(io_dir: Path, payload: object) -> None:
    (io_dir / RESULT_FILE).write_text(payload if isinstance(payload, str) else json.dumps(payload))


def test_read_result_ok_keeps_extra_keys_and_drops_the_token(tmp_path):
    _write_result(tmp_path, {**GOOD_RESULT, "params": {"lr": 0.1}})
    result = read_result(tmp_path, TrainResult, token=TOKEN)
    assert result["params"] == {"lr": 0.1}
    assert "token" not in result


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        pytest.param(None, "wrote no result.json", id="missing"),
        pytest.param("{not json", "not valid JSON", id="bad-json"),
        pytest.param([1, 2], "must be a JSON object", id="not-object"),
        pytest.param({"status": "error", "error": "boom", "token": TOKEN}, "status='error': boom", id="status-error"),
        pytest.param({k: v for k, v in GOOD_RESULT.items() if k != "model_version"}, "model_version", id="incomplete"),
        pytest.param({**GOOD_RESULT, "device": "tpu"}, "device", id="bad-device"),
        # Forged: a complete, valid-looking result without this request's token.
        pytest.param({k: v for k, v in GOOD_RESULT.items() if k != "token"}, "does not answer this task's request", id="no-token"),
        pytest.param({**GOOD_RESULT, "token": "another-request-token-0123456789"}, "does not answer this task's request", id="other-token"),
        pytest.param({**GOOD_RESULT, "token": None}, "does not answer", id="null-token"),
        pytest.param({"status": "error", "error": "boom"}, "does not answer", id="error-without-token"),
    ],
)  # fmt: skip
def test_read_result_rejects(tmp_path, payload, match):
    if payload is not None:
        _write_result(tmp_path, payload)
    with pytest.raises(TrainerResultError, match=match) as err:
        read_result(tmp_path, TrainResult, token=TOKEN)
    assert err.value.path == str(tmp_path / RESULT_FILE)


def test_a_result_of_another_task_is_refused(tmp_path):
    """Two tasks' requests: the result answering one is refused by the other."""
    mine, theirs = _request(), _request()
    write_request(tmp_path, mine)
    _write_result(tmp_path, {**GOOD_RESULT, "token": theirs.token})
    with pytest.raises(TrainerResultError, match=r"refusing result\.json: it does not answer"):
        read_result(tmp_path, TrainResult, token=mine.token)
    _write_result(tmp_path, {**GOOD_RESULT, "token": mine.token})
    assert read_result(tmp_path, TrainResult, token=mine.token)["model_version"] == "1"


def test_result_answers():
    assert result_answers({"token": TOKEN}, TOKEN)
    assert not result_answers({"token": TOKEN[:-1]}, TOKEN)
    assert not result_answers({"token": 5}, TOKEN)
    assert not result_answers({}, TOKEN)


def test_a_linked_result_file_is_never_followed(tmp_path):
    secret = tmp_path / "elsewhere.json"
    secret.write_text(json.dumps(GOOD_RESULT))
    (tmp_path / RESULT_FILE).symlink_to(secret)
    with pytest.raises(TrainerResultError, match="cannot be opened as a plain file"):
        read_result_file(tmp_path)


def test_a_result_that_is_not_a_regular_file_is_refused(tmp_path):
    os.mkfifo(tmp_path / RESULT_FILE)  # would block a plain open() for reading
    with pytest.raises(TrainerResultError, match="not a regular file"):
        read_result_file(tmp_path)


def test_read_result_file_absent_is_none(tmp_path):
    assert read_result_file(tmp_path) is None


# --- the container's result line -------------------------------------------------------

CLEAN_RESULT = {k: v for k, v in GOOD_RESULT.items() if k != "token"}


def _chunks(lines: list[str], size: int = 7) -> list[bytes]:
    """stdout as the engine streams it: chunks that do not follow line ends."""
    data = "".join(f"{line}\n" for line in lines).encode()
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_a_signed_result_line_is_read_from_chunked_output():
    line = result_line({**CLEAN_RESULT, "params": {"lr": 0.1}}, TOKEN)
    assert TOKEN not in line  # signed, not echoed: the line is in the task log
    output = _chunks(["epoch 1/3", "epoch 2/3", line, "mlflow: run ended"])
    result = read_result_output(iter(output), TrainResult, token=TOKEN)
    assert result == {**CLEAN_RESULT, "params": {"lr": 0.1}}


def test_a_result_line_after_an_unterminated_progress_line_is_found():
    line = result_line(CLEAN_RESULT, TOKEN)
    output = _chunks([f"\r 93% |#########  {line}"])
    assert read_result_output(iter(output), TrainResult, token=TOKEN)["model_version"] == "1"


def _tampered() -> str:
    marker, signature, _ = result_line(CLEAN_RESULT, TOKEN).split(" ", 2)
    return f"{marker} {signature} " + json.dumps({**CLEAN_RESULT, "model_version": "9"})


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        pytest.param(["epoch 1/3"], "printed no result line", id="missing"),
        pytest.param([result_line(CLEAN_RESULT, None)], "not signed with this task's", id="unsigned"),
        pytest.param([result_line(CLEAN_RESULT, "another-request-token-0123456789")], "not signed with this task's", id="other-token"),
        pytest.param([_tampered()], "not signed with this task's", id="changed-after-signing"),
        pytest.param([result_line(CLEAN_RESULT, TOKEN), result_line(CLEAN_RESULT, None)], "not signed with this task's", id="forged-after-the-real-one"),
        pytest.param([f"{RESULT_MARKER} abc"], "malformed", id="malformed"),
        pytest.param([result_line({"status": "error", "error": "boom"}, TOKEN)], "status='error': boom", id="status-error"),
        pytest.param([result_line({k: v for k, v in CLEAN_RESULT.items() if k != "model_version"}, TOKEN)], "result line is incomplete: model_version", id="incomplete"),
    ],
)  # fmt: skip
def test_read_result_output_rejects(lines, match):
    with pytest.raises(TrainerResultError, match=match):
        read_result_output(iter(_chunks(lines)), TrainResult, token=TOKEN)


def test_a_signed_line_that_is_not_a_json_object_is_refused():
    from mlops_loop.core.trainer_protocol import result_signature

    for text in ("[1, 2]", "{not json"):
        line = f"{RESULT_MARKER} {result_signature(text, TOKEN)} {text}"
        with pytest.raises(TrainerResultError, match="JSON"):
            read_result_output(iter(_chunks([line])), token=TOKEN)


def test_answer_in_output_for_a_failed_run():
    error = {"status": "error", "error": "no snapshot", "exit_code": 3}
    assert answer_in_output(iter(_chunks([result_line(error, TOKEN)])), TOKEN) == (error, False)
    assert answer_in_output(iter(_chunks([result_line(error, "x" * 40)])), TOKEN) == (None, True)
    assert answer_in_output(iter(_chunks(["Traceback ..."])), TOKEN) == (None, False)


def test_the_result_line_size_limit_holds_and_memory_stays_bounded():
    # Megabytes of progress without a line end hold no marker: dropped as they stream.
    assert last_result_line(iter([b"#" * 65536] * 64), limit=1024) is None
    # A marked line over the limit is refused, with or without its line end.
    big = result_line({**CLEAN_RESULT, "note": "n" * 2048}, TOKEN).encode()
    for data in (big, big + b"\n"):
        chunks = [data[i : i + 100] for i in range(0, len(data), 100)]
        with pytest.raises(TrainerResultError, match="over 1024 bytes"):
            last_result_line(iter(chunks), limit=1024)
    # The real limit is the one for result files.
    assert last_result_line(iter([big])) == big and len(big) < MAX_RESULT_BYTES


# --- where the Docker host is -------------------------------------------------------------


@pytest.mark.parametrize(
    ("docker_url", "local"),
    [
        pytest.param("unix://var/run/docker.sock", True, id="unix-socket"),
        pytest.param(None, True, id="default"),
        pytest.param(["unix://var/run/docker.sock", "unix:///run/docker.sock"], True, id="unix-list"),
        pytest.param("tcp://gpu-host:2376", False, id="tcp"),
        pytest.param("ssh://trainer@gpu-host", False, id="ssh"),
        pytest.param("tcp://127.0.0.1:2375", False, id="tcp-loopback"),
        pytest.param(["unix://var/run/docker.sock", "tcp://gpu-host:2376"], False, id="list-with-a-remote"),
    ],
)  # fmt: skip
def test_docker_host_is_local(docker_url, local):
    assert docker_host_is_local(docker_url) is local


def test_local_storage_needs_the_docker_host_of_this_machine():
    check_storage_reachable([], "tcp://gpu-host:2376")  # S3 storage: nothing to mount
    check_storage_reachable(["/data/credit_default"], "unix://var/run/docker.sock")
    with pytest.raises(ValueError, match=r"storage root must be S3 .* for a remote Docker host"):
        check_storage_reachable(["/data/credit_default"], "tcp://gpu-host:2376")


# --- mounts and tracking URI ---------------------------------------------------------


@pytest.mark.parametrize(
    ("uris", "expected"),
    [
        pytest.param(
            ["/data/root", "/data/root/snapshots/a", "/data/root/snapshots/b"],
            ["/data/root"],
            id="nested",
        ),
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


# --- how the container runs ------------------------------------------------------------


def test_hardened_host_config_without_and_with_a_cpu_limit():
    base = hardened_host_config(cpus=None, pids_limit=4096)
    assert base == {
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "pids_limit": 4096,
        "read_only": True,
        "tmpfs": {"/tmp": "rw,nosuid,nodev,mode=1777"},
    }
    assert hardened_host_config(cpus=2.5, pids_limit=512)["nano_cpus"] == 2_500_000_000
    assert (
        hardened_host_config(cpus=None, pids_limit=512, read_only_root=False)["read_only"] is False
    )


def test_read_only_root_hint_names_the_escape_hatch():
    error = (
        "failed to create task for container: error running hook #0: exit status 1, "
        "stderr: mkdirat etc/nvidia/nvidia-application-profiles-rc.d: read-only file system"
    )
    hint = read_only_root_hint(error)
    assert hint is not None and "read_only_root=False" in hint and "NVIDIA" in hint
    assert read_only_root_hint("no such image") is None


def test_limits_are_checked():
    assert check_cpus(None) is None and check_cpus("1.5") == 1.5
    with pytest.raises(ValueError, match="positive number of CPUs"):
        check_cpus(0)
    assert check_pids_limit("256") == 256
    with pytest.raises(ValueError, match="at least 64"):
        check_pids_limit(8)


@pytest.mark.parametrize(
    ("argument", "env", "expected"),
    [
        pytest.param(None, {}, "bridge", id="default-bridge"),
        pytest.param(None, {"MLOPS_LOOP_TRAINER_NETWORK": "mlops-loop"}, "mlops-loop", id="env"),
        pytest.param(
            "host", {"MLOPS_LOOP_TRAINER_NETWORK": "mlops-loop"}, "host", id="argument-wins"
        ),
        pytest.param("", {"MLOPS_LOOP_TRAINER_NETWORK": " "}, "bridge", id="blank"),
    ],
)
def test_resolve_network(argument, env, expected):
    assert resolve_network(argument, env) == expected


def test_named_networks_are_the_ones_to_look_up():
    assert is_named_network("bridge") and is_named_network("mlops-loop")
    assert not any(is_named_network(n) for n in ("host", "none", "container:abc"))
    assert "dockerd --bridge=none" in missing_network_message("bridge")
    assert "MLOPS_LOOP_TRAINER_NETWORK" in missing_network_message("mlops-loop")


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        pytest.param(None, None, id="none"),
        pytest.param("", None, id="empty"),
        pytest.param(1000, Owner(1000, 1000), id="int"),
        pytest.param("1000", Owner(1000, 1000), id="bare-uid"),
        pytest.param("50000:0", Owner(50000, 0), id="uid-gid"),
    ],
)
def test_parse_user(user, expected):
    assert parse_user(user) == expected


@pytest.mark.parametrize(
    ("user", "match"),
    [
        pytest.param("0", "never run as uid 0", id="uid-0"),
        pytest.param("0:1000", "never run as uid 0", id="uid-0-gid"),
        pytest.param("root", "numeric", id="root-name"),
        pytest.param("trainer", "numeric", id="a-name"),
        pytest.param("1000:staff", "numeric", id="group-name"),
    ],
)
def test_parse_user_refuses_root_and_names(user, match):
    with pytest.raises(ValueError, match=match):
        parse_user(user)


def test_image_user_is_numeric_non_root_or_none():
    assert image_user({"Config": {"User": "10001:10001"}}) == Owner(10001, 10001)
    assert image_user({"Config": {"User": "trainer"}}) is None
    assert image_user({"Config": {"User": ""}}) is None
    assert image_user({"Config": {"User": "0"}}) is None
    assert image_user({}) is None


ROOT = Owner(0, 0)


@pytest.mark.parametrize(
    ("worker", "explicit", "from_image", "owner", "handed"),
    [
        pytest.param(Owner(50000, 0), None, Owner(10001, 10001), Owner(50000, 0), False, id="worker-not-root"),
        pytest.param(Owner(1000, 1000), Owner(1000, 1000), None, Owner(1000, 1000), False, id="explicit-same-uid"),
        pytest.param(ROOT, None, Owner(10001, 10001), Owner(10001, 10001), True, id="root-image-user"),
        pytest.param(ROOT, None, None, TRAINER_IMAGE_USER, True, id="root-image-without-numeric-user"),
        pytest.param(ROOT, Owner(2000, 2000), Owner(10001, 10001), Owner(2000, 2000), True, id="root-explicit"),
    ],
)  # fmt: skip
def test_decide_container_user_never_root(worker, explicit, from_image, owner, handed):
    decision = decide_container_user(worker, explicit, from_image)
    assert (decision.owner, decision.hand_over) == (owner, handed)
    assert decision.owner.uid != 0


def test_a_worker_that_is_not_root_cannot_run_the_trainer_as_another_uid():
    with pytest.raises(ValueError, match="cannot hand its writable output folders"):
        decide_container_user(Owner(1000, 1000), Owner(2000, 2000), None)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can chown to another uid")
def test_hand_over_chowns_the_tree_without_following_links(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("not the container's")
    tree = tmp_path / "reports" / "drift"
    (tree / "ds=2026-03-01").mkdir(parents=True)
    (tree / "ds=2026-03-01" / "report.json").write_text("{}")
    (tree / "link").symlink_to(outside)
    hand_over([tree], Owner(10001, 10002))
    for entry in (tree, tree / "ds=2026-03-01", tree / "ds=2026-03-01" / "report.json"):
        assert (entry.stat().st_uid, entry.stat().st_gid) == (10001, 10002)
    assert os.lstat(tree / "link").st_uid == 10001
    assert outside.stat().st_uid == os.geteuid()  # the link's target is left alone


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


# What a worker's environment holds that the trainer must never see.
WORKER_SECRETS = {
    "AIRFLOW__CORE__FERNET_KEY": "fernet-key-value-0123456789abcdef=",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://airflow:db-password@db/airflow",
    "AIRFLOW__API_AUTH__JWT_SECRET": "jwt-secret-value",
    "AIRFLOW_CONN_WAREHOUSE": "postgres://user:conn-password@warehouse/db",
    "AIRFLOW_CONN_MLFLOW_DEFAULT": '{"conn_type": "http", "password": "mlflow-conn-password"}',
    "AIRFLOW_VAR_API_KEY": "variable-secret",
    "AWS_SECRET_ACCESS_KEY": "worker-aws-secret",
    "AWS_ACCESS_KEY_ID": "AKIAWORKERKEY",
    "MLFLOW_TRACKING_PASSWORD": "worker-mlflow-password",
    "MLOPS_LOOP_S3_SECRET_KEY": "credential-looking-name",
    "GITHUB_TOKEN": "ghp_worker",
    "SOME_OTHER_SETTING": "not on the list",
}
# Allow-listed settings the trainer keeps.
WORKER_SETTINGS = {
    "PATH": os.environ["PATH"],
    "HOME": "/home/airflow",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TZ": "UTC",
    "HTTPS_PROXY": "http://proxy:3128",
    "NO_PROXY": "localhost,127.0.0.1",
    "OMP_NUM_THREADS": "2",
    "MKL_NUM_THREADS": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLOPS_LOOP_STORAGE_ROOT": "/data",
}


def test_allowed_worker_environment_keeps_the_list_only():
    kept = allowed_worker_environment({**WORKER_SECRETS, **WORKER_SETTINGS})
    assert kept == WORKER_SETTINGS
    assert {
        "PATH",
        "HOME",
        "LANG",
        "TZ",
        "CUDA_VISIBLE_DEVICES",
        "HTTPS_PROXY",
    } <= LOCAL_ENV_ALLOWED


def test_local_trainer_child_sees_only_the_allow_list_and_its_task_environment(tmp_path: Path):
    """A real child process started the way the local runner starts the trainer."""
    base = {**os.environ, **WORKER_SECRETS, **WORKER_SETTINGS, "CUDA_VISIBLE_DEVICES": "0"}
    env = local_environment(
        base,
        {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "MLOPS_LOOP_S3_ENDPOINT_URL": "http://s3:9000"},
        {"AWS_ACCESS_KEY_ID": "AKIATASKKEY", "AWS_SECRET_ACCESS_KEY": "task-secret",
         "MLFLOW_TRACKING_PASSWORD": "task-mlflow-password"},
        use_gpu=False,
    )  # fmt: skip
    dump = tmp_path / "env.json"
    script = f"import json, os; open({str(dump)!r}, 'w').write(json.dumps(dict(os.environ)))"
    proc = LocalTrainerProcess([sys.executable, "-c", script], env=env, cwd=tmp_path)
    assert proc.stream(lambda line: None) == 0, proc.tail
    seen = json.loads(dump.read_text())

    for name in ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW_VAR_API_KEY",
                 "GITHUB_TOKEN", "SOME_OTHER_SETTING", "MLOPS_LOOP_S3_SECRET_KEY"):  # fmt: skip
        assert name not in seen, name
    assert not [name for name in seen if name.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))]
    assert not [name for name in seen if name.startswith("AIRFLOW")]
    for value in WORKER_SECRETS.values():
        assert value not in json.dumps(seen)
    # The allow-listed settings pass unchanged ...
    assert {k: seen.get(k) for k in WORKER_SETTINGS} == WORKER_SETTINGS
    # ... the task's own environment and credentials win over the worker's ...
    assert seen["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert seen["MLOPS_LOOP_S3_ENDPOINT_URL"] == "http://s3:9000"
    assert (seen["AWS_ACCESS_KEY_ID"], seen["AWS_SECRET_ACCESS_KEY"]) == (
        "AKIATASKKEY",
        "task-secret",
    )
    assert seen["MLFLOW_TRACKING_PASSWORD"] == "task-mlflow-password"
    # ... and without the GPU, CUDA is hidden.
    assert seen["CUDA_VISIBLE_DEVICES"] == "" and seen["PYTHONUNBUFFERED"] == "1"


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

"""Running trainer commands in containers: the Airflow-free decisions and file handling.

The Airflow side (operators/trainer.py) starts the trainer image as
``python -m mlops_loop.training <command> --request /mlops/io/request.json
--result /mlops/io/result.json``. This module decides whether the container gets the GPU,
builds and writes the request, reads the result back, explains exit codes and names the
host paths the container must see. Everything here takes plain data (``docker info`` as a
dict, exit codes as ints), so it is tested without a Docker engine.

Without a Docker engine the same entrypoint runs as a local process of the worker
(runner ``local``, or ``auto`` when no engine answers): same request and result files,
same exit codes; LocalTrainerProcess streams its output and stops it on kill.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from mlops_loop.core.config import validation_problems
from mlops_loop.core.storage import is_s3
from mlops_loop.core.trainer_protocol import (
    CONTAINER_IO_DIR,
    EXIT_CODE_MEANINGS,
    REQUEST_FILE,
    RESULT_FILE,
    RUNNER_ENV,
    TrainerRequest,
    check_command,
)
from mlops_loop.exceptions import GpuUnavailableError, TrainerResultError

DEFAULT_TRAINER_IMAGE = "mlops-loop/trainer:latest"

GpuMode = Literal["auto", "required", "none"]
GPU_MODES: tuple[str, ...] = ("auto", "required", "none")
# Where trainer commands run: the trainer image on a Docker engine, a local process of the
# worker, or the first when an engine answers and else the second.
RUNNERS: tuple[str, ...] = ("docker", "local", "auto")

# --- GPU -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuDecision:
    """Whether a container gets the host's GPUs, and why (for the task log)."""

    use_gpu: bool
    reason: str
    warn: bool = False


def nvidia_runtime_available(docker_info: Mapping[str, Any]) -> bool:
    """True when the Docker host has the NVIDIA container runtime (``docker info``'s
    ``Runtimes`` holds an ``nvidia`` entry, or it is the default runtime)."""
    runtimes = docker_info.get("Runtimes") or {}
    names = set(runtimes) | {str(docker_info.get("DefaultRuntime") or "")}
    return any("nvidia" in name.lower() for name in names)


def check_gpu_mode(gpu: str) -> GpuMode:
    if gpu not in GPU_MODES:
        raise ValueError(f"gpu must be one of {', '.join(GPU_MODES)}, got {gpu!r}")
    return gpu  # type: ignore[return-value]


def decide_gpu(
    gpu: str, docker_info: Mapping[str, Any] | None, *, docker_url: str = ""
) -> GpuDecision:
    """Decide GPU use from the mode and the Docker host's ``info()``.

    - ``none``: CPU; ``docker_info`` is not needed (pass None: the host is not asked).
    - ``auto``: the GPU when the host has the NVIDIA runtime, else CPU with a warning.
    - ``required``: the GPU, or GpuUnavailableError before any container starts.
    """
    mode = check_gpu_mode(gpu)
    if mode == "none":
        return GpuDecision(use_gpu=False, reason="gpu='none': running on the CPU")
    if docker_info is None:
        raise ValueError(f"gpu={mode!r} needs the Docker host's info() to decide")
    runtimes = sorted(docker_info.get("Runtimes") or {})
    where = f"Docker host {docker_url}" if docker_url else "the Docker host"
    if nvidia_runtime_available(docker_info):
        return GpuDecision(
            use_gpu=True, reason=f"{where} has the NVIDIA runtime: requesting all GPUs"
        )
    if mode == "required":
        raise GpuUnavailableError(
            f"gpu='required' but {where} has no NVIDIA GPU runtime "
            f"(runtimes: {', '.join(runtimes) or 'none'}); install the NVIDIA Container Toolkit "
            "there, point docker_url at a GPU host, or use gpu='auto' to fall back to the CPU",
            docker_url=docker_url,
            runtimes=runtimes,
        )
    return GpuDecision(
        use_gpu=False,
        reason=f"gpu='auto': {where} has no NVIDIA GPU runtime "
        f"(runtimes: {', '.join(runtimes) or 'none'}); training on the CPU",
        warn=True,
    )


# --- exit codes ----------------------------------------------------------------------

# Beyond the trainer's own codes (trainer_protocol.ExitCode): the shell's and Docker's.
_RUNTIME_EXIT_CODES = {
    125: "the container could not be started by the Docker engine",
    126: "the entrypoint exists in the image but cannot be executed",
    127: "the entrypoint was not found in the image (is this the trainer image?)",
}


def explain_exit_code(
    exit_code: int, *, oom_killed: bool = False, mem_limit: str | int | float | None = None
) -> str:
    """A person-readable reason for a container's exit code.

    ``oom_killed`` is Docker's ``State.OOMKilled``; ``mem_limit`` the container's limit,
    named in the out-of-memory explanations.
    """
    limit = f"mem_limit {mem_limit}" if mem_limit not in (None, "", 0) else "no mem_limit set"
    if oom_killed:
        return (
            f"exit code {exit_code}: killed by the kernel for running out of memory ({limit}); "
            "raise mem_limit or lower the batch size"
        )
    if exit_code == 0:
        return "exit code 0: success"
    if exit_code == 137:
        return (
            f"exit code 137: killed (SIGKILL), likely out of memory ({limit}), "
            "or stopped by `docker kill` / the task being killed"
        )
    if exit_code == 139:
        return "exit code 139: segmentation fault (SIGSEGV) in native code (torch, a CUDA driver, a C extension)"
    if exit_code == 143:
        return "exit code 143: terminated (SIGTERM), the container was stopped (`docker stop`, task killed)"
    if exit_code == 134:
        return "exit code 134: aborted (SIGABRT) by native code, often a failed assertion or a CUDA error"
    meanings = {**EXIT_CODE_MEANINGS, **_RUNTIME_EXIT_CODES}
    if exit_code in meanings:
        return f"exit code {exit_code}: {meanings[exit_code]}"
    if 128 < exit_code < 128 + 65:
        try:
            name = signal.Signals(exit_code - 128).name
        except ValueError:
            name = f"signal {exit_code - 128}"
        return f"exit code {exit_code}: killed by {name}"
    if exit_code < 0:
        return f"exit code {exit_code}: the container did not report an exit status"
    return f"exit code {exit_code}: the trainer exited with an error status"


def log_tail(lines: Sequence[str], max_lines: int = 30) -> str:
    """The last ``max_lines`` non-empty lines, for exception messages."""
    kept = [line for line in lines if line.strip()]
    return "\n".join(kept[-max_lines:])


# --- requests and results ------------------------------------------------------------


def container_command(command: str) -> list[str]:
    """Arguments after the image's entrypoint (``python -m mlops_loop.training``)."""
    check_command(command)
    return [
        command,
        "--request",
        f"{CONTAINER_IO_DIR}/{REQUEST_FILE}",
        "--result",
        f"{CONTAINER_IO_DIR}/{RESULT_FILE}",
    ]


def image_tags(image: str, image_info: Mapping[str, Any]) -> dict[str, str]:
    """Tags naming the trainer image exactly, from ``docker inspect`` of it: the id
    (content digest), the registry digest when it came from one, and the labels
    build_trainer_image.sh sets (git revision, hash of the sources in the image)."""
    labels = (image_info.get("Config") or {}).get("Labels") or {}
    tags = {"trainer_image": image, "trainer_image_id": str(image_info.get("Id", ""))}
    digests = image_info.get("RepoDigests") or []
    if digests:
        tags["trainer_image_digest"] = str(digests[0])
    if labels.get("org.opencontainers.image.revision"):
        tags["code_version"] = str(labels["org.opencontainers.image.revision"])
    if labels.get("mlops-loop.source-hash"):
        tags["trainer_source_hash"] = str(labels["mlops-loop.source-hash"])
    return tags


def make_io_dir(root: str | None = None) -> Path:
    """A fresh folder for request.json/result.json, writable by the container's
    (non-root, other uid) user. ``root`` must be a path the Docker engine sees at the same
    place (when Airflow itself runs in a container, a folder shared with the host)."""
    if root:
        Path(root).mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="mlops-loop-io-", dir=root))
    # The trainer runs as another uid; the folder name is random and lives only for one task.
    path.chmod(0o777)
    return path


def write_request(io_dir: str | Path, request: TrainerRequest) -> Path:
    """Write request.json (atomically, world-readable) and return its host path."""
    payload = request.model_dump(mode="json")
    target = Path(io_dir) / REQUEST_FILE
    tmp = target.with_name(f".{REQUEST_FILE}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True), encoding="utf-8")
    tmp.chmod(0o644)
    os.replace(tmp, target)
    return target


def read_result_file(io_dir: str | Path) -> dict[str, Any] | None:
    """result.json as written by the trainer, or None when there is none.

    Raises TrainerResultError when the file exists but is not a JSON object.
    """
    path = Path(io_dir) / RESULT_FILE
    if not path.exists():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TrainerResultError(
            f"the trainer's {RESULT_FILE} is not valid JSON: {exc}", path=str(path)
        ) from exc
    if not isinstance(payload, dict):
        raise TrainerResultError(
            f"the trainer's {RESULT_FILE} must be a JSON object, got {type(payload).__name__}",
            path=str(path),
        )
    return payload


def read_result(io_dir: str | Path, model: type[BaseModel] | None = None) -> dict[str, Any]:
    """result.json of a trainer that exited 0, checked: present, ``status`` ok and, when
    ``model`` is given (the command's result model in trainer_protocol), of that shape. Returns the dict as
    written (extra keys kept)."""
    path = Path(io_dir) / RESULT_FILE
    payload = read_result_file(io_dir)
    if payload is None:
        raise TrainerResultError(
            f"the trainer exited 0 but wrote no {RESULT_FILE} (expected at {CONTAINER_IO_DIR}/{RESULT_FILE})",
            path=str(path),
        )
    if payload.get("status") != "ok":
        raise TrainerResultError(
            f"the trainer exited 0 but {RESULT_FILE} says status={payload.get('status')!r}: "
            f"{payload.get('error', 'no error message')}",
            path=str(path),
        )
    if model is not None:
        try:
            model.model_validate(payload)
        except ValidationError as exc:
            problems = "; ".join(validation_problems(exc))
            raise TrainerResultError(
                f"the trainer's {RESULT_FILE} is incomplete: {problems}", path=str(path)
            ) from exc
    return payload


# --- what the container must see ----------------------------------------------------


def local_read_only_paths(uris: Iterable[str | None]) -> list[str]:
    """Local (non-S3) paths among ``uris``, absolute, without the ones already inside
    another: each is bind-mounted read-only at the SAME path in the container, so URIs in
    the request stay valid there."""
    paths: list[str] = []
    for uri in uris:
        if not uri or is_s3(uri) or "://" in uri.removeprefix("file://"):
            continue
        path = os.path.abspath(uri.removeprefix("file://"))
        paths.append(path.rstrip("/") or "/")
    kept: list[str] = []
    for path in sorted(set(paths), key=len):
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return sorted(kept)


def check_tracking_uri(uri: str | None, *, local: bool = False) -> str:
    """The container logs to MLflow over HTTP(S); a local file/SQLite store on the worker
    is not reachable from there. A ``local`` process (the local runner, the worker's own
    registry calls) may use any store."""
    if not uri:
        raise ValueError(
            "no MLflow tracking URI: pass mlflow_tracking_uri or set MLFLOW_TRACKING_URI "
            "(an http(s):// MLflow server the container can reach)"
        )
    if not local and not uri.startswith(("http://", "https://")):
        raise ValueError(
            f"MLflow tracking URI {uri!r} is not an http(s) server; the trainer container "
            "cannot use a tracking store on the worker's disk: start an MLflow server"
        )
    return uri


# --- the local-process runner ---------------------------------------------------------


def check_runner(runner: str) -> str:
    if runner not in RUNNERS:
        raise ValueError(
            f"trainer runner must be one of {', '.join(RUNNERS)} (argument runner or ${RUNNER_ENV}), got {runner!r}"
        )
    return runner


def local_command(command: str, io_dir: str | Path, python: str | None = None) -> list[str]:
    """The trainer entrypoint as a local process, on the host paths of the io folder."""
    container_command(command)  # same command check as the container
    io = Path(io_dir)
    return [
        python or sys.executable,
        "-m",
        "mlops_loop.training",
        command,
        "--request",
        str(io / REQUEST_FILE),
        "--result",
        str(io / RESULT_FILE),
    ]


def nvidia_gpus(timeout: float = 15.0) -> list[str]:
    """GPUs the NVIDIA driver lists on this machine (``nvidia-smi -L``); none when there is
    no driver. Asked without importing torch, which the worker may not have."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        proc = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return []
    if proc.returncode != 0:
        return []
    return [line.strip() for line in proc.stdout.splitlines() if line.strip().startswith("GPU ")]


def decide_local_gpu(gpu: str, gpus: Sequence[str]) -> GpuDecision:
    """The GPU decision for the local runner from the GPUs ``nvidia-smi`` lists, with the
    same three modes as decide_gpu."""
    mode = check_gpu_mode(gpu)
    if mode == "none":
        return GpuDecision(
            use_gpu=False, reason="gpu='none': the local trainer process runs on the CPU"
        )
    if gpus:
        return GpuDecision(
            use_gpu=True, reason=f"this machine has {len(gpus)} NVIDIA GPU(s): {gpus[0]}"
        )
    if mode == "required":
        raise GpuUnavailableError(
            "gpu='required' but this machine lists no NVIDIA GPU (nvidia-smi -L) for the local "
            "trainer process; run on a GPU host or use gpu='auto' to fall back to the CPU"
        )
    return GpuDecision(
        use_gpu=False,
        reason="gpu='auto': no NVIDIA GPU on this machine; the local trainer process runs on the CPU",
        warn=True,
    )


def local_environment(
    base: Mapping[str, str], env: Mapping[str, str], secrets: Mapping[str, str], *, use_gpu: bool
) -> dict[str, str]:
    """The local trainer process's environment: the worker's, then what a container would
    get (tracking URI, S3 settings and keys). Without the GPU, CUDA is hidden so torch
    stays on the CPU exactly as in a container without ``device_requests``."""
    merged = {**base, **env, **secrets, "PYTHONUNBUFFERED": "1"}
    if not use_gpu:
        merged["CUDA_VISIBLE_DEVICES"] = ""
    return merged


def local_tags(python: str) -> dict[str, str]:
    """Tags naming what ran the trainer locally, in place of the image tags: the runner,
    the interpreter and the code version (git revision of the package's checkout when it
    is one, else the installed package version)."""
    from importlib.metadata import PackageNotFoundError, version

    code_version = ""
    source = Path(__file__).resolve().parent
    try:
        proc = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        code_version = proc.stdout.strip() if proc.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        pass
    if not code_version:
        try:
            code_version = version("mlops-loop")
        except PackageNotFoundError:
            code_version = "unknown"
    return {
        "trainer_runner": "local",
        "trainer_image": "",
        "trainer_python": python,
        "code_version": code_version,
    }


def exit_code_of(returncode: int) -> int:
    """A child's return code in the container convention: killed by signal N -> 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


class LocalTrainerProcess:
    """The trainer entrypoint as a child process in its own process group: ``stream``
    passes each output line on as it is printed and returns the exit code; ``stop`` ends
    it (SIGTERM, which the trainer turns into a failed run, then SIGKILL)."""

    def __init__(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str | Path | None = None
    ) -> None:
        self.argv = list(argv)
        self._tail: deque[str] = deque(maxlen=200)
        self._proc = subprocess.Popen(
            self.argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,  # stop() reaches data-loader workers too
        )

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def tail(self) -> list[str]:
        """The last 200 lines of output so far."""
        return list(self._tail)

    def stream(self, on_line: Callable[[str], None]) -> int:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            line = line.rstrip("\n")
            self._tail.append(line)
            on_line(line)
        return exit_code_of(self._proc.wait())

    def stop(self, grace_seconds: float = 30.0) -> None:
        if self._proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 30.0)):
            try:
                os.killpg(self._proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self._proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

"""Running trainer commands in containers: the Airflow-free decisions and file handling.

The Airflow side (operators/trainer.py) starts the trainer image as
``python -m mlops_loop.training <command> --request-env --result-stdout``, through the
Docker API alone: the request goes in the container's environment (request_environment)
and the result comes back as the signed last line of its stdout, read from the
container's log (read_result_output). Nothing is shared through a folder, so the Docker
host may be another machine; only a local storage root still needs bind mounts, and
check_storage_reachable refuses those on a remote Docker host before anything starts.
This module also decides whether the container gets the GPU, explains exit codes and
names the host paths the container must see. Everything here takes plain data
(``docker info`` as a dict, exit codes as ints, log chunks as bytes), so it is tested
without a Docker engine.

Without a Docker engine the same entrypoint runs as a local process of the worker
(runner ``local``, or ``auto`` when no engine answers), with request.json/result.json in
a private folder (make_io_dir, read_result) and the same exit codes;
LocalTrainerProcess streams its output and stops it on kill.

The trainer boundary (docs/security.md): a result counts only with the request's token
(read_result, read_result_output); every container gets hardened_host_config and a
non-root user (decide_container_user); the local process gets an allow-list of the
worker's environment (local_environment).
"""

from __future__ import annotations

import hmac
import json
import os
import shutil
import signal
import stat
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
    EXIT_CODE_MEANINGS,
    MAX_REQUEST_BYTES,
    NETWORK_ENV,
    REQUEST_ENV,
    REQUEST_FILE,
    RESULT_FILE,
    RESULT_MARKER,
    RUNNER_ENV,
    UNSIGNED,
    TrainerRequest,
    check_command,
    result_signature,
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
    """Arguments after the image's entrypoint (``python -m mlops_loop.training``): the
    request from the environment, the result on stdout (no folder shared with the host)."""
    check_command(command)
    return [command, "--request-env", "--result-stdout"]


def request_environment(request: TrainerRequest) -> dict[str, str]:
    """The container environment that carries ``request`` ($MLOPS_LOOP_TRAINER_REQUEST).
    It goes with the private environment (never rendered or logged: it holds the token);
    nothing secret is in a request, credentials have their own variables.
    ValueError when it is too large for one environment variable."""
    text = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    size = len(text.encode())
    if size > MAX_REQUEST_BYTES:
        raise ValueError(
            f"the {type(request).__name__} is {size} bytes, over the {MAX_REQUEST_BYTES} a "
            f"container environment variable (${REQUEST_ENV}) may carry: pass fewer or shorter "
            "snapshot URIs or hyperparameters"
        )
    return {REQUEST_ENV: text}


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


# --- the local runner's request/result folder --------------------------------------------
#
# Private to the task: mode 0700, owned by the worker's user; nobody else can list, read
# or replace what is in it. On top of that, a result counts only when it carries the
# token of this task's request (trainer_protocol.TrainerRequest.token), so a result.json
# from another task or written by anyone else is refused before anything in it is used.
# (Containers use no folder: see read_result_output.)

# A result larger than this is not the trainer's (results are a few KiB).
MAX_RESULT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Owner:
    """A numeric uid:gid."""

    uid: int
    gid: int

    def __str__(self) -> str:
        return f"{self.uid}:{self.gid}"


def make_io_dir(root: str | None = None, owner: Owner | None = None) -> Path:
    """A fresh folder for the local runner's request.json/result.json, private to this
    task: mode 0700, owned by this process's user, or handed to ``owner`` (only a process
    running as root can do that). ``root`` may be world-writable (/tmp): the folder's name
    is random and created exclusively."""
    if root:
        Path(root).mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="mlops-loop-io-", dir=root))  # created 0700
    path.chmod(0o700)
    if owner is not None and (owner.uid, owner.gid) != (os.geteuid(), os.getegid()):
        os.chown(path, owner.uid, owner.gid)
    return path


def write_request(io_dir: str | Path, request: TrainerRequest) -> Path:
    """Write request.json (atomically, mode 0600, owned like the folder) and return its
    host path."""
    payload = request.model_dump(mode="json")
    target = Path(io_dir) / REQUEST_FILE
    tmp = target.with_name(f".{REQUEST_FILE}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(payload, indent=2, sort_keys=True))
    folder = os.stat(io_dir)
    if (folder.st_uid, folder.st_gid) != (os.geteuid(), os.getegid()):
        os.chown(tmp, folder.st_uid, folder.st_gid)
    os.replace(tmp, target)
    return target


def read_result_file(io_dir: str | Path) -> dict[str, Any] | None:
    """result.json as written in the folder, or None when there is none. NOT yet
    trusted: see result_answers / read_result.

    Raises TrainerResultError when the file exists but is not a regular file (a link is
    never followed), is too large, or is not a JSON object.
    """
    path = Path(io_dir) / RESULT_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP: a symbolic link
        raise TrainerResultError(
            f"the trainer's {RESULT_FILE} cannot be opened as a plain file: {exc}", path=str(path)
        ) from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise TrainerResultError(
                f"the trainer's {RESULT_FILE} is not a regular file", path=str(path)
            )
        if info.st_size > MAX_RESULT_BYTES:
            raise TrainerResultError(
                f"the trainer's {RESULT_FILE} is {info.st_size} bytes (over {MAX_RESULT_BYTES}): "
                "not a trainer result",
                path=str(path),
            )
        raw = handle.read(MAX_RESULT_BYTES + 1)
    try:
        payload = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrainerResultError(
            f"the trainer's {RESULT_FILE} is not valid JSON: {exc}", path=str(path)
        ) from exc
    if not isinstance(payload, dict):
        raise TrainerResultError(
            f"the trainer's {RESULT_FILE} must be a JSON object, got {type(payload).__name__}",
            path=str(path),
        )
    return payload


def result_answers(payload: Mapping[str, Any], token: str) -> bool:
    """Whether a result document answers the request with ``token`` (constant-time)."""
    echoed = payload.get("token")
    return isinstance(echoed, str) and hmac.compare_digest(echoed.encode(), token.encode())


def not_this_tasks_result(path: str | Path) -> TrainerResultError:
    return TrainerResultError(
        f"refusing {RESULT_FILE}: it does not answer this task's request (its token is "
        "missing or another request's), so it was not written by this task's trainer: a "
        "result of another task, or a file someone else put in the trainer's folder. Nothing "
        "in it was used.",
        path=str(path),
    )


def read_result(
    io_dir: str | Path, model: type[BaseModel] | None = None, *, token: str
) -> dict[str, Any]:
    """result.json of a trainer that exited 0, checked: present, answering the request
    with ``token`` (before anything else in it is looked at), ``status`` ok and, when
    ``model`` is given (the command's result model in trainer_protocol), of that shape.
    Returns the dict as written (extra keys kept) without the token."""
    path = Path(io_dir) / RESULT_FILE
    payload = read_result_file(io_dir)
    if payload is None:
        raise TrainerResultError(
            f"the trainer exited 0 but wrote no {RESULT_FILE} (expected at {path})",
            path=str(path),
        )
    if not result_answers(payload, token):
        raise not_this_tasks_result(path)
    payload.pop("token")
    return checked_result(payload, model, what=f"the trainer's {RESULT_FILE}", where=str(path))


def checked_result(
    payload: dict[str, Any], model: type[BaseModel] | None, *, what: str, where: str
) -> dict[str, Any]:
    """A result already known to answer this request: ``status`` ok and, with ``model``,
    of the command's shape; TrainerResultError otherwise."""
    if payload.get("status") != "ok":
        raise TrainerResultError(
            f"the trainer exited 0 but {what} says status={payload.get('status')!r}: "
            f"{payload.get('error', 'no error message')}",
            path=where,
        )
    if model is not None:
        try:
            model.model_validate(payload)
        except ValidationError as exc:
            problems = "; ".join(validation_problems(exc))
            raise TrainerResultError(f"{what} is incomplete: {problems}", path=where) from exc
    return payload


# --- the container's result line --------------------------------------------------------
#
# The trainer in a container prints its result as the last stdout line,
# ``MLOPS_LOOP_RESULT/1 <hmac> <json>`` (trainer_protocol.result_line); the worker reads the
# container's stdout through the Docker API after it exited. Anything can print such a
# line (the trainer's libraries, a forged log), so a line counts only when its HMAC under
# this task's token matches: only the holder of the token, this task's trainer, can sign.

RESULT_LINE = "the trainer's result line"
_MARKER = RESULT_MARKER.encode()


def last_result_line(chunks: Iterable[bytes], limit: int = MAX_RESULT_BYTES) -> bytes | None:
    """The last line of ``chunks`` (a container's stdout as the Docker API streams it)
    that holds the result marker, from the marker on; None when there is none. Memory
    stays bounded: text that cannot be part of a result is dropped as it streams, and a
    marked line over ``limit`` bytes is a TrainerResultError."""
    last: bytes | None = None
    buffer = b""

    def too_large() -> TrainerResultError:
        return TrainerResultError(
            f"{RESULT_LINE} is over {limit} bytes: not a trainer result", path="stdout"
        )

    for chunk in chunks:
        *lines, buffer = (buffer + chunk).split(b"\n")
        for line in lines:
            at = line.find(_MARKER)
            if at >= 0:
                if len(line) - at > limit:
                    raise too_large()
                last = line[at:].rstrip(b"\r")
        at = buffer.find(_MARKER)
        if at > 0 or (at < 0 and len(buffer) > len(_MARKER)):
            # A marker may straddle two chunks: keep just enough of unmarked text.
            buffer = buffer[at:] if at > 0 else buffer[-len(_MARKER) :]
        if at >= 0 and len(buffer) > limit:
            raise too_large()
    at = buffer.find(_MARKER)
    return buffer[at:].rstrip(b"\r") if at >= 0 else last


def parse_result_line(line: bytes) -> tuple[str, str]:
    """(signature, JSON text) of a marked line; TrainerResultError when it is malformed."""
    parts = line.split(b" ", 2)
    if len(parts) != 3 or parts[0] != _MARKER:
        raise TrainerResultError(f"{RESULT_LINE} is malformed", path="stdout")
    try:
        return parts[1].decode("ascii"), parts[2].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TrainerResultError(f"{RESULT_LINE} is not text: {exc}", path="stdout") from exc


def line_answers(signature: str, text: str, token: str) -> bool:
    """Whether a result line was signed with ``token`` (constant-time)."""
    if signature == UNSIGNED:
        return False
    return hmac.compare_digest(signature.encode(), result_signature(text, token).encode())


def answer_in_output(chunks: Iterable[bytes], token: str) -> tuple[dict[str, Any] | None, bool]:
    """(the result document, refused) from a container's stdout: the document when the
    last marked line answers this request (signed with ``token``), else None, with
    ``refused`` True when there was a marked line that does not (its text is not used).
    TrainerResultError for a line over the size limit or one that is not a JSON object."""
    line = last_result_line(chunks)
    if line is None:
        return None, False
    signature, text = parse_result_line(line)
    if not line_answers(signature, text, token):
        return None, True
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrainerResultError(f"{RESULT_LINE} is not valid JSON: {exc}", path="stdout") from exc
    if not isinstance(payload, dict):
        raise TrainerResultError(f"{RESULT_LINE} must hold a JSON object", path="stdout")
    return payload, False


def read_result_output(
    chunks: Iterable[bytes], model: type[BaseModel] | None = None, *, token: str
) -> dict[str, Any]:
    """The result of a container that exited 0, from its stdout: the last marked line,
    signed with this request's ``token`` (checked before anything in it is looked at),
    ``status`` ok and of the command's shape (``model``)."""
    payload, refused = answer_in_output(chunks, token)
    if refused:
        raise TrainerResultError(
            f"refusing {RESULT_LINE}: it is not signed with this task's request token, so "
            "this task's trainer did not write it (another process in the container, or a "
            "forged line). Nothing in it was used.",
            path="stdout",
        )
    if payload is None:
        raise TrainerResultError(
            f"the trainer exited 0 but printed no result line ({RESULT_MARKER} ...) on stdout",
            path="stdout",
        )
    return checked_result(payload, model, what=RESULT_LINE, where="stdout")


# --- where the Docker host is -------------------------------------------------------------


def docker_host_is_local(docker_url: str | Sequence[str] | None) -> bool:
    """True when every Docker URL is a unix socket (the engine is on this machine and
    resolves bind mounts in this machine's filesystem); tcp://, ssh:// or anything else
    may be another machine."""
    urls = [docker_url] if isinstance(docker_url, str) or docker_url is None else docker_url
    return all(str(url or "unix://").startswith("unix://") for url in urls)


def check_storage_reachable(
    local_paths: Sequence[str], docker_url: str | Sequence[str] | None
) -> None:
    """A local storage root reaches the container through bind mounts, which only the
    Docker engine on this machine can resolve: ValueError naming the fix otherwise."""
    if not local_paths or docker_host_is_local(docker_url):
        return
    raise ValueError(
        f"the storage root is a local folder ({', '.join(local_paths)}) but the Docker host "
        f"{docker_url} is not this machine's (not a unix:// socket): the trainer container "
        "there cannot see this machine's folders. The storage root must be S3 "
        "(storage.root: s3://...) for a remote Docker host; or use a local engine "
        "(docker_url unix://...) or runner='local'"
    )


# --- how the container runs ---------------------------------------------------------
#
# Every trainer container is created with: all capabilities dropped, no-new-privileges,
# a pids limit, a read-only root filesystem with a tmpfs at /tmp (also its HOME), a hard
# CPU limit when ``cpus`` is set, a network that is ``bridge`` unless configured, and a
# user that is never uid 0.

DEFAULT_NETWORK = "bridge"
# Network modes that are not the name of a Docker network.
_BUILTIN_NETWORK_MODES = ("host", "none")
DEFAULT_PIDS_LIMIT = 4096  # processes + threads; torch uses one thread per core
CONTAINER_TMP = "/tmp"
CONTAINER_HOME = CONTAINER_TMP  # the image's home is on the read-only root
TMPFS_OPTIONS = "rw,nosuid,nodev,mode=1777"
# The trainer image's own user (include/docker/trainer.Dockerfile: USER 10001:10001).
TRAINER_IMAGE_USER = Owner(10001, 10001)


def hardened_host_config(
    *, cpus: float | None, pids_limit: int, read_only_root: bool = True
) -> dict[str, Any]:
    """HostConfig settings (docker-py ``create_host_config`` keywords) every trainer
    container gets on top of DockerOperator's (mounts, memory, shm, device requests...).
    ``read_only_root=False`` is the escape hatch for GPU hosts whose NVIDIA toolkit hooks
    write into the container's root (see read_only_root_hint)."""
    settings: dict[str, Any] = {
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "pids_limit": int(pids_limit),
        "read_only": bool(read_only_root),
        "tmpfs": {CONTAINER_TMP: TMPFS_OPTIONS},
    }
    if cpus is not None:
        # A hard limit (CFS quota): DockerOperator's ``cpus`` alone is only a relative
        # weight (cpu_shares) that limits nothing on an idle host.
        settings["nano_cpus"] = round(float(cpus) * 1e9)
    return settings


def read_only_root_hint(error: str) -> str | None:
    """What to do when the engine could not start a container because something (an
    NVIDIA toolkit hook, for GPU containers) wanted to write to its read-only root."""
    if "read-only file system" not in error.lower():
        return None
    return (
        "the container could not start: something wrote to its read-only root filesystem "
        f"({error.strip()[:500]}). On GPU hosts this is the NVIDIA Container Toolkit's hook "
        "(some versions write into the container's /etc): upgrade the toolkit, or set "
        "read_only_root=False on this task (docs/security.md, 'The trainer boundary')"
    )


def check_cpus(cpus: float | str | None) -> float | None:
    if cpus is None:
        return None
    value = float(cpus)
    if not value > 0:
        raise ValueError(f"cpus must be a positive number of CPUs, got {cpus!r}")
    return value


def check_pids_limit(pids_limit: int | str) -> int:
    value = int(pids_limit)
    if value < 64:
        raise ValueError(
            f"pids_limit must be at least 64 (the trainer's processes and threads), got {pids_limit!r}"
        )
    return value


def resolve_network(argument: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The container's network: the operator's ``network_mode``, else
    ``$MLOPS_LOOP_TRAINER_NETWORK``, else ``bridge``. A name other than host/none/
    container:<id> is a Docker network (a compose project's, for example)."""
    env = os.environ if environ is None else environ
    network = (argument or env.get(NETWORK_ENV) or DEFAULT_NETWORK).strip()
    if not network:
        return DEFAULT_NETWORK
    return network


def is_named_network(network: str) -> bool:
    """True for a Docker network name (bridge, a compose network), which must exist on
    the engine; False for host, none and container:<id>."""
    return network not in _BUILTIN_NETWORK_MODES and not network.startswith("container:")


def missing_network_message(network: str, docker_url: str = "") -> str:
    where = f"the Docker host {docker_url}" if docker_url else "the Docker host"
    hint = (
        "a Docker engine started without a bridge (dockerd --bridge=none, as in sandboxes) "
        "has none: use network_mode='host' there"
        if network == DEFAULT_NETWORK
        else "create it (docker network create), or name the compose project's network"
    )
    return (
        f"trainer network {network!r} does not exist on {where}: {hint}; set the "
        f"operator's network_mode or ${NETWORK_ENV}"
    )


def parse_user(user: str | int | None) -> Owner | None:
    """An explicit container ``user`` as numeric ``uid`` or ``uid:gid`` (a bare uid runs
    with gid = uid); None when not given. The trainer never runs as uid 0, and names are
    refused because their uid is only known inside the image."""
    if user is None or str(user).strip() == "":
        return None
    text = str(user).strip()
    uid_text, _, gid_text = text.partition(":")
    if not uid_text.isdigit() or (gid_text and not gid_text.isdigit()):
        raise ValueError(
            f"user must be a numeric uid or uid:gid (the trainer never runs as root), got {user!r}"
        )
    uid = int(uid_text)
    gid = int(gid_text) if gid_text else uid
    if uid == 0:
        raise ValueError(f"user {user!r} is root: trainer containers never run as uid 0")
    return Owner(uid, gid)


def image_user(image_info: Mapping[str, Any]) -> Owner | None:
    """The image's ``USER`` when it is numeric and not root (the trainer image's is
    10001:10001), else None."""
    user = str((image_info.get("Config") or {}).get("User") or "")
    try:
        return parse_user(user)
    except ValueError:
        return None


@dataclass(frozen=True)
class ContainerUser:
    """Who the container runs as, and whether the worker hands the writable local output
    folders to that uid (only a root worker can)."""

    owner: Owner
    hand_over: bool
    reason: str


def decide_container_user(
    worker: Owner, explicit: Owner | None, from_image: Owner | None
) -> ContainerUser:
    """The container's uid:gid, never 0.

    - worker not root: the worker's own uid:gid (its output folders are then the
      container's, and the files the container writes belong to the worker); an explicit
      ``user`` must be that uid, since a worker cannot give its folders to another one;
    - worker root: ``user`` when given, else the image's numeric user, else the trainer
      image's (10001:10001); the folders are chowned to it before the container starts.
    """
    if worker.uid != 0:
        if explicit is not None and explicit.uid != worker.uid:
            raise ValueError(
                f"user {explicit} is not the worker's uid {worker.uid}: a worker that is not "
                "root cannot hand its writable output folders to another uid; leave "
                "user unset (the container then runs as the worker's uid:gid)"
            )
        owner = explicit or worker
        return ContainerUser(owner, False, f"the worker's uid:gid {owner}")
    if explicit is not None:
        return ContainerUser(
            explicit, True, f"user {explicit}, folders handed to it (worker is root)"
        )
    owner = from_image or TRAINER_IMAGE_USER
    return ContainerUser(
        owner, True, f"the image's user {owner}, folders handed to it (worker is root)"
    )


def hand_over(paths: Iterable[str | Path], owner: Owner) -> None:
    """chown each folder and everything in it to ``owner`` (links are not followed):
    a root worker gives the container's writable output folders to the uid it runs as."""
    for top in paths:
        top_path = Path(top)
        if top_path.is_symlink() or not top_path.is_dir():
            continue
        os.chown(top_path, owner.uid, owner.gid)
        for folder, dirs, files in os.walk(top_path):
            for name in [*dirs, *files]:
                entry = os.path.join(folder, name)
                info = os.lstat(entry)
                if (info.st_uid, info.st_gid) != (owner.uid, owner.gid):
                    os.chown(entry, owner.uid, owner.gid, follow_symlinks=False)


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


# The worker's environment variables the local trainer process inherits: nothing else of
# the worker's environment reaches it (not the Fernet key, the metadata database URL,
# AIRFLOW_CONN_* / AIRFLOW_VAR_* or any other secret of the worker). What the trainer
# needs from the task (MLflow server and credentials, S3 settings and keys) is added
# explicitly on top (local_environment's ``env`` and ``secrets``), as is the operator's
# own ``environment`` / ``private_environment``: the way to give it anything more.
LOCAL_ENV_ALLOWED: frozenset[str] = frozenset(
    {
        # the process itself: where programs and the package are, who and where it is
        "PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH",
        "LD_LIBRARY_PATH",
        # text, time
        "LANG", "LANGUAGE", "TZ",
        # GPUs and thread pools
        "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "NVIDIA_VISIBLE_DEVICES",
        "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
        # reaching MLflow and S3 the way the worker does: proxies and trusted CAs
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
        "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "AWS_CA_BUNDLE",
    }
)  # fmt: skip
# Whole families: locale categories, MLflow client settings (timeouts, retries, TLS) and
# this package's own settings; a name that looks like a credential is dropped even here.
LOCAL_ENV_ALLOWED_PREFIXES: tuple[str, ...] = ("LC_", "MLFLOW_", "MLOPS_LOOP_")
_CREDENTIAL_MARKERS = ("PASSWORD", "PASSWD", "SECRET", "TOKEN", "CREDENTIAL", "AUTH", "_KEY")


def allowed_worker_environment(base: Mapping[str, str]) -> dict[str, str]:
    """The part of the worker's environment ``base`` the local trainer may see
    (LOCAL_ENV_ALLOWED, LOCAL_ENV_ALLOWED_PREFIXES less credential-like names)."""

    def allowed(name: str) -> bool:
        if name in LOCAL_ENV_ALLOWED:
            return True
        return name.startswith(LOCAL_ENV_ALLOWED_PREFIXES) and not any(
            marker in name.upper() for marker in _CREDENTIAL_MARKERS
        )

    return {name: value for name, value in base.items() if allowed(name)}


def local_environment(
    base: Mapping[str, str], env: Mapping[str, str], secrets: Mapping[str, str], *, use_gpu: bool
) -> dict[str, str]:
    """The local trainer process's environment: the allow-listed part of the worker's
    (allowed_worker_environment), then what a container would get (tracking URI, S3
    settings, the operator's environment) and the secrets (MLflow and S3 credentials, the
    operator's private environment). Without the GPU, CUDA is hidden so torch stays on the
    CPU exactly as in a container without ``device_requests``."""
    merged = {**allowed_worker_environment(base), **env, **secrets, "PYTHONUNBUFFERED": "1"}
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

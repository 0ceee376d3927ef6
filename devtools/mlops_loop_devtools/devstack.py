"""Local servers for the one-machine setup: an MLflow tracking server and an
S3-compatible endpoint, each a real HTTP server in its own process on 127.0.0.1.

Used by the demo command and the tests; production points the same config at real
services instead. Every server started here is stopped by ``stop()`` (or the context
manager), including its children.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

# Access key and secret for the local S3 endpoint; it accepts any pair.
LOCAL_S3_KEY = "mlops-loop-local"
LOCAL_S3_SECRET = "mlops-loop-local-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalServer:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _bin(name: str) -> str:
    """A console script from the running interpreter's environment, else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} is not installed in this environment")
    return found


def _start(
    name: str, cmd: list[str], url: str, health: str, log_path: Path, timeout: float, env: dict[str, str] | None = None
) -> LocalServer:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child process
    process = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **(env or {})}
    )
    server = LocalServer(name=name, url=url, process=process, log_path=log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} exited with {process.returncode} while starting:\n{tail}")
        try:
            with urllib.request.urlopen(url + health, timeout=2) as resp:
                if resp.status < 500:
                    return server
        except OSError:
            time.sleep(0.3)
    server.stop()
    raise TimeoutError(f"{name} did not answer at {url}{health} within {timeout:.0f}s; log: {log_path}")


def start_mlflow_server(
    home: str | Path, port: int | None = None, timeout: float = float(os.environ.get("MLOPS_LOOP_SERVER_START_TIMEOUT", 300))
) -> LocalServer:
    """MLflow tracking server with a SQLite backend and served local artifacts, so that
    clients in containers upload artifacts over HTTP and need no shared folder."""
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        _bin("mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
        "--artifacts-destination", str(home / "artifacts"),
        "--serve-artifacts",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    # The server's background job workers (several processes) are not used here and
    # slow its start on a small machine.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return _start("mlflow server", cmd, url, "/health", home / "mlflow-server.log", timeout, env)


def start_s3_server(home: str | Path, port: int | None = None, timeout: float = 60) -> LocalServer:
    """An S3-compatible HTTP endpoint (moto's standalone server) in its own process."""
    home = Path(home).resolve()
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    server = _start("s3 server", cmd, url, "/moto-api/", home / "s3-server.log", timeout)
    server.extra.update(aws_access_key_id=LOCAL_S3_KEY, aws_secret_access_key=LOCAL_S3_SECRET)
    return server

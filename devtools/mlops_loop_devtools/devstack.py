"""Local servers for the one-machine setup: an MLflow tracking server and an
S3-compatible endpoint, each a real HTTP server in its own process on 127.0.0.1.

Used by the demo command and the tests; production points the same config at real
services instead. Every server started here is stopped by ``stop()`` (or the context
manager), including its children.
"""

from __future__ import annotations

import contextlib
import os
import secrets
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
from typing import Any

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
    home: str | Path,
    port: int | None = None,
    timeout: float = float(os.environ.get("MLOPS_LOOP_SERVER_START_TIMEOUT", 300)),
    *,
    backend_store_uri: str | None = None,
    artifacts_destination: str | None = None,
    env: dict[str, str] | None = None,
) -> LocalServer:
    """MLflow tracking server with served artifacts, so that clients in containers upload
    artifacts over HTTP and need no shared folder (nor, with S3 artifacts, S3 keys).

    By default its backend is SQLite and its artifacts a local folder, both under ``home``;
    ``backend_store_uri`` (e.g. ``postgresql://...``) and ``artifacts_destination`` (e.g.
    ``s3://bucket/prefix``, with ``MLFLOW_S3_ENDPOINT_URL`` and AWS keys in ``env``)
    replace them. See :func:`start_mlflow_on_postgres_and_s3`."""
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        _bin("mlflow"), "server",
        "--backend-store-uri", backend_store_uri or f"sqlite:///{home / 'mlflow.db'}",
        "--artifacts-destination", artifacts_destination or str(home / "artifacts"),
        "--serve-artifacts",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    # The server's background job workers (several processes) are not used here and
    # slow its start on a small machine.
    server_env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    return _start("mlflow server", cmd, url, "/health", home / "mlflow-server.log", timeout, server_env)


def start_s3_server(home: str | Path, port: int | None = None, timeout: float = 60) -> LocalServer:
    """An S3-compatible HTTP endpoint (moto's standalone server) in its own process."""
    home = Path(home).resolve()
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    server = _start("s3 server", cmd, url, "/moto-api/", home / "s3-server.log", timeout)
    server.extra.update(aws_access_key_id=LOCAL_S3_KEY, aws_secret_access_key=LOCAL_S3_SECRET)
    return server


# ------------------------------------------------------------- production-like servers


def s3_client(server: LocalServer) -> Any:
    """A boto3 S3 client for a server from :func:`start_s3_server`."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=server.extra["aws_access_key_id"],
        aws_secret_access_key=server.extra["aws_secret_access_key"],
    )


def create_bucket(server: LocalServer, bucket: str) -> str:
    """Create ``bucket`` on the S3 server; returns ``s3://bucket``."""
    s3_client(server).create_bucket(Bucket=bucket)
    return f"s3://{bucket}"


def remove_bucket(server: LocalServer, bucket: str) -> None:
    """Delete every object of ``bucket`` and the bucket (nothing if it is gone already)."""
    client = s3_client(server)
    with contextlib.suppress(client.exceptions.NoSuchBucket):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        client.delete_bucket(Bucket=bucket)


def s3_environment(server: LocalServer) -> dict[str, str]:
    """What an S3 client library (boto3, MLflow's artifact store) needs for ``server``."""
    return {
        "MLFLOW_S3_ENDPOINT_URL": server.url,
        "AWS_ACCESS_KEY_ID": server.extra["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": server.extra["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }


@dataclass
class PostgresS3Mlflow:
    """An MLflow server on a database of its own with artifacts in a bucket of its own;
    ``stop`` stops it, drops the database and removes the bucket."""

    server: LocalServer
    database_server: str
    database: str
    s3: LocalServer
    bucket: str

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        from mlops_loop_devtools.airflow_stack import drop_database

        self.server.stop()
        drop_database(self.database_server, self.database)
        with contextlib.suppress(Exception):
            remove_bucket(self.s3, self.bucket)

    def __enter__(self) -> PostgresS3Mlflow:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_mlflow_on_postgres_and_s3(
    home: str | Path,
    s3: LocalServer,
    *,
    database_server: str = os.environ.get(
        "MLOPS_LOOP_STACK_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432"
    ),
    timeout: float = float(os.environ.get("MLOPS_LOOP_SERVER_START_TIMEOUT", 300)),
) -> PostgresS3Mlflow:
    """The production shape of the tracking server: its backend on a fresh PostgreSQL
    database (``mlflow_<pid>_<random>``), its artifacts in a fresh bucket on ``s3``
    (``s3://<bucket>/mlflow``), served by the server (``--serve-artifacts``), so clients
    reach artifacts through it and need no S3 keys."""
    from mlops_loop_devtools.airflow_stack import create_database, drop_database

    suffix = f"{os.getpid()}-{secrets.token_hex(3)}"
    database = f"mlflow_{suffix.replace('-', '_')}"
    bucket = f"mlflow-{suffix}"
    create_database(database_server, database)
    try:
        create_bucket(s3, bucket)
        # The psycopg2 driver named: a bare postgresql:// makes MLflow's SQLAlchemy pick
        # psycopg (3), which the [celery] extra does not install.
        backend = f"{database_server.rstrip('/')}/{database}".replace(
            "postgresql://", "postgresql+psycopg2://", 1
        )
        server = start_mlflow_server(
            home,
            timeout=timeout,
            backend_store_uri=backend,
            artifacts_destination=f"s3://{bucket}/mlflow",
            env=s3_environment(s3),
        )
    except BaseException:
        drop_database(database_server, database)
        with contextlib.suppress(Exception):
            remove_bucket(s3, bucket)
        raise
    return PostgresS3Mlflow(server, database_server, database, s3, bucket)

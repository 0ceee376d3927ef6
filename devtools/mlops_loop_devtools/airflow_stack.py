"""A real Airflow 3 deployment for tests: ``airflow api-server``, ``scheduler``,
``dag-processor`` and ``triggerer`` as separate processes with the LocalExecutor, on a
fresh PostgreSQL database, plus a small REST API v2 client.

What runs here is what a person runs: DAG files parsed by the dag-processor, runs
created through ``POST /api/v2/dags/{dag_id}/dagRuns``, tasks executed by the
scheduler's executor through the execution API, links computed by the api-server. Every
component gets the same JWT secret, API secret key and execution API URL (a component
with another JWT secret makes every task fail with ``Invalid auth token``), its own log
file, and ports that do not collide with a default deployment on the machine (8793,
8794).

``start_airflow_stack`` creates the database (``airflow_stack_<pid>_<random>`` on
``postgresql://postgres@127.0.0.1:5432`` by default), migrates it and starts the four
processes; ``AirflowStack.stop`` stops them (process groups: SIGTERM, then SIGKILL) and
drops the database. Startup is bounded: a component that exits or a deployment that is
not healthy in time raises with the tail of the relevant log.

With ``celery_workers`` the deployment runs the CeleryExecutor instead: the broker is a
Redis database of its own on ``redis://127.0.0.1:6379`` (one of 1..15, claimed with a key
in database 0 so parallel stacks do not share one; flushed and released at the end), the
result backend is the stack's PostgreSQL database, and each worker is an ``airflow celery
worker --queues ...`` process with its own HOME, TMPDIR, task log folder, log-server
port and host name (a loopback address of its own, 127.0.0.2, 127.0.0.3, ..., which the
task instances record as their ``hostname``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from mlops_loop_devtools.devstack import LocalServer, _bin, free_port

REPO = Path(__file__).resolve().parents[2]
DEFAULT_POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
# Health keys of GET /api/v2/monitor/health for the components started here.
HEALTH_KEYS = ("metadatabase", "scheduler", "triggerer", "dag_processor")
TERMINAL_RUN_STATES = frozenset({"success", "failed"})
DEFAULT_REDIS = "redis://127.0.0.1:6379"
# Set per Celery worker; read by stack_hostname (AIRFLOW__CORE__HOSTNAME_CALLABLE).
HOSTNAME_ENV = "MLOPS_LOOP_STACK_HOSTNAME"
REDIS_CLAIM_KEY = "mlops_loop:airflow_stack:redis_db:{db}"


class AirflowStackError(RuntimeError):
    """The deployment did not start, or a run did not reach the awaited state in time."""


def log_tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as exc:
        return f"(no log at {path}: {exc})"


# --------------------------------------------------------------------------- database


def _admin_connection(server_url: str) -> Any:
    import psycopg2

    plain = server_url.replace("postgresql+psycopg2://", "postgresql://", 1)
    conn = psycopg2.connect(f"{plain.rstrip('/')}/postgres", connect_timeout=10)
    conn.autocommit = True
    return conn


def create_database(server_url: str, name: str) -> None:
    try:
        conn = _admin_connection(server_url)
    except Exception as exc:
        raise AirflowStackError(
            f"PostgreSQL at {server_url} is not reachable ({exc}); start it, for example "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
        ) from exc
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def drop_database(server_url: str, name: str) -> None:
    with contextlib.suppress(Exception):
        conn = _admin_connection(server_url)
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


# ------------------------------------------------------------------------------ redis


def claim_redis_db(server_url: str, owner: str, ttl_s: int = 6 * 3600) -> int:
    """Claim a Redis database number (1..15) for one stack: ``SET NX`` of a key in
    database 0 (expiring after ``ttl_s``, so a killed test frees it eventually), then
    flush it. Raises when none is free."""
    import redis

    try:
        admin = redis.Redis.from_url(f"{server_url.rstrip('/')}/0", socket_timeout=10)
        admin.ping()
    except Exception as exc:
        raise AirflowStackError(
            f"Redis at {server_url} is not reachable ({exc}); start it, for example "
            "`redis-server --daemonize yes`"
        ) from exc
    try:
        for db in range(1, 16):
            if admin.set(REDIS_CLAIM_KEY.format(db=db), owner, nx=True, ex=ttl_s):
                redis.Redis.from_url(f"{server_url.rstrip('/')}/{db}").flushdb()
                return db
    finally:
        admin.close()
    raise AirflowStackError(f"no free Redis database on {server_url} (1..15 all claimed)")


def release_redis_db(server_url: str, db: int, owner: str) -> None:
    """Flush the database and drop its claim (only if ``owner`` still holds it)."""
    import redis

    with contextlib.suppress(Exception):
        redis.Redis.from_url(f"{server_url.rstrip('/')}/{db}").flushdb()
        admin = redis.Redis.from_url(f"{server_url.rstrip('/')}/0")
        key = REDIS_CLAIM_KEY.format(db=db)
        if admin.get(key) == owner.encode():
            admin.delete(key)
        admin.close()


def stack_hostname() -> str:
    """``[core] hostname_callable`` of the stack's Celery workers: the worker's own
    loopback address (``$MLOPS_LOOP_STACK_HOSTNAME``), so task instances tell which worker
    ran them although all run on this machine."""
    from airflow.utils.net import getfqdn

    return os.environ.get(HOSTNAME_ENV) or getfqdn()


# ------------------------------------------------------------------------ celery worker


@dataclass(frozen=True)
class CeleryWorkerSpec:
    """One ``airflow celery worker``: its name (unique in the stack), the queues it takes
    and how many tasks it runs at once."""

    name: str
    queues: tuple[str, ...]
    concurrency: int = 2


@dataclass
class CeleryWorker:
    """A started worker and its own local folders and ports."""

    spec: CeleryWorkerSpec
    hostname: str
    root: Path
    log_folder: Path
    log_server_port: int
    env: dict[str, str]

    @property
    def component(self) -> str:
        return f"celery-worker-{self.spec.name}"

    def task_log_files(self, dag_id: str | None = None) -> list[Path]:
        """Task log files this worker wrote (``dag_id=.../run_id=.../task_id=...``)."""
        pattern = f"dag_id={dag_id}/**/*.log" if dag_id else "dag_id=*/**/*.log"
        return sorted(self.log_folder.glob(pattern))

    def task_ids_logged(self, dag_id: str | None = None) -> set[str]:
        """``task_id``s whose logs are in this worker's log folder."""
        found = set()
        for path in self.task_log_files(dag_id):
            for part in path.parts:
                if part.startswith("task_id="):
                    found.add(part.split("=", 1)[1])
        return found


def celery_worker_environment(
    base: Mapping[str, str], root: Path, hostname: str, log_server_port: int
) -> dict[str, str]:
    """A worker's environment: the stack's, with its own HOME, TMPDIR, task log folder,
    log-server port and host name."""
    for sub in ("home", "tmp", "logs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return {
        **base,
        "HOME": str(root / "home"),
        "TMPDIR": str(root / "tmp"),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(root / "logs"),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_server_port),
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "mlops_loop_devtools.airflow_stack.stack_hostname",
        HOSTNAME_ENV: hostname,
    }


# ------------------------------------------------------------------------------ stack


@dataclass
class AirflowStack:
    """A started deployment; ``url`` is the api-server, ``env`` what every component got."""

    url: str
    home: Path
    database_server: str
    database: str
    env: dict[str, str]
    processes: dict[str, LocalServer] = field(default_factory=dict)
    request_timeout: float = 30.0
    workers: dict[str, CeleryWorker] = field(default_factory=dict)
    redis_server: str | None = None
    redis_db: int | None = None
    _token: str | None = None

    # --- lifecycle ------------------------------------------------------------------

    def stop(self) -> None:
        for server in reversed(list(self.processes.values())):
            server.stop()
        self.processes.clear()
        drop_database(self.database_server, self.database)
        if self.redis_server is not None and self.redis_db is not None:
            release_redis_db(self.redis_server, self.redis_db, self.database)
            self.redis_db = None

    def __enter__(self) -> AirflowStack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log_path(self, component: str) -> Path:
        return self.home / "logs" / f"{component}.log"

    def log_tail(self, component: str, chars: int = 3000) -> str:
        return log_tail(self.log_path(component), chars)

    def check_alive(self) -> None:
        """Raise, with its log tail, if a component has exited."""
        for name, server in self.processes.items():
            if server.process.poll() is not None:
                raise AirflowStackError(
                    f"airflow {name} exited with {server.process.returncode}:\n{self.log_tail(name)}"
                )

    # --- REST API v2 ----------------------------------------------------------------

    @property
    def token(self) -> str:
        """A JWT from the simple auth manager (``simple_auth_manager_all_admins``: no
        credentials needed, ``GET /auth/token``)."""
        if self._token is None:
            response = self._http("GET", "/auth/token", auth=False)
            if response.status_code >= 300:
                raise AirflowStackError(
                    f"GET /auth/token answered {response.status_code}: {response.text}"
                )
            self._token = str(response.json()["access_token"])
        return self._token

    def _http(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> Any:
        import httpx

        headers = dict(kwargs.pop("headers", {}) or {})
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        return httpx.request(
            method, self.url + path, headers=headers, timeout=self.request_timeout, **kwargs
        )

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """An authenticated request to the api-server; ``path`` starts with ``/``. Returns
        the ``httpx.Response`` whatever its status (tests assert on 4xx answers)."""
        return self._http(method, path, **kwargs)

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """``request`` under ``/api/v2`` that must succeed; returns the JSON body."""
        response = self.request(method, "/api/v2" + path, **kwargs)
        if response.status_code >= 300:
            raise AirflowStackError(
                f"{method} /api/v2{path} answered {response.status_code}: {response.text}"
            )
        return response.json() if response.content else None

    def health(self) -> dict[str, Any]:
        import httpx

        response = httpx.get(self.url + "/api/v2/monitor/health", timeout=self.request_timeout)
        response.raise_for_status()
        return dict(response.json())

    def get_dag(self, dag_id: str) -> dict[str, Any] | None:
        response = self.request("GET", f"/api/v2/dags/{quote(dag_id)}")
        if response.status_code == 404:
            return None
        if response.status_code >= 300:
            raise AirflowStackError(
                f"GET dag {dag_id} answered {response.status_code}: {response.text}"
            )
        return dict(response.json())

    def wait_for_dags(self, dag_ids: Iterable[str], timeout: float = 180) -> None:
        """Wait until the dag-processor has parsed and stored every DAG in ``dag_ids``."""
        missing = list(dag_ids)
        deadline = time.monotonic() + timeout
        while missing:
            self.check_alive()
            missing = [dag_id for dag_id in missing if self.get_dag(dag_id) is None]
            if not missing:
                return
            if time.monotonic() > deadline:
                errors = self.api("GET", "/importErrors")
                raise AirflowStackError(
                    f"DAGs {missing} not parsed within {timeout:.0f}s; import errors: "
                    f"{json.dumps(errors.get('import_errors'), indent=1)[:3000]}\n"
                    f"dag-processor log tail:\n{self.log_tail('dag-processor')}"
                )
            time.sleep(1)

    def reparse(self, dag_id: str) -> None:
        """Ask the dag-processor to parse the file of ``dag_id`` again now (after a
        dataset config was added or changed)."""
        dag = self.api("GET", f"/dags/{quote(dag_id)}/details")
        self.api("PUT", f"/parseDagFile/{dag['file_token']}")

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.api("PATCH", f"/dags/{quote(dag_id)}", json={"is_paused": paused})

    def unpause(self, dag_id: str) -> None:
        self.set_paused(dag_id, False)

    def trigger_request(
        self,
        dag_id: str,
        *,
        conf: Mapping[str, Any] | None = None,
        logical_date: str | None = None,
        run_id: str | None = None,
    ) -> Any:
        """``POST /api/v2/dags/{dag_id}/dagRuns`` as a client sends it: ``logical_date``
        is always in the body (``null`` when None). Returns the response, whatever its
        status."""
        body: dict[str, Any] = {"logical_date": logical_date, "conf": dict(conf or {})}
        if run_id:
            body["dag_run_id"] = run_id
        return self.request("POST", f"/api/v2/dags/{quote(dag_id)}/dagRuns", json=body)

    def trigger(
        self,
        dag_id: str,
        *,
        conf: Mapping[str, Any] | None = None,
        logical_date: str | None = None,
        run_id: str | None = None,
        unpause: bool = True,
    ) -> str:
        """Trigger a run (unpausing the DAG first: a paused DAG's runs never start);
        returns its run id. A refused trigger raises with the answer."""
        if unpause:
            self.unpause(dag_id)
        response = self.trigger_request(dag_id, conf=conf, logical_date=logical_date, run_id=run_id)
        if response.status_code >= 300:
            raise AirflowStackError(
                f"trigger {dag_id} answered {response.status_code}: {response.text}"
            )
        return str(response.json()["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}"))

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        """``{task_id: task instance}`` of a run (map index -1 only)."""
        body = self.api(
            "GET", f"/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}/taskInstances?limit=1000"
        )
        return {
            ti["task_id"]: ti
            for ti in body["task_instances"]
            if ti.get("map_index", -1) in (-1, None)
        }

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return {task_id: ti["state"] for task_id, ti in self.task_instances(dag_id, run_id).items()}

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        states: Iterable[str] = TERMINAL_RUN_STATES,
        timeout: float = 300,
    ) -> dict[str, Any]:
        """Poll the run until its state is one of ``states``; returns the run. On timeout
        the error names the run's state, its task states and the scheduler's log tail."""
        wanted = set(states)
        deadline = time.monotonic() + timeout
        while True:
            run = self.dag_run(dag_id, run_id)
            if run["state"] in wanted:
                return run
            self.check_alive()
            if time.monotonic() > deadline:
                raise AirflowStackError(
                    f"run {dag_id}/{run_id} is {run['state']!r}, not {sorted(wanted)} after "
                    f"{timeout:.0f}s; tasks: {self.task_states(dag_id, run_id)}\n"
                    f"scheduler log tail:\n{self.log_tail('scheduler')}"
                )
            time.sleep(1)

    def wait_for_task(
        self, dag_id: str, run_id: str, task_id: str, states: Iterable[str], timeout: float = 300
    ) -> dict[str, Any]:
        """Poll one task instance until its state is one of ``states`` (for example
        ``deferred`` for an approval waiting for its answer)."""
        wanted = set(states)
        deadline = time.monotonic() + timeout
        while True:
            tis = self.task_instances(dag_id, run_id)
            ti = tis.get(task_id)
            if ti is not None and ti["state"] in wanted:
                return ti
            self.check_alive()
            if time.monotonic() > deadline:
                raise AirflowStackError(
                    f"task {dag_id}/{run_id}/{task_id} is {ti and ti['state']!r}, not {sorted(wanted)} "
                    f"after {timeout:.0f}s; tasks: { ({k: v['state'] for k, v in tis.items()}) }\n"
                    f"scheduler log tail:\n{self.log_tail('scheduler')}"
                )
            time.sleep(1)

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int | None = None
    ) -> str:
        """The task's log as text (the latest try unless ``try_number``)."""
        if try_number is None:
            try_number = int(self.task_instances(dag_id, run_id)[task_id]["try_number"]) or 1
        body = self.api(
            "GET",
            f"/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}/taskInstances/{quote(task_id)}/logs/{try_number}",
            headers={"Accept": "application/json"},
        )
        content = body.get("content")
        if isinstance(content, list):
            lines = []
            for item in content:
                if isinstance(item, dict):
                    event = item.get("event", "")
                    extra = item.get("error_detail") or ""
                    lines.append(f"{event} {json.dumps(extra) if extra else ''}".rstrip())
                else:
                    lines.append(str(item))
            return "\n".join(lines)
        return str(content)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        body = self.api(
            "GET",
            f"/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}/taskInstances/{quote(task_id)}"
            f"/xcomEntries/{quote(key)}?deserialize=true",
        )
        return body.get("value")

    def links_request(self, dag_id: str, run_id: str, task_id: str) -> Any:
        """``GET .../taskInstances/{task_id}/links``; the response, whatever its status."""
        return self.request(
            "GET",
            f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}/taskInstances/{quote(task_id)}/links",
        )

    def links(self, dag_id: str, run_id: str, task_id: str) -> dict[str, str | None]:
        """``{link name: URL or None}`` as the api-server computes them for a task."""
        response = self.links_request(dag_id, run_id, task_id)
        if response.status_code >= 300:
            raise AirflowStackError(
                f"links of {dag_id}/{run_id}/{task_id} answered {response.status_code}: {response.text}\n"
                f"api-server log tail:\n{self.log_tail('api-server')}"
            )
        return dict(response.json()["extra_links"])

    def hitl_path(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
        return (
            f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}/taskInstances/"
            f"{quote(task_id)}/{map_index}/hitlDetails"
        )

    def hitl_detail(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1
    ) -> dict[str, Any]:
        """What a human-in-the-loop task asks (options, body, params) and any answer."""
        response = self.request("GET", self.hitl_path(dag_id, run_id, task_id, map_index))
        if response.status_code >= 300:
            raise AirflowStackError(f"hitlDetails answered {response.status_code}: {response.text}")
        return dict(response.json())

    def answer_hitl(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        chosen_options: list[str],
        params_input: Mapping[str, Any] | None = None,
        map_index: int = -1,
    ) -> Any:
        """``PATCH .../hitlDetails``: answer a human-in-the-loop task (for example
        ``["Approve"]`` or ``["Reject"]`` for an ApprovalOperator). Returns the response,
        whatever its status (a second answer is refused with 409)."""
        return self.request(
            "PATCH",
            self.hitl_path(dag_id, run_id, task_id, map_index),
            json={"chosen_options": list(chosen_options), "params_input": dict(params_input or {})},
        )


def stack_environment(
    home: Path,
    database_url: str,
    api_port: int,
    *,
    dags_folder: Path,
    plugins_folder: Path,
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of every component: this process's, less its Airflow settings
    (a test session has its own SQLite home), plus the deployment's."""
    base = {
        k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__") and k != "AIRFLOW_HOME"
    }
    jwt_secret, secret_key = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    url = f"http://127.0.0.1:{api_port}"
    env = {
        **base,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
        "AIRFLOW__API__SECRET_KEY": secret_key,
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs" / "tasks"),
        "AIRFLOW__LOGGING__DAG_PROCESSOR_CHILD_PROCESS_LOG_DIRECTORY": str(
            home / "logs" / "dag-processor"
        ),
        # A small machine: parse every 30 s (a reparse request is immediate), look for
        # new work often.
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "30",
        "AIRFLOW__TRIGGERER__DEFAULT_CAPACITY": "50",
        "AIRFLOW__WEBSERVER__EXPOSE_CONFIG": "False",
    }
    env.update(extra_env or {})
    return env


def start_airflow_stack(
    home: str | Path,
    *,
    dags_folder: str | Path = REPO / "dags",
    plugins_folder: str | Path = REPO / "plugins",
    extra_env: Mapping[str, str] | None = None,
    database_server: str = os.environ.get("MLOPS_LOOP_STACK_POSTGRES", DEFAULT_POSTGRES),
    timeout: float = float(os.environ.get("MLOPS_LOOP_STACK_START_TIMEOUT", 300)),
    celery_workers: Sequence[CeleryWorkerSpec] = (),
    redis_server: str = os.environ.get("MLOPS_LOOP_STACK_REDIS", DEFAULT_REDIS),
) -> AirflowStack:
    """Create a fresh database, migrate it and start the four components; returns when
    the api-server answers and reports every component healthy. ``extra_env`` is added
    to every component's environment (MLOPS_LOOP_CONFIG_DIR, MLOPS_LOOP_STORAGE_ROOT,
    MLFLOW_TRACKING_URI, ...).

    With ``celery_workers`` the executor is the CeleryExecutor (broker: a Redis database
    of its own on ``redis_server``; results: the stack's database) and each worker is
    started too; it returns once every worker has reported ready. The api-server reads
    served task logs from the first worker's log-server port."""
    home = Path(home).resolve()
    (home / "logs").mkdir(parents=True, exist_ok=True)
    database = f"airflow_stack_{os.getpid()}_{secrets.token_hex(3)}"
    api_port = free_port()
    env = stack_environment(
        home,
        f"{database_server.rstrip('/')}/{database}",
        api_port,
        dags_folder=Path(dags_folder),
        plugins_folder=Path(plugins_folder),
        extra_env=extra_env,
    )
    names = [spec.name for spec in celery_workers]
    if len(set(names)) != len(names):
        raise ValueError(f"Celery worker names must be unique: {names}")
    create_database(database_server, database)
    stack = AirflowStack(
        url=f"http://127.0.0.1:{api_port}",
        home=home,
        database_server=database_server,
        database=database,
        env=env,
    )
    try:
        if celery_workers:
            stack.redis_server = redis_server
            stack.redis_db = claim_redis_db(redis_server, owner=database)
            # The driver named: a bare postgresql:// picks psycopg (3), not installed.
            results_db = f"{database_server.rstrip('/')}/{database}".replace(
                "postgresql://", "postgresql+psycopg2://", 1
            )
            env.update(
                {
                    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                    "AIRFLOW__CELERY__BROKER_URL": f"{redis_server.rstrip('/')}/{stack.redis_db}",
                    "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{results_db}",
                    "AIRFLOW__OPERATORS__DEFAULT_QUEUE": "default",
                    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
                }
            )
        airflow = _bin("airflow")
        deadline = time.monotonic() + timeout
        migrate_log = stack.log_path("db-migrate")
        with open(migrate_log, "wb") as log:
            proc = subprocess.run(
                [airflow, "db", "migrate"], stdout=log, stderr=subprocess.STDOUT, env=env,
                timeout=timeout, check=False,
            )  # fmt: skip
        if proc.returncode != 0:
            raise AirflowStackError(
                f"airflow db migrate exited with {proc.returncode}:\n{log_tail(migrate_log)}"
            )
        for component in COMPONENTS:
            stack.processes[component] = _spawn(
                component, [airflow, component], stack.log_path(component), env
            )
        _wait_healthy(stack, deadline)
        for index, spec in enumerate(celery_workers):
            _start_celery_worker(stack, spec, index, airflow)
        _wait_workers_ready(stack, deadline)
    except BaseException:
        stack.stop()
        raise
    return stack


def _start_celery_worker(
    stack: AirflowStack, spec: CeleryWorkerSpec, index: int, airflow: str
) -> CeleryWorker:
    port = (
        int(stack.env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"]) if index == 0 else free_port()
    )
    hostname = f"127.0.0.{index + 2}"
    root = stack.home / "workers" / spec.name
    worker = CeleryWorker(
        spec=spec,
        hostname=hostname,
        root=root,
        log_folder=root / "logs",
        log_server_port=port,
        env=celery_worker_environment(stack.env, root, hostname, port),
    )
    cmd = [
        airflow, "celery", "worker",
        "--queues", ",".join(spec.queues),
        "--concurrency", str(spec.concurrency),
        "--celery-hostname", f"{spec.name}@{hostname}",
    ]  # fmt: skip
    stack.workers[spec.name] = worker
    stack.processes[worker.component] = _spawn(
        worker.component, cmd, stack.log_path(worker.component), worker.env
    )
    return worker


def _wait_workers_ready(stack: AirflowStack, deadline: float) -> None:
    """Celery logs ``<name>@<host> ready.`` once a worker consumes its queues."""
    waiting = dict(stack.workers)
    while waiting:
        stack.check_alive()
        for name, worker in list(waiting.items()):
            if f"{name}@{worker.hostname} ready." in log_tail(
                stack.log_path(worker.component), 200_000
            ):
                del waiting[name]
        if not waiting:
            return
        if time.monotonic() > deadline:
            tails = "\n".join(
                f"--- {w.component} log tail:\n{stack.log_tail(w.component, 2000)}"
                for w in waiting.values()
            )
            raise AirflowStackError(f"Celery workers {sorted(waiting)} not ready in time\n{tails}")
        time.sleep(1)


def _spawn(name: str, cmd: list[str], log_path: Path, env: dict[str, str]) -> LocalServer:
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child process
    process = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
    )
    log.close()
    return LocalServer(name=name, url="", process=process, log_path=log_path)


def _wait_healthy(stack: AirflowStack, deadline: float) -> None:
    last: Any = "no answer"
    while time.monotonic() < deadline:
        stack.check_alive()
        try:
            health = stack.health()
        except Exception as exc:  # not listening yet
            last = f"{type(exc).__name__}: {exc}"
        else:
            last = health
            if all((health.get(key) or {}).get("status") == "healthy" for key in HEALTH_KEYS):
                return
        time.sleep(1)
    unhealthy = (
        [k for k in HEALTH_KEYS if (last.get(k) or {}).get("status") != "healthy"]
        if isinstance(last, dict)
        else ["api-server"]
    )
    tails = "\n".join(
        f"--- {name} log tail:\n{stack.log_tail(name.replace('_', '-'), 1500)}"
        for name in unhealthy
        if name != "metadatabase"
    )
    raise AirflowStackError(f"the Airflow deployment was not healthy in time: {last}\n{tails}")


def main(argv: list[str] | None = None) -> int:
    """``python -m mlops_loop_devtools.airflow_stack HOME``: start a deployment on this
    repository's DAGs, print its URL and wait until interrupted."""
    args = list(sys.argv[1:] if argv is None else argv)
    home = Path(args[0] if args else REPO / ".local" / "airflow-stack")
    with start_airflow_stack(home) as stack:
        print(
            f"Airflow {stack.url} (database {stack.database}); logs in {home / 'logs'}", flush=True
        )
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                stack.check_alive()
                time.sleep(5)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""docker-compose.yml: valid, secrets only from .env, and a stack that starts for real.

The static tests read `docker-compose config` (fast). The `compose` test builds every image
locally (include/docker/build_stack_images.sh, skipped when the content-hash tags exist),
brings the stack up with docker-compose.local.yml under a project name of its own, lands
one batch in the stack's S3 server, triggers one ingest through the REST API v2, waits for
its success, and takes the stack down with its volumes, also when something failed.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures import missing

REPO = Path(__file__).resolve().parents[1]
MAIN = REPO / "docker-compose.yml"
LOCAL = REPO / "docker-compose.local.yml"
DAG_ID = "mlops_ingest__credit_default"
DS = "2024-03-01"


@pytest.fixture
def compose_cli() -> None:
    """The docker-compose client (the config checks need no engine)."""
    if shutil.which("docker-compose") is None:
        missing("docker-compose not installed (make test installs it)")


def _env_file(tmp_path: Path, **extra: str) -> Path:
    path = tmp_path / "compose.env"
    subprocess.run(
        ["bash", str(REPO / "scripts" / "compose_env.sh"), str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    with path.open("a") as f:
        f.writelines(f"{k}={v}\n" for k, v in extra.items())
    return path


def _config(env_file: Path, *files: Path) -> dict[str, Any]:
    args = [a for f in files for a in ("-f", str(f))]
    proc = subprocess.run(
        ["docker-compose", "--env-file", str(env_file), *args, "config"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


@pytest.mark.parametrize(
    "files", [pytest.param((MAIN,), id="main"), pytest.param((MAIN, LOCAL), id="main+local")]
)
def test_compose_files_are_valid(compose_cli, tmp_path, files):
    services = _config(_env_file(tmp_path), *files)["services"]
    assert {
        "postgres",
        "redis",
        "s3",
        "mlflow",
        "airflow-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
        "airflow-worker-gpu",
    } <= set(services)
    for name, service in services.items():
        if name != "airflow-init":  # a one-shot job: the others wait for its exit code
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        sockets = [v for v in service.get("volumes", []) if "docker.sock" in str(v)]
        assert bool(sockets) == name.startswith("airflow-worker"), name


def test_compose_refuses_to_start_without_the_generated_secrets(compose_cli, tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    proc = subprocess.run(
        ["docker-compose", "--env-file", str(empty), "-f", str(MAIN), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode != 0
    assert "run scripts/compose_env.sh" in proc.stderr


def test_compose_env_is_idempotent_and_complete(tmp_path):
    path = _env_file(tmp_path)
    first = path.read_text()
    subprocess.run(
        ["bash", str(REPO / "scripts" / "compose_env.sh"), str(path)],
        check=True,
        capture_output=True,
    )
    assert path.read_text() == first
    values = dict(
        line.split("=", 1)
        for line in first.splitlines()
        if "=" in line and not line.startswith("#")
    )
    for key in (
        "AIRFLOW_UID",
        "DOCKER_GID",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "POSTGRES_PASSWORD",
        "S3_ACCESS_KEY_ID",
        "S3_SECRET_ACCESS_KEY",
        "AIRFLOW_ADMIN_PASSWORD",
    ):
        assert values.get(key), key
    assert path.stat().st_mode & 0o077 == 0


# -- the stack, for real ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _docker_answers() -> bool:
    if shutil.which("docker") is None or shutil.which("docker-compose") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@dataclass
class ComposeStack:
    project: str
    env: dict[str, str]
    compose: list[str]

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.env['AIRFLOW_API_PORT']}"

    def s3(self) -> Any:
        """A client of the stack's S3 server, with the keys from its .env."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self.env['S3_PORT']}",
            region_name="us-east-1",
            aws_access_key_id=self.env["S3_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["S3_SECRET_ACCESS_KEY"],
        )

    def run(
        self, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*self.compose, *args], capture_output=True, text=True, cwd=REPO, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
        return proc

    def states(self) -> dict[str, str]:
        """service -> running/healthy/unhealthy/exited(<code>)."""
        ids = self.run("ps", "-q").stdout.split()
        if not ids:
            return {}
        fmt = (
            '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} '
            "{{if .State.Health}}{{.State.Health.Status}}{{else}}-{{end}} {{.State.ExitCode}}"
        )
        out = subprocess.run(
            ["docker", "inspect", "--format", fmt, *ids], capture_output=True, text=True, check=True
        ).stdout
        states = {}
        for line in out.splitlines():
            service, status, health, code = line.split()
            states[service] = (
                f"exited({code})" if status == "exited" else (health if health != "-" else status)
            )
        return states

    def logs(self, tail: int = 60) -> str:
        return self.run("logs", "--no-color", f"--tail={tail}", check=False).stdout[-20000:]

    def token(self) -> str:
        import requests

        response = requests.post(
            f"{self.api}/auth/token",
            timeout=30,
            json={"username": "admin", "password": self.env["AIRFLOW_ADMIN_PASSWORD"]},
        )
        assert response.status_code in (200, 201), response.text
        return response.json()["access_token"]


def _wait_healthy(stack: ComposeStack, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = stack.states()
        init = states.pop("airflow-init", "exited(0)")
        assert init in ("exited(0)", "running", "starting"), f"airflow-init: {init}\n{stack.logs()}"
        bad = {s: v for s, v in states.items() if v in ("unhealthy",) or v.startswith("exited")}
        assert not bad, f"services failed: {bad}\n{stack.logs()}"
        if states and all(v == "healthy" for v in states.values()):
            return
        time.sleep(3)
    raise AssertionError(f"stack not healthy after {timeout:.0f}s: {states}\n{stack.logs()}")


def _remove_leftovers(project: str) -> None:
    label = f"label=com.docker.compose.project={project}"
    for kind, listing in (("container", ["ps", "-aq"]), ("volume", ["volume", "ls", "-q"])):
        ids = subprocess.run(
            ["docker", *listing, "--filter", label], capture_output=True, text=True
        ).stdout.split()
        if ids:
            subprocess.run(["docker", kind, "rm", "-f", *ids], capture_output=True)
    subprocess.Popen(
        [
            "bash",
            "-c",
            f"for _ in $(seq 60); do docker network rm {project} && exit 0; sleep 5; done",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@pytest.fixture(scope="module")
def compose_stack(tmp_path_factory) -> Iterator[ComposeStack]:
    if not _docker_answers():
        missing("needs a Docker engine and docker-compose (scripts/install_docker.sh)")
    started = time.monotonic()
    build = subprocess.run(
        ["bash", str(REPO / "include" / "docker" / "build_stack_images.sh")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=1200,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    built = time.monotonic()
    print(f"\ncompose: images ready in {built - started:.0f}s\n{build.stderr.strip()}")

    project = f"mlopsci{uuid.uuid4().hex[:8]}"
    ports = {
        k: str(_free_port())
        for k in ("AIRFLOW_API_PORT", "MLFLOW_PORT", "S3_PORT", "S3_CONSOLE_PORT")
    }
    env_path = _env_file(
        tmp_path_factory.mktemp("compose"),
        MLOPS_LOOP_NETWORK=project,
        AIRFLOW_WORKER_CONCURRENCY="4",
        **ports,
    )
    env = dict(
        line.split("=", 1)
        for line in env_path.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    stack = ComposeStack(
        project,
        env,
        [
            "docker-compose",
            "--project-name",
            project,
            "--env-file",
            str(env_path),
            "-f",
            str(MAIN),
            "-f",
            str(LOCAL),
        ],
    )
    try:
        up = stack.run("up", "-d", "--no-build", timeout=900, check=False)
        assert up.returncode == 0, f"up failed:\n{up.stderr[-3000:]}\n{stack.logs()}"
        _wait_healthy(stack, timeout=600)
        print(f"compose: stack {project} healthy in {time.monotonic() - built:.0f}s")
        yield stack
    finally:
        down = stack.run(
            "down", "-v", "--remove-orphans", "--timeout", "10", check=False, timeout=300
        )
        if down.returncode != 0:
            # Seen here: right after its containers go, the engine may report the network
            # as having active endpoints for a minute or two, and compose stops before the
            # volumes. Remove what is left by the project's label, the network from a
            # detached retry loop so the test does not wait for the engine.
            print(f"compose: down -v: {down.stderr.strip()[-300:]}")
            _remove_leftovers(project)
        print(f"compose: down -v ({down.returncode}); total {time.monotonic() - started:.0f}s")


@pytest.mark.compose
@pytest.mark.timeout(1800)
def test_compose_stack_runs_an_ingest(compose_stack: ComposeStack):
    import requests

    from mlops_loop_devtools.sample_data import generate_batch

    stack = compose_stack
    env = stack.env
    bucket = env.get("S3_BUCKET", "mlops-loop")
    s3 = stack.s3()
    # The bucket is airflow-init's work; the batch lands the way an upstream system lands it.
    s3.head_bucket(Bucket=bucket)
    body = generate_batch(DS, rows=2_000).to_csv(index=False).encode()
    s3.put_object(Bucket=bucket, Key=f"credit_default/raw/ds={DS}/part-000.csv", Body=body)

    headers = {"Authorization": f"Bearer {stack.token()}"}

    def api(method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(
            method, f"{stack.api}/api/v2{path}", headers=headers, timeout=30, **kwargs
        )

    deadline = time.monotonic() + 240
    while api("GET", f"/dags/{DAG_ID}").status_code != 200:
        assert time.monotonic() < deadline, f"{DAG_ID} never parsed\n{stack.logs()}"
        time.sleep(3)
    assert api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False}).status_code == 200
    response = api(
        "POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {"ds": DS}}
    )
    assert response.status_code == 200, response.text
    run_id = response.json()["dag_run_id"]

    deadline = time.monotonic() + 600
    state = None
    while time.monotonic() < deadline:
        state = api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}").json()["state"]
        if state in ("success", "failed"):
            break
        time.sleep(3)
    tis = api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
    summary = {t["task_id"]: (t["state"], t.get("hostname"), t.get("queue")) for t in tis}
    assert state == "success", f"run {run_id}: {state} {json.dumps(summary)}\n{stack.logs(120)}"
    assert all(v[0] == "success" for v in summary.values()), summary
    # The api-server reads the task's log from the worker's log server (same secret key).
    log = api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/ingest_snapshot/logs/1")
    assert log.status_code == 200, log.text
    assert "snapshot" in json.dumps(log.json()).lower(), log.text[:2000]

    # The snapshot and the quality result are in the stack's S3, through Connection mlops_s3.
    keys = [
        o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="credit_default/")["Contents"]
    ]
    assert any(
        k.startswith("credit_default/snapshots/") and k.endswith("manifest.json") for k in keys
    ), keys
    assert any(k.startswith("credit_default/reports/quality/") for k in keys), keys


@pytest.mark.compose
@pytest.mark.timeout(600)
def test_compose_mlflow_keeps_runs_in_postgres_and_artifacts_in_s3(compose_stack: ComposeStack):

    stack = compose_stack
    env = stack.env
    # From a worker, as the tasks reach it: by its service name on the compose network,
    # artifacts uploaded through the server (the worker has no S3 keys for MLflow).
    script = (
        "import mlflow, tempfile, pathlib\n"
        "mlflow.set_tracking_uri('http://mlflow:5000')\n"
        "mlflow.set_experiment('compose-smoke')\n"
        "with mlflow.start_run() as run:\n"
        "    mlflow.log_metric('m', 1.0)\n"
        "    p = pathlib.Path(tempfile.mkdtemp()) / 'hello.txt'\n"
        "    p.write_text('hello')\n"
        "    mlflow.log_artifact(str(p))\n"
        "print('RUN', run.info.run_id, run.info.artifact_uri)\n"
    )
    proc = stack.run(
        "exec", "-T", "airflow-worker", "python", "-c", script, check=False, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "mlflow-artifacts:" in proc.stdout, proc.stdout

    s3 = stack.s3()
    listing = s3.list_objects_v2(
        Bucket=env.get("S3_BUCKET", "mlops-loop"), Prefix="mlflow-artifacts/"
    )
    keys = [o["Key"] for o in listing.get("Contents", [])]
    assert any(k.endswith("/hello.txt") for k in keys), keys
    # Runs live in PostgreSQL's `mlflow` database (created by airflow-init).
    count = stack.run(
        "exec",
        "-T",
        "postgres",
        "psql",
        "-U",
        "airflow",
        "-d",
        "mlflow",
        "-tAc",
        "SELECT count(*) FROM runs",
        timeout=60,
    ).stdout.strip()
    assert count == "1", count

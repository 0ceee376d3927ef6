"""MLflow down while an evaluation, a promotion, a rollback or a drift check runs on the
worker: the task fails within a bounded time with TrackingServerUnavailable naming the
server, and nothing changed (the registry a real MLflow server holds, the storage, no
trainer started).

"Down" is a port nothing listens on (connection refused), a server that accepts
connections but never answers (hung), and a server that stops answering in the middle
of a promotion (a TCP relay in front of the real server that is cut after N requests).
The client runs with the defaults (MLFLOW_CLIENT_DEFAULTS, hooks.mlflow.PROBE_TIMEOUT_S):
the documented bound is hooks.mlflow.probe_bound_s() (27 s); the tests allow 60 s so that
a slow, shared machine does not make them flaky.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_loop.core.trainer_protocol import MLFLOW_CLIENT_DEFAULTS
from mlops_loop.hooks.mlflow import TrackingServerUnavailable, probe_bound_s
from mlops_loop_devtools.devstack import free_port
from tests.fixtures.decisions import decision_dict

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "include" / "config" / "credit_default.yaml")
BOUND_S = 60.0  # generous: the documented bound is probe_bound_s() (about 27 s)
NO_ENGINE = "unix:///nonexistent/docker.sock"  # a trainer that started would fail differently


@pytest.fixture
def client_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The shipped client settings (nothing from the machine), storage under tmp_path."""
    for name in (*MLFLOW_CLIENT_DEFAULTS, "MLFLOW_TRACKING_URI", "MLOPS_LOOP_MLFLOW_CONN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
    monkeypatch.setenv("MLOPS_LOOP_STORAGE_ROOT", str(tmp_path / "data"))
    assert probe_bound_s() == pytest.approx(27.0)
    return tmp_path / "data"


@contextlib.contextmanager
def hung_server() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextlib.contextmanager
def dead_server(kind: str) -> Iterator[str]:
    if kind == "refused":
        yield f"http://127.0.0.1:{free_port()}"
    else:
        with hung_server() as url:
            yield url


# ----------------------------------------------------------------- the real registry


def registry_state(client: Any, name: str) -> dict[str, Any]:
    """Everything a promotion or rollback could change: aliases, model tags (the audit
    trail), every version's tags, and lock or guard models next to it."""
    model = client.get_registered_model(name)
    versions = client.search_model_versions(f"name = '{name}'")
    others = sorted(
        m.name for m in client.search_registered_models() if m.name.startswith(name + ".")
    )
    return {
        "aliases": dict(model.aliases),
        "tags": dict(model.tags),
        "versions": {v.version: dict(v.tags) for v in versions},
        "lock_models": others,
    }


@pytest.fixture
def registry(mlflow_server) -> tuple[Any, str, str, str]:
    """(client, model name, champion v1, validated challenger v2) on the real server."""
    import mlflow

    from mlops_loop.core.registry import mark_validation, promote

    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    name = f"down_{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    mlflow.set_tracking_uri(mlflow_server.url)
    versions = []
    for _ in range(2):
        with mlflow.start_run() as run:
            pass
        mv = client.create_model_version(
            name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
        )
        versions.append(str(mv.version))
    v1, v2 = versions
    promote(
        client,
        name,
        v1,
        expected_champion=None,
        decision_uri=None,
        airflow_run=None,
        reason="setup",
    )
    mark_validation(client, name, v2, decision_dict(model_name=name, challenger_version=v2))
    return client, name, v1, v2


def fails_bounded(run: Callable[[], Any], url: str) -> tuple[TrackingServerUnavailable, float]:
    started = time.monotonic()
    with pytest.raises(TrackingServerUnavailable) as caught:
        run()
    took = time.monotonic() - started
    print(f"\nfailed after {took:.1f}s: {caught.value}")
    assert took < BOUND_S, f"took {took:.0f}s"
    message = str(caught.value)
    assert f"MLflow tracking server {url} (from argument)" in message
    assert "did not answer" in message or "stopped answering" in message
    return caught.value, took


def nothing_in(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


# --------------------------------------------------------------------- the four tasks


@pytest.mark.parametrize("kind", ["refused", "hung"])
def test_evaluate_with_mlflow_down(client_defaults, registry, tmp_path, kind):
    from mlops_loop.operators.evaluate import EvaluateChallengerOperator

    client, name, _, v2 = registry
    before = registry_state(client, name)
    with dead_server(kind) as url:
        op = EvaluateChallengerOperator(
            task_id="evaluate_challenger",
            config_path=CONFIG,
            holdout_snapshot_uri=str(tmp_path / "holdout"),
            challenger_version=v2,
            model_name=name,
            mlflow_tracking_uri=url,
            runner="docker",
            docker_url=NO_ENGINE,
            io_dir_root=str(tmp_path / "io"),
        )
        error, _ = fails_bounded(lambda: op.execute({}), url)
    assert error.operation == "health check"  # before the champion lookup was sent
    assert "Nothing was read or changed" in str(error)
    assert nothing_in(client_defaults) == [] and nothing_in(tmp_path / "io") == []
    assert registry_state(client, name) == before


def test_drift_with_mlflow_down(client_defaults, registry, tmp_path):
    from mlops_loop.operators.drift import DriftMonitorOperator

    client, name, _, _ = registry
    before = registry_state(client, name)
    with dead_server("refused") as url:
        op = DriftMonitorOperator(
            task_id="drift_monitor",
            config_path=CONFIG,
            ds="2026-05-11",
            model_name=name,
            mlflow_tracking_uri=url,
            runner="docker",
            docker_url=NO_ENGINE,
            io_dir_root=str(tmp_path / "io"),
        )
        fails_bounded(lambda: op.execute({}), url)
    assert nothing_in(client_defaults) == [] and nothing_in(tmp_path / "io") == []
    assert registry_state(client, name) == before


@pytest.mark.parametrize("kind", ["refused", "hung"])
def test_promote_with_mlflow_down(client_defaults, registry, kind):
    from mlops_loop.operators.promote import PromoteModelOperator

    client, name, v1, v2 = registry
    before = registry_state(client, name)
    decision = decision_dict(model_name=name, challenger_version=v2, expected_champion_version=v1)
    with dead_server(kind) as url:
        op = PromoteModelOperator(task_id="promote", decision=decision, mlflow_tracking_uri=url)
        fails_bounded(lambda: op.execute({}), url)
    assert registry_state(client, name) == before


def test_rollback_with_mlflow_down(client_defaults, registry):
    from mlops_loop.operators.promote import RollbackChampionOperator

    client, name, _, v2 = registry
    before = registry_state(client, name)
    with dead_server("refused") as url:
        op = RollbackChampionOperator(
            task_id="rollback",
            model_name=name,
            to_version=v2,
            reason="down test",
            mlflow_tracking_uri=url,
        )
        fails_bounded(lambda: op.execute({}), url)
    assert registry_state(client, name) == before


# ------------------------------------------------- a server that stops in the middle


class Relay:
    """A TCP relay to ``upstream`` (host, port) that goes down for good when a request
    whose first line starts with ``cut_at`` comes (before forwarding it): open
    connections are cut and new ones refused."""

    def __init__(self, upstream: tuple[str, int], cut_at: bytes) -> None:
        self.upstream = upstream
        self.cut_at = cut_at
        self.down = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.down.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets += [conn, up]
            threading.Thread(target=self._pump, args=(conn, up, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, conn, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, requests: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if requests and self.cut_at in data:
                    self.stop()
                    return
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        self.down.set()
        with contextlib.suppress(OSError):
            self.listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


API = b"POST /api/2.0/mlflow/"


@pytest.mark.parametrize(
    ("cut_at", "lock_left", "moved"),
    [
        pytest.param(API + b"registered-models/create", False, False, id="before-the-lock"),
        # The lease renewal is the first write under the lock.
        pytest.param(API + b"registered-models/set-tag", True, False, id="holding-the-lock-before-any-write"),
        pytest.param(API + b"registered-models/alias", True, False, id="audit-entry-written-alias-not-moved"),
        pytest.param(API + b"model-versions/set-tag", True, True, id="alias-moved-version-tags-not-written"),
    ],
)  # fmt: skip
def test_promote_when_mlflow_stops_answering_midway(
    client_defaults, registry, mlflow_server, cut_at, lock_left, moved
):
    """The server answers until the promotion sends ``cut_at``, then is gone: the task
    fails within the bound naming the server and the call; once the server is reachable
    again the audit trail agrees with the alias, which moved only if the alias write got
    through. A lock taken before the server went away could not be released: it stays
    until its lease runs out (lock_ttl, 300 s), and the next promotion waits for that or
    breaks it then. That next holder settles what was left: an entry whose alias never
    moved is marked not applied, a move's missing version tags are written."""
    from urllib.parse import urlsplit

    from mlops_loop.core.registry import audit_trail, lock_name, promote
    from mlops_loop.operators.promote import PromoteModelOperator

    client, name, v1, v2 = registry
    before = registry_state(client, name)
    upstream = urlsplit(mlflow_server.url)
    relay = Relay((str(upstream.hostname), int(upstream.port or 80)), cut_at)
    decision = decision_dict(model_name=name, challenger_version=v2, expected_champion_version=v1)
    op = PromoteModelOperator(task_id="promote", decision=decision, mlflow_tracking_uri=relay.url)
    try:
        error, _ = fails_bounded(lambda: op.execute({}), relay.url)
    finally:
        relay.stop()
    assert "stopped answering during" in str(error)
    after = registry_state(client, name)
    champion = v2 if moved else v1
    assert after["aliases"] == {"champion": champion}
    assert (lock_name(name) in after["lock_models"]) is lock_left
    assert audit_trail(client, name)[-1]["to"] == champion
    assert after["versions"][v1] == before["versions"][v1]
    if not moved:
        # No version tag is written before the alias moves.
        assert after["versions"] == before["versions"]
    if cut_at.endswith(b"registered-models/alias"):
        leftover = audit_trail(client, name, include_unapplied=True)[-1]
        assert (leftover["to"], leftover["applied"]) == (v2, False)
    if not lock_left:
        return
    # The next holder (the dead lock broken by hand, as its expiry would) settles the trail.
    client.delete_registered_model(lock_name(name))
    result = promote(
        client, name, v2, expected_champion=champion, decision_uri="u", airflow_run="next",
        reason="after the outage",
    )  # fmt: skip
    assert result.outcome == ("noop" if moved else "promoted")
    trail = audit_trail(client, name, include_unapplied=True)
    assert [(e["from"], e["to"], e["applied"]) for e in trail if e["applied"]] == [
        (None, v1, True), (v1, v2, True)
    ]  # fmt: skip
    assert client.get_registered_model(name).aliases == {"champion": v2}
    tags = client.get_model_version(name, v2).tags
    assert tags["promoted_at"] == trail[-1]["at"] and tags["previous_champion"] == v1
    if cut_at.endswith(b"registered-models/alias"):
        stored = json.loads(
            client.get_registered_model(name).tags[f"audit.champion.{trail[1]['seq']:06d}"]
        )
        assert stored["applied"] is False and stored["to"] == v2

"""hooks/mlflow.py: which MLflow server MlflowHook resolves, from which source, and that
credentials never become part of the URI or of anything printed.

Connections are defined the way a local run defines them, as ``AIRFLOW_CONN_<ID>`` JSON
in the environment; nothing here talks to a server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlops_loop.core.trainer_protocol import (
    MLFLOW_CLIENT_DEFAULTS,
    TRACKING_PASSWORD_ENV,
    TRACKING_TOKEN_ENV,
    TRACKING_URI_ENV,
    TRACKING_USERNAME_ENV,
)
from mlops_loop.exceptions import ConfigError
from mlops_loop.hooks import mlflow as mlflow_hook_module
from mlops_loop.hooks.mlflow import DEFAULT_CONN_ENV, MlflowHook, TrackingServer

LOGIN, PASSWORD, TOKEN = "mlflow-user", "mlflow-password-42", "mlflow-token-42"
ENV_URI = "http://env-mlflow:5000"
FULL_CONN = {
    "conn_type": "http",
    "host": "mlflow.example",
    "port": 5443,
    "schema": "https",
    "login": LOGIN,
    "password": PASSWORD,
    "extra": {"token": TOKEN},
}
ALL_SECRETS = {
    TRACKING_USERNAME_ENV: LOGIN,
    TRACKING_PASSWORD_ENV: PASSWORD,
    TRACKING_TOKEN_ENV: TOKEN,
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No MLflow settings from the machine running the tests."""
    for name in (
        "AIRFLOW_CONN_MLFLOW_DEFAULT",
        "AIRFLOW_CONN_TEAM_MLFLOW",
        DEFAULT_CONN_ENV,
        TRACKING_URI_ENV,
        TRACKING_USERNAME_ENV,
        TRACKING_PASSWORD_ENV,
        TRACKING_TOKEN_ENV,
    ):
        # setenv first: monkeypatch then restores the variable even where it was unset.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return monkeypatch


def define(monkeypatch: pytest.MonkeyPatch, conn_id: str, conn: dict[str, Any]) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


@pytest.mark.parametrize(
    ("connections", "environ", "hook_args", "uri", "source", "secrets"),
    [
        pytest.param(
            {}, {}, {"tracking_uri": "http://explicit:5000"},
            "http://explicit:5000", "argument", {},
            id="explicit-uri",
        ),
        pytest.param(
            {"mlflow_default": FULL_CONN}, {TRACKING_URI_ENV: ENV_URI}, {"tracking_uri": "http://explicit:5000"},
            "http://explicit:5000", "argument", ALL_SECRETS,
            id="explicit-uri-keeps-the-connections-credentials",
        ),
        pytest.param(
            {"mlflow_default": FULL_CONN}, {TRACKING_URI_ENV: ENV_URI}, {},
            "https://mlflow.example:5443", "connection mlflow_default", ALL_SECRETS,
            id="default-connection-host-port-schema-login-password-token",
        ),
        pytest.param(
            {"mlflow_default": {"conn_type": "http", "host": "127.0.0.1", "port": 5000}}, {}, {},
            "http://127.0.0.1:5000", "connection mlflow_default", {},
            id="default-connection-plain-http",
        ),
        pytest.param(
            {"mlflow_default": {"conn_type": "http", "host": "mlflow.example", "extra": {"scheme": "https"}}},
            {}, {},
            "https://mlflow.example", "connection mlflow_default", {},
            id="extra-scheme-without-port",
        ),
        pytest.param(
            {"mlflow_default": {"conn_type": "http", "host": "http://mlflow.example:5000/"}}, {}, {},
            "http://mlflow.example:5000", "connection mlflow_default", {},
            id="host-with-scheme",
        ),
        pytest.param(
            {"mlflow_default": {"conn_type": "http", "extra": {"tracking_uri": "http://from-extra:5000/"}}},
            {}, {},
            "http://from-extra:5000", "connection mlflow_default", {},
            id="extra-tracking-uri",
        ),
        pytest.param(
            {"team_mlflow": {"conn_type": "http", "host": "team", "port": 80, "login": LOGIN}}, {}, {"mlflow_conn_id": "team_mlflow"},
            "http://team:80", "connection team_mlflow", {TRACKING_USERNAME_ENV: LOGIN},
            id="named-connection",
        ),
        pytest.param(
            {"team_mlflow": {"conn_type": "http", "host": "team", "port": 80}}, {DEFAULT_CONN_ENV: "team_mlflow"}, {},
            "http://team:80", "connection team_mlflow", {},
            id="default-conn-id-from-environment",
        ),
        pytest.param(
            {}, {TRACKING_URI_ENV: ENV_URI}, {},
            ENV_URI, f"${TRACKING_URI_ENV}", {},
            id="default-connection-missing-falls-back-to-env",
        ),
        pytest.param(
            {}, {TRACKING_URI_ENV: ENV_URI, DEFAULT_CONN_ENV: "missing_mlflow"}, {},
            ENV_URI, f"${TRACKING_URI_ENV}", {},
            id="default-conn-id-from-environment-missing-falls-back-to-env",
        ),
    ],
)  # fmt: skip
def test_resolution(env, connections, environ, hook_args, uri, source, secrets):
    for conn_id, conn in connections.items():
        define(env, conn_id, conn)
    for name, value in environ.items():
        env.setenv(name, value)
    server = MlflowHook(**hook_args).server
    assert (server.uri, server.source, server.secrets) == (uri, source, secrets)
    assert server.environment == {TRACKING_URI_ENV: uri, **MLFLOW_CLIENT_DEFAULTS}


@pytest.mark.parametrize(
    ("connections", "environ", "hook_args", "match"),
    [
        pytest.param(
            {}, {TRACKING_URI_ENV: ENV_URI}, {"mlflow_conn_id": "missing_mlflow"},
            r"MLflow connection 'missing_mlflow' cannot be read",
            id="named-connection-missing-even-with-env",
        ),
        pytest.param(
            {}, {DEFAULT_CONN_ENV: "missing_mlflow"}, {},
            r"^no MLflow tracking server: define the Airflow connection 'missing_mlflow'",
            id="default-conn-id-from-env-missing-and-no-env-uri",
        ),
        pytest.param(
            {}, {}, {},
            rf"no MLflow tracking server: .*'mlflow_default'.*set {TRACKING_URI_ENV}$",
            id="nothing-names-the-variable",
        ),
        pytest.param(
            {"mlflow_default": {"conn_type": "http", "login": LOGIN}}, {TRACKING_URI_ENV: ENV_URI}, {},
            r"MLflow connection 'mlflow_default' has neither a host nor an extra 'tracking_uri'",
            id="connection-without-host",
        ),
    ],
)  # fmt: skip
def test_resolution_errors(env, connections, environ, hook_args, match):
    for conn_id, conn in connections.items():
        define(env, conn_id, conn)
    for name, value in environ.items():
        env.setenv(name, value)
    with pytest.raises(ConfigError, match=match):
        _ = MlflowHook(**hook_args).server


def test_a_missing_named_connection_is_not_replaced_by_the_environment(env):
    # A typo in mlflow_conn_id must not silently log to another server.
    env.setenv(TRACKING_URI_ENV, ENV_URI)
    with pytest.raises(ConfigError, match=r"'typo_mlflow' cannot be read"):
        _ = MlflowHook("typo_mlflow", tracking_uri="http://explicit:5000").server


def test_credentials_never_become_part_of_the_uri(env):
    define(env, "mlflow_default", {**FULL_CONN, "host": "mlflow.example"})
    server = MlflowHook().server
    shown = server.uri + json.dumps(server.environment) + server.source
    for secret in (LOGIN, PASSWORD, TOKEN):
        assert secret not in shown
    assert "@" not in server.uri


def test_tracking_server_repr_hides_secrets():
    server = TrackingServer("http://mlflow:5000", "connection mlflow_default", dict(ALL_SECRETS))
    text = f"{server!r} {server}"
    assert "http://mlflow:5000" in text and "connection mlflow_default" in text
    for secret in (LOGIN, PASSWORD, TOKEN):
        assert secret not in text


def test_get_conn_hands_mlflow_its_credentials_as_environment(env):
    import os

    define(env, "mlflow_default", FULL_CONN)
    for name in MLFLOW_CLIENT_DEFAULTS:
        env.setenv(name, "")
        env.delenv(name)
    checked = []
    env.setattr(mlflow_hook_module, "check_server_answers", checked.append)
    client = MlflowHook().get_conn()
    assert [s.uri for s in checked] == ["https://mlflow.example:5443"]  # checked before use
    assert client.tracking_uri == "https://mlflow.example:5443"
    assert {name: os.environ.get(name) for name in ALL_SECRETS} == ALL_SECRETS
    assert {name: os.environ.get(name) for name in MLFLOW_CLIENT_DEFAULTS} == MLFLOW_CLIENT_DEFAULTS


# ------------------------------------------------------------ credentials inside a URI

URI_USER, URI_PASSWORD = "uri-user-7f3a", "uri-p@ss/word-7f3a"
QUOTED_PASSWORD = "uri-p%40ss%2Fword-7f3a"  # how it is written inside a URI
WITH_USERINFO = f"https://{URI_USER}:{QUOTED_PASSWORD}@mlflow.example:5443"
URI_SECRETS = {TRACKING_USERNAME_ENV: URI_USER, TRACKING_PASSWORD_ENV: URI_PASSWORD}


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (WITH_USERINFO, "https://***@mlflow.example:5443"),
        (f"API request to {WITH_USERINFO}/api/2.0/x failed", "API request to https://***@mlflow.example:5443/api/2.0/x failed"),
        ("token-only http://t0ken@h/p and s3://bucket/a@b", "token-only http://***@h/p and s3://bucket/a@b"),
        ("http://host/path@not-userinfo", "http://host/path@not-userinfo"),
        ("no uri at all", "no uri at all"),
    ],
)  # fmt: skip
def test_redact_credentials(text, shown):
    from mlops_loop.hooks.mlflow import redact_credentials

    assert redact_credentials(text) == shown


def test_split_credentials():
    from mlops_loop.hooks.mlflow import split_credentials

    assert split_credentials(WITH_USERINFO) == ("https://mlflow.example:5443", URI_SECRETS)
    assert split_credentials("http://only-user@h:1/x?y=1") == (
        "http://h:1/x?y=1",
        {TRACKING_USERNAME_ENV: "only-user"},
    )
    for unchanged in ("http://h:5000", "file:///tmp/mlruns", "{{ var.value.uri }}", "databricks"):
        assert split_credentials(unchanged) == (unchanged, {})


@pytest.mark.parametrize(
    ("connections", "environ", "hook_args", "secrets"),
    [
        pytest.param({}, {}, {"tracking_uri": WITH_USERINFO}, URI_SECRETS, id="argument"),
        pytest.param({}, {TRACKING_URI_ENV: WITH_USERINFO}, {}, URI_SECRETS, id="environment"),
        pytest.param(
            {"mlflow_default": {"conn_type": "http", "host": WITH_USERINFO}}, {}, {}, URI_SECRETS,
            id="connection-host",
        ),
        pytest.param(
            {"mlflow_default": {"conn_type": "http", "extra": {"tracking_uri": WITH_USERINFO + "/"}}},
            {}, {}, URI_SECRETS,
            id="connection-extra-tracking-uri",
        ),
        pytest.param(
            {"mlflow_default": {"conn_type": "http", "host": f"{URI_USER}:{QUOTED_PASSWORD}@mlflow.example",
                                "port": 5443, "schema": "https"}},
            {}, {}, URI_SECRETS,
            id="connection-host-without-scheme",
        ),
        pytest.param(
            {"mlflow_default": {**FULL_CONN, "host": WITH_USERINFO}}, {}, {}, ALL_SECRETS,
            id="connection-fields-win-over-the-uri",
        ),
        pytest.param(
            {"mlflow_default": {"conn_type": "http", "host": "h", "extra": {"token": TOKEN}}}, {},
            {"tracking_uri": WITH_USERINFO}, {**URI_SECRETS, TRACKING_TOKEN_ENV: TOKEN},
            id="argument-with-the-connections-token",
        ),
    ],
)  # fmt: skip
def test_a_uri_with_credentials_is_split(env, connections, environ, hook_args, secrets):
    for conn_id, conn in connections.items():
        define(env, conn_id, conn)
    for name, value in environ.items():
        env.setenv(name, value)
    server = MlflowHook(**hook_args).server
    assert (server.uri, server.secrets) == ("https://mlflow.example:5443", secrets)
    shown = f"{server} {server!r} {json.dumps(server.environment)}"
    for secret in (URI_USER, URI_PASSWORD, QUOTED_PASSWORD, PASSWORD, TOKEN):
        assert secret not in shown


def test_a_tracking_server_never_holds_credentials_in_its_uri():
    server = TrackingServer(WITH_USERINFO, "argument", {TRACKING_TOKEN_ENV: TOKEN})
    assert server.uri == "https://mlflow.example:5443"
    assert server.secrets == {**URI_SECRETS, TRACKING_TOKEN_ENV: TOKEN}


def test_the_password_and_token_are_registered_with_airflows_masker(env):
    import uuid

    from airflow.sdk._shared.secrets_masker import redact

    password, token = f"pw-{uuid.uuid4().hex}", f"tok-{uuid.uuid4().hex}"  # new to the masker
    assert redact(f"x {password} y {token} z") == f"x {password} y {token} z"
    uri = f"https://{URI_USER}:{password}@mlflow.example"
    define(env, "mlflow_default", {"conn_type": "http", "host": uri, "extra": {"token": token}})
    _ = MlflowHook().server
    assert redact(f"x {password} y {token} z") == "x *** y *** z"


# ------------------------------------------------- the operators' mlflow_tracking_uri


def _evaluate_op(**kwargs: Any) -> Any:
    from mlops_loop.operators.evaluate import EvaluateChallengerOperator

    return EvaluateChallengerOperator(
        task_id="evaluate",
        config_path="/nonexistent/config.yaml",
        holdout_snapshot_uri="/nonexistent/holdout",
        challenger_version="1",
        **kwargs,
    )


def _shown_fields(op: Any) -> str:
    """What Airflow stores as the task's rendered templates (and shows in the UI)."""
    from airflow.sdk.execution_time.task_runner import _serialize_rendered_fields

    return json.dumps(_serialize_rendered_fields(op))


@pytest.mark.parametrize("how", ["literal", "rendered"])
def test_the_tracking_uri_field_never_shows_credentials(env, how):
    import copy

    from airflow.sdk.definitions._internal.templater import SandboxedEnvironment

    if how == "literal":
        op = _evaluate_op(mlflow_tracking_uri=WITH_USERINFO)
    else:
        op = _evaluate_op(mlflow_tracking_uri="{{ params.uri }}")
        assert op.mlflow_tracking_uri == "{{ params.uri }}"  # a template is left alone
        op.render_template_fields({"params": {"uri": WITH_USERINFO}}, SandboxedEnvironment())
    assert op.mlflow_tracking_uri == "https://mlflow.example:5443"
    shown = _shown_fields(op)
    assert "https://mlflow.example:5443" in shown
    for secret in (URI_USER, QUOTED_PASSWORD, URI_PASSWORD):
        assert secret not in shown
    # ... while the hook still signs in with them, also from a copy of the task.
    for task in (op, copy.deepcopy(op)):
        server = task.mlflow_hook.server
        assert (server.uri, server.secrets) == ("https://mlflow.example:5443", URI_SECRETS)


def test_a_rendered_uri_replaces_a_hook_made_before(env):
    from airflow.sdk.definitions._internal.templater import SandboxedEnvironment

    op = _evaluate_op(mlflow_tracking_uri="{{ params.uri }}")
    op.render_template_fields({"params": {"uri": "http://first:5000"}}, SandboxedEnvironment())
    assert op.mlflow_hook.server.uri == "http://first:5000"
    op.mlflow_tracking_uri = WITH_USERINFO
    assert op.mlflow_hook.server.uri == "https://mlflow.example:5443"


# ------------------------------------------------------------- a server that is down


@pytest.fixture
def quick_probe(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The defaults' retries (3) and back-off factor, but short waits."""
    monkeypatch.setattr(mlflow_hook_module, "PROBE_TIMEOUT_S", 0.5)
    for name in MLFLOW_CLIENT_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0.05")
    return monkeypatch


def test_probe_bound_with_the_defaults(monkeypatch):
    for name in MLFLOW_CLIENT_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    # 4 tries of 5 s, 1 + 2 + 4 s between them.
    assert mlflow_hook_module.probe_bound_s() == pytest.approx(27.0)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    assert mlflow_hook_module.probe_bound_s() == pytest.approx(15.0)


def test_a_refused_connection_fails_the_check_naming_the_server(quick_probe):
    import time

    from mlops_loop.hooks.mlflow import TrackingServerUnavailable, check_server_answers
    from mlops_loop_devtools.devstack import free_port

    port = free_port()
    server = TrackingServer(f"http://{URI_USER}:{QUOTED_PASSWORD}@127.0.0.1:{port}", "argument")
    started = time.monotonic()
    with pytest.raises(TrackingServerUnavailable) as caught:
        check_server_answers(server)
    assert time.monotonic() - started < mlflow_hook_module.probe_bound_s() + 5
    message = str(caught.value)
    assert (
        f"MLflow tracking server http://127.0.0.1:{port} (from argument) did not answer" in message
    )
    assert "connection refused (4 tries" in message and "Nothing was read or changed" in message
    assert caught.value.tracking_uri == f"http://127.0.0.1:{port}"
    assert URI_USER not in message and QUOTED_PASSWORD not in message


def test_a_server_that_accepts_but_never_answers_fails_the_check_in_bounded_time(quick_probe):
    import socket
    import time

    from mlops_loop.hooks.mlflow import TrackingServerUnavailable, check_server_answers

    with socket.socket() as hung:  # listens, never accepts: connections wait in the backlog
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        port = hung.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(
            TrackingServerUnavailable, match=r"did not answer: timed out \(4 tries of 0.5s"
        ):
            check_server_answers(TrackingServer(f"http://127.0.0.1:{port}", "argument"))
        assert time.monotonic() - started < mlflow_hook_module.probe_bound_s() + 5


@pytest.mark.parametrize("status", [200, 401, 404])
def test_any_http_answer_passes_the_check(quick_probe, status):
    import http.server
    import threading

    from mlops_loop.hooks.mlflow import check_server_answers

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        check_server_answers(
            TrackingServer(f"http://127.0.0.1:{httpd.server_port}/prefix", "argument")
        )
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_stores_that_are_not_http_are_not_checked():
    from mlops_loop.hooks.mlflow import check_server_answers

    check_server_answers(TrackingServer("file:///nonexistent/mlruns", "argument"))
    check_server_answers(TrackingServer("sqlite:////nonexistent/mlflow.db", "argument"))


def test_a_call_the_server_stops_answering_names_the_server_and_the_call():
    from mlflow.exceptions import MlflowException

    from mlops_loop.hooks.mlflow import TrackingServerUnavailable, _ConfiguredClient

    class Client:
        tracking_uri = "https://mlflow.example:5443"

        def get_registered_model(self, name: str) -> Any:
            raise MlflowException(
                f"API request to {WITH_USERINFO}/api/2.0/mlflow/registered-models/get failed with "
                "exception HTTPSConnectionPool(host='mlflow.example', port=5443): Max retries "
                "exceeded with url: /api (Caused by NewConnectionError('Failed to establish a new "
                "connection: [Errno 111] Connection refused'))"
            )

        def get_model_version(self, name: str, version: str) -> Any:
            raise MlflowException(
                "RESOURCE_DOES_NOT_EXIST: no such version", error_code="RESOURCE_DOES_NOT_EXIST"
            )

    client = _ConfiguredClient(Client(), TrackingServer(WITH_USERINFO, "connection mlflow_default"))
    assert client.tracking_uri == "https://mlflow.example:5443"
    with pytest.raises(TrackingServerUnavailable) as caught:
        client.get_registered_model("m")
    assert str(caught.value).startswith(
        "MLflow tracking server https://mlflow.example:5443 (from connection mlflow_default) stopped "
        "answering during get_registered_model: connection refused"
    )
    assert caught.value.operation == "get_registered_model"
    assert URI_USER not in str(caught.value) and QUOTED_PASSWORD not in str(caught.value)
    # An answer from the server (here: not found) is the client's own error, unchanged.
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        client.get_model_version("m", "1")


def test_the_trainer_splits_a_uri_it_is_given_too(env):
    import os

    from mlops_loop.core.trainer_protocol import trainer_tracking_uri

    env.setenv(TRACKING_URI_ENV, WITH_USERINFO)
    assert trainer_tracking_uri() == "https://mlflow.example:5443"
    assert {name: os.environ.get(name) for name in URI_SECRETS} == URI_SECRETS
    # Credentials the worker passed as variables win over the URI's.
    env.setenv(TRACKING_PASSWORD_ENV, PASSWORD)
    assert trainer_tracking_uri(WITH_USERINFO) == "https://mlflow.example:5443"
    assert os.environ[TRACKING_PASSWORD_ENV] == PASSWORD

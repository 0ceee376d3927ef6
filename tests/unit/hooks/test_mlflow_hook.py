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
    client = MlflowHook().get_conn()
    assert client.tracking_uri == "https://mlflow.example:5443"
    assert {name: os.environ.get(name) for name in ALL_SECRETS} == ALL_SECRETS
    assert {name: os.environ.get(name) for name in MLFLOW_CLIENT_DEFAULTS} == MLFLOW_CLIENT_DEFAULTS

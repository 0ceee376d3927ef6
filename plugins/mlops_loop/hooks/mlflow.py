"""The MLflow tracking server from an Airflow Connection.

Every operator that talks to MLflow (directly, or by handing the trainer its server)
resolves it here, in this order:

1. an explicit ``tracking_uri`` (the operators' ``mlflow_tracking_uri`` argument);
2. the Connection ``mlflow_conn_id`` (default ``$MLOPS_LOOP_MLFLOW_CONN_ID``, else
   ``mlflow_default``) when it exists: ``http``/``https`` with host and port (its
   ``schema`` field or the extra ``scheme`` picks https), or the extra ``tracking_uri``;
   ``login``/``password`` become MLflow's basic-auth credentials and the extra ``token``
   its bearer token;
3. ``$MLFLOW_TRACKING_URI``.

Credentials never become part of the URI: they travel as MLflow's own
``MLFLOW_TRACKING_USERNAME`` / ``PASSWORD`` / ``TOKEN`` variables, and the trainer gets
them as private (never logged, never rendered) environment. For a local run, for
example: ``AIRFLOW_CONN_MLFLOW_DEFAULT='{"conn_type": "http", "host": "127.0.0.1",
"port": 5000}'``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook

from mlops_loop.core.trainer_protocol import (
    MLFLOW_CLIENT_DEFAULTS,
    TRACKING_PASSWORD_ENV,
    TRACKING_TOKEN_ENV,
    TRACKING_URI_ENV,
    TRACKING_USERNAME_ENV,
)
from mlops_loop.exceptions import ConfigError

DEFAULT_CONN_ENV = "MLOPS_LOOP_MLFLOW_CONN_ID"


@dataclass(frozen=True)
class TrackingServer:
    """Where MLflow is and how to sign in; ``secrets`` are the credential variables."""

    uri: str
    source: str  # for the log: "argument", "connection <id>" or "$MLFLOW_TRACKING_URI"
    secrets: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def environment(self) -> dict[str, str]:
        """What a process needs besides the secrets: the URI and the client timeouts."""
        return {TRACKING_URI_ENV: self.uri, **MLFLOW_CLIENT_DEFAULTS}


def tracking_server_from_connection(conn: Any) -> TrackingServer:
    """A TrackingServer from an Airflow Connection object."""
    extra = conn.extra_dejson if isinstance(conn.extra_dejson, dict) else {}
    uri = str(extra.get("tracking_uri") or "")
    if not uri:
        if not conn.host:
            raise ConfigError(
                f"MLflow connection {conn.conn_id!r} has neither a host nor an extra 'tracking_uri'"
            )
        host = str(conn.host)
        if "://" in host:
            uri = host
        else:
            scheme = str(extra.get("scheme") or conn.schema or "http")
            uri = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
    secrets = {}
    if conn.login:
        secrets[TRACKING_USERNAME_ENV] = str(conn.login)
    if conn.password:
        secrets[TRACKING_PASSWORD_ENV] = str(conn.password)
    if extra.get("token"):
        secrets[TRACKING_TOKEN_ENV] = str(extra["token"])
    return TrackingServer(uri=uri.rstrip("/"), source=f"connection {conn.conn_id}", secrets=secrets)


class MlflowHook(BaseHook):
    """An MLflow client for the tracking server of a Connection (see the module doc).

    :param mlflow_conn_id: Connection id; default ``$MLOPS_LOOP_MLFLOW_CONN_ID`` or
        ``mlflow_default``. A missing default connection falls back to
        ``$MLFLOW_TRACKING_URI``; a missing named one is an error.
    :param tracking_uri: Use this server instead (credentials still come from the
        connection when it exists).
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "http"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str | None = None, tracking_uri: str | None = None) -> None:
        super().__init__()
        self.explicit_conn_id = mlflow_conn_id
        self.mlflow_conn_id = (
            mlflow_conn_id or os.environ.get(DEFAULT_CONN_ENV) or self.default_conn_name
        )
        self.tracking_uri = tracking_uri

    @cached_property
    def server(self) -> TrackingServer:
        try:
            conn = self.get_connection(self.mlflow_conn_id)
        except Exception as exc:  # the not-found type differs between Airflow contexts
            if self.explicit_conn_id:
                raise ConfigError(
                    f"MLflow connection {self.mlflow_conn_id!r} cannot be read: {exc}"
                ) from exc
            conn = None
        if conn is not None:
            server = tracking_server_from_connection(conn)
            if self.tracking_uri:
                return TrackingServer(self.tracking_uri, "argument", server.secrets)
            return server
        if self.tracking_uri:
            return TrackingServer(self.tracking_uri, "argument")
        uri = os.environ.get(TRACKING_URI_ENV)
        if not uri:
            raise ConfigError(
                "no MLflow tracking server: define the Airflow connection "
                f"{self.mlflow_conn_id!r}, pass mlflow_tracking_uri or set {TRACKING_URI_ENV}"
            )
        return TrackingServer(uri, f"${TRACKING_URI_ENV}")

    def get_conn(self) -> Any:
        """An ``mlflow.MlflowClient`` for the server; the credentials and client timeouts
        are set as MLflow's environment variables of this (task) process."""
        from mlflow import MlflowClient

        server = self.server
        for key, value in MLFLOW_CLIENT_DEFAULTS.items():
            os.environ.setdefault(key, value)
        os.environ.update(server.secrets)
        return MlflowClient(tracking_uri=server.uri)

    @cached_property
    def client(self) -> Any:
        return self.get_conn()

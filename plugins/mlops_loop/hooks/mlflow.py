"""The MLflow tracking server from an Airflow Connection, and the one configured client
every worker-side MLflow call goes through.

Every operator that talks to MLflow (directly, or by handing the trainer its server)
resolves it here, in this order:

1. an explicit ``tracking_uri`` (the operators' ``mlflow_tracking_uri`` argument);
2. the Connection ``mlflow_conn_id`` (default ``$MLOPS_LOOP_MLFLOW_CONN_ID``, else
   ``mlflow_default``) when it exists: ``http``/``https`` with host and port (its
   ``schema`` field or the extra ``scheme`` picks https), or the extra ``tracking_uri``;
   ``login``/``password`` become MLflow's basic-auth credentials and the extra ``token``
   its bearer token;
3. ``$MLFLOW_TRACKING_URI``.

Credentials never stay part of the URI: they travel as MLflow's own
``MLFLOW_TRACKING_USERNAME`` / ``PASSWORD`` / ``TOKEN`` variables, and the trainer gets
them as private (never logged, never rendered) environment. A URI with credentials in it
(``https://user:pass@host``, from any of the three sources) is split: its userinfo
becomes those variables (where the connection's own fields give none) and the URI
without it is what is used, logged and rendered. Anything that may quote a URI goes
through ``redact_credentials`` before it is shown. For a local run, for example:
``AIRFLOW_CONN_MLFLOW_DEFAULT='{"conn_type": "http", "host": "127.0.0.1", "port": 5000}'``.

Timeouts and retries (docs/security.md, "MLflow down"): the client gets the trainer's
settings (``MLFLOW_CLIENT_DEFAULTS``: 3 retries, back-off factor 1, 60 s request timeout,
unless the worker's environment sets its own). Before the first call the hook checks that
the server answers at all (``GET <uri>/health``, ``PROBE_TIMEOUT_S`` per try, the same
retries and back-off): a server that is down or hung fails the task with
TrackingServerUnavailable, naming the server, within ``probe_bound_s()`` (about 27 s with
the defaults; a refused connection in about 7 s) and before anything was changed. A
server that stops answering later fails the call it was answering with the same error
after MLflow's own retries.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Mapping
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
    is_connection_error,
    redact_credentials,
    split_credentials,
)
from mlops_loop.exceptions import ConfigError, MlopsLoopError

__all__ = [
    "DEFAULT_CONN_ENV",
    "PROBE_TIMEOUT_S",
    "MlflowHook",
    "MlflowServerArguments",
    "TrackingServer",
    "TrackingServerUnavailable",
    "check_server_answers",
    "probe_bound_s",
    "redact_credentials",
    "split_credentials",
    "tracking_server_from_connection",
]

DEFAULT_CONN_ENV = "MLOPS_LOOP_MLFLOW_CONN_ID"
# One try of the reachability check: a /health answer takes milliseconds; a server that
# takes longer than this is treated as not answering (MLflow's own request timeout, 60 s
# by default, is for real requests).
PROBE_TIMEOUT_S = 5.0
RETRIES_ENV = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
BACKOFF_ENV = "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"
TIMEOUT_ENV = "MLFLOW_HTTP_REQUEST_TIMEOUT"


class TrackingServerUnavailable(MlopsLoopError):
    """The MLflow tracking server did not answer (refused, unreachable, or no reply within
    the timeout) after the client's retries. ``tracking_uri`` names the server (without
    credentials); ``operation`` is the call that failed (``health check`` before any)."""

    def __init__(self, message: str, *, tracking_uri: str, operation: str) -> None:
        super().__init__(redact_credentials(message))
        self.tracking_uri = redact_credentials(tracking_uri)
        self.operation = operation


def _mask(secrets: Mapping[str, str]) -> None:
    """Register the password and token with Airflow's secrets masker, so that a log line
    or rendered field that would still quote one shows ``***`` (a second line of defence:
    nothing here prints them)."""
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # an Airflow without the task SDK's masker
        return
    for name in (TRACKING_PASSWORD_ENV, TRACKING_TOKEN_ENV):
        if secrets.get(name):
            mask_secret(secrets[name])


@dataclass(frozen=True)
class TrackingServer:
    """Where MLflow is and how to sign in; ``secrets`` are the credential variables.

    ``uri`` never carries credentials: a URI with userinfo is split when the object is
    made, its credentials filling the variables ``secrets`` leaves unset."""

    uri: str
    source: str  # for the log: "argument", "connection <id>" or "$MLFLOW_TRACKING_URI"
    secrets: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        uri, found = split_credentials(self.uri)
        if found:
            object.__setattr__(self, "uri", uri)
            object.__setattr__(self, "secrets", {**found, **self.secrets})

    @property
    def environment(self) -> dict[str, str]:
        """What a process needs besides the secrets: the URI and the client timeouts."""
        return {TRACKING_URI_ENV: self.uri, **MLFLOW_CLIENT_DEFAULTS}

    def __str__(self) -> str:
        return f"{self.uri} (from {self.source})"


def tracking_server_from_connection(conn: Any) -> TrackingServer:
    """A TrackingServer from an Airflow Connection object (its login, password and extra
    token win over credentials written into its host or extra tracking_uri)."""
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
    uri, secrets = split_credentials(uri)
    if conn.login:
        secrets[TRACKING_USERNAME_ENV] = str(conn.login)
    if conn.password:
        secrets[TRACKING_PASSWORD_ENV] = str(conn.password)
    if extra.get("token"):
        secrets[TRACKING_TOKEN_ENV] = str(extra["token"])
    return TrackingServer(uri.rstrip("/"), f"connection {conn.conn_id}", secrets)


# ------------------------------------------------------------- timeouts and reachability


def _setting(name: str) -> float:
    try:
        return float(os.environ.get(name) or MLFLOW_CLIENT_DEFAULTS[name])
    except ValueError:
        return float(MLFLOW_CLIENT_DEFAULTS[name])


def _probe_settings() -> tuple[int, float, float]:
    """(retries, back-off factor, timeout per try) of the reachability check."""
    retries = max(0, int(_setting(RETRIES_ENV)))
    return retries, max(0.0, _setting(BACKOFF_ENV)), min(PROBE_TIMEOUT_S, _setting(TIMEOUT_ENV))


def probe_bound_s() -> float:
    """The longest the reachability check takes before it gives up: every try timing out
    plus the pauses between tries (factor * 2**n). About 27 s with the defaults."""
    retries, factor, timeout = _probe_settings()
    return (retries + 1) * timeout + sum(factor * 2**n for n in range(retries))


def check_server_answers(server: TrackingServer) -> None:
    """Raise TrackingServerUnavailable unless something answers HTTP at the server
    (``GET <uri>/health``; any status, even 401 or 404, counts as an answer). Non-HTTP
    URIs (a local ``file:`` or database store) are not checked. Bounded by
    :func:`probe_bound_s`."""
    if not server.uri.lower().startswith(("http://", "https://")):
        return
    import requests

    retries, factor, timeout = _probe_settings()
    url = server.uri.rstrip("/") + "/health"
    started = time.monotonic()
    last: Exception | None = None
    for attempt in range(retries + 1):
        try:
            requests.get(url, timeout=timeout, allow_redirects=False).close()
            return
        except requests.exceptions.SSLError:
            return  # something answered the TLS handshake: MLflow's client checks the rest
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            last = exc
        if attempt < retries:
            time.sleep(factor * 2**attempt)
    took = time.monotonic() - started
    raise TrackingServerUnavailable(
        f"MLflow tracking server {server} did not answer: {_cause(last)} "
        f"({retries + 1} tries of {timeout:g}s over {took:.0f}s; {RETRIES_ENV}={retries}, "
        f"{BACKOFF_ENV}={factor:g}). Nothing was read or changed in MLflow; check that "
        "the server runs and that this worker reaches it (the MLflow Connection's host and "
        "port, proxies, the network)",
        tracking_uri=server.uri,
        operation="health check",
    )


def _cause(exc: BaseException | None) -> str:
    """The shortest useful name of why a request failed."""
    if exc is None:
        return "no answer"
    text = f"{type(exc).__name__}: {exc}"
    for marker, short in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "unknown host name"),
        ("nodename nor servname", "unknown host name"),
        ("Temporary failure in name resolution", "host name not resolved"),
        ("timed out", "timed out"),
        ("Timeout", "timed out"),
        ("No route to host", "no route to host"),
        ("Network is unreachable", "network unreachable"),
    ):
        if marker in text:
            return short
    return redact_credentials(text)[:300]


class _ConfiguredClient:
    """An ``mlflow.MlflowClient`` whose calls raise TrackingServerUnavailable (naming the
    server and the call) when the server did not answer after the client's retries;
    everything else (errors the server answered with included) is the client's own."""

    def __init__(self, client: Any, server: TrackingServer) -> None:
        self._client = client
        self._server = server

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name.startswith("_") or not callable(attr):
            return attr
        server = self._server

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                raise TrackingServerUnavailable(
                    f"MLflow tracking server {server} stopped answering during {name}: "
                    f"{_cause(exc)} (after {RETRIES_ENV}={os.environ.get(RETRIES_ENV)} retries "
                    f"with a {os.environ.get(TIMEOUT_ENV)}s timeout each)",
                    tracking_uri=server.uri,
                    operation=name,
                ) from exc

        return call

    def __repr__(self) -> str:
        return f"<MlflowClient for {self._server}>"


# ---------------------------------------------------------------------------------- hook


class MlflowHook(BaseHook):
    """An MLflow client for the tracking server of a Connection (see the module doc).

    :param mlflow_conn_id: Connection id; default ``$MLOPS_LOOP_MLFLOW_CONN_ID`` or
        ``mlflow_default``. A missing default connection falls back to
        ``$MLFLOW_TRACKING_URI``; a missing named one is an error.
    :param tracking_uri: Use this server instead (credentials still come from the
        connection when it exists; credentials written into this URI fill what it
        leaves unset).
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
        server = self._resolve()
        _mask(server.secrets)
        return server

    def _resolve(self) -> TrackingServer:
        try:
            conn = self.get_connection(self.mlflow_conn_id)
        except Exception as exc:  # the not-found type differs between Airflow contexts
            if self.explicit_conn_id:
                raise ConfigError(
                    f"MLflow connection {self.mlflow_conn_id!r} cannot be read: "
                    f"{redact_credentials(str(exc))}"
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

    def configure_environment(self) -> TrackingServer:
        """Set the client timeouts (unless the environment sets its own) and the
        credentials as MLflow's variables of this (task) process; the server."""
        server = self.server
        for key, value in MLFLOW_CLIENT_DEFAULTS.items():
            os.environ.setdefault(key, value)
        os.environ.update(server.secrets)
        return server

    def get_conn(self) -> Any:
        """The configured ``mlflow.MlflowClient`` for the server: credentials and client
        timeouts set (configure_environment), the server checked to answer
        (check_server_answers, TrackingServerUnavailable otherwise), and a call the server
        stops answering raises TrackingServerUnavailable naming it."""
        from mlflow import MlflowClient

        server = self.configure_environment()
        check_server_answers(server)
        return _ConfiguredClient(MlflowClient(tracking_uri=server.uri), server)

    @cached_property
    def client(self) -> Any:
        return self.get_conn()


# ------------------------------------------------------------------- operator arguments


class MlflowServerArguments:
    """Operator mixin for the ``mlflow_conn_id`` / ``mlflow_tracking_uri`` arguments.

    ``mlflow_tracking_uri`` (a template field) never keeps credentials: whatever is
    assigned to it (in ``__init__``, or the rendered value) is split, the attribute (so the
    rendered template, the serialized DAG and the UI) holding the URI without userinfo
    while ``mlflow_hook`` still signs in with them. A value that is still a Jinja
    template is kept as it is until it is rendered. List the mixin before the operator
    base class.
    """

    mlflow_conn_id: str | None = None

    @property
    def mlflow_tracking_uri(self) -> Any:
        return self.__dict__.get("_mlflow_tracking_uri_shown")

    @mlflow_tracking_uri.setter
    def mlflow_tracking_uri(self, value: Any) -> None:
        shown: Any = value
        if isinstance(value, str) and "{{" not in value and "{%" not in value:
            shown, found = split_credentials(value)
            _mask(found)
        self.__dict__["_mlflow_tracking_uri_shown"] = shown
        self.__dict__["_mlflow_tracking_uri_given"] = value
        self.__dict__.pop("mlflow_hook", None)  # a hook made before rendering is stale

    @cached_property
    def mlflow_hook(self) -> MlflowHook:
        given = self.__dict__.get("_mlflow_tracking_uri_given")
        return MlflowHook(self.mlflow_conn_id, tracking_uri=str(given) if given else None)

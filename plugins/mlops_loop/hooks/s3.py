"""S3 credentials from an Airflow Connection.

The connection named in ``storage.s3.aws_conn_id`` holds the access key as ``login``, the
secret as ``password`` and optionally ``endpoint_url`` and ``region_name`` in its extra JSON
(these override ``storage.s3.endpoint_url`` / ``region_name`` from the dataset config).
Without a connection id, keys come from the standard AWS credential chain (environment,
shared config, instance profile) and only the endpoint and region come from the config.
For local runs define the connection as an environment variable, for example
``AIRFLOW_CONN_MLOPS_S3='{"conn_type": "aws", "login": "...", "password": "...",
"extra": {"endpoint_url": "http://127.0.0.1:9000"}}'``.

A dataset on S3 (its storage root or its source) needs ``storage.s3.aws_conn_id`` or
``storage.s3.endpoint_url``, or ``storage.s3.use_default_credentials: true`` to use the
worker's default AWS credentials against the public endpoint on purpose; otherwise
:func:`dataset_s3_credentials` refuses with a ConfigError naming the keys (a storage root
on S3 is already refused when the config loads).
"""

from __future__ import annotations

from typing import Any

from mlops_loop.core.config import DatasetConfig, S3Settings
from mlops_loop.core.storage import S3Credentials, is_s3
from mlops_loop.exceptions import ConfigError


def _extra(conn: Any) -> dict[str, Any]:
    extra = conn.extra_dejson or {}
    return extra if isinstance(extra, dict) else {}


def credentials_from_connection(conn: Any, settings: S3Settings) -> S3Credentials:
    """S3Credentials from an Airflow Connection object (login/password/extra)."""
    extra = _extra(conn)
    return S3Credentials(
        endpoint_url=extra.get("endpoint_url") or settings.endpoint_url,
        region_name=extra.get("region_name") or settings.region_name,
        aws_access_key_id=conn.login or None,
        aws_secret_access_key=conn.password or None,
        aws_session_token=extra.get("aws_session_token") or None,
        max_attempts=settings.max_attempts,
    )


def s3_credentials_for(settings: S3Settings) -> S3Credentials | None:
    """Credentials for the dataset's S3 endpoint.

    None when nothing is configured (no connection, endpoint or region): the storage layer
    then uses boto3's defaults, which is also all a local-only dataset needs.
    With ``aws_conn_id`` the Airflow Connection supplies the keys (and may override the
    endpoint and region); without it only the endpoint and region are set and boto3's
    default chain finds the keys. Raises ConfigError when the connection cannot be read.
    """
    if settings.aws_conn_id:
        from airflow.sdk import BaseHook

        try:
            conn = BaseHook.get_connection(settings.aws_conn_id)
        except Exception as exc:  # the not-found type differs between Airflow contexts
            raise ConfigError(
                f"storage.s3.aws_conn_id: Airflow connection {settings.aws_conn_id!r} "
                f"cannot be read: {exc}"
            ) from exc
        return credentials_from_connection(conn, settings)
    if settings == S3Settings():
        return None
    return S3Credentials(
        endpoint_url=settings.endpoint_url,
        region_name=settings.region_name,
        max_attempts=settings.max_attempts,
    )


def dataset_s3_credentials(config: DatasetConfig) -> S3Credentials | None:
    """Credentials for a dataset: None when its storage root and source are both local
    (no connection is looked up then), else :func:`s3_credentials_for`. ConfigError when
    either is on S3 without a connection, an endpoint or ``use_default_credentials``."""
    source = config.source.uri.replace("{root}", config.root)
    if not (is_s3(config.root) or is_s3(source)):
        return None
    settings = config.storage.s3
    problem = settings.unconfigured_problem(config.root, "storage.root") or (
        settings.unconfigured_problem(source, "source.uri")
    )
    if problem:
        raise ConfigError(f"dataset {config.name!r}: {problem}")
    return s3_credentials_for(settings)

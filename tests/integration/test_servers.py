"""The local servers the demo and tests rely on answer over real HTTP."""

from __future__ import annotations

import pytest

from mlops_loop.core.storage import S3Storage

pytestmark = pytest.mark.integration


def test_s3_server_round_trip(s3_credentials, s3_bucket):
    storage = S3Storage(s3_credentials)
    uri = f"{s3_bucket}/a/b.txt"
    storage.write_text(uri, "hello")
    assert storage.exists(uri)
    assert storage.read_text(uri) == "hello"
    assert [o.uri for o in storage.list(f"{s3_bucket}/a/")] == [uri]


def test_mlflow_server_records_a_run(mlflow_server):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    exp = client.create_experiment("smoke")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "m", 1.5)
    assert client.get_run(run.info.run_id).data.metrics["m"] == 1.5

"""Ingestion against a real S3-compatible server over HTTP on 127.0.0.1: batches land in
a bucket, snapshots are written to and read back from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops_loop.core.config import DatasetConfig, load_config
from mlops_loop.core.ingest import ingest_batch
from mlops_loop.core.snapshots import (
    iter_snapshot_batches,
    load_manifest,
    read_snapshot,
    read_snapshot_table,
)
from mlops_loop.core.storage import S3Credentials, S3Storage, sha256_file, split_s3
from mlops_loop.exceptions import NoBatchError, SnapshotNotFoundError, SourceFileError, StorageError
from mlops_loop_devtools.sample_data import generate_batch, land_batch

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CREDIT_CONFIG = REPO / "include" / "config" / "credit_default.yaml"
DS = "2024-05-02"
ROWS = 200


def s3_config(root: str, creds: S3Credentials, **overrides) -> DatasetConfig:
    storage = {"root": root, "s3": {"endpoint_url": creds.endpoint_url, "region_name": "us-east-1"}}
    return load_config(CREDIT_CONFIG, overrides={"storage": storage, **overrides})


def land_to_bucket(
    tmp_path: Path, storage: S3Storage, bucket_uri: str, *, fmt: str = "csv", files: int = 2
) -> list[Path]:
    """Land a batch locally, then upload it as an upstream system would."""
    local_root = tmp_path / "landing"
    paths = land_batch(generate_batch(DS, ROWS), local_root, DS, fmt=fmt, files=files)
    for path in paths:
        storage.upload(path, f"{bucket_uri}/raw/ds={DS}/{path.name}")
    return paths


def object_state(storage: S3Storage, bucket_uri: str) -> dict[str, tuple[int, str]]:
    bucket, _ = split_s3(bucket_uri)
    out = {}
    for page in storage.client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = (obj["Size"], obj["ETag"], str(obj["LastModified"]))
    return out


def test_s3_round_trip_is_idempotent_and_matches_local(tmp_path, s3_credentials, s3_bucket):
    storage = S3Storage(s3_credentials)
    paths = land_to_bucket(tmp_path, storage, s3_bucket)
    config = s3_config(s3_bucket, s3_credentials)
    raw_before = {o.uri: o.size for o in storage.list(f"{s3_bucket}/raw/")}

    result = ingest_batch(config, DS, credentials=s3_credentials)

    assert result.created and result.rows == ROWS
    assert result.snapshot_uri == f"{s3_bucket}/snapshots/{result.sha256}"
    assert storage.exists(result.manifest_uri)
    manifest = load_manifest(result.snapshot_uri, credentials=s3_credentials)
    assert [f["sha256"] for f in manifest["source"]["files"]] == [sha256_file(p) for p in paths]
    assert manifest["source"]["files"][0]["uri"] == f"{s3_bucket}/raw/ds={DS}/part-000.csv"
    for part in manifest["files"]:
        with storage.local_copy(f"{result.snapshot_uri}/{part['name']}") as local:
            assert sha256_file(local) == part["sha256"]

    # Same files ingested from a local folder: same address, same table.
    local_root = tmp_path / "landing"
    local = ingest_batch(
        load_config(CREDIT_CONFIG, overrides={"storage": {"root": str(local_root)}}), DS
    )
    assert local.sha256 == result.sha256
    assert read_snapshot_table(result.snapshot_uri, credentials=s3_credentials).equals(
        read_snapshot_table(local.snapshot_uri)
    )
    batches = list(
        iter_snapshot_batches(result.snapshot_uri, credentials=s3_credentials, batch_size=64)
    )
    assert sum(len(b) for b in batches) == ROWS

    # Re-run: same hash, nothing written or rewritten; landed objects untouched.
    before = object_state(storage, s3_bucket)
    again = ingest_batch(config, DS, credentials=s3_credentials)
    assert (again.sha256, again.created) == (result.sha256, False)
    assert object_state(storage, s3_bucket) == before
    assert {o.uri: o.size for o in storage.list(f"{s3_bucket}/raw/")} == raw_before


def test_interrupted_s3_write_is_absent_and_replaced(tmp_path, s3_credentials, s3_bucket):
    storage = S3Storage(s3_credentials)
    land_to_bucket(tmp_path, storage, s3_bucket)
    config = s3_config(s3_bucket, s3_credentials)
    first = ingest_batch(config, DS, credentials=s3_credentials)
    bucket, key = split_s3(first.manifest_uri)
    # What a crash between the part uploads and the manifest leaves behind:
    storage.client.delete_object(Bucket=bucket, Key=key)
    storage.write_bytes(f"{first.snapshot_uri}/part-00000.parquet", b"half an upload")
    storage.write_bytes(f"{first.snapshot_uri}/part-00003.parquet", b"stray part")

    with pytest.raises(SnapshotNotFoundError):
        read_snapshot(first.snapshot_uri, credentials=s3_credentials)

    again = ingest_batch(config, DS, credentials=s3_credentials)

    assert again.created and again.sha256 == first.sha256
    names = sorted(o.name for o in storage.list(f"{first.snapshot_uri}/"))
    assert names == ["manifest.json", "part-00000.parquet"]
    assert len(read_snapshot(again.snapshot_uri, credentials=s3_credentials)) == ROWS


def test_a_part_missing_from_the_bucket_is_named(tmp_path, s3_credentials, s3_bucket):
    storage = S3Storage(s3_credentials)
    land_to_bucket(tmp_path, storage, s3_bucket)
    result = ingest_batch(s3_config(s3_bucket, s3_credentials), DS, credentials=s3_credentials)
    part = f"{result.snapshot_uri}/part-00000.parquet"
    storage.delete(part)

    with pytest.raises(
        StorageError, match=f"snapshot part {part} listed in the manifest is missing"
    ) as info:
        read_snapshot(result.snapshot_uri, credentials=s3_credentials)
    assert info.value.uri == part


def test_missing_bucket_is_named(s3_credentials):
    config = s3_config("s3://no-such-bucket-for-ingest", s3_credentials)
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-for-ingest' does not exist"):
        ingest_batch(config, DS, credentials=s3_credentials)


def test_missing_source_bucket_is_named(s3_credentials, s3_bucket):
    config = s3_config(
        s3_bucket, s3_credentials, source={"uri": "s3://no-such-landing-bucket/raw/ds={ds}/"}
    )
    with pytest.raises(StorageError, match="bucket 'no-such-landing-bucket' does not exist"):
        ingest_batch(config, DS, credentials=s3_credentials)


def test_unreachable_endpoint_is_named(s3_credentials, s3_bucket):
    dead = S3Credentials(
        endpoint_url="http://127.0.0.1:9",  # discard port: nothing listens
        aws_access_key_id="x",
        aws_secret_access_key="y",
        max_attempts=1,
    )
    config = s3_config(s3_bucket, dead)
    with pytest.raises(StorageError, match=f"{s3_bucket}.*(Could not connect|connect)"):
        ingest_batch(config, DS, credentials=dead)


def test_no_batch_in_bucket(s3_credentials, s3_bucket):
    with pytest.raises(NoBatchError, match=f"no batch for ds={DS}.*{s3_bucket}/raw/ds={DS}/"):
        ingest_batch(s3_config(s3_bucket, s3_credentials), DS, credentials=s3_credentials)


def test_corrupted_parquet_in_bucket_names_the_object(tmp_path, s3_credentials, s3_bucket):
    storage = S3Storage(s3_credentials)
    land_to_bucket(tmp_path, storage, s3_bucket, fmt="parquet")
    bad = f"{s3_bucket}/raw/ds={DS}/part-001.parquet"
    storage.write_bytes(bad, storage.read_bytes(bad)[:300])
    config = s3_config(s3_bucket, s3_credentials, source={"format": "parquet"})
    with pytest.raises(SourceFileError, match=f"{bad}: is not a readable Parquet file") as info:
        ingest_batch(config, DS, credentials=s3_credentials)
    assert info.value.file_uri == bad


def test_operator_reads_keys_from_an_airflow_connection(
    tmp_path, s3_credentials, s3_bucket, monkeypatch
):
    from mlops_loop.operators import IngestSnapshotOperator

    storage = S3Storage(s3_credentials)
    land_to_bucket(tmp_path, storage, s3_bucket)
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLOPS_TEST_S3",
        json.dumps(
            {
                "conn_type": "aws",
                "login": s3_credentials.aws_access_key_id,
                "password": s3_credentials.aws_secret_access_key,
                "extra": {"endpoint_url": s3_credentials.endpoint_url, "region_name": "us-east-1"},
            }
        ),
    )
    config_path = tmp_path / "dataset.yaml"
    import yaml

    raw = yaml.safe_load(CREDIT_CONFIG.read_text())
    raw["storage"] = {"root": s3_bucket, "s3": {"aws_conn_id": "mlops_test_s3"}}
    raw["quality"].pop("suite", None)
    config_path.write_text(yaml.safe_dump(raw))

    op = IngestSnapshotOperator(task_id="ingest", config_path=str(config_path), ds=DS)
    out = op.execute(context={})

    assert out["rows"] == ROWS and out["created"] is True
    assert storage.exists(out["manifest_uri"])
    assert op.execute(context={})["created"] is False


def test_storage_errors_against_the_real_server(s3_credentials, s3_bucket):
    storage = S3Storage(s3_credentials)
    with pytest.raises(StorageError, match=f"{s3_bucket}/nope.csv does not exist"):
        storage.read_bytes(f"{s3_bucket}/nope.csv")
    assert storage.exists(f"{s3_bucket}/nope.csv") is False
    assert storage.list(f"{s3_bucket}/empty/") == []
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-x' does not exist"):
        storage.list("s3://no-such-bucket-x/raw/")
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-x' does not exist"):
        storage.write_bytes("s3://no-such-bucket-x/k", b"x")


def test_ingest_whose_part_upload_fails_half_way_leaves_no_object_and_no_parts(
    tmp_path, s3_credentials, s3_bucket, monkeypatch
):
    """The snapshot's part goes up as a multipart upload; the part upload fails and so
    does the first abort. After the run: no snapshot, no part object, no multipart upload
    holding stored parts. The rerun publishes the snapshot."""
    from botocore.exceptions import ClientError

    storage = S3Storage(s3_credentials)
    land_to_bucket(tmp_path, storage, s3_bucket)
    config = s3_config(s3_bucket, s3_credentials)
    monkeypatch.setattr(S3Storage, "multipart_threshold", 1)  # every upload in parts
    real = S3Storage._multipart_upload
    failed: list[str] = []

    def with_faults(self, *args, **kwargs):
        for operation in ("UploadPart", "AbortMultipartUpload"):

            def fail_once(operation=operation, **_):
                if operation not in failed:
                    failed.append(operation)
                    error = {"Code": "InternalError", "Message": f"injected {operation}"}
                    raise ClientError({"Error": error}, operation)

            self.client.meta.events.register(f"before-call.s3.{operation}", fail_once)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(S3Storage, "_multipart_upload", with_faults)
    with pytest.raises(StorageError, match=r"cannot upload s3://.*/part-00000\.parquet") as info:
        ingest_batch(config, DS, credentials=s3_credentials)
    monkeypatch.setattr(S3Storage, "_multipart_upload", real)

    assert failed == ["UploadPart", "AbortMultipartUpload"]
    snapshot = info.value.uri.rsplit("/", 1)[0]
    assert storage.list(f"{snapshot}/") == []
    bucket, _ = split_s3(s3_bucket)
    assert not storage.client.list_multipart_uploads(Bucket=bucket).get("Uploads")

    again = ingest_batch(config, DS, credentials=s3_credentials)
    assert again.created and again.snapshot_uri == snapshot
    assert len(read_snapshot(again.snapshot_uri, credentials=s3_credentials)) == ROWS

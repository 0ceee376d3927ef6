"""core.storage against a real S3-compatible server over HTTP on 127.0.0.1: download with
hashing, delete, missing buckets named by every method (the server answers HeadBucket
and HeadObject for a missing bucket with a bare 404), and publishing a staged folder with
its manifest last."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mlops_loop.core import storage as storage_mod
from mlops_loop.core.storage import CHUNK, S3Storage, sha256_file, split_s3
from mlops_loop.exceptions import BucketNotFoundError, StorageError

pytestmark = pytest.mark.integration

MISSING = "s3://no-such-bucket-storage"


@pytest.fixture
def s3(s3_credentials) -> S3Storage:
    return S3Storage(s3_credentials)


def test_download_returns_the_sha256_of_the_object(s3, s3_bucket, tmp_path):
    data = b"0123456789abcdef" * (CHUNK // 16) + b"tail"  # more than one streamed block
    uri = f"{s3_bucket}/raw/ds=2024-05-02/part-000.csv"
    s3.write_bytes(uri, data)
    dest = tmp_path / "part-000.csv"
    dest.write_bytes(b"stale local copy")

    digest = s3.download(uri, dest)

    assert digest == hashlib.sha256(data).hexdigest() == sha256_file(dest)
    assert dest.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["part-000.csv"]
    with s3.local_copy(uri) as path:
        assert path.read_bytes() == data


def test_download_of_a_missing_object_writes_nothing(s3, s3_bucket, tmp_path):
    with pytest.raises(StorageError, match=f"{s3_bucket}/nope.csv does not exist") as info:
        s3.download(f"{s3_bucket}/nope.csv", tmp_path / "nope.csv")
    assert not isinstance(info.value, BucketNotFoundError)
    assert list(tmp_path.iterdir()) == []


def test_delete_removes_one_object_and_ignores_a_missing_one(s3, s3_bucket):
    keep, gone = f"{s3_bucket}/snap/part-00000.parquet", f"{s3_bucket}/snap/part-00001.parquet"
    s3.write_bytes(keep, b"a")
    s3.write_bytes(gone, b"b")

    s3.delete(gone)
    s3.delete(gone)  # already gone
    s3.delete(f"{s3_bucket}/never/written.json")

    assert [o.uri for o in s3.list(f"{s3_bucket}/snap/")] == [keep]


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda s, tmp: s.check_root(f"{MISSING}/root"), id="check_root"),
        pytest.param(lambda s, tmp: s.list(f"{MISSING}/raw/"), id="list"),
        pytest.param(lambda s, tmp: s.exists(f"{MISSING}/k.csv"), id="exists"),
        pytest.param(lambda s, tmp: s.read_bytes(f"{MISSING}/k.csv"), id="read"),
        pytest.param(lambda s, tmp: s.download(f"{MISSING}/k.csv", tmp / "k.csv"), id="download"),
        pytest.param(lambda s, tmp: s.delete(f"{MISSING}/k.csv"), id="delete"),
        pytest.param(lambda s, tmp: s.write_bytes(f"{MISSING}/k.csv", b"x"), id="write"),
        pytest.param(lambda s, tmp: s.upload(__file__, f"{MISSING}/k.py"), id="upload"),
        pytest.param(lambda s, tmp: s.copy(f"{MISSING}/a.csv", "s3://x/b.csv"), id="copy-from"),
    ],
)
def test_missing_bucket_is_named_by_every_method(s3, tmp_path, call):
    with pytest.raises(BucketNotFoundError, match="bucket 'no-such-bucket-storage' does not exist"):
        call(s3, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_copy_names_the_missing_side(s3, s3_bucket):
    src = f"{s3_bucket}/raw/a.csv"
    with pytest.raises(StorageError, match=f"{src} does not exist \\(copy to") as info:
        s3.copy(src, f"{s3_bucket}/quarantine/a.csv")
    assert info.value.uri == src and not isinstance(info.value, BucketNotFoundError)
    s3.write_bytes(src, b"a,b\n1,2\n")
    with pytest.raises(BucketNotFoundError, match="bucket 'no-such-bucket-storage'"):
        s3.copy(src, f"{MISSING}/a.csv")
    s3.copy(src, f"{s3_bucket}/quarantine/a.csv")
    assert s3.read_bytes(f"{s3_bucket}/quarantine/a.csv") == b"a,b\n1,2\n"


def test_existing_bucket_passes_check_root_and_missing_key_is_just_absent(s3, s3_bucket):
    s3.check_root(f"{s3_bucket}/root")
    assert s3.exists(f"{s3_bucket}/root/manifest.json") is False


def staged(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def test_local_file_is_a_temporary_download(s3, s3_bucket):
    uri = f"{s3_bucket}/snap/part-00000.parquet"
    s3.write_bytes(uri, b"parquet bytes")

    with s3.local_file(uri) as path:
        assert path.read_bytes() == b"parquet bytes"
    assert not path.exists()
    with (
        pytest.raises(StorageError, match=f"{s3_bucket}/snap/gone.parquet does not exist"),
        s3.local_file(f"{s3_bucket}/snap/gone.parquet"),
    ):
        pass


def test_fetch_with_sha256_downloads_to_the_given_path(s3, s3_bucket, tmp_path):
    uri = f"{s3_bucket}/raw/part-000.csv"
    s3.write_bytes(uri, b"a,b\n1,2\n")

    path, sha = s3.fetch_with_sha256(uri, tmp_path / "00000-part-000.csv")

    assert path == tmp_path / "00000-part-000.csv"
    assert sha == hashlib.sha256(b"a,b\n1,2\n").hexdigest() == sha256_file(path)


def test_staging_folder_is_a_new_folder_in_scratch(s3, s3_bucket, tmp_path):
    folder = s3.staging_folder(f"{s3_bucket}/snapshots/abc123", tmp_path)
    assert folder.parent == tmp_path and folder.is_dir() and list(folder.iterdir()) == []


def test_publish_folder_uploads_parts_removes_stale_ones_and_writes_the_manifest(
    s3, s3_bucket, tmp_path
):
    final = f"{s3_bucket}/snapshots/abc123"
    # What an interrupted earlier write left: a part of another size, a stray part.
    s3.write_bytes(f"{final}/part-00000.parquet", b"half an upload")
    s3.write_bytes(f"{final}/part-00003.parquet", b"stray part")
    stage = staged(
        tmp_path / "stage",
        {"part-00000.parquet": b"p0", "part-00001.parquet": b"p1", "manifest.json": b"{}\n"},
    )

    assert s3.publish_folder(stage, final) is True

    names = [o.name for o in s3.list(f"{final}/")]
    assert names == ["manifest.json", "part-00000.parquet", "part-00001.parquet"]
    assert s3.read_bytes(f"{final}/part-00000.parquet") == b"p0"
    assert s3.read_bytes(f"{final}/manifest.json") == b"{}\n"
    assert stage.is_dir()  # the caller removes its stage


def test_publish_folder_interrupted_before_the_manifest_leaves_no_manifest(
    s3, s3_bucket, tmp_path, monkeypatch
):
    # Fault injection: the process dies after the parts, before the manifest (a real crash
    # at that point cannot be produced on demand).
    final = f"{s3_bucket}/snapshots/abc123"
    stage = staged(tmp_path / "stage", {"part-00000.parquet": b"p0", "manifest.json": b"{}\n"})

    def crash(step: str) -> None:
        if step == "publish.commit":
            raise RuntimeError("killed before the manifest")

    monkeypatch.setattr(storage_mod, "_pause", crash)
    with pytest.raises(RuntimeError, match="killed"):
        s3.publish_folder(stage, final)
    monkeypatch.undo()

    assert s3.exists(f"{final}/part-00000.parquet")
    assert not s3.exists(f"{final}/manifest.json")  # readers treat the output as absent


def test_publish_folder_over_a_published_output_returns_false_and_touches_nothing(
    s3, s3_bucket, tmp_path
):
    final = f"{s3_bucket}/snapshots/abc123"
    s3.write_bytes(f"{final}/part-00000.parquet", b"theirs")
    s3.write_bytes(f"{final}/manifest.json", b"{}\n")
    before = etags(s3, f"{final}/")
    stage = staged(tmp_path / "stage", {"part-00000.parquet": b"ours", "manifest.json": b"{}\n"})

    assert s3.publish_folder(stage, final) is False

    assert etags(s3, f"{final}/") == before
    assert s3.read_bytes(f"{final}/part-00000.parquet") == b"theirs"


def test_manifest_is_created_only_once(s3, s3_bucket):
    uri = f"{s3_bucket}/snapshots/abc123/manifest.json"
    assert s3._put_if_absent(uri, b"first") is True
    assert s3._put_if_absent(uri, b"second") is False
    assert s3.read_bytes(uri) == b"first"


def etags(s3: S3Storage, prefix_uri: str) -> dict[str, str]:
    bucket, prefix = split_s3(prefix_uri)
    listed = s3.client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: o["ETag"] for o in listed}


def test_publish_folder_refuses_a_stage_without_manifest(s3, s3_bucket, tmp_path):
    stage = staged(tmp_path / "stage", {"part-00000.parquet": b"p0"})
    final = f"{s3_bucket}/snapshots/abc123"
    with pytest.raises(StorageError, match=r"it has no manifest\.json"):
        s3.publish_folder(stage, final)
    assert s3.list(f"{final}/") == []


# --------------------------------------------------------------------------- multipart uploads
# A file above the threshold goes up in parts; the object only appears when the upload
# completes. When a part fails half-way through, the upload is aborted: no object, and no
# parts left stored (boto3's upload_file aborted once and ignored a failed abort).

MIB = 1024 * 1024


@pytest.fixture
def multipart(s3: S3Storage) -> S3Storage:
    s3.multipart_threshold = 5 * MIB
    s3.multipart_chunksize = 5 * MIB  # the smallest part S3 accepts (but the last)
    return s3


def big_file(tmp_path: Path, mib: int = 17) -> Path:
    path = tmp_path / "part-00000.parquet"
    path.write_bytes(hashlib.sha256(b"seed").digest() * (mib * MIB // 32) + b"tail")
    return path


def uploads_in_progress(s3: S3Storage, bucket_uri: str) -> list[dict]:
    bucket, _ = split_s3(bucket_uri)
    return list(s3.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def fail_calls(s3: S3Storage, operation: str, which: set[int]) -> list[int]:
    """Fault injection: the ``which``-th calls (1-based) of ``operation`` fail with a
    server error before they are sent. Returns the running count of calls."""
    from botocore.exceptions import ClientError

    calls = [0]

    def before_call(**kwargs) -> None:
        calls[0] += 1
        if calls[0] in which:
            error = {"Code": "InternalError", "Message": f"injected: {operation} #{calls[0]}"}
            raise ClientError({"Error": error}, operation)

    s3.client.meta.events.register(f"before-call.s3.{operation}", before_call)
    return calls


def test_multipart_upload_round_trip(multipart, s3_bucket, tmp_path):
    path = big_file(tmp_path)
    uri = f"{s3_bucket}/snapshots/abc123/part-00000.parquet"

    multipart.upload(path, uri)

    bucket, key = split_s3(uri)
    head = multipart.client.head_object(Bucket=bucket, Key=key)
    assert head["ETag"].strip('"').endswith("-4")  # four parts
    assert multipart.download(uri, tmp_path / "back") == sha256_file(path)
    assert uploads_in_progress(multipart, s3_bucket) == []


@pytest.mark.parametrize(
    "aborts_failing",
    [
        pytest.param(set(), id="part-fails"),
        pytest.param({1}, id="part-fails-then-the-first-abort-fails-too"),
        pytest.param({1, 2, 3}, id="part-fails-then-three-aborts-fail"),
    ],
)
def test_multipart_upload_failing_half_way_leaves_no_object_and_no_parts(
    multipart, s3_bucket, tmp_path, aborts_failing
):
    path = big_file(tmp_path)
    uri = f"{s3_bucket}/snapshots/abc123/part-00000.parquet"
    multipart.upload_threads = 1  # parts in order: two stored, then the third fails
    parts = fail_calls(multipart, "UploadPart", {3})
    aborts = fail_calls(multipart, "AbortMultipartUpload", aborts_failing)

    with pytest.raises(StorageError, match=f"cannot upload {uri}: InternalError") as info:
        multipart.upload(path, uri)

    assert info.value.uri == uri
    assert parts[0] == 3 and aborts[0] == len(aborts_failing) + 1
    assert not multipart.exists(uri)
    assert multipart.list(f"{s3_bucket}/") == []
    assert uploads_in_progress(multipart, s3_bucket) == []


def test_multipart_upload_failing_at_completion_is_aborted_too(multipart, s3_bucket, tmp_path):
    path = big_file(tmp_path)
    uri = f"{s3_bucket}/snapshots/abc123/part-00000.parquet"
    fail_calls(multipart, "CompleteMultipartUpload", {1})

    with pytest.raises(StorageError, match=f"cannot upload {uri}"):
        multipart.upload(path, uri)

    assert not multipart.exists(uri)
    assert uploads_in_progress(multipart, s3_bucket) == []


def test_failed_multipart_upload_over_an_object_keeps_the_previous_one(
    multipart, s3_bucket, tmp_path
):
    uri = f"{s3_bucket}/snapshots/abc123/part-00000.parquet"
    multipart.write_bytes(uri, b"previous")
    fail_calls(multipart, "UploadPart", {2})

    with pytest.raises(StorageError):
        multipart.upload(big_file(tmp_path), uri)

    assert multipart.read_bytes(uri) == b"previous"
    assert uploads_in_progress(multipart, s3_bucket) == []

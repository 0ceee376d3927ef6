"""core.storage against a real S3-compatible server over HTTP on 127.0.0.1: download with
hashing, delete, and missing buckets named by every method (the server answers HeadBucket
and HeadObject for a missing bucket with a bare 404)."""

from __future__ import annotations

import hashlib

import pytest

from mlops_loop.core.storage import CHUNK, S3Storage, sha256_file
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

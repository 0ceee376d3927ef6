"""core.storage against a real S3-compatible server over HTTP on 127.0.0.1: download with
hashing, delete, missing buckets named by every method (the server answers HeadBucket
and HeadObject for a missing bucket with a bare 404), and publishing a staged folder with
its manifest last."""

from __future__ import annotations

import hashlib
from pathlib import Path

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

    def crash(self, uri, data):
        raise RuntimeError("killed before the manifest")

    monkeypatch.setattr(S3Storage, "write_bytes", crash)
    with pytest.raises(RuntimeError, match="killed"):
        s3.publish_folder(stage, final)
    monkeypatch.undo()

    assert s3.exists(f"{final}/part-00000.parquet")
    assert not s3.exists(f"{final}/manifest.json")  # readers treat the output as absent


def test_publish_folder_refuses_a_stage_without_manifest(s3, s3_bucket, tmp_path):
    stage = staged(tmp_path / "stage", {"part-00000.parquet": b"p0"})
    final = f"{s3_bucket}/snapshots/abc123"
    with pytest.raises(StorageError, match=r"it has no manifest\.json"):
        s3.publish_folder(stage, final)
    assert s3.list(f"{final}/") == []

"""core.storage: local atomic writes, listing, missing objects, URI handling, and how S3
errors are reported (the real S3 path runs in tests/integration/test_ingest_s3.py)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from mlops_loop.core import storage as storage_mod
from mlops_loop.core.storage import (
    LocalStorage,
    S3Credentials,
    S3Storage,
    copy_between,
    join_uri,
    open_storage,
    read_json,
    sha256_file,
    split_s3,
    write_json,
)
from mlops_loop.exceptions import BucketNotFoundError, StorageError


@pytest.fixture
def local() -> LocalStorage:
    return LocalStorage()


def test_write_read_round_trip_creates_folders(local, tmp_path):
    uri = str(tmp_path / "a" / "b" / "c.txt")
    local.write_text(uri, "hello")
    assert local.read_text(uri) == "hello"
    assert local.exists(uri)
    assert [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["c.txt"]


def disk_full_after(monkeypatch, folder: Path, budget: int) -> None:
    """Fault injection: writes to files under ``folder`` store ``budget`` bytes in all,
    then fail with ENOSPC, as a filling disk does (other files are written normally)."""
    real = os.write
    left = [budget]

    def write(fd: int, data) -> int:
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            path = ""
        if not path.startswith(str(folder.resolve())):
            return real(fd, data)
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real(fd, bytes(data[: left[0]]))
        left[0] -= n
        return n

    monkeypatch.setattr(os, "write", write)


def test_failed_write_keeps_the_old_content_and_leaves_no_temp_file(local, tmp_path, monkeypatch):
    uri = str(tmp_path / "report.json")
    local.write_text(uri, "old")

    disk_full_after(monkeypatch, tmp_path, 2)  # the disk fills mid-write
    with pytest.raises(StorageError, match=r"cannot write .*report\.json: no space left") as info:
        local.write_text(uri, "new content")
    monkeypatch.undo()

    assert info.value.uri == uri
    assert Path(uri).read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_written_files_are_fsynced_before_the_rename(local, tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src, dst) -> None:
        assert str(src) in synced, "renamed before its data was synced"
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    local.write_text(str(tmp_path / "a" / "x.json"), "{}")
    local.upload(str(tmp_path / "a" / "x.json"), str(tmp_path / "b" / "y.json"))
    assert str(tmp_path / "a") in synced and str(tmp_path / "b") in synced  # the renames too


def test_upload_is_atomic_too(local, tmp_path, monkeypatch):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 1000)
    dst = str(tmp_path / "out" / "dst.bin")

    def broken_copy(a, b):  # fault injection
        Path(b).write_bytes(b"xx")
        raise OSError("interrupted")

    monkeypatch.setattr(storage_mod.shutil, "copyfile", broken_copy)
    with pytest.raises(OSError, match="interrupted"):
        local.upload(src, dst)
    monkeypatch.undo()
    assert not Path(dst).exists() and list((tmp_path / "out").iterdir()) == []

    local.upload(src, dst)
    assert sha256_file(dst) == sha256_file(src)


def test_list_is_recursive_sorted_and_skips_temp_files(local, tmp_path):
    for rel in ("b/2.csv", "a.csv", "b/1.csv", "b/.tmp-123-x.csv"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)
    listed = local.list(str(tmp_path))
    assert [Path(o.uri).relative_to(tmp_path).as_posix() for o in listed] == [
        "a.csv",
        "b/1.csv",
        "b/2.csv",
    ]
    assert [o.size for o in listed] == [5, 7, 7]
    assert listed[1].name == "1.csv"
    assert [o.name for o in local.list(str(tmp_path / "a.csv"))] == ["a.csv"]
    assert local.list(str(tmp_path / "missing")) == []


@pytest.mark.parametrize(
    "action",
    [
        pytest.param(lambda s, uri, tmp: s.read_bytes(uri), id="read"),
        pytest.param(lambda s, uri, tmp: s.download(uri, tmp / "x"), id="download"),
        pytest.param(lambda s, uri, tmp: read_json(s, uri), id="read-json"),
    ],
)
def test_missing_local_file_is_named(local, tmp_path, action):
    uri = str(tmp_path / "nope" / "manifest.json")
    with pytest.raises(StorageError, match=r"nope/manifest\.json does not exist") as info:
        action(local, uri, tmp_path)
    assert info.value.uri == uri
    assert not local.exists(uri)


def test_json_and_local_copy(local, tmp_path):
    uri = str(tmp_path / "m.json")
    write_json(local, uri, {"b": 1, "a": [1, 2]})
    assert read_json(local, uri) == {"a": [1, 2], "b": 1}
    assert Path(uri).read_text().startswith('{\n  "a"')  # sorted, readable
    with local.local_copy(uri) as path:
        assert path.read_bytes() == Path(uri).read_bytes()
    assert not path.exists()
    copy_between(local, uri, local, str(tmp_path / "copy" / "m.json"))
    assert read_json(local, str(tmp_path / "copy" / "m.json")) == {"a": [1, 2], "b": 1}


@pytest.mark.parametrize(
    ("uri", "kind"),
    [
        pytest.param("s3://bucket/key", S3Storage, id="s3"),
        pytest.param("/abs/path", LocalStorage, id="local"),
        pytest.param("file:///abs/path", LocalStorage, id="file-scheme"),
    ],
)
def test_open_storage(uri, kind):
    assert isinstance(open_storage(uri), kind)


def test_open_storage_rejects_other_schemes():
    with pytest.raises(StorageError, match=r"unsupported storage scheme in 'gs://b/k'"):
        open_storage("gs://b/k")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        pytest.param("s3://bucket/a/b.csv", ("bucket", "a/b.csv"), id="key"),
        pytest.param("s3://bucket", ("bucket", ""), id="bucket-only"),
        pytest.param("s3://bucket/", ("bucket", ""), id="bucket-slash"),
    ],
)
def test_split_s3(uri, expected):
    assert split_s3(uri) == expected


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        pytest.param("s3://", "s3 URI has no bucket", id="no-bucket"),
        pytest.param("/local/path", "not an s3:// URI", id="not-s3"),
    ],
)
def test_split_s3_errors(uri, message):
    with pytest.raises(StorageError, match=message):
        split_s3(uri)


def test_join_uri():
    assert join_uri("s3://b/root/", "/snapshots/", "abc") == "s3://b/root/snapshots/abc"
    assert join_uri("/data", "x") == "/data/x"


def test_credentials_never_print_secrets():
    creds = S3Credentials(
        aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="very-secret-value"
    )
    assert "very-secret" not in repr(creds) and "AKIA" not in repr(creds)


# --------------------------------------------------------------------------- S3 error reporting
# Fault injection with botocore's Stubber: the responses a real endpoint gives for errors
# that a local test server cannot produce (access denied); the real-server path beside
# these is tests/integration/test_ingest_s3.py.


@pytest.fixture
def stubbed():
    from botocore.stub import Stubber

    s3 = S3Storage(
        S3Credentials(
            endpoint_url="http://127.0.0.1:9",
            aws_access_key_id="k",
            aws_secret_access_key="s",
            max_attempts=1,
        )
    )
    with Stubber(s3.client) as stub:
        yield s3, stub
        stub.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("method", "code", "status", "message"),
    [
        pytest.param(
            "get_object",
            "NoSuchBucket",
            404,
            r"bucket 'b' does not exist \(read s3://b/k\)",
            id="read-no-bucket",
        ),
        pytest.param("get_object", "NoSuchKey", 404, r"s3://b/k does not exist", id="read-no-key"),
        pytest.param(
            "get_object",
            "AccessDenied",
            403,
            r"access denied to s3://b/k \(AccessDenied\) while trying to read",
            id="read-denied",
        ),
        pytest.param(
            "get_object",
            "InvalidAccessKeyId",
            403,
            r"access denied to s3://b/k \(InvalidAccessKeyId\)",
            id="read-bad-key",
        ),
        pytest.param(
            "get_object", "SlowDown", 503, r"cannot read s3://b/k: SlowDown", id="read-other"
        ),
        pytest.param(
            "put_object",
            "NoSuchBucket",
            404,
            r"bucket 'b' does not exist \(write s3://b/k\)",
            id="write-no-bucket",
        ),
        pytest.param(
            "list_objects_v2", "AccessDenied", 403, r"access denied to s3://b/k", id="list-denied"
        ),
    ],
)
def test_s3_errors_name_the_uri_and_problem(stubbed, method, code, status, message):
    s3, stub = stubbed
    stub.add_client_error(method, service_error_code=code, http_status_code=status)
    action = {
        "get_object": lambda: s3.read_bytes("s3://b/k"),
        "put_object": lambda: s3.write_bytes("s3://b/k", b"x"),
        "list_objects_v2": lambda: s3.list("s3://b/k"),
    }[method]
    with pytest.raises(StorageError, match=message) as info:
        action()
    assert info.value.uri == "s3://b/k"


def test_s3_exists_is_false_only_for_not_found(stubbed):
    s3, stub = stubbed
    stub.add_client_error("head_object", service_error_code="404", http_status_code=404)
    stub.add_response("head_bucket", {}, {"Bucket": "b"})  # the bucket is there
    assert s3.exists("s3://b/missing") is False
    stub.add_client_error("head_object", service_error_code="403", http_status_code=403)
    with pytest.raises(StorageError, match="access denied to s3://b/secret"):
        s3.exists("s3://b/secret")


@pytest.mark.parametrize(
    ("answers", "created"),
    [
        pytest.param([("PreconditionFailed", 412)], False, id="already-there"),
        pytest.param([("ConditionalRequestConflict", 409), "exists"], False, id="raced-and-lost"),
        pytest.param(
            [("ConditionalRequestConflict", 409), "absent", None], True, id="raced-then-created"
        ),
        pytest.param([("NotImplemented", 501), "plain"], True, id="server-without-conditions"),
    ],
)
def test_manifest_put_is_conditional(stubbed, monkeypatch, answers, created):
    """The manifest PUT carries If-None-Match: *; a concurrent conditional PUT (409) is
    followed by a look and a retry; a server that does not know the header gets a plain
    PUT."""
    monkeypatch.setattr(storage_mod.time, "sleep", lambda s: None)
    s3, stub = stubbed
    conditional = {"Bucket": "b", "Key": "m.json", "Body": b"{}", "IfNoneMatch": "*"}
    for answer in answers:
        if isinstance(answer, tuple):
            stub.add_client_error(
                "put_object", service_error_code=answer[0], http_status_code=answer[1],
                expected_params=conditional,
            )  # fmt: skip
        elif answer == "exists":
            stub.add_response("head_object", {}, {"Bucket": "b", "Key": "m.json"})
        elif answer == "absent":
            stub.add_client_error("head_object", service_error_code="404", http_status_code=404)
            stub.add_response("head_bucket", {}, {"Bucket": "b"})
        elif answer == "plain":
            stub.add_response("put_object", {}, {"Bucket": "b", "Key": "m.json", "Body": b"{}"})
        else:
            stub.add_response("put_object", {}, conditional)
    assert s3._put_if_absent("s3://b/m.json", b"{}") is created


# --------------------------------------------------------------------------- download / delete


def test_local_download_returns_the_sha256_of_what_it_wrote(local, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * 4_000)
    dest = tmp_path / "dest.bin"
    dest.write_bytes(b"old")
    digest = local.download(str(src), dest)
    assert digest == sha256_file(src) == sha256_file(dest)
    assert dest.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest.bin", "src.bin"]


def test_local_download_hashes_in_blocks(local, tmp_path, monkeypatch):
    monkeypatch.setattr(storage_mod, "CHUNK", 7)
    src = tmp_path / "src.txt"
    src.write_text("several small blocks of text\n" * 3)
    assert local.download(str(src), tmp_path / "d.txt") == sha256_file(src)


def test_failed_download_leaves_no_file(local, tmp_path, monkeypatch):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 100)
    dest = tmp_path / "out" / "dest.bin"
    dest.parent.mkdir()

    real = storage_mod._write_hashing

    def failing(blocks, target, uri):  # fault injection: the source fails after one block
        def gen():
            yield next(iter(blocks))
            raise OSError("input/output error")

        return real(gen(), target, uri)

    monkeypatch.setattr(storage_mod, "_write_hashing", failing)
    with pytest.raises(OSError, match="input/output error"):
        local.download(str(src), dest)
    assert list(dest.parent.iterdir()) == []


def test_download_into_a_missing_folder_is_named(local, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x")
    with pytest.raises(StorageError, match=r"cannot download .*src\.bin to .*nofolder/d\.bin"):
        local.download(str(src), tmp_path / "nofolder" / "d.bin")


def test_local_delete(local, tmp_path):
    uri = str(tmp_path / "a" / "x.parquet")
    local.write_bytes(uri, b"data")
    local.delete(uri)
    assert not local.exists(uri)
    local.delete(uri)  # already gone: not an error
    local.delete(str(tmp_path / "never" / "there.csv"))
    with pytest.raises(StorageError, match="it is a folder"):
        local.delete(str(tmp_path / "a"))
    assert (tmp_path / "a").is_dir()


@pytest.mark.parametrize(
    ("call", "method", "code"),
    [
        pytest.param(
            lambda s: s.check_root("s3://b/root"), "head_bucket", "404", id="check-root-bare-404"
        ),
        pytest.param(
            lambda s: s.list("s3://b/root/"), "list_objects_v2", "404", id="list-bare-404"
        ),
        pytest.param(
            lambda s: s.list("s3://b/root/"), "list_objects_v2", "NoSuchBucket", id="list"
        ),
        pytest.param(lambda s: s.delete("s3://b/k"), "delete_object", "NoSuchBucket", id="delete"),
        pytest.param(
            lambda s: s.download("s3://b/k", "/nonexistent/x"),
            "get_object",
            "NoSuchBucket",
            id="download",
        ),
    ],
)
def test_s3_missing_bucket_is_named(stubbed, call, method, code):
    s3, stub = stubbed
    stub.add_client_error(method, service_error_code=code, http_status_code=404)
    with pytest.raises(BucketNotFoundError, match=r"bucket 'b' does not exist") as info:
        call(s3)
    assert info.value.bucket == "b"


def test_s3_exists_tells_a_missing_bucket_from_a_missing_key(stubbed):
    s3, stub = stubbed
    # HeadObject gives the same bare 404 for both; HeadBucket settles it.
    stub.add_client_error("head_object", service_error_code="404", http_status_code=404)
    stub.add_client_error("head_bucket", service_error_code="404", http_status_code=404)
    with pytest.raises(BucketNotFoundError, match=r"bucket 'b' does not exist \(check s3://b/k\)"):
        s3.exists("s3://b/k")


def test_s3_download_cut_off_mid_stream_leaves_no_file(stubbed, tmp_path):
    from botocore.response import StreamingBody
    from urllib3.exceptions import ProtocolError

    class CutOff:  # fault injection: the connection drops after the first block
        def __init__(self) -> None:
            self.sent = False

        def read(self, amt=None):
            if self.sent:
                raise ProtocolError("Connection broken: IncompleteRead")
            self.sent = True
            return b"x" * 10

        def close(self) -> None:
            pass

    s3, stub = stubbed
    stub.add_response(
        "get_object", {"Body": StreamingBody(CutOff(), 1000)}, {"Bucket": "b", "Key": "k"}
    )
    with pytest.raises(StorageError, match=r"cannot download s3://b/k"):
        s3.download("s3://b/k", tmp_path / "k")
    assert list(tmp_path.iterdir()) == []


def test_s3_delete_refuses_a_bucket_uri(stubbed):
    s3, _ = stubbed
    with pytest.raises(StorageError, match="names a bucket, not an object"):
        s3.delete("s3://b/")


# --------------------------------------------------------------------------- reading in place


def test_local_file_is_the_file_itself_and_a_missing_one_is_named(local, tmp_path):
    uri = str(tmp_path / "snap" / "part-00000.parquet")
    local.write_bytes(uri, b"parquet bytes")

    with local.local_file(uri) as path:
        assert path == Path(uri)  # read in place: no copy
    assert Path(uri).read_bytes() == b"parquet bytes"
    gone = str(tmp_path / "snap" / "gone.parquet")
    with (
        pytest.raises(StorageError, match=r"snap/gone\.parquet does not exist") as info,
        local.local_file(gone),
    ):
        pass
    assert info.value.uri == gone


def test_local_fetch_with_sha256_hashes_in_place_and_downloads_nothing(local, tmp_path):
    uri = str(tmp_path / "raw" / "part-000.csv")
    local.write_bytes(uri, b"a,b\n1,2\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    path, sha = local.fetch_with_sha256(uri, scratch / "00000-part-000.csv")

    assert (path, sha) == (Path(uri), sha256_file(uri))
    assert list(scratch.iterdir()) == []


# --------------------------------------------------------------------------- publishing a folder


def staged(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def test_local_staging_folder_is_beside_the_final_one_and_new_each_time(local, tmp_path):
    final = str(tmp_path / "data" / "snapshots" / "abc123")
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    first = local.staging_folder(final, scratch)
    second = local.staging_folder(final, scratch)

    assert first.parent == second.parent == Path(final).parent  # one rename on one filesystem
    assert first != second and first.name.startswith(".tmp-abc123-")
    assert list(first.iterdir()) == [] and list(scratch.iterdir()) == []


def test_local_staging_folder_removes_only_stale_leftovers_of_the_same_output(local, tmp_path):
    import os

    parent = tmp_path / "snapshots"
    stale = staged(parent / ".tmp-abc123-deadbeef0000", {"part-00000.parquet": b"partial"})
    fresh = staged(parent / ".tmp-abc123-cafe00000000", {"part-00000.parquet": b"partial"})
    other = staged(parent / ".tmp-zzz999-deadbeef0000", {"part-00000.parquet": b"partial"})
    old = 1_000_000_000
    for folder in (stale, other):
        os.utime(folder, (old, old))

    local.staging_folder(str(parent / "abc123"), tmp_path)

    assert not stale.exists()
    assert fresh.exists()  # may belong to a concurrent writer
    assert other.exists()  # another output's leftovers are its own writer's business


def test_local_staging_folder_that_cannot_be_created_is_named(local, tmp_path):
    blocker = tmp_path / "data"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(StorageError, match=r"cannot create .*data/snapshots"):
        local.staging_folder(str(blocker / "snapshots" / "abc123"), tmp_path)


def test_local_publish_folder_renames_the_staged_folder_into_place(local, tmp_path):
    final = tmp_path / "snapshots" / "abc123"
    stage = local.staging_folder(str(final), tmp_path)
    staged(stage, {"part-00000.parquet": b"p0", "manifest.json": b"{}"})

    assert local.publish_folder(stage, str(final)) is True

    assert not stage.exists()
    assert sorted(p.name for p in final.iterdir()) == ["manifest.json", "part-00000.parquet"]
    assert [p.name for p in final.parent.iterdir()] == ["abc123"]


@pytest.mark.parametrize(
    ("existing", "published", "expected"),
    [
        pytest.param(
            {"part-00000.parquet": b"theirs", "manifest.json": b"{}"},
            False,
            ["manifest.json", "part-00000.parquet"],
            id="complete-output-wins-untouched",
        ),
        pytest.param(
            {"part-00000.parquet": b"half a file", "part-00007.parquet": b"stray"},
            True,
            ["manifest.json", "part-00000.parquet"],
            id="output-without-manifest-is-replaced",
        ),
    ],
)
def test_local_publish_folder_over_an_existing_folder(
    local, tmp_path, existing, published, expected
):
    final = staged(tmp_path / "snapshots" / "abc123", existing)
    stage = staged(
        tmp_path / "snapshots" / ".tmp-abc123-1",
        {"part-00000.parquet": b"ours", "manifest.json": b"{}"},
    )

    assert local.publish_folder(stage, str(final)) is published

    assert sorted(p.name for p in final.iterdir()) == expected
    winner = b"ours" if published else b"theirs"
    assert (final / "part-00000.parquet").read_bytes() == winner
    assert stage.exists() is not published  # a losing stage is the caller's to remove


def test_local_publish_decides_under_an_exclusive_lock_on_the_parent_folder(
    local, tmp_path, monkeypatch
):
    import fcntl

    final = tmp_path / "snapshots" / "abc123"
    stage = staged(final.parent / ".tmp-abc123-1", {"p": b"p", "manifest.json": b"{}"})
    tried: list[str] = []

    def commit_step(step: str) -> None:  # a second writer tries to lock meanwhile
        if step == "publish.start":  # before the lock
            return
        fd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            tried.append(step)
        finally:
            os.close(fd)

    monkeypatch.setattr(storage_mod, "_pause", commit_step)
    assert local.publish_folder(stage, str(final)) is True
    assert tried == ["publish.check", "publish.commit"]
    fd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released afterwards
    finally:
        os.close(fd)


def test_local_publish_without_a_lock_still_never_removes_a_published_folder(
    local, tmp_path, monkeypatch, caplog
):
    """A filesystem that cannot lock a folder: the folder found at the address is renamed
    aside; when it turns out to have its manifest (published meanwhile), it is put back."""
    import fcntl

    def no_lock(fd: int, op: int) -> None:
        raise OSError(37, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_lock)
    final = tmp_path / "snapshots" / "abc123"
    staged(final, {"part-00000.parquet": b"half"})  # looks incomplete when checked
    stage = staged(
        final.parent / ".tmp-abc123-1", {"part-00000.parquet": b"ours", "manifest.json": b"{}"}
    )

    def published_meanwhile(step: str) -> None:
        if step == "publish.replace":  # another writer completes it right now
            (final / "part-00000.parquet").write_bytes(b"theirs")
            (final / "manifest.json").write_bytes(b"{}")

    monkeypatch.setattr(storage_mod, "_pause", published_meanwhile)
    assert local.publish_folder(stage, str(final)) is False
    assert (final / "part-00000.parquet").read_bytes() == b"theirs"
    assert sorted(p.name for p in final.parent.iterdir()) == [".tmp-abc123-1", "abc123"]
    assert "publishing without the lock" in caplog.text


def test_local_publish_failure_is_named(local, tmp_path, monkeypatch):
    final = tmp_path / "snapshots" / "abc123"
    stage = staged(final.parent / ".tmp-abc123-1", {"manifest.json": b"{}"})
    staged(final, {"part-00000.parquet": b"half"})
    real_rename = os.rename

    def refill(step: str) -> None:  # something without a manifest reappears at the address
        if step == "publish.commit":
            staged(final, {"stray": b"x"})

    monkeypatch.setattr(storage_mod, "_pause", refill)
    with pytest.raises(StorageError, match=r"cannot publish .*abc123: Directory not empty") as info:
        local.publish_folder(stage, str(final))
    assert info.value.uri == str(final) and os.rename is real_rename


def test_publish_folder_refuses_a_folder_without_manifest(local, tmp_path):
    stage = staged(tmp_path / ".tmp-abc123-1", {"part-00000.parquet": b"p0"})
    final = tmp_path / "abc123"
    with pytest.raises(StorageError, match=r"cannot publish .* it has no manifest\.json") as info:
        local.publish_folder(stage, str(final))
    assert info.value.uri == str(final) and not final.exists()

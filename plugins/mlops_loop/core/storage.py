"""One small interface over a local directory and an S3-compatible bucket.

Every stage addresses data by URI (``s3://bucket/key`` or an absolute local path) and
goes through :func:`open_storage`. Writes are atomic per object: local files are written
to a temp name and renamed; S3 objects only become visible when the upload completes.
Multi-object outputs (snapshots, reports) write their ``manifest.json`` last, and
readers treat an output without its manifest as absent.

:meth:`Storage.download` writes to a temp name beside the target and renames it, and
returns the sha256 of the bytes it wrote (hashed while copying, so a file is read once).
A missing bucket is reported as :class:`~mlops_loop.exceptions.BucketNotFoundError`
("bucket 'x' does not exist") by every method, including those whose S3 call answers a
missing bucket with a bare 404 (``HeadBucket``, ``HeadObject``).

A multi-object output is built in a local folder (:meth:`Storage.staging_folder`) and put
in place by :meth:`Storage.publish_folder`: one rename on local disk, uploads with the
manifest last on S3. Readers get a local file to read with :meth:`Storage.local_file`
(the file itself on local disk, a temporary download from S3).

Concurrent writers of one output (two ingests of one date compute the same address) are
safe: exactly one publishes and the others get False and read what it published. A folder
or prefix that has its manifest is never removed or overwritten by a publish. Local
publishes hold an exclusive lock on the parent folder while they decide and rename; S3
publishes write the manifest with a conditional PUT (``If-None-Match: *``).

Local writes go to a temp file beside the target, are fsynced and then renamed into place,
so a full disk or a crash leaves the previous version intact and no temp file behind
(:meth:`Storage.write_files` does this for several files at once). S3 uploads above
:attr:`S3Storage.multipart_threshold` are multipart uploads that are aborted (retried)
when any part fails: no visible object and no parts are left.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from mlops_loop.exceptions import BucketNotFoundError, StorageError

log = logging.getLogger(__name__)

CHUNK = 8 * 1024 * 1024
# The object that makes a multi-object output exist; it is published last.
MANIFEST_NAME = "manifest.json"
# Local staging folders (and temp files) start with this; listings skip them.
STAGING_PREFIX = ".tmp-"
# Local staging folders of interrupted writes older than this are removed on the next write.
STALE_STAGING_SECONDS = 3600
# Error codes S3-compatible servers use for "no such key" (HEAD requests carry no body, so
# botocore reports the bare status) and for "no such bucket".
NOT_FOUND_CODES = ("404", "NoSuchKey", "NotFound")
NO_BUCKET_CODES = ("NoSuchBucket",)
DENIED_CODES = ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch")
# A conditional PUT (If-None-Match: *) found the key already there / raced another one.
PRECONDITION_FAILED_CODES = ("PreconditionFailed", "412")
CONDITIONAL_CONFLICT_CODES = ("ConditionalRequestConflict", "409")
# The server does not know conditional PUTs.
NOT_IMPLEMENTED_CODES = ("NotImplemented", "501")
MIB = 1024 * 1024
# S3 allows at most this many parts per multipart upload.
MAX_PARTS = 10_000


def _pause(step: str) -> None:
    """Test hook, a no-op: called at each step of :meth:`Storage.publish_folder` *before*
    the check or write it names, so a delay injected here models a stall the protocol must
    survive. Tests replace it (``monkeypatch.setattr(storage, "_pause", ...)`` or, in a
    worker process, plain assignment). Steps: ``publish.start`` (on entry; local: before
    taking the folder lock), ``publish.check`` (before looking for a published manifest;
    local: holding the folder lock), ``publish.replace`` (local, a folder without manifest
    is at the address: before it is set aside), ``publish.part`` (S3, before each part
    upload), ``publish.stale`` (S3, before removing leftovers of an interrupted write),
    ``publish.commit`` (before the rename on local disk or the manifest PUT)."""


@dataclass(frozen=True)
class S3Credentials:
    """Resolved connection details; ``None`` fields fall back to the AWS default chain."""

    endpoint_url: str | None = None
    region_name: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    max_attempts: int = 5

    def __repr__(self) -> str:  # never print secrets
        return (
            f"S3Credentials(endpoint_url={self.endpoint_url!r}, region_name={self.region_name!r})"
        )


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    size: int

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]


def join_uri(base: str, *parts: str) -> str:
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


class Storage:
    """Base interface; use :func:`open_storage` to get one for a URI."""

    def exists(self, uri: str) -> bool:
        raise NotImplementedError

    def list(self, prefix_uri: str) -> list[ObjectInfo]:
        """Objects below a prefix (recursive), sorted by URI. Empty if none."""
        raise NotImplementedError

    def read_bytes(self, uri: str) -> bytes:
        raise NotImplementedError

    def write_bytes(self, uri: str, data: bytes) -> None:
        raise NotImplementedError

    def write_files(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Write several objects that belong together, in the order given (put the one
        that marks the output complete last).

        Local disk: every file is written to a temp name beside its target and fsynced
        before any is renamed into place, so a failed write (a full disk) replaces none of
        them. S3: one atomic PUT each, in order; a failure leaves the later ones as they were.
        """
        for uri, data in items:
            self.write_bytes(uri, data)

    def download(self, uri: str, local_path: str | Path) -> str:
        """Copy the object to ``local_path`` (replaced atomically; its folder must exist)
        and return the sha256 of the bytes written. StorageError when the object is missing."""
        raise NotImplementedError

    def delete(self, uri: str) -> None:
        """Remove one object. A missing object is not an error (a missing bucket is)."""
        raise NotImplementedError

    def upload(self, local_path: str | Path, uri: str) -> None:
        raise NotImplementedError

    def copy(self, src_uri: str, dst_uri: str) -> None:
        raise NotImplementedError

    def check_root(self, uri: str) -> None:
        """Raise StorageError when the root (bucket or directory parent) is unusable."""
        raise NotImplementedError

    def read_text(self, uri: str) -> str:
        return self.read_bytes(uri).decode("utf-8")

    def write_text(self, uri: str, text: str) -> None:
        self.write_bytes(uri, text.encode("utf-8"))

    @contextlib.contextmanager
    def local_copy(self, uri: str) -> Iterator[Path]:
        """A local path holding the object's bytes for the duration of the block."""
        with tempfile.TemporaryDirectory(prefix="mlops-loop-") as tmp:
            dest = Path(tmp) / (uri.rstrip("/").rsplit("/", 1)[-1] or "object")
            self.download(uri, dest)
            yield dest

    @contextlib.contextmanager
    def local_file(self, uri: str) -> Iterator[Path]:
        """A local path to *read* the object from for the duration of the block: the file
        itself on local disk (never write to it), a temporary download otherwise.
        StorageError when the object is missing."""
        with self.local_copy(uri) as path:
            yield path

    def fetch_with_sha256(self, uri: str, download_to: Path) -> tuple[Path, str]:
        """A local path to read the object from, and its sha256, each read once: the file
        itself on local disk (hashed in place), otherwise a download to ``download_to``
        (hashed while downloading), which stays for as long as the caller keeps it."""
        return Path(download_to), self.download(uri, download_to)

    def staging_folder(self, final_uri: str, scratch: Path) -> Path:
        """A new, empty local folder to build the output that :meth:`publish_folder` will
        put at ``final_uri``. ``scratch`` is a temp folder the caller removes afterwards."""
        name = final_uri.rstrip("/").rsplit("/", 1)[-1]
        folder = scratch / f"{STAGING_PREFIX}{name}-{uuid.uuid4().hex[:12]}"
        folder.mkdir()
        return folder

    def publish_folder(self, staged: Path, final_uri: str) -> bool:
        """Put the files of the local folder ``staged`` at ``final_uri``, its
        :data:`MANIFEST_NAME` last, so readers never see a partial output.

        Returns False, publishing nothing, when another writer already published a
        complete output there (same address, so the same content). ``staged`` is left
        for the caller to remove."""
        raise NotImplementedError


def _require_manifest(staged: Path, final_uri: str) -> None:
    if not (staged / MANIFEST_NAME).is_file():
        raise StorageError(
            f"cannot publish {staged} to {final_uri}: it has no {MANIFEST_NAME}", uri=final_uri
        )


class LocalStorage(Storage):
    def exists(self, uri: str) -> bool:
        return os.path.exists(uri)

    def list(self, prefix_uri: str) -> list[ObjectInfo]:
        root = Path(prefix_uri)
        if root.is_file():
            return [ObjectInfo(str(root), root.stat().st_size)]
        if not root.is_dir():
            return []
        out = []
        for p in root.rglob("*"):
            # Temp files, and everything in a staging folder (a write in progress).
            if any(part.startswith(STAGING_PREFIX) for part in p.relative_to(root).parts):
                continue
            with contextlib.suppress(FileNotFoundError):  # renamed away meanwhile
                if p.is_file():
                    out.append(ObjectInfo(str(p), p.stat().st_size))
        return sorted(out, key=lambda o: o.uri)

    def read_bytes(self, uri: str) -> bytes:
        try:
            return Path(uri).read_bytes()
        except FileNotFoundError as exc:
            raise StorageError(f"{uri} does not exist", uri=uri) from exc
        except OSError as exc:
            raise StorageError(f"cannot read {uri}: {exc}", uri=uri) from exc

    @staticmethod
    def _temp_beside(uri: str) -> tuple[Path, Path]:
        """The target of ``uri`` (its folder created) and a new temp name beside it."""
        target = Path(uri)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create folder {target.parent}: {exc}", uri=uri) from exc
        return target, target.with_name(f"{STAGING_PREFIX}{uuid.uuid4().hex}-{target.name}")

    @contextlib.contextmanager
    def _atomic_target(self, uri: str) -> Iterator[Path]:
        target, tmp = self._temp_beside(uri)
        try:
            yield tmp
            _fsync_file(tmp, uri)
            os.replace(tmp, target)
            _fsync_folder(target.parent)
        finally:
            tmp.unlink(missing_ok=True)

    def write_bytes(self, uri: str, data: bytes) -> None:
        self.write_files([(uri, data)])

    def write_files(self, items: Sequence[tuple[str, bytes]]) -> None:
        staged: list[tuple[Path, Path]] = []
        try:
            for uri, data in items:
                target, tmp = self._temp_beside(uri)
                staged.append((tmp, target))
                _write_durably(tmp, data, uri)
            # Every file is complete and on disk: only now does anything get replaced.
            for tmp, target in staged:
                os.replace(tmp, target)
            for folder in {target.parent for _, target in staged}:
                _fsync_folder(folder)
        finally:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)

    def download(self, uri: str, local_path: str | Path) -> str:
        try:
            src = open(uri, "rb")  # noqa: SIM115 - closed below, errors named apart from the target's
        except FileNotFoundError as exc:
            raise StorageError(f"{uri} does not exist", uri=uri) from exc
        except OSError as exc:
            raise StorageError(f"cannot read {uri}: {exc}", uri=uri) from exc
        with src:
            return _write_hashing(iter(lambda: src.read(CHUNK), b""), Path(local_path), uri)

    def delete(self, uri: str) -> None:
        path = Path(uri)
        if path.is_dir():
            raise StorageError(f"cannot delete {uri}: it is a folder, not an object", uri=uri)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete {uri}: {exc}", uri=uri) from exc

    def upload(self, local_path: str | Path, uri: str) -> None:
        with self._atomic_target(uri) as tmp:
            shutil.copyfile(local_path, tmp)

    def copy(self, src_uri: str, dst_uri: str) -> None:
        self.upload(src_uri, dst_uri)

    def check_root(self, uri: str) -> None:
        path = Path(uri)
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not os.access(probe, os.W_OK):
            raise StorageError(f"local storage {uri} is not writable (checked {probe})", uri=uri)

    @contextlib.contextmanager
    def local_file(self, uri: str) -> Iterator[Path]:
        if not os.path.exists(uri):
            raise StorageError(f"{uri} does not exist", uri=uri)
        yield Path(uri)

    def fetch_with_sha256(self, uri: str, download_to: Path) -> tuple[Path, str]:
        return Path(uri), sha256_file(uri)

    def staging_folder(self, final_uri: str, scratch: Path) -> Path:
        # Beside the final folder, so publishing is one rename on one filesystem.
        final = Path(final_uri)
        parent = final.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {parent}: {exc}", uri=str(parent)) from exc
        _remove_stale_staging(parent, final.name)
        folder = parent / f"{STAGING_PREFIX}{final.name}-{uuid.uuid4().hex[:12]}"
        folder.mkdir()
        return folder

    def publish_folder(self, staged: Path, final_uri: str) -> bool:
        # One rename, decided and done under an exclusive lock on the parent folder, so a
        # concurrent writer of the same address waits, then finds the manifest and loses.
        # A folder already at the address is only ever renamed aside (atomic) and removed
        # once it is known to have no manifest; a published folder is never removed.
        _require_manifest(staged, final_uri)
        final = Path(final_uri)
        aside: Path | None = None
        _pause("publish.start")
        try:
            with _folder_lock(final.parent):
                _pause("publish.check")
                if (final / MANIFEST_NAME).exists():
                    return False
                if final.exists():
                    _pause("publish.replace")
                    try:
                        aside = _set_aside_incomplete(final)
                    except _AlreadyPublished:
                        return False
                _pause("publish.commit")
                try:
                    os.rename(staged, final)
                except OSError as exc:
                    if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) and (
                        (final / MANIFEST_NAME).exists()
                    ):
                        return False  # published meanwhile by a writer that took no lock
                    raise StorageError(
                        f"cannot publish {staged} to {final_uri}: {exc.strerror or exc}",
                        uri=final_uri,
                    ) from exc
                _fsync_folder(final.parent)
            return True
        finally:
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the folder itself (no lock file is left behind), released
    when the block ends or the process dies. Where the filesystem cannot lock a folder (some
    network filesystems) the block runs unlocked: :func:`_set_aside_incomplete` still never
    removes a published folder."""
    import fcntl

    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise StorageError(f"cannot open folder {folder}: {exc}", uri=str(folder)) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            log.warning("cannot lock %s (%s); publishing without the lock", folder, exc)
        yield
    finally:
        os.close(fd)


class _AlreadyPublished(Exception):
    """The folder set aside had its manifest: it was put back."""


def _set_aside_incomplete(final: Path) -> Path | None:
    """Rename the folder at ``final`` to a private name and return that, for the caller to
    remove, when it has no manifest (the leftovers of an interrupted write); None when
    nothing is there any more. When it turns out to be a published output (only a writer
    that took no lock can have put it there since the caller looked), it is put back and
    :class:`_AlreadyPublished` is raised."""
    aside = final.with_name(f"{STAGING_PREFIX}{final.name}-aside-{uuid.uuid4().hex[:12]}")
    try:
        os.rename(final, aside)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(
            f"cannot replace incomplete folder {final}: {exc}", uri=str(final)
        ) from exc
    if (aside / MANIFEST_NAME).exists():
        try:
            os.rename(aside, final)
        except OSError as exc:  # another complete copy is there now: keep this one too
            log.warning(
                "published folder %s was moved to %s and stays there: %s", final, aside, exc
            )
        raise _AlreadyPublished(str(final))
    log.warning("replacing incomplete folder %s (no %s)", final, MANIFEST_NAME)
    return aside


def _remove_stale_staging(parent: Path, name: str) -> None:
    """Staging folders for ``name`` left by interrupted writes; a recent one may belong to
    a concurrent writer and is left alone."""
    cutoff = time.time() - STALE_STAGING_SECONDS
    for leftover in parent.glob(f"{STAGING_PREFIX}{name}-*"):
        with contextlib.suppress(OSError):
            if leftover.stat().st_mtime < cutoff:
                shutil.rmtree(leftover, ignore_errors=True)


def _write_error(uri: str, exc: OSError) -> StorageError:
    reason = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
    return StorageError(
        f"cannot write {uri}: {reason} (the previous version, if any, is unchanged)", uri=uri
    )


def _write_durably(path: Path, data: bytes, uri: str) -> None:
    """Write ``data`` to the new file ``path`` and fsync it. StorageError naming ``uri``
    when the write fails (a full disk says so); the caller removes ``path``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise _write_error(uri, exc) from exc
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as exc:
        raise _write_error(uri, exc) from exc
    finally:
        os.close(fd)


def _fsync_file(path: Path, uri: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise _write_error(uri, exc) from exc
    try:
        os.fsync(fd)
    except OSError as exc:
        raise _write_error(uri, exc) from exc
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable; a filesystem that cannot sync a folder is fine."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_hashing(blocks: Iterator[bytes], target: Path, uri: str) -> str:
    """Write ``blocks`` to a temp file beside ``target``, rename it into place and return
    the sha256 of what was written. Nothing is left at ``target`` if the blocks fail."""
    digest = hashlib.sha256()
    tmp = target.with_name(f".tmp-{uuid.uuid4().hex}-{target.name}")
    try:
        try:
            fh = open(tmp, "wb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise StorageError(f"cannot download {uri} to {target}: {exc}", uri=uri) from exc
        with fh:
            for block in blocks:
                digest.update(block)
                fh.write(block)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return digest.hexdigest()


def split_s3(uri: str) -> tuple[str, str]:
    if not is_s3(uri):
        raise StorageError(f"not an s3:// URI: {uri}", uri=uri)
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise StorageError(f"s3 URI has no bucket: {uri}", uri=uri)
    return bucket, key


class _PartSkipped(Exception):
    """A part not sent because another part of the upload had failed."""


class S3Storage(Storage):
    """boto3 client with standard retries; errors become StorageError naming the URI.

    :meth:`upload` sends a file below ``multipart_threshold`` bytes as one PUT, a larger one
    as a multipart upload of ``multipart_chunksize`` parts (``upload_threads`` at a time).
    When any part or the completion fails, the upload is aborted (retried up to
    ``abort_attempts`` times) before the error is raised, so neither an object nor stored
    parts are left. boto3's managed ``upload_file`` also aborts, but only once and silently:
    a failed abort left the parts stored (and billed) with nothing to say so.
    """

    multipart_threshold = 8 * MIB
    multipart_chunksize = 8 * MIB
    upload_threads = 4
    abort_attempts = 4

    def __init__(self, credentials: S3Credentials | None = None) -> None:
        self.credentials = credentials or S3Credentials()

    @cached_property
    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        c = self.credentials
        return boto3.session.Session().client(
            "s3",
            endpoint_url=c.endpoint_url,
            region_name=c.region_name or "us-east-1",
            aws_access_key_id=c.aws_access_key_id,
            aws_secret_access_key=c.aws_secret_access_key,
            aws_session_token=c.aws_session_token,
            config=Config(
                retries={"max_attempts": c.max_attempts, "mode": "standard"},
                connect_timeout=10,
                read_timeout=60,
            ),
        )

    @contextlib.contextmanager
    def _errors(self, uri: str, action: str, *, bare_404_is_bucket: bool = False) -> Iterator[None]:
        """botocore errors as StorageError naming the URI. ``bare_404_is_bucket``: the call
        addresses the bucket itself (HeadBucket, ListObjectsV2), so a 404 means no bucket."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except S3UploadFailedError as exc:
            # The managed upload wraps the ClientError of the part that failed.
            inner = exc.__context__
            if isinstance(inner, ClientError):
                with self._errors(uri, action, bare_404_is_bucket=bare_404_is_bucket):
                    raise inner from exc
            raise StorageError(f"cannot {action} {uri}: {exc}", uri=uri) from exc
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            bucket, _ = split_s3(uri)
            if code in NO_BUCKET_CODES or (bare_404_is_bucket and code in NOT_FOUND_CODES):
                raise BucketNotFoundError(
                    f"bucket {bucket!r} does not exist ({action} {uri})", uri=uri, bucket=bucket
                ) from exc
            if code in NOT_FOUND_CODES:
                raise StorageError(f"{uri} does not exist", uri=uri) from exc
            if code in DENIED_CODES:
                raise StorageError(
                    f"access denied to {uri} ({code}) while trying to {action}", uri=uri
                ) from exc
            raise StorageError(f"cannot {action} {uri}: {code or exc}", uri=uri) from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot {action} {uri}: {exc}", uri=uri) from exc

    def exists(self, uri: str) -> bool:
        from botocore.exceptions import ClientError

        bucket, key = split_s3(uri)
        try:
            self.client.head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in NOT_FOUND_CODES:
                with self._errors(uri, "check"):
                    raise
        # HeadObject answers a missing key and a missing bucket with the same bare 404.
        self.check_root(uri)
        return False

    def list(self, prefix_uri: str) -> list[ObjectInfo]:
        bucket, prefix = split_s3(prefix_uri)
        out: list[ObjectInfo] = []
        with self._errors(prefix_uri, "list", bare_404_is_bucket=True):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            ):
                for obj in page.get("Contents", []):
                    out.append(ObjectInfo(f"s3://{bucket}/{obj['Key']}", int(obj["Size"])))
        return sorted(out, key=lambda o: o.uri)

    def read_bytes(self, uri: str) -> bytes:
        bucket, key = split_s3(uri)
        with self._errors(uri, "read"):
            body: bytes = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    def write_bytes(self, uri: str, data: bytes) -> None:
        bucket, key = split_s3(uri)
        with self._errors(uri, "write"):
            self.client.put_object(Bucket=bucket, Key=key, Body=data)

    def download(self, uri: str, local_path: str | Path) -> str:
        # GetObject streamed in chunks (bounded memory, hashed on the way) rather than
        # download_file, whose HeadObject cannot tell a missing key from a missing bucket.
        bucket, key = split_s3(uri)
        with self._errors(uri, "download"):
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
            try:
                return _write_hashing(body.iter_chunks(CHUNK), Path(local_path), uri)
            finally:
                body.close()

    def delete(self, uri: str) -> None:
        bucket, key = split_s3(uri)
        if not key:
            raise StorageError(f"cannot delete {uri}: it names a bucket, not an object", uri=uri)
        with self._errors(uri, "delete"):
            self.client.delete_object(Bucket=bucket, Key=key)

    def upload(self, local_path: str | Path, uri: str) -> None:
        bucket, key = split_s3(uri)
        path = Path(local_path)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise StorageError(f"cannot upload {path} to {uri}: {exc}", uri=uri) from exc
        with self._errors(uri, "upload"):
            if size < self.multipart_threshold:
                with open(path, "rb") as body:
                    self.client.put_object(Bucket=bucket, Key=key, Body=body)
            else:
                self._multipart_upload(path, size, bucket, key, uri)

    def _checksum_args(self) -> dict[str, str]:
        """What boto3's own transfers send: CRC32 part checksums where botocore computes
        request checksums by default (the server then wants them on completion too)."""
        when = getattr(self.client.meta.config, "request_checksum_calculation", None)
        return {"ChecksumAlgorithm": "CRC32"} if when == "when_supported" else {}

    def _multipart_upload(self, path: Path, size: int, bucket: str, key: str, uri: str) -> None:
        chunk = max(self.multipart_chunksize, -(-size // MAX_PARTS))
        extra = self._checksum_args()
        upload_id = self.client.create_multipart_upload(Bucket=bucket, Key=key, **extra)["UploadId"]
        stop = threading.Event()  # set by the first failure: no further part starts

        def send(number: int, offset: int, length: int) -> dict[str, Any]:
            if stop.is_set():
                raise _PartSkipped
            try:
                return self._upload_part(
                    path, bucket, key, upload_id, number, offset, length, extra
                )
            except BaseException:
                stop.set()
                raise

        try:
            ranges = [
                (n + 1, off, min(chunk, size - off)) for n, off in enumerate(range(0, size, chunk))
            ]
            threads = max(1, min(self.upload_threads, len(ranges)))
            # Leaving the block waits for every part in flight, so none is stored after an
            # abort below.
            with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="s3-upload") as pool:
                futures = [pool.submit(send, *r) for r in ranges]
                try:
                    wait(futures)
                except BaseException:  # interrupted (the task is being stopped)
                    stop.set()
                    raise
            errors = [f.exception() for f in futures]
            failed = [e for e in errors if e is not None and not isinstance(e, _PartSkipped)]
            if failed:
                raise failed[0]
            self.client.complete_multipart_upload(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": [f.result() for f in futures]},
            )
        except BaseException:
            self._abort_multipart(bucket, key, upload_id, uri)
            raise

    def _upload_part(
        self,
        path: Path,
        bucket: str,
        key: str,
        upload_id: str,
        number: int,
        offset: int,
        length: int,
        extra: dict[str, str],
    ) -> dict[str, Any]:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(length)
        response = self.client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data, **extra
        )
        part: dict[str, Any] = {"ETag": response["ETag"], "PartNumber": number}
        if extra and "ChecksumCRC32" in response:
            part["ChecksumCRC32"] = response["ChecksumCRC32"]
        return part

    def _abort_multipart(self, bucket: str, key: str, upload_id: str, uri: str) -> None:
        """Abort, retried: its parts are removed and the key never appears."""
        from botocore.exceptions import BotoCoreError, ClientError

        for attempt in range(1, self.abort_attempts + 1):
            try:
                self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
                return
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
                    return  # already gone
                problem: Exception = exc
            except BotoCoreError as exc:
                problem = exc
            log.warning(
                "aborting multipart upload %s of %s failed (attempt %d of %d): %s",
                upload_id, uri, attempt, self.abort_attempts, problem,
            )  # fmt: skip
            if attempt < self.abort_attempts:
                time.sleep(0.5 * attempt)
        log.error(
            "multipart upload %s of %s could not be aborted: its parts stay stored until it "
            "is aborted (aws s3api abort-multipart-upload) or a lifecycle rule removes it",
            upload_id, uri,
        )  # fmt: skip

    def copy(self, src_uri: str, dst_uri: str) -> None:
        src_bucket, src_key = split_s3(src_uri)
        bucket, key = split_s3(dst_uri)
        from botocore.exceptions import ClientError

        try:
            self.client.copy({"Bucket": src_bucket, "Key": src_key}, bucket, key)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in NOT_FOUND_CODES:
                # The managed copy's HeadObject on the source: its key or bucket is missing.
                self.check_root(src_uri)
                raise StorageError(
                    f"{src_uri} does not exist (copy to {dst_uri})", uri=src_uri
                ) from exc
            with self._errors(dst_uri, "copy"):
                raise

    def check_root(self, uri: str) -> None:
        bucket, _ = split_s3(uri)
        with self._errors(uri, "check", bare_404_is_bucket=True):
            self.client.head_bucket(Bucket=bucket)

    def publish_folder(self, staged: Path, final_uri: str) -> bool:
        # No rename on S3: each upload is all-or-nothing and the manifest goes last, so an
        # interrupted publish leaves an output without manifest, which readers treat as
        # absent. The manifest is a conditional PUT (If-None-Match: *): of two writers of
        # one address exactly one creates it, the other gets False. Nothing is removed
        # under a prefix that has its manifest, and a writer stops uploading as soon as it
        # sees one (one that loses by a moment may have rewritten a part with the same
        # bytes: same address, same content). A server that ignores If-None-Match lets
        # both writers return True, as before conditional PUTs.
        _require_manifest(staged, final_uri)
        manifest_uri = join_uri(final_uri, MANIFEST_NAME)
        _pause("publish.start")
        _pause("publish.check")
        if self.exists(manifest_uri):
            return False
        names = sorted(p.name for p in staged.iterdir() if p.is_file() and p.name != MANIFEST_NAME)
        for name in names:
            _pause("publish.part")
            if self.exists(manifest_uri):
                return False  # another writer published meanwhile: leave its parts alone
            self.upload(staged / name, join_uri(final_uri, name))
        _pause("publish.stale")
        if self.exists(manifest_uri):
            return False
        # Objects left by an interrupted earlier write that this output does not have.
        for stale in self.list(final_uri.rstrip("/") + "/"):
            if stale.name not in names and stale.name != MANIFEST_NAME:
                self.delete(stale.uri)
        _pause("publish.commit")
        return self._put_if_absent(manifest_uri, (staged / MANIFEST_NAME).read_bytes())

    def _put_if_absent(self, uri: str, data: bytes) -> bool:
        """PUT ``data`` at ``uri`` unless an object is there: True when this call created
        it. A server without conditional PUTs gets a plain PUT (True)."""
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3(uri)
        for attempt in range(1, 6):
            try:
                self.client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
                return True
            except BotoCoreError:
                with self._errors(uri, "write"):
                    raise
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in PRECONDITION_FAILED_CODES:
                    return False
                if code in NOT_IMPLEMENTED_CODES:
                    log.warning(
                        "%s does not support conditional PUTs; writing %s plainly",
                        self.credentials.endpoint_url or "the S3 endpoint",
                        uri,
                    )
                    self.write_bytes(uri, data)
                    return True
                if code not in CONDITIONAL_CONFLICT_CODES:
                    with self._errors(uri, "write"):
                        raise
            # Another conditional PUT of this key was in flight: it may have won.
            if self.exists(uri):
                return False
            time.sleep(0.2 * attempt)
        raise StorageError(f"cannot write {uri}: concurrent writes kept conflicting", uri=uri)


def open_storage(uri: str, credentials: S3Credentials | None = None) -> Storage:
    """The storage backend for ``uri``: S3 for ``s3://``, local otherwise."""
    if is_s3(uri):
        return S3Storage(credentials)
    if "://" in uri and not uri.startswith("file://"):
        raise StorageError(
            f"unsupported storage scheme in {uri!r} (use s3:// or a local path)", uri=uri
        )
    return LocalStorage()


def copy_between(src: Storage, src_uri: str, dst: Storage, dst_uri: str) -> None:
    """Copy one object between any two backends through a local temp file."""
    if src is dst or (isinstance(src, LocalStorage) and isinstance(dst, LocalStorage)):
        dst.copy(src_uri, dst_uri)
        return
    with src.local_copy(src_uri) as path:
        dst.upload(path, dst_uri)


def dump_json(payload: Any) -> bytes:
    """The bytes :func:`write_json` writes."""
    return (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")


def write_json(storage: Storage, uri: str, payload: Any) -> None:
    storage.write_text(uri, dump_json(payload).decode("utf-8"))


def read_json(storage: Storage, uri: str) -> Any:
    return json.loads(storage.read_text(uri))

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
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
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
        out = [
            ObjectInfo(str(p), p.stat().st_size)
            for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        ]
        return sorted(out, key=lambda o: o.uri)

    def read_bytes(self, uri: str) -> bytes:
        try:
            return Path(uri).read_bytes()
        except FileNotFoundError as exc:
            raise StorageError(f"{uri} does not exist", uri=uri) from exc
        except OSError as exc:
            raise StorageError(f"cannot read {uri}: {exc}", uri=uri) from exc

    @contextlib.contextmanager
    def _atomic_target(self, uri: str) -> Iterator[Path]:
        target = Path(uri)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create folder {target.parent}: {exc}", uri=uri) from exc
        tmp = target.with_name(f".tmp-{uuid.uuid4().hex}-{target.name}")
        try:
            yield tmp
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def write_bytes(self, uri: str, data: bytes) -> None:
        with self._atomic_target(uri) as tmp:
            tmp.write_bytes(data)

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
        _require_manifest(staged, final_uri)
        final = Path(final_uri)
        if (final / MANIFEST_NAME).exists():
            return False
        if final.exists():
            # Leftovers of a write that never got its manifest: not an output, replace them.
            log.warning("replacing incomplete folder %s (no %s)", final, MANIFEST_NAME)
            shutil.rmtree(final)
        os.rename(staged, final)
        return True


def _remove_stale_staging(parent: Path, name: str) -> None:
    """Staging folders for ``name`` left by interrupted writes; a recent one may belong to
    a concurrent writer and is left alone."""
    cutoff = time.time() - STALE_STAGING_SECONDS
    for leftover in parent.glob(f"{STAGING_PREFIX}{name}-*"):
        with contextlib.suppress(OSError):
            if leftover.stat().st_mtime < cutoff:
                shutil.rmtree(leftover, ignore_errors=True)


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


class S3Storage(Storage):
    """boto3 client with standard retries; errors become StorageError naming the URI."""

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
        with self._errors(uri, "upload"):
            self.client.upload_file(str(local_path), bucket, key)

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
        # absent. Two writers of one address upload the same content, so both return True.
        _require_manifest(staged, final_uri)
        names = sorted(p.name for p in staged.iterdir() if p.is_file() and p.name != MANIFEST_NAME)
        for name in names:
            self.upload(staged / name, join_uri(final_uri, name))
        # Objects left by an interrupted earlier write that this output does not have.
        for stale in self.list(final_uri.rstrip("/") + "/"):
            if stale.name not in names and stale.name != MANIFEST_NAME:
                self.delete(stale.uri)
        self.write_bytes(join_uri(final_uri, MANIFEST_NAME), (staged / MANIFEST_NAME).read_bytes())
        return True


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


def write_json(storage: Storage, uri: str, payload: Any) -> None:
    import json

    storage.write_text(uri, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def read_json(storage: Storage, uri: str) -> Any:
    import json

    return json.loads(storage.read_text(uri))

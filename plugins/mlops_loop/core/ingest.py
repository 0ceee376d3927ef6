"""Ingest: a landed batch becomes a content-addressed Parquet snapshot.

A landed batch (``config.source_uri(ds)``: a local folder or an ``s3://`` prefix holding one
or more CSV or Parquet files) becomes an immutable snapshot under
``{root}/snapshots/<sha256>/`` (see :mod:`mlops_loop.core.snapshots`): Parquet parts plus a
``manifest.json`` that is published last.

The sha256 is computed from the source files' checksums and names, the part of the config
that shapes the output (columns and their types, format, CSV options),
:data:`~mlops_loop.core.snapshots.SNAPSHOT_FORMAT_VERSION`, and the dataset name and logical
date, *before* anything is written: re-ingesting the same batch finds the manifest and
writes nothing. The dataset and date are part of the address because the manifest records
them and the batch's source files: byte-identical batches landed for two dates get two
snapshots, so each manifest's ``ds`` and ``source`` are right (the quality gate checks the
date and quarantines those files).

Types are normalised per the config (:mod:`mlops_loop.core.normalise`), but bad values are
never coerced away: when any non-null value of a column cannot be parsed as its declared
type, the whole column is kept as text and the manifest records it under
``type_mismatches`` with example values, so the quality gate can fail the batch and name
them. Missing and unexpected columns are recorded the same way. Files are read in chunks
(``config.ingest.rows_per_chunk``) and written with a streaming Parquet writer, so a batch
larger than memory works. The snapshot is built in a local staging folder and put in place
by :meth:`~mlops_loop.core.storage.Storage.publish_folder`.

Concurrent ingests of one date (a retry overlapping a slow attempt, a manual trigger beside
the scheduled run) compute the same address: exactly one publishes the snapshot, every
other one reports that snapshot (``created=False``, same sha256) and removes only its own
staging folder. A snapshot folder with its manifest is never removed or overwritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_loop.core.config import DatasetConfig, check_ds
from mlops_loop.core.normalise import (
    OutputPlan,
    SourceFile,
    SourceReader,
    TypeMismatch,
    normalise_batch,
    plan_output,
)
from mlops_loop.core.snapshots import (
    SNAPSHOT_FORMAT_VERSION,
    PartWriter,
    SnapshotResult,
    manifest_issues,
    manifest_uri_of,
    snapshot_uri_for,
)
from mlops_loop.core.storage import (
    MANIFEST_NAME,
    LocalStorage,
    ObjectInfo,
    S3Credentials,
    Storage,
    is_s3,
    open_storage,
    read_json,
    sha256_file,
    split_s3,
    write_json,
)
from mlops_loop.exceptions import BucketNotFoundError, NoBatchError, StorageError

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

# A part file rolls over after this many rows (row groups are rows_per_chunk).
ROWS_PER_PART = 5_000_000

EXTENSIONS: dict[str, tuple[str, ...]] = {
    "csv": (".csv", ".csv.gz", ".csv.bz2"),
    "parquet": (".parquet", ".pq"),
}


# --------------------------------------------------------------------------- source files


def _relative_name(obj: ObjectInfo, prefix: str) -> str:
    if obj.uri.startswith(prefix):
        rel = obj.uri[len(prefix) :].lstrip("/")
        return rel or obj.name
    return obj.name


def _is_batch_file(rel: str, fmt: str) -> bool:
    parts = rel.split("/")
    if any(p.startswith((".", "_")) for p in parts):
        return False
    return parts[-1].lower().endswith(EXTENSIONS[fmt])


def list_batch_files(
    storage: Storage, source_uri: str, fmt: str, ds: str
) -> list[tuple[ObjectInfo, str]]:
    """The batch's data files with their names relative to the batch prefix.

    Raises NoBatchError when there are none (naming other files found, if any).
    """
    is_file = source_uri.lower().endswith(EXTENSIONS[fmt])
    prefix = source_uri if (is_file or source_uri.endswith("/")) else source_uri + "/"
    if is_file:
        prefix = source_uri.rsplit("/", 1)[0] + "/"
        listed = [o for o in storage.list(source_uri) if o.uri == source_uri]
    else:
        listed = storage.list(prefix)
    found = [(o, _relative_name(o, prefix)) for o in listed]
    chosen = [(o, rel) for o, rel in found if _is_batch_file(rel, fmt)]
    if not chosen:
        others = [rel for _, rel in found]
        hint = f"; found only {others[:5]}" if others else ""
        raise NoBatchError(
            f"no batch for ds={ds}: no {fmt} file ({'/'.join(EXTENSIONS[fmt])}) at {source_uri}{hint}",
            source_uri=source_uri,
        )
    return sorted(chosen, key=lambda item: item[1])


@dataclass(frozen=True)
class BatchLookup:
    """What one look for a date's batch found: the data files (names relative to the batch
    prefix), other files there that are not data files, and what was looked for."""

    dataset: str
    ds: str
    source_uri: str
    format: str
    files: tuple[str, ...] = ()
    others: tuple[str, ...] = ()

    @property
    def found(self) -> bool:
        return bool(self.files)

    @property
    def looked_for(self) -> str:
        """``"*.csv, *.csv.gz, *.csv.bz2 under <uri>"``: the files a batch consists of."""
        patterns = ", ".join(f"*{ext}" for ext in EXTENSIONS[self.format])
        return f"{patterns} under {self.source_uri}"

    def describe(self) -> str:
        """One log line: found N file(s), or what was looked for and what was there."""
        if self.found:
            shown = ", ".join(self.files[:5]) + (", ..." if len(self.files) > 5 else "")
            return (
                f"batch for {self.dataset} ds={self.ds} has landed: {len(self.files)} "
                f"{self.format} file(s) under {self.source_uri} ({shown})"
            )
        hint = f"; found only {list(self.others[:5])}" if self.others else ""
        return f"no batch for {self.dataset} ds={self.ds} yet: looked for {self.looked_for}{hint}"

    def to_xcom(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "ds": self.ds,
            "source_uri": self.source_uri,
            "files": list(self.files),
        }


def find_batch(
    config: DatasetConfig, ds: str, *, credentials: S3Credentials | None = None
) -> BatchLookup:
    """Look once for the batch landed for ``ds`` (``config.source_uri(ds)``), without
    reading it. Never raises for a missing batch; a missing bucket is BucketNotFoundError."""
    check_ds(ds)
    source_uri = config.source_uri(ds)
    storage = open_storage(source_uri, credentials)
    if is_s3(source_uri):
        _check_bucket(storage, source_uri, "source.uri")
    fmt = config.source.format
    try:
        listed = list_batch_files(storage, source_uri, fmt, ds)
    except NoBatchError:
        is_file = source_uri.lower().endswith(EXTENSIONS[fmt])
        prefix = source_uri.rsplit("/", 1)[0] + "/" if is_file else source_uri.rstrip("/") + "/"
        others = tuple(sorted(_relative_name(o, prefix) for o in storage.list(prefix)))
        return BatchLookup(config.name, ds, source_uri, fmt, others=others)
    return BatchLookup(config.name, ds, source_uri, fmt, files=tuple(rel for _, rel in listed))


def _materialise(
    storage: Storage, files: list[tuple[ObjectInfo, str]], workdir: Path
) -> list[SourceFile]:
    """Each file on local disk with its sha256: local files are read where they are,
    remote ones downloaded into ``workdir`` (hashed while downloading)."""
    out = []
    for i, (obj, rel) in enumerate(files):
        local, sha = storage.fetch_with_sha256(obj.uri, workdir / f"{i:05d}-{obj.name}")
        size = local.stat().st_size
        out.append(SourceFile(uri=obj.uri, name=rel, size=size, sha256=sha, local_path=local))
    return out


# --------------------------------------------------------------------------- hashing


def normalisation_settings(config: DatasetConfig) -> dict[str, Any]:
    """The part of the config that changes what a snapshot contains."""
    return {
        "format": config.source.format,
        "csv": config.source.csv.model_dump(mode="json") if config.source.format == "csv" else None,
        "columns": [[c.name, c.type.value] for c in config.columns],
    }


def content_hash(config: DatasetConfig, ds: str, files: Sequence[tuple[str, str]]) -> str:
    """sha256 of (source file names + checksums, normalisation settings, format version,
    dataset name, logical date).

    ``files`` is a sequence of ``(name relative to the batch prefix, sha256)``. Where the
    batch lives (local folder or bucket) and the quality thresholds do not count.
    """
    payload = {
        "format_version": SNAPSHOT_FORMAT_VERSION,
        "dataset": config.name,
        "ds": ds,
        "files": sorted([name, sha] for name, sha in files),
        "normalisation": normalisation_settings(config),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


# --------------------------------------------------------------------------- writing parts


def _write_parts(
    readers: list[SourceReader],
    names: list[str],
    plan: OutputPlan,
    stage: Path,
    rows_per_chunk: int,
) -> tuple[list[tuple[str, int]], dict[str, TypeMismatch]]:
    """Convert and write all chunks; when a column turns out to hold values that are not
    its declared type, write again with that column kept as text (good batches: one pass)."""
    mismatches: dict[str, TypeMismatch] = {}
    for attempt in range(2):
        for old in stage.glob("part-*.parquet"):
            old.unlink()
        schema = plan.schema()
        writer = PartWriter(
            stage, schema, row_group_rows=rows_per_chunk, rows_per_part=ROWS_PER_PART
        )
        writing = True
        try:
            for reader in readers:
                for batch in reader.batches(names):
                    table = normalise_batch(
                        batch, plan, schema, mismatches if attempt == 0 else None
                    )
                    if mismatches and attempt == 0:
                        writing = False  # keep scanning to count every bad value
                    if writing:
                        writer.write(table)
        finally:
            writer.close()
        if writing:
            return writer.close_parts(), mismatches
        plan.as_text = set(mismatches)
    raise AssertionError("unreachable: the second pass always writes")


def _build_manifest(
    *,
    config: DatasetConfig,
    ds: str,
    sha: str,
    source_uri: str,
    files: list[SourceFile],
    plan: OutputPlan,
    parts: list[tuple[str, int]],
    stage: Path,
    mismatches: dict[str, TypeMismatch],
) -> dict[str, Any]:
    schema = plan.schema()
    return {
        "format_version": SNAPSHOT_FORMAT_VERSION,
        "sha256": sha,
        "dataset": config.name,
        "ds": ds,
        "rows": sum(rows for _, rows in parts),
        "columns": [
            {
                "name": f.name,
                "declared_type": plan.declared[f.name].value if f.name in plan.declared else None,
                "arrow_type": str(f.type),
            }
            for f in schema
        ],
        "type_mismatches": {
            name: {
                "declared_type": plan.declared[name].value,
                "count": m.count,
                "examples": m.examples,
            }
            for name, m in sorted(mismatches.items())
        },
        "unexpected_columns": plan.unexpected,
        "missing_columns": plan.missing,
        "source": {
            "uri": source_uri,
            "format": config.source.format,
            "files": [
                {"uri": f.uri, "name": f.name, "size": f.size, "sha256": f.sha256} for f in files
            ],
        },
        "files": [
            {
                "name": name,
                "size": (stage / name).stat().st_size,
                "sha256": sha256_file(stage / name),
                "rows": rows,
            }
            for name, rows in parts
        ],
        "normalisation": normalisation_settings(config),
        "config_hash": config.config_hash(),
    }


# --------------------------------------------------------------------------- ingest


def _check_bucket(storage: Storage, uri: str, key: str) -> None:
    """StorageError naming the bucket (and the config key) when it is missing or unusable."""
    bucket = split_s3(uri)[0]
    try:
        storage.check_root(uri)
    except BucketNotFoundError as exc:
        raise BucketNotFoundError(
            f"bucket {bucket!r} does not exist ({key}: {uri})", uri=uri, bucket=bucket
        ) from exc
    except StorageError as exc:
        raise StorageError(
            f"bucket {bucket!r} is not usable ({key}: {uri}): {exc}", uri=uri
        ) from exc


def ingest_batch(
    config: DatasetConfig, ds: str, *, credentials: S3Credentials | None = None
) -> SnapshotResult:
    """Turn the batch landed for logical date ``ds`` into a content-addressed snapshot.

    Idempotent: when the snapshot for the same inputs exists (its manifest is present),
    nothing is written and ``created`` is False. Landed files are only read.

    Raises NoBatchError (nothing landed), SourceFileError (a file is empty, has the wrong
    delimiter or encoding, or is corrupted), MixedSchemaError (files disagree on columns),
    StorageError (bucket or folder unusable).
    """
    check_ds(ds)
    source_uri = config.source_uri(ds)
    root = config.root
    fmt = config.source.format
    dst = open_storage(root, credentials)
    src = open_storage(source_uri, credentials)
    # Name a missing or unreachable bucket before doing any work.
    if is_s3(root):
        _check_bucket(dst, root, "storage.root")
    if is_s3(source_uri) and not (is_s3(root) and split_s3(source_uri)[0] == split_s3(root)[0]):
        _check_bucket(src, source_uri, "source.uri")
    listed = list_batch_files(src, source_uri, fmt, ds)

    with tempfile.TemporaryDirectory(prefix="mlops-loop-ingest-") as tmp:
        files = _materialise(src, listed, Path(tmp))
        sha = content_hash(config, ds, [(f.name, f.sha256) for f in files])
        snapshot_uri = snapshot_uri_for(root, sha)
        manifest_uri = manifest_uri_of(snapshot_uri)

        def result(manifest: dict[str, Any], created: bool) -> SnapshotResult:
            return SnapshotResult(
                snapshot_uri=snapshot_uri,
                sha256=sha,
                rows=int(manifest["rows"]),
                ds=ds,
                dataset=config.name,
                created=created,
                source_uri=source_uri,
                manifest_uri=manifest_uri,
                issues=manifest_issues(manifest),
            )

        if dst.exists(manifest_uri):
            log.info("snapshot %s already exists for ds=%s; nothing written", snapshot_uri, ds)
            return result(read_json(dst, manifest_uri), created=False)

        readers = [SourceReader(f, config, source_uri) for f in files]
        plan, names = plan_output(config, readers, source_uri)

        stage = dst.staging_folder(snapshot_uri, Path(tmp))
        try:
            parts, mismatches = _write_parts(
                readers, names, plan, stage, config.ingest.rows_per_chunk
            )
            manifest = _build_manifest(
                config=config,
                ds=ds,
                sha=sha,
                source_uri=source_uri,
                files=files,
                plan=plan,
                parts=parts,
                stage=stage,
                mismatches=mismatches,
            )
            # The stage is always a local folder, whatever the destination.
            write_json(LocalStorage(), str(stage / MANIFEST_NAME), manifest)
            if not dst.publish_folder(stage, snapshot_uri):
                # A concurrent ingest published the same address first: report its snapshot.
                log.info(
                    "snapshot %s was published by a concurrent ingest of ds=%s; using it",
                    snapshot_uri,
                    ds,
                )
                return result(read_json(dst, manifest_uri), created=False)
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
        out = result(manifest, created=True)
        log.info("snapshot %s written for ds=%s: %d rows", snapshot_uri, ds, out.rows)
        return out

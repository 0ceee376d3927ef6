"""Content-addressed Parquet snapshots: where they live, their manifest, and how to read them.

A snapshot is an immutable folder ``{root}/snapshots/<sha256>/`` of Parquet parts plus a
``manifest.json`` that is written last: a snapshot exists only once its manifest does.
:mod:`mlops_loop.core.ingest` writes them (and explains the address);
:mod:`mlops_loop.core.normalise` turns landed files into their columns.

The manifest records the row count, the columns with their declared and Arrow types, the
source files, and what the quality gate must see: ``type_mismatches`` (columns kept as
text because values did not parse, with example values), ``missing_columns`` and
``unexpected_columns``.

Readers (:func:`load_manifest`, :func:`read_snapshot`, :func:`read_snapshot_table`,
:func:`iter_snapshot_batches`, :func:`iter_snapshot_tables`) are what the other stages use;
:class:`PartWriter` writes the parts of a snapshot-shaped folder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_loop.core.storage import (
    MANIFEST_NAME,
    S3Credentials,
    Storage,
    join_uri,
    open_storage,
    read_json,
)
from mlops_loop.exceptions import SnapshotNotFoundError, StorageError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

# Bump when the way snapshots are produced changes (parsing, normalisation, layout): the
# same raw batch then gets a new address instead of silently reusing an old snapshot.
SNAPSHOT_FORMAT_VERSION = 1
SNAPSHOTS_DIR = "snapshots"
DEFAULT_BATCH_SIZE = 65_536


# --------------------------------------------------------------------------- reading


def manifest_uri_of(snapshot_uri: str) -> str:
    return join_uri(snapshot_uri, MANIFEST_NAME)


def snapshot_uri_for(root: str, sha256: str) -> str:
    """Where the snapshot with this hash lives under a dataset root."""
    return join_uri(root, SNAPSHOTS_DIR, sha256)


def load_manifest(snapshot_uri: str, *, credentials: S3Credentials | None = None) -> dict[str, Any]:
    """The snapshot's manifest. Raises SnapshotNotFoundError when it has none (never
    written, or the write was interrupted before the manifest)."""
    storage = open_storage(snapshot_uri, credentials)
    uri = manifest_uri_of(snapshot_uri)
    if not storage.exists(uri):
        raise SnapshotNotFoundError(
            f"no snapshot at {snapshot_uri}: {MANIFEST_NAME} is missing "
            "(never written, or its write was interrupted)",
            uri=snapshot_uri,
        )
    manifest: dict[str, Any] = read_json(storage, uri)
    return manifest


def _check_requested_columns(
    manifest: dict[str, Any], columns: Sequence[str] | None, uri: str
) -> None:
    if columns is None:
        return
    have = [c["name"] for c in manifest["columns"]]
    missing = [c for c in columns if c not in have]
    if missing:
        raise StorageError(f"snapshot {uri} has no column(s) {missing}; it has {have}", uri=uri)


@contextlib.contextmanager
def _part_file(storage: Storage, uri: str) -> Iterator[Path]:
    """A part file to read (in place on local disk, downloaded from S3); a part the
    manifest lists but storage lacks is named as such."""
    with contextlib.ExitStack() as stack:
        try:
            path = stack.enter_context(storage.local_file(uri))
        except StorageError as exc:
            if storage.exists(uri):
                raise
            raise StorageError(
                f"snapshot part {uri} listed in the manifest is missing", uri=uri
            ) from exc
        yield path


def read_snapshot_table(
    snapshot_uri: str,
    *,
    credentials: S3Credentials | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """The whole snapshot as one Arrow table (columns in snapshot order unless given)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = load_manifest(snapshot_uri, credentials=credentials)
    _check_requested_columns(manifest, columns, snapshot_uri)
    storage = open_storage(snapshot_uri, credentials)
    cols = list(columns) if columns is not None else None
    tables = []
    for part in manifest["files"]:
        with _part_file(storage, join_uri(snapshot_uri, part["name"])) as path:
            tables.append(pq.read_table(path, columns=cols))
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def snapshot_schema(
    snapshot_uri: str, *, credentials: S3Credentials | None = None
) -> pa.Schema:
    """The Arrow schema of the snapshot's first part, without its metadata (all parts
    share it). On S3 that part is downloaded."""
    import pyarrow.parquet as pq

    manifest = load_manifest(snapshot_uri, credentials=credentials)
    storage = open_storage(snapshot_uri, credentials)
    with _part_file(storage, join_uri(snapshot_uri, manifest["files"][0]["name"])) as path:
        return pq.read_schema(path).remove_metadata()


def read_snapshot(
    snapshot_uri: str,
    *,
    credentials: S3Credentials | None = None,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The whole snapshot as a pandas DataFrame. For big snapshots prefer
    :func:`iter_snapshot_batches`."""
    return read_snapshot_table(snapshot_uri, credentials=credentials, columns=columns).to_pandas()


def iter_snapshot_batches(
    snapshot_uri: str,
    *,
    credentials: S3Credentials | None = None,
    columns: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Iterator[pd.DataFrame]:
    """Stream the snapshot as DataFrames of at most ``batch_size`` rows (one part file on
    local disk at a time for S3)."""
    for table in iter_snapshot_tables(
        snapshot_uri, credentials=credentials, columns=columns, batch_size=batch_size
    ):
        yield table.to_pandas()


def iter_snapshot_tables(
    snapshot_uri: str,
    *,
    credentials: S3Credentials | None = None,
    columns: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Iterator[pa.Table]:
    """Stream the snapshot as Arrow tables of at most ``batch_size`` rows, in file order
    (one part file on local disk at a time for S3)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = load_manifest(snapshot_uri, credentials=credentials)
    _check_requested_columns(manifest, columns, snapshot_uri)
    storage = open_storage(snapshot_uri, credentials)
    cols = list(columns) if columns is not None else None
    for part in manifest["files"]:
        with _part_file(storage, join_uri(snapshot_uri, part["name"])) as path:
            pfile = pq.ParquetFile(path)
            try:
                for batch in pfile.iter_batches(batch_size=batch_size, columns=cols):
                    yield pa.Table.from_batches([batch])
            finally:
                pfile.close()


# --------------------------------------------------------------------------- writing


class PartWriter:
    """Writes ``part-NNNNN.parquet`` files of one schema into a local folder: row groups of
    ``row_group_rows``, a new part every ``rows_per_part`` rows; always at least one part
    (a 0-row split keeps its schema). :meth:`finish` gives the manifest's ``files``
    entries (name, size, sha256, rows).

    (core.ingest has its own copy of this writer, ``_PartWriter``; the two could share.)
    """

    def __init__(
        self, folder: Path, schema: pa.Schema, *, row_group_rows: int, rows_per_part: int
    ) -> None:
        self.folder = folder
        self.schema = schema
        self.row_group_rows = row_group_rows
        self.rows_per_part = rows_per_part
        self.parts: list[tuple[str, int]] = []
        self._writer: Any = None
        self._rows = 0

    def _open(self) -> None:
        import pyarrow.parquet as pq

        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{len(self.parts):05d}.parquet"
        self.parts.append((name, 0))
        self._writer = pq.ParquetWriter(self.folder / name, self.schema, compression="zstd")
        self._rows = 0

    def write(self, table: pa.Table) -> None:
        offset = 0
        while offset < table.num_rows or self._writer is None:
            if self._writer is None or self._rows >= self.rows_per_part:
                self.close()
                self._open()
            take = min(table.num_rows - offset, self.rows_per_part - self._rows)
            if take:
                self._writer.write_table(
                    table.slice(offset, take), row_group_size=self.row_group_rows
                )
            self._rows += take
            name, rows = self.parts[-1]
            self.parts[-1] = (name, rows + take)
            offset += take

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close_parts(self) -> list[tuple[str, int]]:
        """Close the last part (writing one empty part when nothing was written, so a
        0-row batch keeps its schema); the parts' names and rows."""
        if not self.parts:
            self._open()
        self.close()
        return self.parts

    def finish(self) -> list[dict[str, Any]]:
        """Close the last part; the parts as manifest ``files`` entries."""
        from mlops_loop.core.storage import sha256_file

        self.close_parts()
        return [
            {
                "name": name,
                "size": (self.folder / name).stat().st_size,
                "sha256": sha256_file(self.folder / name),
                "rows": rows,
            }
            for name, rows in self.parts
        ]


# --------------------------------------------------------------------------- result


@dataclass(frozen=True)
class SnapshotResult:
    """What ingestion produced (or found already present, ``created=False``)."""

    snapshot_uri: str
    sha256: str
    rows: int
    ds: str
    dataset: str
    created: bool
    source_uri: str
    manifest_uri: str
    # Human-readable findings for the log (type mismatches, missing/extra columns);
    # the quality gate reads the manifest, not these.
    issues: tuple[str, ...] = field(default=(), compare=False)

    def to_xcom(self) -> dict[str, Any]:
        """Small JSON-able dict for XCom."""
        out = asdict(self)
        out.pop("issues")
        return out


def manifest_issues(manifest: dict[str, Any]) -> tuple[str, ...]:
    """Readable one-liners for what the manifest flags for the quality gate."""
    out = []
    for name, info in sorted(manifest.get("type_mismatches", {}).items()):
        out.append(
            f"column {name!r}: {info['count']} value(s) not {info['declared_type']}, "
            f"kept as text (e.g. {info['examples']})"
        )
    if manifest.get("missing_columns"):
        out.append(f"missing columns {manifest['missing_columns']}")
    if manifest.get("unexpected_columns"):
        out.append(f"unexpected columns {manifest['unexpected_columns']}")
    if manifest.get("rows") == 0:
        out.append("0 data rows")
    return tuple(out)

"""Content-addressed Parquet snapshots of landed batches.

A landed batch (``config.source_uri(ds)``: a local folder or an ``s3://`` prefix holding one
or more CSV or Parquet files) becomes an immutable snapshot under
``{root}/snapshots/<sha256>/``: Parquet parts plus a ``manifest.json`` that is written
last. A snapshot exists only once its manifest does.

The sha256 is computed from the source files' checksums and names, the part of the config
that shapes the output (columns and their types, format, CSV options),
:data:`SNAPSHOT_FORMAT_VERSION`, and the dataset name and logical date, *before* anything is
written: re-ingesting the same batch finds the manifest and writes nothing. The dataset and
date are part of the address because the manifest records them and the batch's source files:
byte-identical batches landed for two dates get two snapshots, so each manifest's ``ds`` and
``source`` are right (the quality gate checks the date and quarantines those files).

Types are normalised per the config, but bad values are never coerced away: when any
non-null value of a column cannot be parsed as its declared type, the whole column is kept
as text and the manifest records it under ``type_mismatches`` with example values, so the
quality gate can fail the batch and name them. Missing and unexpected columns are recorded
the same way. Files are read in chunks (``config.ingest.rows_per_chunk``) and written with a
streaming Parquet writer, so a batch larger than memory works.

Readers (:func:`load_manifest`, :func:`read_snapshot`, :func:`read_snapshot_table`,
:func:`iter_snapshot_batches`) are what the other stages use.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_loop.core.config import ColumnType, DatasetConfig, check_ds
from mlops_loop.core.storage import (
    CHUNK,
    LocalStorage,
    ObjectInfo,
    S3Credentials,
    S3Storage,
    Storage,
    is_s3,
    join_uri,
    open_storage,
    read_json,
    sha256_file,
    split_s3,
    write_json,
)
from mlops_loop.exceptions import (
    BucketNotFoundError,
    MixedSchemaError,
    NoBatchError,
    SnapshotNotFoundError,
    SourceFileError,
    StorageError,
)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

# Bump when the way snapshots are produced changes (parsing, normalisation, layout): the
# same raw batch then gets a new address instead of silently reusing an old snapshot.
SNAPSHOT_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SNAPSHOTS_DIR = "snapshots"
# A part file rolls over after this many rows (row groups are rows_per_chunk).
ROWS_PER_PART = 5_000_000
DEFAULT_BATCH_SIZE = 65_536
# Local staging folders of interrupted writes older than this are removed on the next write.
STALE_STAGING_SECONDS = 3600
STAGING_PREFIX = ".tmp-"

EXTENSIONS: dict[str, tuple[str, ...]] = {
    "csv": (".csv", ".csv.gz", ".csv.bz2"),
    "parquet": (".parquet", ".pq"),
}
OTHER_DELIMITERS = (",", ";", "\t", "|")
TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no")
MAX_EXAMPLES = 5


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
def _local_part(storage: Storage, uri: str) -> Iterator[Path]:
    if isinstance(storage, LocalStorage):
        if not os.path.exists(uri):
            raise StorageError(f"snapshot part {uri} listed in the manifest is missing", uri=uri)
        yield Path(uri)
    else:
        with storage.local_copy(uri) as path:
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
        with _local_part(storage, join_uri(snapshot_uri, part["name"])) as path:
            tables.append(pq.read_table(path, columns=cols))
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


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
    import pyarrow.parquet as pq

    manifest = load_manifest(snapshot_uri, credentials=credentials)
    _check_requested_columns(manifest, columns, snapshot_uri)
    storage = open_storage(snapshot_uri, credentials)
    cols = list(columns) if columns is not None else None
    for part in manifest["files"]:
        with _local_part(storage, join_uri(snapshot_uri, part["name"])) as path:
            pfile = pq.ParquetFile(path)
            try:
                for batch in pfile.iter_batches(batch_size=batch_size, columns=cols):
                    yield batch.to_pandas()
            finally:
                pfile.close()


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


# --------------------------------------------------------------------------- source files


@dataclass(frozen=True)
class SourceFile:
    """One landed file, available on local disk for the duration of the ingest."""

    uri: str
    name: str  # path relative to the batch prefix; part of the content hash
    size: int
    sha256: str
    local_path: Path


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


def _materialise(
    storage: Storage, files: list[tuple[ObjectInfo, str]], workdir: Path
) -> list[SourceFile]:
    """Each file on local disk with its sha256: local files are read where they are,
    remote ones downloaded into ``workdir`` (hashed while downloading)."""
    out = []
    for i, (obj, rel) in enumerate(files):
        if isinstance(storage, LocalStorage):
            local = Path(obj.uri)
            sha = sha256_file(local)
        else:
            local = workdir / f"{i:05d}-{obj.name}"
            sha = storage.download(obj.uri, local)
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


# --------------------------------------------------------------------------- type normalisation


def arrow_type(ctype: ColumnType) -> pa.DataType:
    import pyarrow as pa

    return {
        ColumnType.INTEGER: pa.int64(),
        ColumnType.FLOAT: pa.float64(),
        ColumnType.STRING: pa.string(),
        ColumnType.CATEGORY: pa.string(),
        ColumnType.BOOLEAN: pa.bool_(),
        ColumnType.DATE: pa.date32(),
        ColumnType.TIMESTAMP: pa.timestamp("us"),
    }[ctype]


@dataclass
class Conversion:
    """A column converted to its declared type; ``bad`` values became null here and
    ``examples`` holds up to five of them as text."""

    array: pa.Array
    bad: int = 0
    examples: list[str] = field(default_factory=list)


def _is_text(t: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def to_text(arr: pa.Array) -> pa.Array:
    """Any column as text (what a column with type mismatches is kept as)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_string(arr.type):
        return arr
    try:
        return pc.cast(arr, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = arr.to_pylist()
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def _parse_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        number = float(text)
        if not number.is_integer():
            raise
        value = int(number)
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{text} is outside the int64 range")
    return value


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in TRUE_WORDS:
        return True
    if low in FALSE_WORDS:
        return False
    raise ValueError(text)


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        # A timestamp at midnight (how many tools write dates) is a date; any other time
        # of day is not.
        value = datetime.fromisoformat(text)
        if value.tzinfo is not None or value.time() != datetime.min.time():
            raise
        return value.date()


def _parse_timestamp(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


PYTHON_PARSERS: dict[ColumnType, Callable[[str], Any]] = {
    ColumnType.INTEGER: _parse_int,
    ColumnType.FLOAT: float,
    ColumnType.BOOLEAN: _parse_bool,
    ColumnType.DATE: _parse_date,
    ColumnType.TIMESTAMP: _parse_timestamp,
}


def _parse_each(text: pa.Array, ctype: ColumnType) -> Conversion:
    """Value-by-value parse: the slow path, only taken when the vectorised casts fail, so
    it can say exactly which values are bad."""
    import pyarrow as pa

    parse = PYTHON_PARSERS[ctype]
    out: list[Any] = []
    bad = 0
    examples: list[str] = []
    for value in text.to_pylist():
        if value is None:
            out.append(None)
            continue
        try:
            out.append(parse(value))
        except (ValueError, OverflowError):
            out.append(None)
            bad += 1
            if len(examples) < MAX_EXAMPLES and value not in examples:
                examples.append(value)
    return Conversion(pa.array(out, type=arrow_type(ctype)), bad, examples)


def _parse_text(arr: pa.Array, ctype: ColumnType) -> Conversion:
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.utf8_trim_whitespace(pc.cast(arr, pa.string()))
    text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
    target = arrow_type(ctype)
    if ctype is ColumnType.BOOLEAN:
        low = pc.utf8_lower(text)
        is_true = pc.is_in(low, value_set=pa.array(TRUE_WORDS))
        known = pc.or_(is_true, pc.is_in(low, value_set=pa.array(FALSE_WORDS)))
        if pc.all(pc.or_kleene(known, pc.is_null(text))).as_py():
            return Conversion(pc.if_else(pc.is_null(text), pa.scalar(None, pa.bool_()), is_true))
        return _parse_each(text, ctype)
    attempts: list[Callable[[], pa.Array]] = [lambda: pc.cast(text, target)]
    if ctype is ColumnType.INTEGER:
        attempts.append(lambda: pc.cast(pc.cast(text, pa.float64()), target))
    if ctype is ColumnType.TIMESTAMP:
        attempts.append(lambda: pc.cast(pc.cast(text, pa.timestamp("us", "UTC")), target))
    for attempt in attempts:
        try:
            return Conversion(attempt())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return _parse_each(text, ctype)


def _has_time_of_day(timestamps: pa.Array, dates: pa.Array) -> bool:
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_timestamp(timestamps.type):
        return False
    same = pc.equal(pc.cast(dates, timestamps.type), timestamps)
    return pc.all(same).as_py() is False


def convert_column(arr: pa.Array, ctype: ColumnType) -> Conversion:
    """Convert one column chunk to the Arrow type of ``ctype``; values that do not parse
    are counted (and nulled in the returned array)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    target = arrow_type(ctype)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if target == pa.string():
        return Conversion(to_text(arr))
    if not _is_text(arr.type):
        if arr.type == target:
            return Conversion(arr)
        typed_ok = not (
            ctype is ColumnType.BOOLEAN
            and pa.types.is_integer(arr.type)
            and pc.any(pc.invert(pc.is_in(arr, value_set=pa.array([0, 1], arr.type)))).as_py()
        )
        if typed_ok:
            try:
                converted = pc.cast(arr, target, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                converted = None
            # Arrow casts timestamps to dates by dropping the time of day; a date column
            # holding times is a mismatch, not something to truncate.
            if converted is not None and not (
                ctype is ColumnType.DATE and _has_time_of_day(arr, converted)
            ):
                return Conversion(converted)
        arr = to_text(arr)
    return _parse_text(arr, ctype)


# --------------------------------------------------------------------------- reading source files


def _arrow_encoding(encoding: str) -> str:
    return "utf8" if codecs.lookup(encoding).name == "utf-8" else encoding


def _find_decode_error(path: Path, encoding: str) -> str | None:
    """Where the file stops being valid ``encoding`` text, or None if it decodes."""
    import pyarrow as pa

    decoder = codecs.getincrementaldecoder(encoding)()
    offset, line = 0, 1
    with pa.input_stream(str(path)) as stream:
        while True:
            block = stream.read(CHUNK)
            final = not block
            try:
                decoder.decode(block, final=final)
            except UnicodeDecodeError as exc:
                start = max(0, min(exc.start, len(block)))
                bad = block[start : start + 4] if block else b""
                at_line = line + block[:start].count(b"\n")
                return f"byte {offset + start} (line {at_line}): {bad!r}"
            if final:
                return None
            offset += len(block)
            line += block.count(b"\n")


@dataclass
class _Reader:
    """Reads one source file as chunks of Arrow record batches."""

    file: SourceFile
    config: DatasetConfig
    source_uri: str

    @property
    def fmt(self) -> str:
        return self.config.source.format

    def fail(self, message: str, reason: str) -> SourceFileError:
        return SourceFileError(
            f"{self.file.uri}: {message}",
            source_uri=self.source_uri,
            file_uri=self.file.uri,
            reason=reason,
        )

    # -- CSV
    def _csv_block_size(self, rows: int) -> int:
        """Bytes per read block for about ``rows`` rows (Arrow reads CSV by bytes)."""
        with open(self.file.local_path, "rb") as fh:
            sample = fh.read(1 << 20)
        if self.file.name.lower().endswith((".gz", ".bz2")):
            return 1 << 24
        lines = sample.split(b"\n")
        longest = max((len(x) for x in lines), default=1)
        per_row = max(1.0, len(sample) / max(1, len(lines)))
        wanted = int(per_row * rows)
        return max(4096, 4 * longest + 1024, min(wanted, 1 << 30))

    def _csv_error(self, exc: BaseException) -> SourceFileError:
        csv = self.config.source.csv
        where = _find_decode_error(self.file.local_path, csv.encoding)
        if where is not None:
            return self.fail(
                f"not valid {csv.encoding} text at {where}; set source.csv.encoding to the "
                "file's encoding (for example latin-1 or cp1252)",
                "encoding",
            )
        if "Empty CSV file" in str(exc):
            return self.fail("is empty (no header line)", "empty")
        return self.fail(
            f"cannot be parsed as CSV (delimiter {csv.delimiter!r}, quote {csv.quote_char!r}): {exc}",
            "malformed",
        )

    def _open_csv(self, column_types: dict[str, pa.DataType] | None, rows: int) -> Any:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        csv = self.config.source.csv
        try:
            return pacsv.open_csv(
                str(self.file.local_path),
                read_options=pacsv.ReadOptions(
                    encoding=_arrow_encoding(csv.encoding), block_size=self._csv_block_size(rows)
                ),
                parse_options=pacsv.ParseOptions(
                    delimiter=csv.delimiter, quote_char=csv.quote_char, newlines_in_values=True
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types=column_types,
                    null_values=csv.null_values,
                    strings_can_be_null=True,
                ),
            )
        except (pa.ArrowException, UnicodeDecodeError, OSError) as exc:
            raise self._csv_error(exc) from exc

    def _csv_names(self) -> list[str]:
        csv = self.config.source.csv
        reader = self._open_csv(None, rows=256)  # the header and a few rows
        names: list[str] = list(reader.schema.names)
        reader.close()
        if len(names) == 1 and len(self.config.columns) > 1:
            for other in OTHER_DELIMITERS:
                if other != csv.delimiter and other in names[0]:
                    raise self.fail(
                        f"header parses as a single column {names[0][:80]!r}; looks like "
                        f"{other!r}-delimited, config says {csv.delimiter!r} (source.csv.delimiter)",
                        "delimiter",
                    )
        return names

    # -- both
    def schema(self) -> pa.Schema:
        """Column names (and for Parquet, types) of the file."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.file.size == 0:
            raise self.fail("is empty (0 bytes)", "empty")
        if self.fmt == "csv":
            names = self._csv_names()
            schema = (
                pa.schema([pa.field(n, pa.string()) for n in names])
                if len(set(names)) == len(names)
                else None
            )
        else:
            try:
                with pq.ParquetFile(self.file.local_path) as pfile:
                    schema = pfile.schema_arrow
            except (pa.ArrowException, OSError) as exc:
                raise self.fail(
                    f"is not a readable Parquet file (truncated or corrupted?): {exc}", "corrupt"
                ) from exc
            names = list(schema.names)
            if len(set(names)) != len(names):
                schema = None
        if schema is None:
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise self.fail(f"has duplicate column names {dupes}", "malformed")
        return schema

    def batches(self, names: Sequence[str]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.fmt == "csv":
            reader = self._open_csv(
                {n: pa.string() for n in names}, rows=self.config.ingest.rows_per_chunk
            )
            try:
                while True:
                    try:
                        batch = reader.read_next_batch()
                    except StopIteration:
                        return
                    except (pa.ArrowException, UnicodeDecodeError, OSError) as exc:
                        raise self._csv_error(exc) from exc
                    yield batch
            finally:
                reader.close()
        else:
            try:
                pfile = pq.ParquetFile(self.file.local_path)
            except (pa.ArrowException, OSError) as exc:
                raise self.fail(f"is not a readable Parquet file: {exc}", "corrupt") from exc
            try:
                it = pfile.iter_batches(batch_size=self.config.ingest.rows_per_chunk)
                while True:
                    try:
                        batch = next(it)
                    except StopIteration:
                        return
                    except (pa.ArrowException, OSError) as exc:
                        raise self.fail(
                            f"is not a readable Parquet file (truncated or corrupted?): {exc}",
                            "corrupt",
                        ) from exc
                    yield batch
            finally:
                pfile.close()


# --------------------------------------------------------------------------- building a snapshot


@dataclass
class _Plan:
    """How every chunk of the batch becomes the output schema."""

    declared: dict[str, ColumnType]
    out_columns: list[str]
    extra_types: dict[str, pa.DataType]
    missing: list[str]
    unexpected: list[str]
    as_text: set[str] = field(default_factory=set)

    def schema(self) -> pa.Schema:
        import pyarrow as pa

        fields = []
        for name in self.out_columns:
            if name in self.extra_types:
                fields.append(pa.field(name, self.extra_types[name]))
            elif name in self.as_text:
                fields.append(pa.field(name, pa.string()))
            else:
                fields.append(pa.field(name, arrow_type(self.declared[name])))
        return pa.schema(fields)


def _plan(
    config: DatasetConfig, readers: list[_Reader], source_uri: str
) -> tuple[_Plan, list[str]]:
    import pyarrow as pa

    schemas = [r.schema() for r in readers]
    first_names = list(schemas[0].names)
    for reader, schema in zip(readers[1:], schemas[1:], strict=True):
        names = list(schema.names)
        if set(names) != set(first_names):
            missing = [n for n in first_names if n not in names]
            extra = [n for n in names if n not in first_names]
            raise MixedSchemaError(
                f"mixed schemas in the batch at {source_uri}: {reader.file.name} differs from "
                f"{readers[0].file.name} (missing {missing}, extra {extra})",
                source_uri=source_uri,
                file_uri=reader.file.uri,
            )
    declared = {c.name: c.type for c in config.columns}
    present = set(first_names)
    unexpected = [n for n in first_names if n not in declared]
    extra_types: dict[str, pa.DataType] = {}
    for name in unexpected:
        types = set()
        for schema in schemas:
            t = schema.field(name).type
            if pa.types.is_dictionary(t):
                t = t.value_type
            if not pa.types.is_null(t):
                types.add(t)
        extra_types[name] = types.pop() if len(types) == 1 else pa.string()
    plan = _Plan(
        declared=declared,
        out_columns=[n for n in config.column_names if n in present] + unexpected,
        extra_types=extra_types,
        missing=[n for n in config.column_names if n not in present],
        unexpected=unexpected,
    )
    return plan, first_names


@dataclass
class _Mismatch:
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, conv: Conversion) -> None:
        self.count += conv.bad
        for ex in conv.examples:
            if len(self.examples) < MAX_EXAMPLES and ex not in self.examples:
                self.examples.append(ex)


def _normalise(
    batch: pa.RecordBatch, plan: _Plan, schema: pa.Schema, mismatches: dict[str, _Mismatch] | None
) -> pa.Table:
    import pyarrow as pa
    import pyarrow.compute as pc

    arrays = []
    for name in plan.out_columns:
        arr = batch.column(name)
        if name in plan.extra_types:
            if pa.types.is_dictionary(arr.type):
                arr = arr.dictionary_decode()
            want = plan.extra_types[name]
            arr = to_text(arr) if want == pa.string() else pc.cast(arr, want)
        elif name in plan.as_text:
            arr = to_text(arr)
        else:
            conv = convert_column(arr, plan.declared[name])
            if conv.bad and mismatches is not None:
                mismatches.setdefault(name, _Mismatch()).add(conv)
            arr = conv.array
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, schema=schema)


class _PartWriter:
    """Writes ``part-NNNNN.parquet`` files into a local folder, rolling over every
    ROWS_PER_PART rows; always writes at least one part (a 0-row batch keeps its schema)."""

    def __init__(self, folder: Path, schema: pa.Schema, row_group_rows: int) -> None:
        self.folder = folder
        self.schema = schema
        self.row_group_rows = row_group_rows
        self.parts: list[tuple[str, int]] = []
        self._writer: Any = None
        self._rows = 0

    def _open(self) -> None:
        import pyarrow.parquet as pq

        name = f"part-{len(self.parts):05d}.parquet"
        self.parts.append((name, 0))
        self._writer = pq.ParquetWriter(self.folder / name, self.schema, compression="zstd")
        self._rows = 0

    def write(self, table: pa.Table) -> None:
        offset = 0
        while offset < table.num_rows or self._writer is None:
            if self._writer is None or self._rows >= ROWS_PER_PART:
                self.close()
                self._open()
            take = min(table.num_rows - offset, ROWS_PER_PART - self._rows)
            piece = table.slice(offset, take)
            if take:
                self._writer.write_table(piece, row_group_size=self.row_group_rows)
            self._rows += take
            name, rows = self.parts[-1]
            self.parts[-1] = (name, rows + take)
            offset += take

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def finish(self) -> list[tuple[str, int]]:
        if not self.parts:
            self._open()
        self.close()
        return self.parts


def _write_parts(
    readers: list[_Reader], names: list[str], plan: _Plan, stage: Path, rows_per_chunk: int
) -> tuple[list[tuple[str, int]], dict[str, _Mismatch]]:
    """Convert and write all chunks; when a column turns out to hold values that are not
    its declared type, write again with that column kept as text (good batches: one pass)."""
    mismatches: dict[str, _Mismatch] = {}
    for attempt in range(2):
        for old in stage.glob("part-*.parquet"):
            old.unlink()
        schema = plan.schema()
        writer = _PartWriter(stage, schema, rows_per_chunk)
        writing = True
        try:
            for reader in readers:
                for batch in reader.batches(names):
                    table = _normalise(batch, plan, schema, mismatches if attempt == 0 else None)
                    if mismatches and attempt == 0:
                        writing = False  # keep scanning to count every bad value
                    if writing:
                        writer.write(table)
        finally:
            writer.close()
        if writing:
            return writer.finish(), mismatches
        plan.as_text = set(mismatches)
    raise AssertionError("unreachable: the second pass always writes")


def _build_manifest(
    *,
    config: DatasetConfig,
    ds: str,
    sha: str,
    source_uri: str,
    files: list[SourceFile],
    plan: _Plan,
    parts: list[tuple[str, int]],
    stage: Path,
    mismatches: dict[str, _Mismatch],
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


# --------------------------------------------------------------------------- publishing


def _remove_stale_staging(snapshots_dir: Path, sha: str) -> None:
    cutoff = time.time() - STALE_STAGING_SECONDS
    for leftover in snapshots_dir.glob(f"{STAGING_PREFIX}{sha}-*"):
        with contextlib.suppress(OSError):
            if leftover.stat().st_mtime < cutoff:
                shutil.rmtree(leftover, ignore_errors=True)


def _publish_local(stage: Path, final: Path) -> bool:
    """Move a complete staging folder into place; False if another writer won."""
    if (final / MANIFEST_NAME).exists():
        return False
    if final.exists():
        # Leftovers of a write that never got its manifest: not a snapshot, replace them.
        log.warning("replacing incomplete snapshot folder %s (no manifest)", final)
        shutil.rmtree(final)
    os.rename(stage, final)
    return True


def _publish_s3(
    storage: S3Storage, stage: Path, snapshot_uri: str, manifest: dict[str, Any]
) -> None:
    names = {f["name"] for f in manifest["files"]}
    for name in sorted(names):
        storage.upload(stage / name, join_uri(snapshot_uri, name))
    # Parts left by an interrupted earlier write that this snapshot does not list.
    for stale in storage.list(snapshot_uri + "/"):
        if stale.name not in names and stale.name != MANIFEST_NAME:
            storage.delete(stale.uri)
    write_json(storage, manifest_uri_of(snapshot_uri), manifest)


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

        readers = [_Reader(f, config, source_uri) for f in files]
        plan, names = _plan(config, readers, source_uri)

        if isinstance(dst, LocalStorage):
            snapshots_dir = Path(root) / SNAPSHOTS_DIR
            try:
                snapshots_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create {snapshots_dir}: {exc}", uri=root) from exc
            _remove_stale_staging(snapshots_dir, sha)
            stage = snapshots_dir / f"{STAGING_PREFIX}{sha}-{uuid.uuid4().hex[:12]}"
        else:
            stage = Path(tmp) / "snapshot"
        stage.mkdir()
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
            if isinstance(dst, LocalStorage):
                write_json(dst, str(stage / MANIFEST_NAME), manifest)
                created = _publish_local(stage, Path(snapshot_uri))
                if not created:
                    return result(read_json(dst, manifest_uri), created=False)
            else:
                assert isinstance(dst, S3Storage)
                _publish_s3(dst, stage, snapshot_uri, manifest)
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
        out = result(manifest, created=True)
        log.info("snapshot %s written for ds=%s: %d rows", snapshot_uri, ds, out.rows)
        return out

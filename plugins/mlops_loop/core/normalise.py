"""Landed source files read and converted to the types the dataset config declares.

:class:`SourceReader` reads one CSV or Parquet file in chunks of Arrow record batches and
names what is wrong with a bad file (:class:`~mlops_loop.exceptions.SourceFileError` with a
``reason``). :func:`plan_output` checks that the batch's files agree on their columns and
decides the output schema: declared columns in config order, then unexpected ones.
:func:`normalise_batch` converts each chunk with :func:`convert_column`.

Bad values are never coerced away: a value that does not parse as its column's declared
type is counted, with examples (:class:`TypeMismatch`), so the caller can keep the whole
column as text and record it for the quality gate.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_loop.core.config import ColumnType, DatasetConfig
from mlops_loop.core.storage import CHUNK
from mlops_loop.exceptions import MixedSchemaError, SourceFileError

if TYPE_CHECKING:
    import pyarrow as pa

OTHER_DELIMITERS = (",", ";", "\t", "|")
TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no")
MAX_EXAMPLES = 5


# --------------------------------------------------------------------------- source files


@dataclass(frozen=True)
class SourceFile:
    """One landed file, available on local disk for the duration of the ingest."""

    uri: str
    name: str  # path relative to the batch prefix; part of the content hash
    size: int
    sha256: str
    local_path: Path


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
class SourceReader:
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


# --------------------------------------------------------------------------- output schema


@dataclass
class OutputPlan:
    """How every chunk of the batch becomes the output schema. ``as_text``: declared
    columns kept as text because some of their values are not the declared type."""

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


def plan_output(
    config: DatasetConfig, readers: list[SourceReader], source_uri: str
) -> tuple[OutputPlan, list[str]]:
    """The output plan and the column names as the first file has them.

    Raises MixedSchemaError when the files disagree on their set of columns (order may
    differ), SourceFileError when a file cannot be read."""
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
    plan = OutputPlan(
        declared=declared,
        out_columns=[n for n in config.column_names if n in present] + unexpected,
        extra_types=extra_types,
        missing=[n for n in config.column_names if n not in present],
        unexpected=unexpected,
    )
    return plan, first_names


@dataclass
class TypeMismatch:
    """Values of one column, over all chunks, that are not its declared type."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, conv: Conversion) -> None:
        self.count += conv.bad
        for ex in conv.examples:
            if len(self.examples) < MAX_EXAMPLES and ex not in self.examples:
                self.examples.append(ex)


def normalise_batch(
    batch: pa.RecordBatch,
    plan: OutputPlan,
    schema: pa.Schema,
    mismatches: dict[str, TypeMismatch] | None,
) -> pa.Table:
    """One chunk in the plan's column order and types; values that do not parse are
    counted into ``mismatches`` (when given) by column name."""
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
                mismatches.setdefault(name, TypeMismatch()).add(conv)
            arr = conv.array
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, schema=schema)

"""The quality gate: a Great Expectations 1.x suite run on a snapshot.

Suites are plain JSON in GE's own format (``name`` + ``expectations`` with ``type``,
``kwargs`` and ``meta``) so a person can review them in a pull request:

- :func:`suite_from_config` derives the validity checks from the dataset config's schema
  (columns, types, nulls, ranges, categories, id uniqueness, row count).
- :func:`starter_suite` adds profile checks from a reference snapshot (means and medians
  within widened bounds, observed category sets) for a person to review; each
  expectation's ``meta.source`` says whether it came from the schema or the profile.
- :func:`validate_snapshot` runs the config's suite on a snapshot. Pass: the validation
  result and the Data Docs site go to ``reports/quality/``. Fail: the landed batch files are
  copied (never moved) to ``quarantine/`` with the result, the Data Docs and a readable
  summary, then :class:`~mlops_loop.exceptions.QualityGateFailed` is raised.

Great Expectations and pandas are imported inside functions: importing this module is
cheap, and it never imports Airflow.

Bounded memory (``quality.chunk_rows``): a snapshot of up to ``chunk_rows`` rows is read
whole and validated as one GE batch (:func:`run_suite`). A bigger one goes through
:func:`run_suite_chunked`, which never holds more than one column or one chunk of the
batch, and gives the same result as a whole-batch run (tested on every kind it computes):

- The single-column checks the suites are made of are computed exactly over the whole
  batch, one column at a time as an Arrow array (no Python objects), in GE's result shape
  with GE's own normalised ``expectation_config``. GE's pandas engine spends about 10x the
  time of the same checks in numpy on them (docs/benchmarks.md), so this is written by
  hand, and tested against GE's results value by value:

  - row-level (:func:`row_result`): not null, values between (numeric columns), values in
    a set (text, integer, float and boolean columns). Missing is null or, in a float
    column, NaN, as in GE's pandas engine; ``mostly`` and strict bounds as GE applies
    them. ``partial_unexpected_list`` / ``partial_unexpected_index_list`` are the first 20
    unexpected values / row numbers in row order (exact); ``partial_unexpected_counts`` is
    counted over those 20 examples, so with more than 20 unexpected values it can differ
    from a whole-batch run's.
  - type checks (type list, of type): judged by GE itself on a sample of the column with
    the batch's pandas dtype (:func:`type_check_results`). GE decides a non-object column
    by its dtype; an object column value by value, by Python type, which all present
    values of an Arrow column share. A failing type check goes to GE over the chunks, so
    its counts and examples are GE's own.
  - aggregates (:func:`aggregate_result`): row count, mean and median (numpy; nulls and
    NaN skipped, the median of an even count the mean of the middle two, as pandas takes
    it), uniqueness (sorted with Arrow: every row of a repeated value is unexpected, as GE
    counts it, with the first 20 such rows as examples), distinct values containing a set,
    and the distinct value count. No error bound: the same numbers as a whole-batch run,
    up to float summation order for the mean. Memory: one column of the batch (80 MB per
    10M numbers).
- Every other row-level expectation (regex, lengths, a ``row_condition``, a custom type,
  a check of several columns) is judged by GE on each chunk of ``chunk_rows`` rows
  (:func:`iter_validation_chunks`, a few row groups at a time). Element, missing and
  unexpected counts are summed, and percentages and ``success`` (``mostly`` included) are
  recomputed over the whole batch exactly as GE does; examples as above.
- Expectations about the set of columns run in GE on the first chunk (or, when no chunk is
  needed, on an empty frame with the snapshot's columns): every part file's schema is
  checked against the manifest first, so the first part's columns are the batch's.
- Any other whole-batch kind (quantiles, stdev, a custom type) is judged once by GE on a
  frame holding only the column(s) it names (``chunk_rows x columns / rows`` columns per
  run, at least one); a text column then becomes Python strings, several times its Arrow
  size, so suites with such checks on text columns need more memory.

The merged result has the shape of a whole-batch result (``success``, ``statistics``,
``results[]`` with ``expectation_config`` and ``result``; ``meta`` says
``mlops_loop_chunked``), so the summary, quarantine and stored JSON work unchanged. Data
Docs are built by GE from the merged result (put in the context's validation results
store as an ExpectationSuiteValidationResult, then ``build_data_docs``).

Either way, a snapshot whose part files disagree with the manifest's schema (a column
missing, extra or of another Arrow type) is refused with QualityGateFailed naming the part
file and the column, before anything is validated or stored.

Command line (writes a starter suite for review)::

    python -m mlops_loop.core.quality suggest --config include/config/credit_default.yaml \\
        --snapshot <snapshot uri> [--snapshot <uri> ...] --out include/expectations/x.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_loop.core.config import ColumnType, DatasetConfig, check_ds, load_config
from mlops_loop.core.storage import S3Credentials, copy_between, join_uri, open_storage, write_json
from mlops_loop.exceptions import QualityGateFailed, QualitySuiteError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

SOURCE_SCHEMA = "schema"
SOURCE_PROFILE = "profile"
TABLE = "(table)"
NO_DATA = "no values to compute a statistic on"
EXAMPLES = 5
# Half-width of a profile bound, in reference standard deviations. Loose enough that a
# drifted but valid batch passes (drift is monitored elsewhere), tight enough to catch a
# units change such as income in thousands instead of units.
DEFAULT_TOLERANCE = 1.5
# Up to this many distinct values, a text column is treated as categorical by the profile.
MAX_PROFILE_CATEGORIES = 50
# A category must be this common to be required in every batch: expected count at the
# smallest allowed batch (quality.min_rows), so a rare category missing by chance is
# practically impossible (P(absent) = exp(-10)).
MIN_EXPECTED_CATEGORY_COUNT = 10

_INT_TYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
_NULLABLE_INT_TYPES = ["Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64"]
_DATETIME_TYPES = ["datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]"]
# pandas dtype names each logical type may arrive as after a snapshot is read back. Text
# and categories are checked per value ("str"): see frame_for_validation.
TYPE_LISTS: dict[ColumnType, list[str]] = {
    ColumnType.INTEGER: _INT_TYPES + _NULLABLE_INT_TYPES,
    ColumnType.FLOAT: ["float16", "float32", "float64", "Float32", "Float64"],
    ColumnType.STRING: ["str"],
    ColumnType.CATEGORY: ["str"],
    ColumnType.BOOLEAN: ["bool", "boolean"],
    ColumnType.DATE: ["date", *_DATETIME_TYPES],
    ColumnType.TIMESTAMP: _DATETIME_TYPES,
}


# --------------------------------------------------------------------------- suites


def _expectation(kind: str, source: str, note: str, **kwargs: Any) -> dict[str, Any]:
    return {"type": kind, "kwargs": kwargs, "meta": {"source": source, "note": note}}


def type_list_for(config: DatasetConfig, column: str) -> list[str]:
    """pandas dtype names accepted for a column of the config's logical type."""
    spec = config.column(column)
    names = list(TYPE_LISTS[spec.type])
    if spec.type is ColumnType.INTEGER and spec.nullable:
        # Arrow int64 with nulls reads back into pandas as float64.
        names.append("float64")
    return names


def suite_from_config(config: DatasetConfig) -> dict[str, Any]:
    """The validity checks the config's schema and quality settings imply, as GE suite JSON."""
    q = config.quality
    exps: list[dict[str, Any]] = [
        _expectation(
            "expect_table_columns_to_match_set",
            SOURCE_SCHEMA,
            "exactly the configured columns, in any order",
            column_set=config.column_names,
            exact_match=True,
        ),
        _expectation(
            "expect_table_row_count_to_be_between",
            SOURCE_SCHEMA,
            "quality.min_rows / quality.max_rows",
            min_value=q.min_rows,
            max_value=q.max_rows,
        ),
    ]
    for spec in config.columns:
        name = spec.name
        exps.append(
            _expectation(
                "expect_column_values_to_be_in_type_list",
                SOURCE_SCHEMA,
                f"declared type {spec.type.value}",
                column=name,
                type_list=type_list_for(config, name),
            )
        )
        if not spec.nullable:
            exps.append(
                _expectation(
                    "expect_column_values_to_not_be_null",
                    SOURCE_SCHEMA,
                    "nullable: false",
                    column=name,
                )
            )
        else:
            max_null = (
                spec.max_null_fraction
                if spec.max_null_fraction is not None
                else q.default_max_null_fraction
            )
            if max_null < 1.0:
                exps.append(
                    _expectation(
                        "expect_column_values_to_not_be_null",
                        SOURCE_SCHEMA,
                        f"at most {max_null:.0%} nulls",
                        column=name,
                        mostly=round(1.0 - max_null, 6),
                    )
                )
        if spec.type.is_numeric and (spec.min is not None or spec.max is not None):
            exps.append(
                _expectation(
                    "expect_column_values_to_be_between",
                    SOURCE_SCHEMA,
                    "min / max",
                    column=name,
                    min_value=spec.min,
                    max_value=spec.max,
                )
            )
        if spec.allowed is not None:
            exps.append(
                _expectation(
                    "expect_column_values_to_be_in_set",
                    SOURCE_SCHEMA,
                    "allowed values",
                    column=name,
                    value_set=list(spec.allowed),
                )
            )
    exps.extend(_target_expectations(config))
    if config.id_column is not None:
        exps.append(
            _expectation(
                "expect_column_values_to_be_unique",
                SOURCE_SCHEMA,
                "id_column",
                column=config.id_column,
            )
        )
    return {
        "name": f"{config.name}.quality",
        "expectations": exps,
        "meta": {"mlops_loop": {"dataset": config.name, "generated_from": "config schema"}},
    }


def _target_expectations(config: DatasetConfig) -> list[dict[str, Any]]:
    """A binary target holds at most two labels, 0/1 unless positive_label says otherwise,
    so a multiclass or mislabelled batch stops at the gate instead of in the trainer."""
    if config.task != "classification":
        return []
    spec = config.column(config.target)
    exps = [
        _expectation(
            "expect_column_unique_value_count_to_be_between",
            SOURCE_SCHEMA,
            "binary target: at most two labels (multiclass targets are not supported)",
            column=config.target,
            min_value=None,
            max_value=2,
        )
    ]
    if spec.type.is_numeric and config.positive_label is None and spec.allowed is None:
        exps.append(
            _expectation(
                "expect_column_values_to_be_in_set",
                SOURCE_SCHEMA,
                "binary target: labels 0/1 (positive_label names another)",
                column=config.target,
                value_set=[0, 1],
            )
        )
    return exps


def _round_out(value: float, *, down: bool, digits: int = 4) -> float:
    """Round to ``digits`` significant digits, away from the inside of a bound."""
    if value == 0 or not math.isfinite(value):
        return float(value)
    exponent = math.floor(math.log10(abs(value))) - digits + 1
    scale = 10.0**exponent
    rounded = (math.floor if down else math.ceil)(value / scale) * scale
    return float(f"{rounded:.{digits + 2}g}")


def _bounds(
    center: float, width: float, floor: float | None = None, ceiling: float | None = None
) -> tuple[float, float]:
    """center +/- width, rounded outwards and kept inside the schema's [min, max]."""
    lo = _round_out(center - width, down=True)
    hi = _round_out(center + width, down=False)
    if floor is not None:
        lo = max(lo, float(floor))
    if ceiling is not None:
        hi = min(hi, float(ceiling))
    return lo, hi


def _read_reference(
    reference: pd.DataFrame | str | Sequence[str], credentials: S3Credentials | None
) -> pd.DataFrame:
    import pandas as pd

    if isinstance(reference, pd.DataFrame):
        return reference
    from mlops_loop.core.snapshots import read_snapshot

    uris = [reference] if isinstance(reference, str) else list(reference)
    frames = [read_snapshot(uri, credentials=credentials) for uri in uris]
    return pd.concat(frames, ignore_index=True)


def starter_suite(
    config: DatasetConfig,
    reference: pd.DataFrame | str | Sequence[str],
    *,
    credentials: S3Credentials | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict[str, Any]:
    """Schema checks plus profile checks from a reference snapshot, for a person to review.

    ``reference`` is a DataFrame, a snapshot URI, or several snapshot URIs (pooled). For
    each numeric feature: mean and median within ``tolerance`` reference
    standard deviations. For each categorical feature: values within the observed set
    (when the schema declares none) or common categories still present.
    """
    import pandas as pd

    df = _read_reference(reference, credentials)
    if len(df) == 0:
        raise ValueError("the reference snapshot has no rows; a profile needs data")
    suite = suite_from_config(config)
    exps = suite["expectations"]
    rows = len(df)
    for name in config.feature_columns:
        spec = config.column(name)
        if name not in df.columns:
            raise ValueError(f"the reference snapshot has no column {name!r}")
        values = df[name].dropna()
        if len(values) == 0:
            continue
        if spec.type.is_numeric:
            numbers = pd.to_numeric(values, errors="raise").astype("float64")
            std = float(numbers.std(ddof=1)) if len(numbers) > 1 else 0.0
            mean = float(numbers.mean())
            width = tolerance * std if std > 0 else max(abs(mean) * 0.1, 1e-6)
            lo, hi = _bounds(mean, width, spec.min, spec.max)
            exps.append(
                _expectation(
                    "expect_column_mean_to_be_between",
                    SOURCE_PROFILE,
                    f"reference mean {mean:.6g} +/- {tolerance} std ({std:.6g}), {rows} rows",
                    column=name,
                    min_value=lo,
                    max_value=hi,
                )
            )
            # Median rather than expect_column_quantile_values_to_be_between: GE 1.24 under
            # numpy 2 puts numpy bools in that result and then cannot store it as JSON.
            median = float(numbers.median())
            lo, hi = _bounds(median, width, spec.min, spec.max)
            exps.append(
                _expectation(
                    "expect_column_median_to_be_between",
                    SOURCE_PROFILE,
                    f"reference median {median:.6g} +/- {tolerance} std",
                    column=name,
                    min_value=lo,
                    max_value=hi,
                )
            )
        elif spec.type in (ColumnType.CATEGORY, ColumnType.STRING):
            counts = values.astype(str).value_counts()
            if len(counts) > MAX_PROFILE_CATEGORIES:
                continue
            observed = sorted(str(v) for v in counts.index)
            if spec.allowed is None:
                exps.append(
                    _expectation(
                        "expect_column_values_to_be_in_set",
                        SOURCE_PROFILE,
                        f"categories observed in {rows} reference rows; review",
                        column=name,
                        value_set=observed,
                    )
                )
            min_share = MIN_EXPECTED_CATEGORY_COUNT / max(config.quality.min_rows, 1)
            common = sorted(str(v) for v, c in counts.items() if c / len(values) >= min_share)
            if common:
                exps.append(
                    _expectation(
                        "expect_column_distinct_values_to_contain_set",
                        SOURCE_PROFILE,
                        f"categories with >= {min_share:.1%} of reference rows must appear",
                        column=name,
                        value_set=common,
                    )
                )
    suite["meta"]["mlops_loop"] = {
        "dataset": config.name,
        "generated_from": "config schema + reference profile",
        "reference_rows": rows,
        "tolerance_std": tolerance,
        "review": "meta.source tells schema checks from profile checks; widen or drop "
        "profile checks that would fail valid batches.",
    }
    return suite


def check_suite(suite: Any, *, origin: str) -> dict[str, Any]:
    """Raise QualitySuiteError unless ``suite`` is a GE suite dict whose expectations GE
    knows and accepts; ``origin`` (a file path) is named in the error."""
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )
    from great_expectations.expectations.registry import get_expectation_impl

    if not isinstance(suite, dict) or not isinstance(suite.get("expectations"), list):
        raise QualitySuiteError(
            f"suite {origin} must be a JSON object with an 'expectations' list", suite_path=origin
        )
    if not isinstance(suite.get("name"), str) or not suite["name"]:
        raise QualitySuiteError(f"suite {origin} has no 'name'", suite_path=origin)
    for i, exp in enumerate(suite["expectations"]):
        kind = exp.get("type") if isinstance(exp, dict) else None
        where = f"suite {origin}, expectation #{i}"
        if not isinstance(kind, str):
            raise QualitySuiteError(f"{where} has no 'type'", suite_path=origin)
        try:
            get_expectation_impl(kind)
        except Exception as exc:
            raise QualitySuiteError(
                f"{where}: unknown expectation type {kind!r}", suite_path=origin, expectation=kind
            ) from exc
        try:
            ExpectationConfiguration(
                type=kind, kwargs=exp.get("kwargs") or {}, meta=exp.get("meta")
            ).to_domain_obj()
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise QualitySuiteError(
                f"{where} ({kind}) has invalid kwargs: {first}", suite_path=origin, expectation=kind
            ) from exc
    return suite


def read_suite_file(path: str | Path) -> dict[str, Any]:
    """Read and check a suite JSON file; errors name the file and the expectation."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise QualitySuiteError(f"suite file {path} does not exist", suite_path=path) from exc
    try:
        suite = json.loads(text)
    except json.JSONDecodeError as exc:
        raise QualitySuiteError(
            f"suite file {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            suite_path=path,
        ) from exc
    return check_suite(suite, origin=path)


def load_suite(config: DatasetConfig) -> dict[str, Any]:
    """The suite named by ``quality.suite`` (relative to the config file), else the suite
    derived from the schema."""
    if config.quality.suite:
        return read_suite_file(config.resolve_path(config.quality.suite))
    return suite_from_config(config)


# --------------------------------------------------------------------------- running GE


def frame_for_validation(df: pd.DataFrame) -> pd.DataFrame:
    """The frame as Great Expectations 1.x can check it under pandas 3.

    GE's type check compares a column's dtype against names in ``type_list``, and no name
    matches pandas 3's ``str`` dtype, categoricals or tz-aware timestamps. Text and
    categorical columns become object columns (GE then checks each value, ``"str"``);
    tz-aware timestamps become naive UTC. Values are unchanged; the snapshot is not touched.
    """
    import pandas as pd

    out = {}
    for name in df.columns:
        col = df[name]
        dtype = col.dtype
        if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(dtype):
            if dtype != "object":
                col = col.astype(object).where(col.notna(), None)
        elif isinstance(dtype, pd.DatetimeTZDtype):
            col = col.dt.tz_convert("UTC").dt.tz_localize(None)
        out[name] = col
    return pd.DataFrame(out, index=df.index)


def _gx_context(docs_dir: str | None) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    for site in list(context.variables.data_docs_sites or {}):
        context.delete_data_docs_site(site)
    if docs_dir is not None:
        site_config: Any = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": docs_dir,
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
        context.add_data_docs_site("mlops_loop", site_config)
    return context


def run_suite(
    suite: dict[str, Any], df: pd.DataFrame, *, docs_dir: str | None = None
) -> dict[str, Any]:
    """Validate ``df`` against ``suite`` with GE 1.x; returns GE's validation result JSON.

    With ``docs_dir``, a checkpoint's UpdateDataDocsAction builds the Data Docs site there.
    """
    import great_expectations as gx

    context = _gx_context(docs_dir)
    asset = context.data_sources.add_pandas("snapshot").add_dataframe_asset("batch")
    batch_definition = asset.add_batch_definition_whole_dataframe("whole_batch")
    gx_suite = context.suites.add(
        gx.ExpectationSuite(
            name=suite["name"],
            expectations=[
                {"type": e["type"], "kwargs": e.get("kwargs") or {}, "meta": e.get("meta") or {}}
                for e in suite["expectations"]
            ],
            meta=suite.get("meta") or {},
        )
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="quality_gate", data=batch_definition, suite=gx_suite)
    )
    actions: list[Any] = []
    if docs_dir is not None:
        actions.append(
            gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["mlops_loop"])
        )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="quality_gate",
            validation_definitions=[definition],
            actions=actions,
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20},
        )
    )
    outcome = checkpoint.run(batch_parameters={"dataframe": frame_for_validation(df)})
    (result,) = outcome.run_results.values()
    payload: dict[str, Any] = result.to_json_dict()
    return payload


# --------------------------------------------------------------------------- chunked run

# Column-map expectations whose verdict for a row depends on other rows: judged over the
# whole column, never per chunk.
WHOLE_COLUMN_MAP = frozenset(
    {
        "expect_column_values_to_be_unique",
        "expect_column_values_to_be_increasing",
        "expect_column_values_to_be_decreasing",
        "expect_compound_columns_to_be_unique",
        "expect_multicolumn_sum_to_equal",
    }
)
# Table expectations about the set of columns: every chunk has the snapshot's schema (it
# is checked part by part), so the first chunk's result is the batch's.
SCHEMA_LEVEL = frozenset(
    {
        "expect_table_columns_to_match_set",
        "expect_table_columns_to_match_ordered_list",
        "expect_table_column_count_to_equal",
        "expect_table_column_count_to_be_between",
        "expect_column_to_exist",
    }
)
PARTIAL_UNEXPECTED = 20
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": PARTIAL_UNEXPECTED}


def expectation_scope(kind: str) -> str:
    """How the chunked gate judges an expectation type: ``"row"`` (per chunk, counts
    summed), ``"schema"`` (first chunk) or ``"whole"`` (once, over the whole batch, on a
    frame of only the columns it names)."""
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )
    from great_expectations.expectations.registry import get_expectation_impl

    if kind in SCHEMA_LEVEL:
        return "schema"
    if kind in WHOLE_COLUMN_MAP:
        return "whole"
    impl = get_expectation_impl(kind)
    row_kinds = (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)
    return "row" if issubclass(impl, row_kinds) else "whole"


TYPE_CHECKS = frozenset(
    {"expect_column_values_to_be_in_type_list", "expect_column_values_to_be_of_type"}
)
# Row-level kinds computed in Arrow by :func:`row_result` (same result as GE's).
FAST_ROW_KINDS = frozenset(
    {
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
    }
)
# Keyword arguments that change what a row-level check means; with any of them set, the
# expectation is left to GE.
_GE_ONLY_KWARGS = ("row_condition", "condition_parser", "parse_strings_as_datetimes")


def _columns_of(kwargs: dict[str, Any]) -> tuple[str, ...]:
    cols: list[str] = []
    for key in ("column", "column_A", "column_B"):
        if isinstance(kwargs.get(key), str):
            cols.append(kwargs[key])
    cols.extend(str(c) for c in kwargs.get("column_list") or [])
    return tuple(dict.fromkeys(cols))


def _part_schema_error(
    manifest: dict[str, Any], part_uri: str, schema: pa.Schema
) -> QualityGateFailed | None:
    """The refusal when a part file's Arrow schema is not the manifest's, else None."""
    want = {c["name"]: str(c.get("arrow_type")) for c in manifest.get("columns") or []}
    have = {f.name: str(f.type) for f in schema}
    problems = [f"column {n!r} is missing" for n in want if n not in have]
    problems += [f"column {n!r} is not in the manifest" for n in have if n not in want]
    problems += [
        f"column {n!r} is {have[n]} there but {t} in the manifest"
        for n, t in want.items()
        if n in have and have[n] != t
    ]
    if not problems:
        return None
    return QualityGateFailed(
        f"Quality gate refused snapshot part {part_uri}: its schema disagrees with the "
        f"snapshot's ({'; '.join(problems)}); the snapshot was not validated",
        result_uri="",
        quarantine_uri="",
    )


def _local_parts(
    stack: contextlib.ExitStack,
    snapshot_uri: str,
    manifest: dict[str, Any],
    credentials: S3Credentials | None,
) -> list[tuple[str, Path]]:
    """Each part's uri and a local file to read it from (in place on local storage,
    downloaded once from S3), kept for as long as ``stack`` is open."""
    from mlops_loop.core.snapshots import _part_file

    storage = open_storage(snapshot_uri, credentials)
    parts = []
    for part in manifest["files"]:
        part_uri = join_uri(snapshot_uri, part["name"])
        parts.append((part_uri, stack.enter_context(_part_file(storage, part_uri))))
    return parts


def iter_validation_chunks(
    snapshot_uri: str,
    manifest: dict[str, Any],
    *,
    chunk_rows: int,
    credentials: S3Credentials | None = None,
    columns: Sequence[str] | None = None,
    parts: Sequence[tuple[str, Path]] | None = None,
) -> Iterator[pa.Table]:
    """The snapshot as Arrow tables of ``chunk_rows`` rows (the last may be shorter), read
    a few row groups at a time (from ``parts``, :func:`_local_parts`, when given). Each
    part's schema is checked against the manifest before its rows are used: a disagreeing
    part raises QualityGateFailed naming part and column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = list(columns) if columns is not None else None
    pending: list[pa.RecordBatch] = []
    count = 0
    with contextlib.ExitStack() as stack:
        if parts is None:
            parts = _local_parts(stack, snapshot_uri, manifest, credentials)
        for part_uri, path in parts:
            with pq.ParquetFile(path) as pfile:
                problem = _part_schema_error(manifest, part_uri, pfile.schema_arrow)
                if problem is not None:
                    raise problem
                for batch in pfile.iter_batches(batch_size=min(chunk_rows, 65_536), columns=cols):
                    while batch.num_rows:
                        take = min(batch.num_rows, chunk_rows - count)
                        pending.append(batch.slice(0, take))
                        count += take
                        batch = batch.slice(take)
                        if count == chunk_rows:
                            yield pa.Table.from_batches(pending)
                            pending, count = [], 0
    if pending:
        yield pa.Table.from_batches(pending)


def check_snapshot_schema(
    snapshot_uri: str, manifest: dict[str, Any], *, credentials: S3Credentials | None = None
) -> None:
    """Raise QualityGateFailed naming the part file and column when any part's schema
    disagrees with the manifest (only footers are read)."""
    with contextlib.ExitStack() as stack:
        _check_part_schemas(manifest, _local_parts(stack, snapshot_uri, manifest, credentials))


def _check_part_schemas(manifest: dict[str, Any], parts: Sequence[tuple[str, Path]]) -> None:
    import pyarrow.parquet as pq

    for part_uri, path in parts:
        problem = _part_schema_error(manifest, part_uri, pq.read_schema(path))
        if problem is not None:
            raise problem


class _Validator:
    """One ephemeral GE context and pandas batch definition, validated against many frames."""

    def __init__(self) -> None:
        context = _gx_context(None)
        asset = context.data_sources.add_pandas("snapshot").add_dataframe_asset("batch")
        self.context = context
        self.batch_definition = asset.add_batch_definition_whole_dataframe("chunk")

    def run(self, suite: Any, df: pd.DataFrame) -> list[dict[str, Any]]:
        """GE's per-expectation results (JSON) for a :func:`_gx_suite` on ``df``, in suite
        order (GE returns them grouped its own way; the index in ``meta`` restores it)."""
        batch = self.batch_definition.get_batch(batch_parameters={"dataframe": df})
        result = batch.validate(suite, result_format=RESULT_FORMAT)
        items: list[dict[str, Any]] = result.to_json_dict()["results"]
        order: dict[int, dict[str, Any]] = {}
        for item in items:
            meta = (item.get("expectation_config") or {}).get("meta") or {}
            order[int(meta.pop(_ORDER_KEY))] = item
        return [order[i] for i in range(len(order))]


_ORDER_KEY = "mlops_loop_order"


def _gx_suite(name: str, expectations: Sequence[dict[str, Any]]) -> Any:
    import great_expectations as gx

    return gx.ExpectationSuite(
        name=name,
        expectations=[
            {
                "type": e["type"],
                "kwargs": e.get("kwargs") or {},
                "meta": {**(e.get("meta") or {}), _ORDER_KEY: i},
            }
            for i, e in enumerate(expectations)
        ],
    )


def _merge_row_results(
    kwargs: dict[str, Any], parts: list[dict[str, Any]], offsets: list[int]
) -> dict[str, Any]:
    """One whole-batch result from the per-chunk results of a row-level expectation:
    counts summed, percentages and success recomputed as GE does, examples kept in row
    order up to PARTIAL_UNEXPECTED."""
    merged = dict(parts[0])
    results = [p.get("result") or {} for p in parts]
    errors = [p for p in parts if (p.get("exception_info") or {}).get("raised_exception")]
    if errors:
        return dict(errors[0])
    if not all("unexpected_count" in r for r in results):
        # GE judged the column's dtype as a whole (type list on a typed column): the
        # batch passes when every chunk does; the first failing chunk's observation shows.
        failing = [p for p in parts if not p.get("success")]
        return dict(failing[0] if failing else parts[0])
    element = sum(int(r.get("element_count") or 0) for r in results)
    unexpected = sum(int(r.get("unexpected_count") or 0) for r in results)
    examples: list[Any] = []
    indexes: list[Any] = []
    for r, offset in zip(results, offsets, strict=True):
        examples.extend(r.get("partial_unexpected_list") or [])
        indexes.extend(
            i + offset if isinstance(i, int) else i
            for i in r.get("partial_unexpected_index_list") or []
        )
    mostly = kwargs.get("mostly")
    # Results with missing counts skip missing rows; not-null and the like count every row.
    missing = (
        sum(int(r.get("missing_count") or 0) for r in results)
        if "missing_count" in results[0]
        else None
    )
    out, success = _map_result(
        element=element,
        unexpected=unexpected,
        missing=missing,
        examples=examples[:PARTIAL_UNEXPECTED],
        mostly=1.0 if mostly is None else float(mostly),
    )
    if any("partial_unexpected_index_list" in r for r in results):
        out["partial_unexpected_index_list"] = indexes[:PARTIAL_UNEXPECTED]
    merged["result"] = out
    merged["success"] = bool(success)
    return merged


def _pack_groups(
    groups: dict[tuple[str, ...], list[int]], have: Sequence[str], *, chunk_rows: int, rows: int
) -> list[tuple[list[str], list[int]]]:
    """Whole-batch expectation groups packed into as few GE runs as fit the memory of one
    chunk: a run's frame holds at most ``chunk_rows * columns / rows`` whole columns (at
    least one). Table-level expectations (no column) ride along with the first run."""
    per_frame = max(1, chunk_rows * max(len(have), 1) // max(rows, 1))
    table_members: list[int] = []
    packed: list[tuple[list[str], list[int]]] = []
    for cols, members in groups.items():
        present = [c for c in cols if c in have]
        if not present:
            table_members.extend(members)
            continue
        if packed and len(set(packed[-1][0]) | set(present)) <= per_frame:
            packed[-1][0].extend(c for c in present if c not in packed[-1][0])
            packed[-1][1].extend(members)
        else:
            packed.append((list(present), list(members)))
    if table_members:
        if packed:
            packed[0][1].extend(table_members)
        else:
            packed.append(([], table_members))
    return packed


def _whole_columns(paths: Sequence[Path], columns: Sequence[str]) -> pd.DataFrame:
    """Only ``columns`` of every part file, as one frame ready for GE."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables([pq.read_table(path, columns=list(columns)) for path in paths])
    return frame_for_validation(table.to_pandas())


def _column_values(paths: Sequence[Path], column: str) -> pa.ChunkedArray:
    """One column of every part file as an Arrow ChunkedArray (no Python objects)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    chunks: list[Any] = []
    for path in paths:
        chunks.extend(pq.read_table(path, columns=[column]).column(0).chunks)
    if not chunks:
        return pa.chunked_array([], type=pa.null())
    return pa.chunked_array(chunks)


def _within(value: float, kw: dict[str, Any]) -> bool:
    """GE's ``*_to_be_between`` rule: inclusive bounds unless strict, None is unbounded."""
    lo, hi = kw.get("min_value"), kw.get("max_value")
    if lo is not None and (value <= lo if kw.get("strict_min") else value < lo):
        return False
    return not (hi is not None and (value >= hi if kw.get("strict_max") else value > hi))


def _numeric(column: pa.ChunkedArray) -> Any:
    """The column's non-null values as float64, or None when it is not numeric."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        return None
    values = pc.drop_null(column).to_numpy().astype(np.float64, copy=False)
    return values[~np.isnan(values)]


def aggregate_result(
    expectation: dict[str, Any], column: pa.ChunkedArray | None, *, rows: int = 0
) -> dict[str, Any] | None:
    """The result of a whole-batch expectation computed exactly from one column (or the
    row count), in the shape GE gives it; None for a kind (or a column type) left to GE.

    Row count, mean and median (numpy, nulls and NaN skipped, the median as pandas takes
    it), uniqueness (sorted with Arrow: every row of a value seen twice is unexpected, as
    GE counts it), distinct values containing a set and the distinct-value count.
    """
    from collections import Counter

    import numpy as np
    import pyarrow.compute as pc

    kind = expectation["type"]
    kw = dict(expectation.get("kwargs") or {})
    meta = dict(expectation.get("meta") or {})
    result: dict[str, Any]
    if kind == "expect_table_row_count_to_be_between" and column is None:
        result, success = {"observed_value": rows}, _within(rows, kw)
    elif column is None:
        return None
    elif kind in ("expect_column_mean_to_be_between", "expect_column_median_to_be_between"):
        values = _numeric(column)
        if values is None:
            return None
        if values.size == 0:
            result, success = {"observed_value": None}, False
        else:
            stat = values.mean() if kind.endswith("mean_to_be_between") else np.median(values)
            result, success = {"observed_value": float(stat)}, _within(float(stat), kw)
    elif kind == "expect_column_values_to_be_unique":
        # Sort-based, not hashed: a hash table of 10M distinct strings costs about 900 MB
        # on top of the column, sorting about 360 MB (measured).
        present = pc.drop_null(column)
        element, nonnull = len(column), len(present)
        ordered = present.take(pc.sort_indices(present))
        del present
        repeated_row = np.zeros(nonnull, dtype=bool)
        if nonnull > 1:
            same = np.asarray(pc.equal(ordered.slice(1), ordered.slice(0, nonnull - 1)), dtype=bool)
            repeated_row[:-1] |= same
            repeated_row[1:] |= same
        unexpected = int(repeated_row.sum())
        repeated_values = pc.unique(ordered.filter(repeated_row)) if unexpected else None
        del ordered, repeated_row
        examples: list[Any] = []
        indexes: list[int] = []
        if unexpected:
            offset = 0
            for chunk in column.chunks:
                hits = pc.indices_nonzero(
                    pc.fill_null(pc.is_in(chunk, value_set=repeated_values), False)
                ).to_numpy()[: PARTIAL_UNEXPECTED - len(examples)]
                examples += chunk.take(hits).to_pylist()
                indexes += [int(h) + offset for h in hits]
                offset += len(chunk)
                if len(examples) >= PARTIAL_UNEXPECTED:
                    break
        mostly = 1.0 if kw.get("mostly") is None else float(kw["mostly"])
        missing = element - nonnull
        result = {
            "element_count": element,
            "unexpected_count": unexpected,
            "unexpected_percent": unexpected / nonnull * 100 if nonnull else None,
            "partial_unexpected_list": examples,
            "missing_count": missing,
            "missing_percent": missing / element * 100 if element else None,
            "unexpected_percent_total": unexpected / element * 100 if element else None,
            "unexpected_percent_nonmissing": unexpected / nonnull * 100 if nonnull else None,
            "partial_unexpected_counts": [
                {"value": v, "count": c}
                for v, c in sorted(Counter(examples).items(), key=lambda x: (-x[1], str(x[0])))
            ],
            "partial_unexpected_index_list": indexes,
        }
        success = nonnull == 0 or (nonnull - unexpected) / nonnull >= mostly
    elif kind in (
        "expect_column_distinct_values_to_contain_set",
        "expect_column_unique_value_count_to_be_between",
    ):
        distinct = pc.unique(pc.drop_null(column)).to_pylist()
        if kind == "expect_column_unique_value_count_to_be_between":
            result, success = {"observed_value": len(distinct)}, _within(len(distinct), kw)
        else:
            seen = set(distinct)
            absent = [v for v in kw.get("value_set") or [] if v not in seen]
            # GE 1.x's shape: no observed list, the absent values instead.
            result = {
                "observed_value": None,
                "missing_count": len(absent),
                "partial_missing_list": absent,
            }
            success = not absent
    else:
        return None
    return _ge_item(kind, kw, meta, success, result)


def _ge_item(
    kind: str, kw: dict[str, Any], meta: dict[str, Any], success: bool, result: dict[str, Any]
) -> dict[str, Any]:
    """One expectation's result in the JSON shape GE gives it, the configuration echoed as
    GE normalises it (numbers as its fields type them, unset and default kwargs left out)."""
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    try:
        config = ExpectationConfiguration(type=kind, kwargs=kw, meta=meta)
        echoed: dict[str, Any] = config.to_domain_obj().configuration.to_json_dict()
    except Exception:  # the suite was checked on load; keep the kwargs as given
        echoed = {"type": kind, "kwargs": {k: v for k, v in kw.items() if v is not None}}
    echoed.pop("id", None)
    echoed.setdefault("meta", meta)
    echoed.setdefault("severity", "critical")
    return {
        "success": bool(success),
        "expectation_config": echoed,
        "result": result,
        "meta": {},
        "exception_info": {
            "raised_exception": False,
            "exception_traceback": None,
            "exception_message": None,
        },
    }


def _missing_mask(column: pa.ChunkedArray) -> Any:
    """Per row, whether GE's pandas engine treats the value as missing (null, or NaN in a
    float column), as a numpy bool array."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_floating(column.type):
        mask = pc.is_null(column, nan_is_null=True)
    else:
        mask = pc.is_null(column)
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)


def _in_set_mask(column: pa.ChunkedArray, value_set: Sequence[Any]) -> Any:
    """Per row, whether the value is in ``value_set`` as pandas ``isin`` decides it; None
    for a column type or set whose pandas semantics this does not reproduce exactly."""
    import math

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        # A string never equals a non-string in pandas' object isin.
        values = pa.array([v for v in value_set if isinstance(v, str)], type=kind)
    elif pa.types.is_boolean(kind) and all(isinstance(v, bool) for v in value_set):
        values = pa.array(list(value_set), type=kind)
    elif pa.types.is_integer(kind) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value_set
    ):
        info = np.iinfo(kind.to_pandas_dtype())
        values = pa.array([v for v in value_set if info.min <= v <= info.max], type=kind)
    elif pa.types.is_floating(kind) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)
        for v in value_set
    ):
        values = pa.array([float(v) for v in value_set], type=pa.float64())
        column = column.cast(pa.float64())
    else:
        return None
    hit = pc.fill_null(pc.is_in(column, value_set=values), False)
    return np.asarray(hit.to_numpy(zero_copy_only=False), dtype=bool)


def _between_unexpected(column: pa.ChunkedArray, kw: dict[str, Any], missing: Any) -> Any:
    """Per row, whether a present value falls outside GE's ``*_to_be_between`` bounds;
    None for a non-numeric column or bounds GE would not take as numbers."""
    import numpy as np
    import pyarrow as pa

    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        return None
    lo, hi = kw.get("min_value"), kw.get("max_value")
    bounds = [b for b in (lo, hi) if b is not None]
    if not bounds or any(isinstance(b, bool) or not isinstance(b, (int, float)) for b in bounds):
        return None
    values = column.to_numpy()  # float64 with NaN for nulls when the column has any
    with np.errstate(invalid="ignore"):
        bad = np.zeros(len(values), dtype=bool)
        if lo is not None:
            bad |= values <= lo if kw.get("strict_min") else values < lo
        if hi is not None:
            bad |= values >= hi if kw.get("strict_max") else values > hi
    return bad & ~missing


def row_result(
    expectation: dict[str, Any], column: pa.ChunkedArray, missing: Any = None
) -> dict[str, Any] | None:
    """The whole-batch result of a row-level expectation computed exactly from one Arrow
    column, in the shape GE gives it; None for a kind, column type or kwargs left to GE.

    Not-null, values between (numeric columns) and values in a set (text, integer, float
    and boolean columns). Missing means null, or NaN in a float column, as in GE's pandas
    engine. Examples are the first 20 unexpected values and their row numbers, in row
    order; ``partial_unexpected_counts`` is counted over those examples, as the merged
    chunk results are. ``missing``: the column's :func:`_missing_mask`, when the caller has
    it already.
    """
    import numpy as np
    import pyarrow as pa

    kind = expectation["type"]
    kw = dict(expectation.get("kwargs") or {})
    if kind not in FAST_ROW_KINDS or any(kw.get(k) is not None for k in _GE_ONLY_KWARGS):
        return None
    if pa.types.is_dictionary(column.type):  # a category column: GE sees its values
        column = column.cast(column.type.value_type)
    mostly = kw.get("mostly")
    if mostly is not None and (isinstance(mostly, bool) or not isinstance(mostly, (int, float))):
        return None
    mostly = 1.0 if mostly is None else float(mostly)
    if missing is None:
        missing = _missing_mask(column)
    element = len(missing)
    if kind == "expect_column_values_to_not_be_null":
        unexpected_rows = missing
    elif kind == "expect_column_values_to_be_between":
        unexpected_rows = _between_unexpected(column, kw, missing)
    else:
        value_set = kw.get("value_set")
        if not isinstance(value_set, (list, tuple)):
            return None
        hit = _in_set_mask(column, value_set)
        unexpected_rows = None if hit is None else ~hit & ~missing
    if unexpected_rows is None:
        return None
    unexpected = int(unexpected_rows.sum())
    indexes = np.flatnonzero(unexpected_rows)[:PARTIAL_UNEXPECTED]
    if kind == "expect_column_values_to_not_be_null":
        examples: list[Any] = [None] * len(indexes)
    else:
        examples = column.take(indexes).to_pylist()
    result, success = _map_result(
        element=element,
        unexpected=unexpected,
        missing=None if kind == "expect_column_values_to_not_be_null" else int(missing.sum()),
        examples=examples,
        mostly=mostly,
    )
    result["partial_unexpected_index_list"] = [int(i) for i in indexes]
    return _ge_item(kind, kw, dict(expectation.get("meta") or {}), success, result)


def _map_result(
    *, element: int, unexpected: int, missing: int | None, examples: list[Any], mostly: float
) -> tuple[dict[str, Any], bool]:
    """GE's SUMMARY result of a column-map expectation (without the index list) and its
    success, from whole-batch counts and the first examples. ``missing`` None: a check that
    counts every row (not null), whose percentages are of all rows."""
    from collections import Counter

    result: dict[str, Any] = {"element_count": element, "unexpected_count": unexpected}
    if missing is None:
        success = element == 0 or (element - unexpected) / element >= mostly
        pct = unexpected / element * 100 if element else None
        result.update({"unexpected_percent": pct, "partial_unexpected_list": examples})
    else:
        nonnull = element - missing
        success = element == 0 or nonnull == 0 or (nonnull - unexpected) / nonnull >= mostly
        pct = unexpected / nonnull * 100 if nonnull else None
        result.update(
            {
                "unexpected_percent": pct,
                "partial_unexpected_list": examples,
                "missing_count": missing,
                "missing_percent": missing / element * 100 if element else None,
                "unexpected_percent_total": unexpected / element * 100 if element else None,
                "unexpected_percent_nonmissing": pct,
            }
        )
    try:  # counted over the examples; left out when they do not sort
        counts = Counter(examples).most_common(PARTIAL_UNEXPECTED)
        result["partial_unexpected_counts"] = [
            {"value": v, "count": c} for v, c in sorted(counts, key=lambda x: (-x[1], x[0]))
        ]
    except TypeError:
        pass
    return result, bool(success)


def type_check_sample(column: pa.ChunkedArray) -> pa.Array:
    """One present value of the column (and a null when it has any): as a frame, it has the
    dtype the whole batch has in pandas, and every present value's Python type."""
    import pyarrow as pa
    import pyarrow.compute as pc

    present = pc.drop_null(column).slice(0, 1)
    pieces = [c for c in present.chunks if len(c)]
    if column.null_count:
        pieces.append(pa.nulls(1, type=column.type))
    return pa.concat_arrays(pieces) if pieces else pa.array([], type=column.type)


def type_check_results(
    validator: _Validator,
    suite_name: str,
    checks: Sequence[dict[str, Any]],
    columns: dict[str, tuple[pa.Array, int, int]],
    schema: pa.Schema,
) -> list[dict[str, Any] | None]:
    """Type-list / of-type results for whole columns, judged by GE on each column's
    :func:`type_check_sample`; ``columns`` maps a column to (sample, rows, missing).

    GE decides a non-object column by its dtype (the sample has the batch's dtype), and an
    object column value by value, by Python type, which an Arrow column's present values
    share: when the sample's value passes, every present value does. A failing value is
    left to GE over the chunks (None), so its examples and counts are GE's own. ``schema``
    is a part file's: its pandas metadata (extension dtypes) applies to the samples too.
    """
    import pyarrow as pa

    if not checks:
        return []
    samples = {name: columns[name][0] for name in {exp["kwargs"]["column"] for exp in checks}}
    if any(len(a) == 0 for a in samples.values()):
        return [None] * len(checks)
    # Samples padded to one length by repeating their first element: that keeps each
    # column's dtype (a null would turn an integer column into float64).
    width = max(len(a) for a in samples.values())
    table = pa.Table.from_arrays(
        [
            pa.concat_arrays([a, a.take(pa.array([0] * (width - len(a)), type=pa.int64()))])
            for a in samples.values()
        ],
        schema=pa.schema([schema.field(name) for name in samples], metadata=schema.metadata),
    )
    frame = frame_for_validation(table.to_pandas())
    items = validator.run(_gx_suite(suite_name, checks), frame)
    out: list[dict[str, Any] | None] = []
    for exp, item in zip(checks, items, strict=True):
        result = item.get("result") or {}
        if (item.get("exception_info") or {}).get("raised_exception") or result.get(
            "unexpected_count"
        ):
            out.append(None)
        elif "unexpected_count" not in result:
            out.append(item)  # decided by the dtype, which the sample shares with the batch
        else:
            _, rows, missing = columns[exp["kwargs"]["column"]]
            merged, _ = _map_result(
                element=rows, unexpected=0, missing=missing, examples=[], mostly=1.0
            )
            merged["partial_unexpected_index_list"] = []
            kw, meta = dict(exp.get("kwargs") or {}), dict(exp.get("meta") or {})
            out.append(_ge_item(exp["type"], kw, meta, True, merged))
    return out


def _table_only_frame(rows: int) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(index=pd.RangeIndex(rows))


def run_suite_chunked(
    suite: dict[str, Any],
    snapshot_uri: str,
    manifest: dict[str, Any],
    *,
    chunk_rows: int,
    credentials: S3Credentials | None = None,
    docs_dir: str | None = None,
) -> dict[str, Any]:
    """Validate a snapshot chunk by chunk with GE 1.x; returns ONE validation result JSON
    shaped like :func:`run_suite`'s (see the module docstring for what is exact).

    Row-level expectations run on every chunk and their counts are summed; schema-level
    ones run on the first chunk; the rest run once on a frame of only the columns they
    name (a table-level one such as the row count on a frame of the batch's length with
    no columns). With ``docs_dir``, Data Docs are built from the merged result.
    """

    import pyarrow as pa
    import pyarrow.parquet as pq

    expectations = list(suite["expectations"])
    scopes = [expectation_scope(e["type"]) for e in expectations]
    validator = _Validator()
    results: dict[int, dict[str, Any]] = {}
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, scope in enumerate(scopes):
        if scope == "whole":
            groups.setdefault(_columns_of(expectations[i].get("kwargs") or {}), []).append(i)
    have = [c["name"] for c in manifest.get("columns") or []]
    by_column: dict[str, list[int]] = {}
    for i, scope in enumerate(scopes):
        cols = _columns_of(expectations[i].get("kwargs") or {})
        if scope != "schema" and len(cols) == 1 and cols[0] in have:
            by_column.setdefault(cols[0], []).append(i)
    offsets: list[int] = []
    rows = 0
    with contextlib.ExitStack() as stack:
        # Parts downloaded once (from S3) for the schema check, the columns and the chunks.
        parts = _local_parts(stack, snapshot_uri, manifest, credentials)
        _check_part_schemas(manifest, parts)
        schema = pq.read_schema(parts[0][1]) if parts else pa.schema([])
        # Single-column checks GE's pandas engine is slow at (and, on a 10M-row text
        # column, holds several GiB for) are computed exactly, one column at a time in
        # Arrow/numpy, before the chunks, so that their peak and the chunks' do not add up
        # on a fragmented heap. Type checks are judged by GE on a sample with the column's
        # dtype. Whatever is left goes to GE.
        type_checks: list[int] = []
        samples: dict[str, tuple[Any, int, int]] = {}
        for name, members in by_column.items():
            column = _column_values([path for _, path in parts], name)
            missing: Any = None
            if any(scopes[i] == "row" for i in members):
                missing = _missing_mask(column)
            for i in members:
                exp = expectations[i]
                if scopes[i] == "whole":
                    computed = aggregate_result(exp, column)
                elif exp["type"] in TYPE_CHECKS:
                    samples[name] = (type_check_sample(column), len(column), int(missing.sum()))
                    type_checks.append(i)
                    continue
                else:
                    computed = row_result(exp, column, missing)
                if computed is not None:
                    results[i] = computed
            del column, missing
        checked = type_check_results(
            validator, suite["name"], [expectations[i] for i in type_checks], samples, schema
        )
        for i, computed in zip(type_checks, checked, strict=True):
            if computed is not None:
                results[i] = computed
        for cols in groups:
            groups[cols] = [i for i in groups[cols] if i not in results]

        per_chunk = [i for i, s in enumerate(scopes) if s in ("row", "schema") and i not in results]
        collected: dict[int, list[dict[str, Any]]] = {i: [] for i in per_chunk}
        row_level = [i for i in per_chunk if scopes[i] == "row"]
        if per_chunk and not row_level:
            # Only checks of the set of columns: an empty frame with the snapshot's columns.
            frame = frame_for_validation(schema.empty_table().to_pandas())
            items = validator.run(
                _gx_suite(suite["name"], [expectations[i] for i in per_chunk]), frame
            )
            for i, item in zip(per_chunk, items, strict=True):
                collected[i].append(item)
        elif per_chunk:
            # The first chunk runs every per-chunk expectation; the later ones only the
            # row-level ones.
            first_suite = _gx_suite(suite["name"], [expectations[i] for i in per_chunk])
            later_suite = _gx_suite(suite["name"], [expectations[i] for i in row_level])
            for chunk_index, table in enumerate(
                iter_validation_chunks(snapshot_uri, manifest, chunk_rows=chunk_rows, parts=parts)
            ):
                offsets.append(rows)
                rows += table.num_rows
                frame = frame_for_validation(table.to_pandas())
                del table
                members = per_chunk if chunk_index == 0 else row_level
                items = validator.run(first_suite if chunk_index == 0 else later_suite, frame)
                for i, item in zip(members, items, strict=True):
                    collected[i].append(item)
                del frame
        if not offsets:
            rows = sum(int(pq.read_metadata(path).num_rows) for _, path in parts)

        for i in list(groups.get((), [])):
            computed = aggregate_result(expectations[i], None, rows=rows)
            if computed is not None:
                results[i] = computed
                groups[()].remove(i)
        groups = {cols: members for cols, members in groups.items() if members}
        for names, members in _pack_groups(groups, have, chunk_rows=chunk_rows, rows=rows):
            if names:
                frame = _whole_columns([path for _, path in parts], names)
            else:
                frame = _table_only_frame(rows)
            items = validator.run(
                _gx_suite(suite["name"], [expectations[i] for i in members]), frame
            )
            del frame
            for i, item in zip(members, items, strict=True):
                results[i] = item

    for i in per_chunk:
        kw = expectations[i].get("kwargs") or {}
        if scopes[i] == "schema" or not collected[i]:
            results[i] = collected[i][0] if collected[i] else {}
        else:
            results[i] = _merge_row_results(kw, collected[i], offsets)
    ordered = [results[i] for i in range(len(expectations))]
    return _assemble_result(suite, ordered, validator, docs_dir=docs_dir, rows=rows)


def _assemble_result(
    suite: dict[str, Any],
    items: list[dict[str, Any]],
    validator: _Validator,
    *,
    docs_dir: str | None,
    rows: int,
) -> dict[str, Any]:
    import great_expectations as gx

    evaluated = len(items)
    successful = sum(1 for r in items if r.get("success"))
    success = successful == evaluated
    statistics = {
        "evaluated_expectations": evaluated,
        "successful_expectations": successful,
        "unsuccessful_expectations": evaluated - successful,
        "success_percent": successful / evaluated * 100 if evaluated else None,
    }
    meta = {
        "great_expectations_version": gx.__version__,
        "mlops_loop_chunked": {"rows": rows, "chunked": True},
    }
    payload: dict[str, Any] = {
        "success": success,
        "results": items,
        "suite_name": suite["name"],
        "suite_parameters": {},
        "statistics": statistics,
        "meta": meta,
        "id": None,
    }
    if docs_dir is not None:
        _build_docs(validator, suite, payload, docs_dir)
    return payload


def _build_docs(
    validator: _Validator, suite: dict[str, Any], payload: dict[str, Any], docs_dir: str
) -> None:
    """Data Docs from the merged result: the result is put in the context's validation
    results store and the site is built from it, as GE's UpdateDataDocsAction does."""
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    site_config: Any = {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": docs_dir},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    context = validator.context
    context.add_data_docs_site("mlops_loop", site_config)
    results = []
    for item in payload["results"]:
        cfg = item.get("expectation_config") or {}
        results.append(
            ExpectationValidationResult(
                success=bool(item.get("success")),
                expectation_config=ExpectationConfiguration(
                    type=str(cfg.get("type")), kwargs=cfg.get("kwargs") or {}, meta=cfg.get("meta")
                ),
                result=item.get("result") or {},
                exception_info=item.get("exception_info"),
                meta=item.get("meta") or {},
            )
        )
    run_id = RunIdentifier(run_name="quality_gate_chunked")
    validation = ExpectationSuiteValidationResult(
        success=payload["success"],
        results=results,
        suite_name=suite["name"],
        statistics=payload["statistics"],
        meta={**payload["meta"], "run_id": run_id, "active_batch_definition": None},
    )
    identifier = ValidationResultIdentifier(
        expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite["name"]),
        run_id=run_id,
        batch_identifier="whole_batch_in_chunks",
    )
    context.validation_results_store.set(identifier, validation)
    context.build_data_docs(site_names=["mlops_loop"], resource_identifiers=[identifier])


# --------------------------------------------------------------------------- summary


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.6g}"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _examples(values: Sequence[Any] | None) -> str:
    seen: list[Any] = []
    for v in values or []:
        if v not in seen:
            seen.append(v)
        if len(seen) == EXAMPLES:
            break
    return ", ".join(_fmt(v) for v in seen)


def _expected_text(kind: str, kw: dict[str, Any]) -> str:
    if kind == "expect_column_values_to_not_be_null":
        mostly = kw.get("mostly")
        if mostly is None or mostly >= 1:
            return "no nulls"
        return f"at most {1 - mostly:.1%} nulls"
    if kind == "expect_column_values_to_be_unique":
        return "unique values"
    if "value_set" in kw:
        values = list(kw["value_set"])
        shown = ", ".join(_fmt(v) for v in values[:10]) + (", ..." if len(values) > 10 else "")
        if kind == "expect_column_distinct_values_to_contain_set":
            return f"each of {{{shown}}} to appear"
        return f"values in {{{shown}}}"
    if "quantile_ranges" in kw:
        qr = kw["quantile_ranges"]
        return "quantiles " + ", ".join(
            f"{q:.0%} in [{_fmt(lo)}, {_fmt(hi)}]"
            for q, (lo, hi) in zip(
                qr.get("quantiles", []), qr.get("value_ranges", []), strict=False
            )
        )
    if "min_value" in kw or "max_value" in kw:
        lo, hi = kw.get("min_value"), kw.get("max_value")
        what = next(
            (w for w in ("mean", "median", "stdev", "unique_value_count") if w in kind), "values"
        )
        what = what.replace("unique_value_count", "distinct values")
        if lo is not None and hi is not None:
            return f"{what} between {_fmt(lo)} and {_fmt(hi)}"
        return f"{what} >= {_fmt(lo)}" if lo is not None else f"{what} <= {_fmt(hi)}"
    if "type_list" in kw:
        return "type in [" + ", ".join(kw["type_list"]) + "]"
    return ", ".join(f"{k}={_fmt(v)}" for k, v in kw.items() if k not in ("column", "batch_id"))


def _exception_message(info: Any) -> str | None:
    """First line of the error GE caught while evaluating an expectation, if any. GE puts
    either one record or a mapping of metric id -> record in ``exception_info``."""
    if not isinstance(info, dict):
        return None
    records = (
        [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    )
    for record in records:
        message = record.get("exception_message")
        if record.get("raised_exception") or message:
            text = str(message or "error").strip()
            return (text.splitlines()[0] if text else "error")[:200]
    return None


# Order of lines within a column: the type first (it explains the rest), then nulls, ...
_LINE_ORDER = (
    "expect_column_values_to_be_in_type_list",
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_between",
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_be_unique",
)


def _failure_line(
    item: dict[str, Any], manifest: dict[str, Any], missing: set[str]
) -> tuple[str, str] | None:
    """(column, readable line) for one failed expectation result, or None to skip."""
    cfg = item.get("expectation_config") or {}
    kind = cfg.get("type", "?")
    kw = {k: v for k, v in (cfg.get("kwargs") or {}).items() if k != "batch_id"}
    column = kw.get("column", TABLE)
    res = item.get("result") or {}
    error = _exception_message(item.get("exception_info"))
    mismatches = manifest.get("type_mismatches") or {}

    if kind == "expect_table_columns_to_match_set":
        expected = list(kw.get("column_set") or [])
        observed = list(res.get("observed_value") or [])
        parts = []
        gone = [c for c in expected if c not in observed]
        extra = [c for c in observed if c not in expected]
        if gone:
            parts.append(f"missing columns {gone}")
        if extra:
            parts.append(f"unexpected columns {extra}")
        return TABLE, f"{kind}: " + ("; ".join(parts) or f"observed {observed}")
    if kind == "expect_table_row_count_to_be_between":
        lo, hi = kw.get("min_value"), kw.get("max_value")
        bounds = f"at least {lo}" if hi is None else f"{lo} to {hi}"
        return TABLE, f"{kind}: observed {res.get('observed_value')} rows, expected {bounds} rows"
    if column in missing:
        return None  # reported once, with the table's column check
    if kind == "expect_column_values_to_be_in_type_list" and column in mismatches:
        info = mismatches[column] or {}
        return column, (
            f"{kind}: observed {res.get('observed_value') or 'text'} values, expected "
            f"{_expected_text(kind, kw)}; {info.get('count', '?')} values could not be parsed "
            f"as the declared type, e.g. {_examples(info.get('examples'))}"
        )
    if error is not None:
        if column in mismatches:
            return column, f"{kind}: not evaluated (the column holds values of the wrong type)"
        return column, f"{kind}: could not be evaluated: {error}"
    if "observed_value" in res and res["observed_value"] is None and "unexpected_count" not in res:
        return column, NO_DATA
    line = f"{kind}: expected {_expected_text(kind, kw)}"
    if kind == "expect_column_distinct_values_to_contain_set":
        seen = set(res.get("observed_value") or [])
        absent = [v for v in kw.get("value_set") or [] if v not in seen]
        return column, f"{line}; absent: {', '.join(_fmt(v) for v in absent)}"
    if "observed_value" in res:
        line += f", observed {_fmt(res['observed_value'])}"
    if "unexpected_count" in res:
        count = res.get("unexpected_count") or 0
        total = res.get("element_count")
        pct = res.get("unexpected_percent")
        what = {
            "expect_column_values_to_not_be_null": "are null",
            "expect_column_values_to_be_unique": "hold a duplicated value",
        }.get(kind, "are unexpected")
        line += f"; {count} of {total} rows {what}"
        if pct is not None:
            line += f" ({pct:.2f}%)"
        examples = _examples(res.get("partial_unexpected_list"))
        if examples and kind != "expect_column_values_to_not_be_null":
            line += f", e.g. {examples}"
    return column, line


def format_summary(
    result: dict[str, Any],
    manifest: dict[str, Any],
    *,
    dataset: str,
    ds: str,
    snapshot_uri: str,
    column_order: Sequence[str] = (),
) -> str:
    """Readable text for a validation result: a header, then one line per failed
    expectation with column, expectation, expected vs observed, counts and examples."""
    stats = result.get("statistics") or {}
    rows = manifest.get("rows", "?")
    ok = bool(result.get("success"))
    sha = str(manifest.get("sha256", ""))[:16]
    head = (
        f"Quality gate {'PASSED' if ok else 'FAILED'} for {dataset} ds={ds} "
        f"(snapshot {sha}, {rows} rows): "
        f"{stats.get('unsuccessful_expectations', 0)} of {stats.get('evaluated_expectations', 0)} "
        "expectations failed."
    )
    missing = set(manifest.get("missing_columns") or [])
    for item in result.get("results") or []:
        cfg = item.get("expectation_config") or {}
        if cfg.get("type") == "expect_table_columns_to_match_set" and not item.get("success"):
            observed = (item.get("result") or {}).get("observed_value") or []
            missing |= {
                c for c in (cfg.get("kwargs") or {}).get("column_set", []) if c not in observed
            }
    lines: list[tuple[str, int, str]] = []
    for item in result.get("results") or []:
        if item.get("success"):
            continue
        got = _failure_line(item, manifest, missing)
        if got is not None:
            kind = (item.get("expectation_config") or {}).get("type", "")
            rank = _LINE_ORDER.index(kind) if kind in _LINE_ORDER else len(_LINE_ORDER)
            lines.append((got[0], rank, got[1]))
    order = {c: i for i, c in enumerate(column_order)}
    lines.sort(key=lambda cl: (cl[0] != TABLE, order.get(cl[0], len(order)), cl[0], cl[1]))
    body = [f"- {col}: {text}" for col, _, text in lines if text != NO_DATA]
    no_data = sorted(
        {col for col, _, text in lines if text == NO_DATA},
        key=lambda c: (order.get(c, len(order)), c),
    )
    if no_data:
        body.append(
            f"- {len(no_data)} column(s) have no non-null values, so their statistics could not "
            f"be checked: {', '.join(no_data)}"
        )
    for col in sorted(missing, key=lambda c: (order.get(c, len(order)), c)):
        body.append(f"- {col}: column is missing from the batch; its checks did not run")
    return "\n".join([head, *body])


# --------------------------------------------------------------------------- the gate


@dataclass(frozen=True)
class QualityResult:
    """What the gate decided and where its outputs are; ``to_xcom()`` is small JSON."""

    success: bool
    dataset: str
    ds: str
    snapshot_uri: str
    sha256: str
    result_uri: str
    docs_uri: str
    stats: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    quarantine_uri: str | None = None

    def to_xcom(self) -> dict[str, Any]:
        return asdict(self)

    def to_exception(self) -> QualityGateFailed:
        return QualityGateFailed(
            self.summary,
            result_uri=self.result_uri,
            quarantine_uri=self.quarantine_uri or "",
            stats=self.stats,
        )


def quality_prefix(config: DatasetConfig, ds: str, sha256: str, *, passed: bool) -> str:
    """Where the gate's outputs go for a snapshot: reports/quality/ (pass) or quarantine/."""
    area = "reports/quality" if passed else "quarantine"
    return join_uri(config.root, area, f"ds={check_ds(ds)}", sha256[:16])


def _relative_name(file_uri: str, source_uri: str) -> str:
    base = source_uri.rstrip("/") + "/"
    if source_uri and file_uri.startswith(base):
        return file_uri[len(base) :]
    return file_uri.rstrip("/").rsplit("/", 1)[-1]


def _upload_tree(local_dir: str, storage: Any, prefix: str) -> None:
    root = Path(local_dir)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        storage.upload(path, join_uri(prefix, path.relative_to(root).as_posix()))


def validate_snapshot(
    config: DatasetConfig,
    snapshot_uri: str,
    *,
    credentials: S3Credentials | None = None,
    ds: str | None = None,
    raise_on_failure: bool = True,
) -> QualityResult:
    """Run the config's suite on a snapshot and store the outcome.

    Pass: ``reports/quality/ds=<ds>/<sha256[:16]>/`` gets ``data_docs/`` and ``summary.txt``,
    then ``result.json`` last (its presence means the output is complete); then the
    snapshot joins the validated index that training sets are assembled from.
    Fail: the landed batch files listed in the manifest are copied (never moved) to
    ``quarantine/ds=<ds>/<sha256[:16]>/batch/`` with ``data_docs/``, ``summary.txt`` and
    ``result.json`` last; then QualityGateFailed is raised (or, with
    ``raise_on_failure=False``, the failed result is returned).
    """
    from mlops_loop.core.snapshots import load_manifest, read_snapshot
    from mlops_loop.core.training_set import ValidatedSnapshot, record_validated

    manifest = load_manifest(snapshot_uri, credentials=credentials)
    manifest_ds = manifest.get("ds")
    if ds is None:
        ds = str(manifest_ds)
    elif manifest_ds and manifest_ds != ds:
        raise ValueError(
            f"snapshot {snapshot_uri} is for ds={manifest_ds}, but the gate was asked to check ds={ds}"
        )
    check_ds(ds)
    sha = str(manifest["sha256"])
    suite = load_suite(config)
    rows = int(manifest.get("rows") or 0)
    chunked = rows > config.quality.chunk_rows
    if not chunked:  # (run_suite_chunked checks the parts itself)
        check_snapshot_schema(snapshot_uri, manifest, credentials=credentials)
        df = read_snapshot(snapshot_uri, credentials=credentials)
        rows = len(df)

    with tempfile.TemporaryDirectory(prefix="mlops-loop-gx-") as tmp:
        docs_dir = os.path.join(tmp, "data_docs")
        if chunked:
            result = run_suite_chunked(
                suite,
                snapshot_uri,
                manifest,
                chunk_rows=config.quality.chunk_rows,
                credentials=credentials,
                docs_dir=docs_dir,
            )
        else:
            result = run_suite(suite, df, docs_dir=docs_dir)
            del df
        passed = bool(result.get("success"))
        summary = format_summary(
            result,
            manifest,
            dataset=config.name,
            ds=ds,
            snapshot_uri=snapshot_uri,
            column_order=config.column_names,
        )
        statistics = result.get("statistics") or {}
        stats = {
            "evaluated": int(statistics.get("evaluated_expectations", 0)),
            "successful": int(statistics.get("successful_expectations", 0)),
            "unsuccessful": int(statistics.get("unsuccessful_expectations", 0)),
            "success_percent": float(statistics.get("success_percent") or 0.0),
            "rows": rows,
            "chunked": chunked,
        }
        validated_at = datetime.now(timezone.utc).isoformat()
        result.setdefault("meta", {})["mlops_loop"] = {
            "dataset": config.name,
            "ds": ds,
            "snapshot_uri": snapshot_uri,
            "sha256": sha,
            "suite": suite["name"],
            "stats": stats,
            "validated_at": validated_at,
        }
        prefix = quality_prefix(config, ds, sha, passed=passed)
        storage = open_storage(prefix, credentials)
        quarantine_uri = None
        if not passed:
            quarantine_uri = prefix
            problems = _quarantine_batch(manifest, storage, join_uri(prefix, "batch"), credentials)
            if problems:
                summary += "\n" + "\n".join(problems)
        _upload_tree(docs_dir, storage, join_uri(prefix, "data_docs"))
        storage.write_text(join_uri(prefix, "summary.txt"), summary + "\n")
        result_uri = join_uri(prefix, "result.json")
        write_json(storage, result_uri, result)

    outcome = QualityResult(
        success=passed,
        dataset=config.name,
        ds=ds,
        snapshot_uri=snapshot_uri,
        sha256=sha,
        result_uri=result_uri,
        docs_uri=join_uri(prefix, "data_docs", "index.html"),
        stats=stats,
        summary=summary,
        quarantine_uri=quarantine_uri,
    )
    if passed:
        # The validated index is what training-set assembly reads (core.training_set).
        record_validated(
            config,
            ValidatedSnapshot(
                ds=ds,
                sha256=sha,
                snapshot_uri=snapshot_uri,
                rows=rows,
                result_uri=result_uri,
                validated_at=validated_at,
            ),
            credentials=credentials,
        )
        log.info("%s", summary)
    else:
        log.error("%s", summary)
        if raise_on_failure:
            raise outcome.to_exception()
    return outcome


def validated_result(
    config: DatasetConfig,
    snapshot_uri: str,
    *,
    credentials: S3Credentials | None = None,
    ds: str | None = None,
) -> QualityResult | None:
    """The stored passing result when this snapshot is already ``ds``'s validated snapshot
    (the newest that passed the gate for the date, and its ``result.json`` says success),
    else None: the snapshot is new for the date, failed before, or was superseded by a
    changed batch since (validating it again makes it the date's snapshot once more)."""
    from mlops_loop.core.snapshots import load_manifest
    from mlops_loop.core.storage import read_json
    from mlops_loop.core.training_set import current_validated

    manifest = load_manifest(snapshot_uri, credentials=credentials)
    ds = check_ds(ds or str(manifest.get("ds")))
    sha = str(manifest["sha256"])
    current = current_validated(config, ds, credentials=credentials)
    if current is None or current.sha256 != sha or not current.result_uri:
        return None
    storage = open_storage(current.result_uri, credentials)
    if not storage.exists(current.result_uri):
        return None
    stored = read_json(storage, current.result_uri)
    if not stored.get("success"):
        return None
    prefix = current.result_uri.rsplit("/", 1)[0]
    summary_uri = join_uri(prefix, "summary.txt")
    summary = storage.read_text(summary_uri).strip() if storage.exists(summary_uri) else ""
    meta = (stored.get("meta") or {}).get("mlops_loop") or {}
    return QualityResult(
        success=True,
        dataset=config.name,
        ds=ds,
        snapshot_uri=snapshot_uri,
        sha256=sha,
        result_uri=current.result_uri,
        docs_uri=join_uri(prefix, "data_docs", "index.html"),
        stats=dict(meta.get("stats") or {}),
        summary=summary,
    )


def _quarantine_batch(
    manifest: dict[str, Any], storage: Any, batch_prefix: str, credentials: S3Credentials | None
) -> list[str]:
    """Copy every landed file of the batch into quarantine; returns problem lines."""
    source = manifest.get("source") or {}
    problems = []
    for item in source.get("files") or []:
        uri = item["uri"]
        name = item.get("name") or _relative_name(uri, str(source.get("uri", "")))
        dest = join_uri(batch_prefix, name)
        try:
            copy_between(open_storage(uri, credentials), uri, storage, dest)
        except Exception as exc:  # keep quarantining the rest; the summary says what failed
            problems.append(f"! could not copy landed file {uri} to quarantine: {exc}")
    return problems


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlops_loop.core.quality", description="Great Expectations suites."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    suggest = sub.add_parser(
        "suggest", help="write a starter suite (schema + reference profile) for review"
    )
    suggest.add_argument("--config", required=True, help="dataset config YAML")
    suggest.add_argument(
        "--snapshot", action="append", required=True, help="reference snapshot URI (repeatable)"
    )
    suggest.add_argument("--out", required=True, help="where to write the suite JSON")
    suggest.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    check = sub.add_parser("check", help="check that a suite file is valid")
    check.add_argument("suite")
    args = parser.parse_args(argv)

    if args.command == "check":
        suite = read_suite_file(args.suite)
        print(f"{args.suite}: {len(suite['expectations'])} expectations, OK")
        return 0
    config = load_config(args.config)
    suite = starter_suite(config, args.snapshot, tolerance=args.tolerance)
    check_suite(suite, origin=args.out)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")
    tmp.write_text(json.dumps(suite, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    print(f"wrote {out}: {len(suite['expectations'])} expectations; review before committing")
    return 0


if __name__ == "__main__":
    sys.exit(main())

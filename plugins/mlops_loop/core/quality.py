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

Command line (writes a starter suite for review)::

    python -m mlops_loop.core.quality suggest --config include/config/credit_default.yaml \\
        --snapshot <snapshot uri> [--snapshot <uri> ...] --out include/expectations/x.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_loop.core.config import ColumnType, DatasetConfig, check_ds, load_config
from mlops_loop.core.storage import S3Credentials, copy_between, join_uri, open_storage, write_json
from mlops_loop.exceptions import QualityGateFailed, QualitySuiteError

if TYPE_CHECKING:
    import pandas as pd

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
        what = next((w for w in ("mean", "median", "stdev", "unique_value_count") if w in kind), "values")
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
    df = read_snapshot(snapshot_uri, credentials=credentials)

    with tempfile.TemporaryDirectory(prefix="mlops-loop-gx-") as tmp:
        docs_dir = os.path.join(tmp, "data_docs")
        result = run_suite(suite, df, docs_dir=docs_dir)
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
            "rows": len(df),
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
                rows=len(df),
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

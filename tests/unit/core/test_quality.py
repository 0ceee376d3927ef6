"""Quality gate logic that needs no Great Expectations run: suites derived from the config
and from a reference profile, the readable summary, frame preparation, paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_loop.core.config import DatasetConfig, load_config
from mlops_loop.core.quality import (
    NO_DATA,
    QualityResult,
    _round_out,
    format_summary,
    frame_for_validation,
    load_suite,
    quality_prefix,
    read_suite_file,
    starter_suite,
    suite_from_config,
    type_list_for,
)
from mlops_loop.exceptions import QualityGateFailed, QualitySuiteError
from mlops_loop_devtools.sample_data import generate_batch

REPO = Path(__file__).resolve().parents[3]
CREDIT = REPO / "include" / "config" / "credit_default.yaml"


@pytest.fixture(scope="module")
def config() -> DatasetConfig:
    return load_config(CREDIT, overrides={"storage": {"root": "/data/credit"}})


def by_type(suite: dict, kind: str, column: str | None = None) -> list[dict]:
    return [
        e
        for e in suite["expectations"]
        if e["type"] == kind and (column is None or e["kwargs"].get("column") == column)
    ]


# --------------------------------------------------------------------------- schema suite


def test_schema_suite_is_ge_json_and_marked_schema(config):
    suite = suite_from_config(config)
    assert suite["name"] == "credit_default.quality"
    assert json.loads(json.dumps(suite)) == suite
    for exp in suite["expectations"]:
        assert set(exp) == {"type", "kwargs", "meta"}
        assert exp["meta"]["source"] == "schema"


def test_schema_suite_table_checks(config):
    suite = suite_from_config(config)
    (cols,) = by_type(suite, "expect_table_columns_to_match_set")
    assert cols["kwargs"] == {"column_set": config.column_names, "exact_match": True}
    (count,) = by_type(suite, "expect_table_row_count_to_be_between")
    assert count["kwargs"] == {"min_value": 500, "max_value": 5_000_000}
    (unique,) = by_type(suite, "expect_column_values_to_be_unique")
    assert unique["kwargs"] == {"column": "application_id"}


@pytest.mark.parametrize(
    ("column", "kind", "kwargs"),
    [
        pytest.param("loan_amount", "expect_column_values_to_not_be_null", {}, id="required"),
        pytest.param(
            "annual_income",
            "expect_column_values_to_not_be_null",
            {"mostly": 0.9},
            id="max-null-10pc",
        ),
        pytest.param(
            "employment_years",
            "expect_column_values_to_not_be_null",
            {"mostly": 0.8},
            id="max-null-20pc",
        ),
        pytest.param(
            "age",
            "expect_column_values_to_be_between",
            {"min_value": 18, "max_value": 100},
            id="range",
        ),
        pytest.param(
            "home_ownership",
            "expect_column_values_to_be_in_set",
            {"value_set": ["RENT", "MORTGAGE", "OWN", "OTHER"]},
            id="categories",
        ),
        pytest.param(
            "loan_term_months",
            "expect_column_values_to_be_in_set",
            {"value_set": [12, 24, 36, 48, 60]},
            id="integer-set",
        ),
    ],
)
def test_schema_suite_column_checks(config, column, kind, kwargs):
    (exp,) = by_type(suite_from_config(config), kind, column)
    assert exp["kwargs"] == {"column": column, **kwargs}


@pytest.mark.parametrize(
    ("column", "must", "must_not"),
    [
        pytest.param("age", {"int64", "Int64"}, {"float64", "str"}, id="required-integer"),
        pytest.param("credit_score", {"float64"}, {"int64", "str"}, id="float"),
        pytest.param("home_ownership", {"str"}, {"float64"}, id="category"),
        pytest.param("applied_at", {"datetime64[us]", "datetime64[ns]"}, {"str"}, id="timestamp"),
        pytest.param("prior_default", {"bool", "boolean"}, {"str"}, id="boolean"),
    ],
)
def test_type_lists(config, column, must, must_not):
    names = set(type_list_for(config, column))
    assert must <= names
    assert not (must_not & names)
    (exp,) = by_type(suite_from_config(config), "expect_column_values_to_be_in_type_list", column)
    assert set(exp["kwargs"]["type_list"]) == names


def test_nullable_integer_accepts_float64_read_back():
    cfg = DatasetConfig.model_validate(
        {
            "name": "t",
            "storage": {"root": "/tmp/t"},
            "target": "y",
            "columns": [
                {"name": "n", "type": "integer", "nullable": True},
                {"name": "y", "type": "integer", "nullable": False},
            ],
        }
    )
    assert "float64" in type_list_for(cfg, "n")
    assert "float64" not in type_list_for(cfg, "y")


def test_schema_suite_without_id_or_upper_row_bound():
    cfg = DatasetConfig.model_validate(
        {
            "name": "t",
            "storage": {"root": "/tmp/t"},
            "target": "y",
            "quality": {"min_rows": 0, "default_max_null_fraction": 1.0},
            "columns": [{"name": "x", "type": "float"}, {"name": "y", "type": "integer"}],
        }
    )
    suite = suite_from_config(cfg)
    assert not by_type(suite, "expect_column_values_to_be_unique")
    assert not by_type(suite, "expect_column_values_to_not_be_null")  # 100 % nulls allowed
    (count,) = by_type(suite, "expect_table_row_count_to_be_between")
    assert count["kwargs"] == {"min_value": 0, "max_value": None}


# --------------------------------------------------------------------------- profile suite


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return pd.concat(
        [generate_batch(ds, rows=1500) for ds in ("2024-03-01", "2024-03-02")], ignore_index=True
    )


def test_starter_suite_adds_reviewable_profile_checks(config, reference):
    suite = starter_suite(config, reference)
    schema = suite_from_config(config)["expectations"]
    assert suite["expectations"][: len(schema)] == schema
    profile = [e for e in suite["expectations"] if e["meta"]["source"] == "profile"]
    numeric = [
        c for c in config.feature_columns if config.column(c).type.value in ("integer", "float")
    ]
    for column in numeric:
        (mean,) = by_type(suite, "expect_column_mean_to_be_between", column)
        observed = reference[column].mean()
        assert mean["kwargs"]["min_value"] < observed < mean["kwargs"]["max_value"]
        assert mean["meta"]["note"].startswith("reference mean")
        (median,) = by_type(suite, "expect_column_median_to_be_between", column)
        assert (
            median["kwargs"]["min_value"]
            <= reference[column].median()
            <= median["kwargs"]["max_value"]
        )
    # Nothing for the target, id or timestamp.
    for column in (config.target, config.id_column, config.timestamp_column):
        assert not [e for e in profile if e["kwargs"].get("column") == column]
    assert suite["meta"]["mlops_loop"]["reference_rows"] == len(reference)


def test_profile_bounds_stay_inside_schema_bounds(config, reference):
    suite = starter_suite(config, reference)
    for exp in by_type(suite, "expect_column_mean_to_be_between") + by_type(
        suite, "expect_column_median_to_be_between"
    ):
        spec = config.column(exp["kwargs"]["column"])
        if spec.min is not None:
            assert exp["kwargs"]["min_value"] >= spec.min
        if spec.max is not None:
            assert exp["kwargs"]["max_value"] <= spec.max


def test_profile_bounds_catch_a_units_change_but_not_drift(config, reference):
    suite = starter_suite(config, reference)
    (income,) = by_type(suite, "expect_column_mean_to_be_between", "annual_income")
    lo, hi = income["kwargs"]["min_value"], income["kwargs"]["max_value"]
    drifted = generate_batch("2024-05-01", rows=3000, drift=1.0)["annual_income"].mean()
    assert lo <= drifted <= hi
    assert not lo <= reference["annual_income"].mean() * 1000 <= hi


def test_profile_categories(config, reference):
    suite = starter_suite(config, reference)
    # Declared categories: the common ones must still appear; no duplicate value-set check.
    (contain,) = by_type(suite, "expect_column_distinct_values_to_contain_set", "region")
    assert contain["kwargs"]["value_set"] == sorted(reference["region"].unique())
    assert len(by_type(suite, "expect_column_values_to_be_in_set", "region")) == 1
    # Undeclared categories: the observed set, marked as coming from the profile.
    raw = config.model_dump()
    for col in raw["columns"]:
        if col["name"] == "purpose":
            col["allowed"] = None
    open_cfg = DatasetConfig.model_validate(raw)
    suite = starter_suite(open_cfg, reference)
    (observed,) = by_type(suite, "expect_column_values_to_be_in_set", "purpose")
    assert observed["meta"]["source"] == "profile"
    assert observed["kwargs"]["value_set"] == sorted(reference["purpose"].unique())


def test_starter_suite_rejects_empty_reference(config, reference):
    with pytest.raises(ValueError, match="no rows"):
        starter_suite(config, reference.iloc[:0])


@pytest.mark.parametrize(
    ("value", "down", "expected"),
    [
        pytest.param(41.23456, True, 41.23, id="down"),
        pytest.param(41.23456, False, 41.24, id="up"),
        pytest.param(-0.0298712, True, -0.02988, id="negative-down"),
        pytest.param(107_412.3, False, 107_500.0, id="large-up"),
        pytest.param(0.0, True, 0.0, id="zero"),
    ],
)
def test_round_out(value, down, expected):
    assert _round_out(value, down=down) == pytest.approx(expected)


# --------------------------------------------------------------------------- suite files


def test_load_suite_without_file_derives_from_schema(config):
    cfg = config.model_copy(update={"quality": config.quality.model_copy(update={"suite": None})})
    assert load_suite(cfg) == suite_from_config(cfg)


def test_suite_file_with_invalid_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"name": "x", "expectations": [')
    with pytest.raises(QualitySuiteError, match=r"broken\.json is not valid JSON") as err:
        read_suite_file(path)
    assert err.value.suite_path == str(path)


def test_missing_suite_file_names_the_file(tmp_path):
    with pytest.raises(QualitySuiteError, match="does not exist"):
        read_suite_file(tmp_path / "nope.json")


# --------------------------------------------------------------------------- summary


def ge_result(*items: dict, rows: int = 1000) -> dict:
    failed = sum(1 for i in items if not i["success"])
    return {
        "success": failed == 0,
        "results": list(items),
        "statistics": {
            "evaluated_expectations": len(items),
            "successful_expectations": len(items) - failed,
            "unsuccessful_expectations": failed,
            "success_percent": 100.0 * (len(items) - failed) / max(len(items), 1),
        },
    }


def item(kind: str, kwargs: dict, result: dict, *, success: bool = False, error: str | None = None):
    info: dict = {"raised_exception": False, "exception_message": None}
    if error:
        info = {
            "MetricConfigurationID(...)": {"exception_message": error, "raised_exception": True}
        }
    return {
        "success": success,
        "expectation_config": {"type": kind, "kwargs": {"batch_id": "b", **kwargs}, "meta": {}},
        "result": result,
        "exception_info": info,
    }


MANIFEST = {"sha256": "ab" * 32, "rows": 1000, "type_mismatches": {}, "missing_columns": []}


def summary_of(*items: dict, manifest: dict | None = None, order=()) -> str:
    return format_summary(
        ge_result(*items),
        manifest or MANIFEST,
        dataset="credit_default",
        ds="2024-01-02",
        snapshot_uri="/s",
        column_order=order,
    )


def test_summary_header_and_pass():
    text = summary_of(item("expect_column_values_to_be_unique", {"column": "id"}, {}, success=True))
    assert text == (
        "Quality gate PASSED for credit_default ds=2024-01-02 (snapshot abababababababab, "
        "1000 rows): 0 of 1 expectations failed."
    )


def test_summary_range_failure_shows_counts_and_examples():
    text = summary_of(
        item(
            "expect_column_values_to_be_between",
            {"column": "age", "min_value": 18.0, "max_value": 100.0},
            {
                "element_count": 1000,
                "unexpected_count": 20,
                "unexpected_percent": 2.0,
                "partial_unexpected_list": [150, 199, 150, 133, 140, 171, 188],
            },
        )
    )
    line = text.splitlines()[1]
    assert line == (
        "- age: expect_column_values_to_be_between: expected values between 18 and 100; "
        "20 of 1000 rows are unexpected (2.00%), e.g. 150, 199, 133, 140, 171"
    )


def test_summary_type_failure_uses_manifest_examples_and_hides_follow_on_errors():
    manifest = {
        **MANIFEST,
        "type_mismatches": {
            "loan_amount": {"count": 20, "examples": ["twelve thousand"], "declared_type": "float"}
        },
    }
    text = summary_of(
        item(
            "expect_column_values_to_be_between",
            {"column": "loan_amount", "min_value": 100, "max_value": 1e6},
            {},
            error="Column values, min_value, and max_value must either be None or of the same type.",
        ),
        item(
            "expect_column_values_to_be_in_type_list",
            {"column": "loan_amount", "type_list": ["float64"]},
            {"unexpected_count": 1000, "element_count": 1000, "partial_unexpected_list": ["1.5"]},
        ),
        manifest=manifest,
    )
    lines = text.splitlines()
    assert "2 of 2 expectations failed" in lines[0]
    assert lines[1].startswith("- loan_amount: expect_column_values_to_be_in_type_list")
    assert "20 values could not be parsed as the declared type, e.g. 'twelve thousand'" in lines[1]
    assert lines[2] == (
        "- loan_amount: expect_column_values_to_be_between: not evaluated "
        "(the column holds values of the wrong type)"
    )


def test_summary_names_missing_and_unexpected_columns_once():
    text = summary_of(
        item(
            "expect_table_columns_to_match_set",
            {"column_set": ["a", "b", "c"], "exact_match": True},
            {"observed_value": ["a", "c", "note"]},
        ),
        item(
            "expect_column_values_to_not_be_null", {"column": "b"}, {}, error="column b not found"
        ),
        item("expect_column_mean_to_be_between", {"column": "b"}, {}, error="column b not found"),
    )
    lines = text.splitlines()[1:]
    assert lines == [
        "- (table): expect_table_columns_to_match_set: missing columns ['b']; "
        "unexpected columns ['note']",
        "- b: column is missing from the batch; its checks did not run",
    ]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        pytest.param(
            item(
                "expect_column_values_to_not_be_null",
                {"column": "loan_amount"},
                {"element_count": 500, "unexpected_count": 10, "unexpected_percent": 2.0},
            ),
            "- loan_amount: expect_column_values_to_not_be_null: expected no nulls; "
            "10 of 500 rows are null (2.00%)",
            id="nulls",
        ),
        pytest.param(
            item(
                "expect_column_values_to_be_unique",
                {"column": "id"},
                {
                    "element_count": 500,
                    "unexpected_count": 11,
                    "unexpected_percent": 2.2,
                    "partial_unexpected_list": ["A-1", "A-1", "A-1"],
                },
            ),
            "- id: expect_column_values_to_be_unique: expected unique values; "
            "11 of 500 rows hold a duplicated value (2.20%), e.g. 'A-1'",
            id="duplicates",
        ),
        pytest.param(
            item(
                "expect_column_values_to_be_in_set",
                {"column": "home", "value_set": ["RENT", "OWN"]},
                {
                    "element_count": 500,
                    "unexpected_count": 10,
                    "unexpected_percent": 2.0,
                    "partial_unexpected_list": ["SPACESHIP"],
                },
            ),
            "- home: expect_column_values_to_be_in_set: expected values in {'RENT', 'OWN'}; "
            "10 of 500 rows are unexpected (2.00%), e.g. 'SPACESHIP'",
            id="unknown-category",
        ),
        pytest.param(
            item(
                "expect_table_row_count_to_be_between",
                {"min_value": 500, "max_value": None},
                {"observed_value": 0},
            ),
            "- (table): expect_table_row_count_to_be_between: observed 0 rows, "
            "expected at least 500 rows",
            id="too-few-rows",
        ),
        pytest.param(
            item(
                "expect_column_mean_to_be_between",
                {"column": "income", "min_value": 5771.0, "max_value": 107400.0},
                {"observed_value": 56167000.5},
            ),
            "- income: expect_column_mean_to_be_between: expected mean between 5771 and 107400, "
            "observed 5.6167e+07",
            id="mean",
        ),
        pytest.param(
            item(
                "expect_column_distinct_values_to_contain_set",
                {"column": "region", "value_set": ["east", "west"]},
                {"observed_value": ["east"]},
            ),
            "- region: expect_column_distinct_values_to_contain_set: expected each of "
            "{'east', 'west'} to appear; absent: 'west'",
            id="category-vanished",
        ),
    ],
)
def test_summary_lines(entry, expected):
    assert summary_of(entry).splitlines()[1] == expected


def test_summary_orders_table_first_then_columns_in_config_order():
    text = summary_of(
        item("expect_column_values_to_be_unique", {"column": "z"}, {"unexpected_count": 2}),
        item("expect_column_values_to_be_unique", {"column": "a"}, {"unexpected_count": 2}),
        item("expect_table_row_count_to_be_between", {"min_value": 5}, {"observed_value": 1}),
        order=["z", "a"],
    )
    assert [line.split(":")[0] for line in text.splitlines()[1:]] == ["- (table)", "- z", "- a"]


def test_summary_collapses_statistics_of_an_empty_batch():
    entries = [
        item(
            "expect_column_mean_to_be_between",
            {"column": c, "min_value": 0},
            {"observed_value": None},
        )
        for c in ("a", "b", "c")
    ]
    text = summary_of(*entries)
    assert NO_DATA not in text
    assert text.splitlines()[1] == (
        "- 3 column(s) have no non-null values, so their statistics could not be checked: a, b, c"
    )


def test_summary_reports_unexpected_errors():
    text = summary_of(
        item(
            "expect_column_values_to_match_regex",
            {"column": "x", "regex": "["},
            {},
            error="bad regex\nTrace",
        )
    )
    assert (
        text.splitlines()[1]
        == "- x: expect_column_values_to_match_regex: could not be evaluated: bad regex"
    )


# --------------------------------------------------------------------------- frames, paths, result


def test_frame_for_validation_keeps_values_and_makes_types_checkable():
    df = pd.DataFrame(
        {
            "s": pd.array(["a", None, "c"], dtype="str"),
            "cat": pd.Categorical(["x", "y", "x"]),
            "ts": pd.to_datetime(
                ["2024-01-01 10:00", "2024-01-02 00:00", "2024-01-03 00:00"]
            ).tz_localize("Europe/Berlin"),
            "n": np.array([1.5, np.nan, 3.0]),
        }
    )
    out = frame_for_validation(df)
    assert out["s"].dtype == object and out["s"].tolist() == ["a", None, "c"]
    assert out["cat"].dtype == object and out["cat"].tolist() == ["x", "y", "x"]
    assert str(out["ts"].dtype).startswith("datetime64") and out["ts"].dt.tz is None
    assert out["ts"].iloc[0] == pd.Timestamp("2024-01-01 09:00")
    assert out["n"].dtype == np.float64
    assert df["s"].dtype == "str"  # the input is not changed


def test_quality_prefix_layout(config):
    sha = "0123456789abcdef" + "f" * 48
    assert quality_prefix(config, "2024-01-02", sha, passed=True) == (
        "/data/credit/reports/quality/ds=2024-01-02/0123456789abcdef"
    )
    assert quality_prefix(config, "2024-01-02", sha, passed=False) == (
        "/data/credit/quarantine/ds=2024-01-02/0123456789abcdef"
    )
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        quality_prefix(config, "20240102", sha, passed=True)


def test_quality_result_xcom_and_exception():
    result = QualityResult(
        success=False,
        dataset="d",
        ds="2024-01-02",
        snapshot_uri="/s",
        sha256="ab" * 32,
        result_uri="/q/result.json",
        docs_uri="/q/data_docs/index.html",
        stats={"evaluated": 3, "unsuccessful": 1, "rows": 10},
        summary="Quality gate FAILED ...",
        quarantine_uri="/q",
    )
    payload = result.to_xcom()
    assert json.loads(json.dumps(payload)) == payload
    assert payload["quarantine_uri"] == "/q" and payload["stats"]["rows"] == 10
    exc = result.to_exception()
    assert isinstance(exc, QualityGateFailed)
    assert str(exc) == "Quality gate FAILED ..."
    assert (exc.result_uri, exc.quarantine_uri, exc.stats["unsuccessful"]) == (
        "/q/result.json",
        "/q",
        1,
    )

"""core.config: a wrong dataset config fails when loaded, naming the key and the problem."""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from mlops_loop.core.config import (
    STORAGE_ROOT_ENV,
    ColumnType,
    check_ds,
    load_config,
    parse_flag,
    resolve_uri,
    run_ds,
    run_time,
)
from mlops_loop.exceptions import ConfigError

REPO = Path(__file__).resolve().parents[3]
CREDIT_CONFIG = REPO / "include" / "config" / "credit_default.yaml"

MINIMAL: dict[str, Any] = {
    "name": "loans",
    "storage": {"root": "data/loans"},
    "target": "label",
    "id_column": "id",
    "timestamp_column": "at",
    "columns": [
        {"name": "id", "type": "string", "nullable": False},
        {"name": "at", "type": "timestamp"},
        {"name": "amount", "type": "float", "min": 0, "max": 10},
        {"name": "kind", "type": "category", "allowed": ["a", "b"]},
        {"name": "label", "type": "integer", "allowed": [0, 1]},
    ],
}


def write(tmp_path: Path, raw: Any) -> Path:
    path = tmp_path / "loans.yaml"
    path.write_text(yaml.safe_dump(raw) if not isinstance(raw, str) else raw)
    return path


def mutated(change) -> dict[str, Any]:
    raw = copy.deepcopy(MINIMAL)
    change(raw)
    return raw


def test_minimal_config_loads_with_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv(STORAGE_ROOT_ENV, raising=False)
    config = load_config(write(tmp_path, MINIMAL))
    assert config.root == str((tmp_path / "data" / "loans").resolve())
    assert config.source_uri("2024-01-02") == str(
        (tmp_path / "data/loans/raw/ds=2024-01-02").resolve()
    )
    assert config.source.format == "csv"
    # Unpausing a DAG must give no failed runs for dates with nothing to do (issue 11).
    assert config.source.on_missing == "skip"
    assert (config.source.wait_timeout_minutes, config.source.poke_interval_seconds) == (360, 300)
    assert config.source.csv.delimiter == "," and config.source.csv.encoding == "utf-8"
    assert config.column("amount").type is ColumnType.FLOAT
    assert config.feature_columns == ["amount", "kind"]
    assert config.ingest.rows_per_chunk == 250_000


def test_the_shipped_credit_config_is_valid():
    config = load_config(CREDIT_CONFIG)
    assert config.name == "credit_default" and config.target in config.column_names


def test_config_hash_ignores_formatting_but_not_content(tmp_path):
    a = load_config(write(tmp_path, MINIMAL))
    b = load_config(write(tmp_path, yaml.safe_dump(MINIMAL, default_flow_style=True)))
    c = load_config(write(tmp_path, mutated(lambda r: r["columns"][2].update(max=11))))
    assert a.config_hash() == b.config_hash() != c.config_hash()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            lambda r: r.update(colums=[]),
            r"colums: Extra inputs are not permitted",
            id="unknown-top-level-key",
        ),
        pytest.param(
            lambda r: (
                r["source"].update(delimeter=";")
                if "source" in r
                else r.update(source={"delimeter": ";"})
            ),
            r"source\.delimeter: Extra inputs are not permitted",
            id="unknown-nested-key",
        ),
        pytest.param(
            lambda r: r["columns"][2].update(type="decimal"),
            r"columns\.2\.type: Input should be 'integer'",
            id="unknown-column-type",
        ),
        pytest.param(
            lambda r: r["columns"][2].update(min="zero"),
            r"columns\.2\.min: Input should be a valid number",
            id="bad-type",
        ),
        pytest.param(
            lambda r: r["columns"][2].update(min=5, max=1),
            r"min \(5\.0\) is greater than max \(1\.0\)",
            id="min-greater-than-max",
        ),
        pytest.param(
            lambda r: r["columns"][3].update(min=0),
            r"columns\.3: .*min/max only apply to numeric columns, not category",
            id="range-on-category",
        ),
        pytest.param(
            lambda r: r["columns"][3].update(allowed=[]),
            r"allowed must list at least one value",
            id="empty-allowed",
        ),
        pytest.param(
            lambda r: r.update(target="defaulted"),
            r"target: 'defaulted' is not one of the columns",
            id="target-not-in-columns",
        ),
        pytest.param(
            lambda r: r.update(id_column="uid"),
            r"id_column: 'uid' is not one of the columns",
            id="id-not-in-columns",
        ),
        pytest.param(
            lambda r: r.update(timestamp_column="amount"),
            r"timestamp_column: 'amount' has type float, expected date or timestamp",
            id="timestamp-wrong-type",
        ),
        pytest.param(
            lambda r: r["columns"].append({"name": "id", "type": "string"}),
            r"duplicate column names \['id'\]",
            id="duplicate-column",
        ),
        pytest.param(
            lambda r: r.update(columns=[]),
            r"columns: List should have at least 1 item",
            id="no-columns",
        ),
        pytest.param(
            lambda r: r.update(source={"csv": {"encoding": "utf-9"}}),
            r"source\.csv\.encoding: unknown text encoding 'utf-9'",
            id="bad-encoding",
        ),
        pytest.param(
            lambda r: r.update(source={"csv": {"delimiter": ";;"}}),
            r"source\.csv\.delimiter: String should have at most 1 character",
            id="long-delimiter",
        ),
        pytest.param(
            lambda r: r.update(source={"format": "xlsx"}),
            r"source\.format: Input should be 'csv' or 'parquet'",
            id="bad-format",
        ),
        pytest.param(
            lambda r: r.update(source={"uri": "{root}/raw/"}),
            r"source\.uri: must contain \{ds\}",
            id="source-without-ds",
        ),
        pytest.param(
            lambda r: r.update(source={"on_missing": "ignore"}),
            r"source\.on_missing: Input should be 'fail' or 'skip'",
            id="bad-on-missing",
        ),
        pytest.param(
            lambda r: r.update(source={"wait_timeout_minutes": -5}),
            r"source\.wait_timeout_minutes: Input should be greater than or equal to 0",
            id="negative-wait-timeout",
        ),
        pytest.param(
            lambda r: r.update(source={"poke_interval_seconds": 0}),
            r"source\.poke_interval_seconds: Input should be greater than or equal to 1",
            id="zero-poke-interval",
        ),
        pytest.param(
            lambda r: r.update(name="Loans Data"),
            r"name: String should match pattern",
            id="bad-name",
        ),
        pytest.param(
            lambda r: r.update(name="1loans"),
            r"name: String should match pattern",
            id="name-starts-with-digit",
        ),
        pytest.param(lambda r: r.pop("storage"), r"storage: Field required", id="missing-storage"),
        pytest.param(
            lambda r: r.update(quality={"min_rows": 10, "max_rows": 5}),
            r"max_rows \(5\) is below min_rows \(10\)",
            id="rows-bounds",
        ),
        pytest.param(
            lambda r: r["columns"][0].update(max_null_fraction=0.5),
            r"not nullable cannot have max_null_fraction",
            id="not-null-with-null-fraction",
        ),
        pytest.param(
            lambda r: r.update(ingest={"rows_per_chunk": 10}),
            r"ingest\.rows_per_chunk: Input should be greater than or equal to 1000",
            id="tiny-chunks",
        ),
    ],
)
def test_wrong_config_names_key_and_problem(tmp_path, change, message):
    path = write(tmp_path, mutated(change))
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("name: [unclosed", r"is not valid YAML", id="bad-yaml"),
        pytest.param(
            "- just\n- a list\n", r"must be a mapping of keys, got list", id="not-a-mapping"
        ),
    ],
)
def test_unreadable_config_file(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_storage_root_env_redirects_and_overrides_win(tmp_path, monkeypatch):
    path = write(tmp_path, MINIMAL)
    monkeypatch.setenv(STORAGE_ROOT_ENV, str(tmp_path / "shared"))
    assert load_config(path).root == str(tmp_path / "shared" / "loans")
    s3 = {"endpoint_url": "http://127.0.0.1:9000"}  # S3 without one (or a connection) is refused
    explicit = load_config(path, overrides={"storage": {"root": "s3://bucket/loans", "s3": s3}})
    assert explicit.root == "s3://bucket/loans"
    assert explicit.source_uri("2024-01-02") == "s3://bucket/loans/raw/ds=2024-01-02/"


@pytest.mark.parametrize("ds", ["2024-1-2", "20240102", "2024-01-02T00:00:00", ""])
def test_bad_logical_date(ds):
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        check_ds(ds)


@pytest.mark.parametrize(
    ("uri", "base", "expected"),
    [
        pytest.param("s3://b/p", "/x", "s3://b/p", id="s3-unchanged"),
        pytest.param("file:///tmp/a", "/x", "/tmp/a", id="file-scheme"),
        pytest.param("rel/dir", "/x/y", "/x/y/rel/dir", id="relative-to-config"),
        pytest.param("/abs/dir", "/x", "/abs/dir", id="absolute"),
    ],
)
def test_resolve_uri(uri, base, expected):
    assert resolve_uri(uri, base) == expected


# --- the date and time a run is for ------------------------------------------------------

T0 = datetime(2026, 4, 22, 3, 0, tzinfo=timezone.utc)


def test_run_time_falls_back_to_logical_date_then_run_after():
    assert run_time({"data_interval_end": T0, "logical_date": None}) == T0
    assert run_time({"data_interval_end": None, "logical_date": T0}) == T0
    assert run_time({"dag_run": SimpleNamespace(run_after=T0)}) == T0
    with pytest.raises(ValueError, match="logical date"):
        run_time({})


@pytest.mark.parametrize(
    ("explicit", "context", "expected"),
    [
        pytest.param("2026-01-05", {"logical_date": T0}, "2026-01-05", id="form-date-wins"),
        pytest.param(None, {"logical_date": T0}, "2026-04-22", id="logical-date"),
        pytest.param("None", {"logical_date": T0}, "2026-04-22", id="rendered-none"),
        pytest.param("", {"logical_date": None, "dag_run": SimpleNamespace(run_after=T0)}, "2026-04-22", id="run-after"),
    ],
)
def test_run_ds(explicit, context, expected):
    assert run_ds(context, explicit) == expected


def test_run_ds_rejects_a_bad_date_and_an_empty_run():
    with pytest.raises(ValueError, match="YYYY-MM-DD, got '05/01/2026'"):
        run_ds({}, "05/01/2026")
    with pytest.raises(ValueError, match="neither a logical date nor run_after"):
        run_ds({})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(True, True, id="bool"),
        pytest.param(None, False, id="none"),
        pytest.param("yes", True, id="yes"),
        pytest.param(" False ", False, id="rendered-false"),
        pytest.param("", False, id="empty"),
    ],
)
def test_parse_flag(value, expected):
    assert parse_flag(value, "force") is expected


def test_parse_flag_names_the_setting():
    with pytest.raises(ValueError, match="force must be true or false, got 'maybe'"):
        parse_flag("maybe", "force")

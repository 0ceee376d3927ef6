"""core.normalise: converting values to the declared types (truth table), Parquet types,
and how bad or unusual landed files are named. File-level cases go through ingest_batch, as
a batch would."""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from mlops_loop.core.config import ColumnType, load_config
from mlops_loop.core.ingest import ingest_batch
from mlops_loop.core.normalise import arrow_type, convert_column
from mlops_loop.core.snapshots import load_manifest, read_snapshot, read_snapshot_table
from mlops_loop.exceptions import MixedSchemaError, SourceFileError
from mlops_loop_devtools.sample_data import generate_batch, land_batch
from tests.fixtures.landed_batches import (  # noqa: F401 - fixtures
    CREDIT_CONFIG,
    DS,
    ROWS,
    batch_dir,
    local_config,
    parquet_config,
)

# --------------------------------------------------------------------------- same data from every format


def test_parquet_batch_gives_the_same_data_as_csv(root, tmp_path):
    df = generate_batch(DS, ROWS)
    land_batch(df, root, DS, fmt="parquet", files=3)
    result = ingest_batch(parquet_config(root), DS)

    csv_root = tmp_path / "csv"
    land_batch(df, csv_root, DS, fmt="csv")
    csv_result = ingest_batch(
        load_config(CREDIT_CONFIG, overrides={"storage": {"root": str(csv_root)}}), DS
    )

    assert result.rows == ROWS
    assert load_manifest(result.snapshot_uri)["type_mismatches"] == {}
    assert read_snapshot_table(result.snapshot_uri).equals(
        read_snapshot_table(csv_result.snapshot_uri)
    )


# --------------------------------------------------------------------------- type conversion truth table


def text(*values):
    return pa.array(list(values), type=pa.string())


@pytest.mark.parametrize(
    ("ctype", "values", "expected", "bad", "examples"),
    [
        pytest.param(
            ColumnType.INTEGER, text("1", " 2 ", None, "-3"), [1, 2, None, -3], 0, [], id="int"
        ),
        pytest.param(
            ColumnType.INTEGER,
            text("3.0", "4", None),
            [3, 4, None],
            0,
            [],
            id="int-written-as-float",
        ),
        pytest.param(
            ColumnType.INTEGER,
            text("1", "1.5", "x", "x"),
            [1, None, None, None],
            3,
            ["1.5", "x"],
            id="int-bad",
        ),
        pytest.param(
            ColumnType.INTEGER,
            text("99999999999999999999"),
            [None],
            1,
            ["99999999999999999999"],
            id="int-overflow",
        ),
        pytest.param(ColumnType.INTEGER, text(""), [None], 0, [], id="int-empty-is-null"),
        pytest.param(
            ColumnType.FLOAT,
            text("1.5", "1e3", "-2", "inf"),
            [1.5, 1000.0, -2.0, float("inf")],
            0,
            [],
            id="float",
        ),
        pytest.param(
            ColumnType.FLOAT,
            text("1.5", "1,5", "abc"),
            [1.5, None, None],
            2,
            ["1,5", "abc"],
            id="float-bad",
        ),
        pytest.param(
            ColumnType.BOOLEAN,
            text("true", "False", "1", "0", "YES", "no", None),
            [True, False, True, False, True, False, None],
            0,
            [],
            id="bool-words",
        ),
        pytest.param(
            ColumnType.BOOLEAN, text("true", "maybe"), [True, None], 1, ["maybe"], id="bool-bad"
        ),
        pytest.param(
            ColumnType.DATE, text("2024-01-31", None), [date(2024, 1, 31), None], 0, [], id="date"
        ),
        pytest.param(
            ColumnType.DATE,
            text("2024-02-30", "2024-01-01"),
            [None, date(2024, 1, 1)],
            1,
            ["2024-02-30"],
            id="date-bad",
        ),
        pytest.param(
            ColumnType.TIMESTAMP,
            text("2024-01-01 10:00:00", "2024-01-01T10:00:00.250000", "2024-01-02"),
            [
                datetime(2024, 1, 1, 10),
                datetime(2024, 1, 1, 10, 0, 0, 250000),
                datetime(2024, 1, 2),
            ],
            0,
            [],
            id="timestamp-iso",
        ),
        pytest.param(
            ColumnType.TIMESTAMP,
            text("2024-01-01T10:00:00Z", "2024-01-01T12:00:00+02:00"),
            [datetime(2024, 1, 1, 10), datetime(2024, 1, 1, 10)],
            0,
            [],
            id="timestamp-offsets-to-utc",
        ),
        pytest.param(
            ColumnType.TIMESTAMP,
            text("2024-01-01T10:00:00Z", "2024-01-01 10:00:00"),
            [datetime(2024, 1, 1, 10), datetime(2024, 1, 1, 10)],
            0,
            [],
            id="timestamp-mixed-offsets",
        ),
        pytest.param(
            ColumnType.TIMESTAMP, text("yesterday"), [None], 1, ["yesterday"], id="timestamp-bad"
        ),
        pytest.param(
            ColumnType.STRING, pa.array([1, None, 3]), ["1", None, "3"], 0, [], id="string-from-int"
        ),
        pytest.param(
            ColumnType.FLOAT, pa.array([1, 2], pa.int32()), [1.0, 2.0], 0, [], id="float-from-int"
        ),
        pytest.param(
            ColumnType.INTEGER,
            pa.array([1.0, None, 3.0]),
            [1, None, 3],
            0,
            [],
            id="int-from-integral-float",
        ),
        pytest.param(
            ColumnType.INTEGER,
            pa.array([1.0, 1.5]),
            [1, None],
            1,
            ["1.5"],
            id="int-from-fractional-float",
        ),
        pytest.param(
            ColumnType.BOOLEAN,
            pa.array([0, 1, None]),
            [False, True, None],
            0,
            [],
            id="bool-from-01",
        ),
        pytest.param(
            ColumnType.BOOLEAN, pa.array([0, 2]), [False, None], 1, ["2"], id="bool-from-int-bad"
        ),
        pytest.param(
            ColumnType.TIMESTAMP,
            pa.array([datetime(2024, 1, 1)], pa.timestamp("ns")),
            [datetime(2024, 1, 1)],
            0,
            [],
            id="timestamp-from-ns",
        ),
        pytest.param(
            ColumnType.DATE,
            text("2024-01-01 00:00:00", "2024-01-02T10:00:00"),
            [date(2024, 1, 1), None],
            1,
            ["2024-01-02T10:00:00"],
            id="date-text-midnight-ok-other-times-bad",
        ),
        pytest.param(
            ColumnType.DATE,
            pa.array([datetime(2024, 1, 1), None], pa.timestamp("ns")),
            [date(2024, 1, 1), None],
            0,
            [],
            id="date-from-midnight-timestamps",
        ),
        pytest.param(
            ColumnType.DATE,
            pa.array([datetime(2024, 1, 1), datetime(2024, 1, 2, 10, 30)], pa.timestamp("us")),
            [date(2024, 1, 1), None],
            1,
            ["2024-01-02 10:30:00.000000"],
            id="date-from-timestamps-with-times",
        ),
        pytest.param(
            ColumnType.CATEGORY,
            pa.array(["a", "b", "a"]).dictionary_encode(),
            ["a", "b", "a"],
            0,
            [],
            id="category-from-dictionary",
        ),
    ],
)
def test_convert_column(ctype, values, expected, bad, examples):
    conv = convert_column(values, ctype)
    assert conv.array.to_pylist() == expected
    assert conv.array.type == arrow_type(ctype)
    assert (conv.bad, conv.examples) == (bad, examples)


def test_parquet_types_are_normalised_and_mismatches_recorded(root):
    base = generate_batch(DS, 60)
    df = base.copy()
    df["age"] = df["age"].astype("float64")  # integral floats: fine as integer
    df["loan_term_months"] = df["loan_term_months"].astype("float64")
    df.loc[3, "loan_term_months"] = 36.5  # not an integer: kept as text, recorded
    df["home_ownership"] = df["home_ownership"].astype("category")
    land_batch(df, root, DS, fmt="parquet")

    result = ingest_batch(parquet_config(root), DS)

    manifest = load_manifest(result.snapshot_uri)
    assert manifest["type_mismatches"] == {
        "loan_term_months": {"declared_type": "integer", "count": 1, "examples": ["36.5"]}
    }
    out = read_snapshot(result.snapshot_uri)
    assert out["age"].dtype == "int64" and out["age"].tolist() == base["age"].tolist()
    assert out["home_ownership"].tolist() == base["home_ownership"].tolist()
    assert out["loan_term_months"].iloc[3] == "36.5"


# --------------------------------------------------------------------------- bad and unusual files


def test_empty_file(config, root):
    land_batch(generate_batch(DS, 20), root, DS)
    (batch_dir(root) / "part-001.csv").write_bytes(b"")
    with pytest.raises(SourceFileError, match=r"part-001\.csv: is empty \(0 bytes\)") as info:
        ingest_batch(config, DS)
    assert info.value.reason == "empty"
    assert info.value.file_uri.endswith("part-001.csv")
    assert not (root / "snapshots").exists()


def test_header_only_file_gives_a_zero_row_snapshot_for_the_gate_to_reject(config, root):
    # Decision: a header-only batch is a valid, empty table; ingest records it as a 0-row
    # snapshot with the header's columns, and the quality gate rejects it through
    # quality.min_rows (a dataset may set min_rows: 0 to accept empty days).
    (batch_dir(root) / "part-000.csv").write_text(",".join(config.column_names) + "\n")

    result = ingest_batch(config, DS)

    assert result.rows == 0 and result.created
    assert "0 data rows" in result.issues
    manifest = load_manifest(result.snapshot_uri)
    assert manifest["rows"] == 0 and manifest["missing_columns"] == []
    assert {c["name"]: c["arrow_type"] for c in manifest["columns"]}["age"] == "int64"
    assert read_snapshot(result.snapshot_uri).shape == (0, len(config.column_names))


@pytest.mark.parametrize("sep", [";", "\t", "|"], ids=["semicolon", "tab", "pipe"])
def test_csv_with_the_wrong_delimiter(config, root, sep):
    generate_batch(DS, 30).to_csv(batch_dir(root) / "part-000.csv", sep=sep, index=False)
    with pytest.raises(
        SourceFileError, match=re.escape(f"looks like {sep!r}-delimited, config says ','")
    ) as info:
        ingest_batch(config, DS)
    assert info.value.reason == "delimiter"
    assert "part-000.csv" in str(info.value)


def test_csv_with_the_right_non_default_delimiter(root):
    generate_batch(DS, 30).to_csv(batch_dir(root) / "part-000.csv", sep=";", index=False)
    config = load_config(
        CREDIT_CONFIG,
        overrides={
            "storage": {"root": str(root)},
            "source": {"format": "csv", "csv": {"delimiter": ";"}},
        },
    )
    assert ingest_batch(config, DS).rows == 30


def latin1_batch(root: Path) -> Path:
    df = generate_batch(DS, 30)
    df["purpose"] = df["purpose"].astype(object)
    df.loc[7, "purpose"] = "caf\u00e9"
    path = batch_dir(root) / "part-000.csv"
    df.to_csv(path, index=False, encoding="latin-1")
    return path


def test_csv_with_the_wrong_encoding(config, root):
    latin1_batch(root)
    with pytest.raises(
        SourceFileError, match=r"part-000\.csv: not valid utf-8 text at byte \d+ \(line 9\)"
    ) as info:
        ingest_batch(config, DS)
    assert info.value.reason == "encoding"
    assert "source.csv.encoding" in str(info.value)


def test_csv_with_the_right_non_default_encoding(root):
    latin1_batch(root)
    config = load_config(
        CREDIT_CONFIG,
        overrides={
            "storage": {"root": str(root)},
            "source": {"format": "csv", "csv": {"encoding": "latin-1"}},
        },
    )
    out = read_snapshot(ingest_batch(config, DS).snapshot_uri)
    assert out["purpose"].iloc[7] == "caf\u00e9"


def test_ragged_csv_row(config, root):
    land_batch(generate_batch(DS, 20), root, DS)
    path = batch_dir(root) / "part-000.csv"
    path.write_text(path.read_text() + "only,three,fields\n")
    with pytest.raises(
        SourceFileError, match=r"part-000\.csv: cannot be parsed as CSV.*Expected 16 columns, got 3"
    ) as info:
        ingest_batch(config, DS)
    assert info.value.reason == "malformed"


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
        pytest.param(lambda b: b[:4] + b"\x00" * (len(b) - 8) + b[-8:], id="zeroed-body"),
        pytest.param(lambda b: b"not parquet at all", id="not-parquet"),
        pytest.param(
            lambda b: b[:100] + b"\xab" * 2000 + b[2100:], id="corrupted-data-pages-valid-footer"
        ),
    ],
)
def test_corrupted_parquet(root, damage):
    config = parquet_config(root)
    land_batch(generate_batch(DS, 60), root, DS, fmt="parquet", files=2)
    path = batch_dir(root) / "part-001.parquet"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(
        SourceFileError, match=r"part-001\.parquet: is not a readable Parquet file"
    ) as info:
        ingest_batch(config, DS)
    assert info.value.reason == "corrupt"
    assert info.value.file_uri == str(path)


def test_mixed_schemas_across_files_of_one_batch(config, root):
    df = generate_batch(DS, 40)
    df.iloc[:20].to_csv(batch_dir(root) / "part-000.csv", index=False)
    df.iloc[20:].drop(columns=["region"]).assign(note="x").to_csv(
        batch_dir(root) / "part-001.csv", index=False
    )
    with pytest.raises(
        MixedSchemaError,
        match=r"part-001\.csv differs from part-000\.csv \(missing \['region'\], extra \['note'\]\)",
    ):
        ingest_batch(config, DS)


def test_same_columns_in_another_order_across_files_is_fine(config, root):
    df = generate_batch(DS, 40)
    df.iloc[:20].to_csv(batch_dir(root) / "part-000.csv", index=False)
    df.iloc[20:][list(reversed(df.columns))].to_csv(batch_dir(root) / "part-001.csv", index=False)
    out = read_snapshot(ingest_batch(config, DS).snapshot_uri)
    assert out["application_id"].tolist() == df["application_id"].tolist()


def test_duplicate_header_names(config, root):
    (batch_dir(root) / "part-000.csv").write_text("age,age\n1,2\n")
    with pytest.raises(SourceFileError, match=r"duplicate column names \['age'\]"):
        ingest_batch(config, DS)


@pytest.mark.parametrize("variant", ["gzip", "utf8-bom"])
def test_compressed_and_bom_csv_read_like_plain_csv(config, root, tmp_path, variant):
    import gzip

    df = generate_batch(DS, 50)
    if variant == "gzip":
        with gzip.open(batch_dir(root) / "part-000.csv.gz", "wt", encoding="utf-8") as fh:
            df.to_csv(fh, index=False)
    else:
        df.to_csv(batch_dir(root) / "part-000.csv", index=False, encoding="utf-8-sig")

    result = ingest_batch(config, DS)

    manifest = load_manifest(result.snapshot_uri)
    assert (
        manifest["missing_columns"],
        manifest["unexpected_columns"],
        manifest["type_mismatches"],
    ) == ([], [], {})
    plain = tmp_path / "plain"
    land_batch(df, plain, DS)
    expected = ingest_batch(
        load_config(CREDIT_CONFIG, overrides={"storage": {"root": str(plain)}}), DS
    )
    assert read_snapshot_table(result.snapshot_uri).equals(
        read_snapshot_table(expected.snapshot_uri)
    )


def test_quoted_delimiters_and_newlines_inside_values(config, root):
    df = generate_batch(DS, 30)
    df["purpose"] = df["purpose"].astype(object)
    df.loc[1, "purpose"] = 'two\nlines, with "quotes"'
    land_batch(df, root, DS)
    out = read_snapshot(ingest_batch(config, DS).snapshot_uri)
    assert out["purpose"].iloc[1] == 'two\nlines, with "quotes"' and len(out) == 30

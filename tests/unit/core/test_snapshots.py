"""core.snapshots on the local-directory layout: normalisation, bad input, idempotency,
atomicity, chunking and the readers other stages use."""

from __future__ import annotations

import json
import os
import re
from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops_loop.core import snapshots
from mlops_loop.core.config import ChunkSettings, ColumnType, DatasetConfig, load_config
from mlops_loop.core.snapshots import (
    SNAPSHOT_FORMAT_VERSION,
    content_hash,
    convert_column,
    ingest_batch,
    iter_snapshot_batches,
    load_manifest,
    read_snapshot,
    read_snapshot_table,
)
from mlops_loop.core.storage import sha256_file
from mlops_loop.exceptions import (
    MixedSchemaError,
    NoBatchError,
    SnapshotNotFoundError,
    SourceFileError,
    StorageError,
)
from mlops_loop_devtools.sample_data import generate_batch, land_batch

REPO = Path(__file__).resolve().parents[3]
CREDIT_CONFIG = REPO / "include" / "config" / "credit_default.yaml"
DS = "2024-03-01"
ROWS = 240


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def config(root: Path) -> DatasetConfig:
    return load_config(CREDIT_CONFIG, overrides={"storage": {"root": str(root)}})


def parquet_config(root: Path) -> DatasetConfig:
    return load_config(
        CREDIT_CONFIG, overrides={"storage": {"root": str(root)}, "source": {"format": "parquet"}}
    )


def with_chunk_rows(config: DatasetConfig, rows: int) -> DatasetConfig:
    # The config model keeps rows_per_chunk >= 1000 for real use; tests go below it
    # to exercise many chunks on a few hundred rows.
    return config.model_copy(update={"ingest": ChunkSettings.model_construct(rows_per_chunk=rows)})


def batch_dir(root: Path, ds: str = DS) -> Path:
    path = root / "raw" / f"ds={ds}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below a folder with size and mtime (to prove nothing was rewritten)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def checksums(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()
    }


# --------------------------------------------------------------------------- good batches


def test_csv_batch_becomes_typed_snapshot_with_manifest(config, root):
    df = generate_batch(DS, ROWS)
    land_batch(df, root, DS, files=2)

    result = ingest_batch(config, DS)

    assert result.created and result.rows == ROWS and result.ds == DS
    assert result.dataset == "credit_default"
    assert result.snapshot_uri == f"{root}/snapshots/{result.sha256}"
    assert result.issues == ()
    xcom = result.to_xcom()
    assert set(xcom) == {
        "snapshot_uri",
        "sha256",
        "rows",
        "ds",
        "dataset",
        "created",
        "source_uri",
        "manifest_uri",
    }
    json.dumps(xcom)  # XCom-safe

    manifest = load_manifest(result.snapshot_uri)
    assert manifest["sha256"] == result.sha256
    assert manifest["rows"] == ROWS
    assert manifest["format_version"] == SNAPSHOT_FORMAT_VERSION
    assert manifest["type_mismatches"] == {}
    assert manifest["missing_columns"] == [] and manifest["unexpected_columns"] == []
    assert [c["name"] for c in manifest["columns"]] == config.column_names
    types = {c["name"]: c["arrow_type"] for c in manifest["columns"]}
    assert types["age"] == "int64"
    assert types["annual_income"] == "double"
    assert types["home_ownership"] == "string"
    assert types["prior_default"] == "bool"
    assert types["applied_at"] == "timestamp[us]"
    landed = sorted(batch_dir(root).iterdir())
    assert [f["name"] for f in manifest["source"]["files"]] == ["part-000.csv", "part-001.csv"]
    assert [f["sha256"] for f in manifest["source"]["files"]] == [sha256_file(p) for p in landed]
    assert [f["size"] for f in manifest["source"]["files"]] == [p.stat().st_size for p in landed]
    for part in manifest["files"]:
        path = Path(result.snapshot_uri) / part["name"]
        assert sha256_file(path) == part["sha256"] and path.stat().st_size == part["size"]
    assert sum(p["rows"] for p in manifest["files"]) == ROWS

    out = read_snapshot(result.snapshot_uri)
    assert list(out.columns) == config.column_names
    pd.testing.assert_series_equal(out["age"], df["age"], check_names=False)
    pd.testing.assert_series_equal(out["annual_income"], df["annual_income"], check_names=False)
    assert out["prior_default"].tolist() == df["prior_default"].tolist()
    assert out["applied_at"].tolist() == df["applied_at"].tolist()
    assert out["application_id"].tolist() == df["application_id"].tolist()


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


def test_rerun_is_idempotent_and_writes_nothing(config, root):
    land_batch(generate_batch(DS, ROWS), root, DS)
    first = ingest_batch(config, DS)
    before = tree(root)

    second = ingest_batch(config, DS)

    assert second.sha256 == first.sha256 and second.snapshot_uri == first.snapshot_uri
    assert second.rows == first.rows
    assert first.created and not second.created
    assert tree(root) == before
    assert len(list((root / "snapshots").iterdir())) == 1


def test_landed_files_are_never_modified(config, root):
    land_batch(generate_batch(DS, ROWS, corrupt="text_in_numeric"), root, DS, files=2)
    (batch_dir(root) / "_SUCCESS").write_text("")
    raw = root / "raw"
    before, stamps = checksums(raw), tree(raw)

    ingest_batch(config, DS)
    ingest_batch(config, DS)

    assert checksums(raw) == before and tree(raw) == stamps


def test_content_hash_depends_on_data_and_normalisation_not_listing_order(config):
    files = [("a.csv", "1" * 64), ("b.csv", "2" * 64)]
    base = content_hash(config, DS, files)
    assert content_hash(config, DS, list(reversed(files))) == base
    assert content_hash(config, DS, [("a.csv", "1" * 64), ("b.csv", "3" * 64)]) != base
    assert content_hash(config, DS, [("a.csv", "1" * 64), ("c.csv", "2" * 64)]) != base
    retyped = config.model_copy(
        update={
            "columns": [
                c.model_copy(update={"type": ColumnType.STRING}) if c.name == "age" else c
                for c in config.columns
            ]
        }
    )
    assert content_hash(retyped, DS, files) != base
    semicolon = config.model_copy(
        update={
            "source": config.source.model_copy(
                update={"csv": config.source.csv.model_copy(update={"delimiter": ";"})}
            )
        }
    )
    assert content_hash(semicolon, DS, files) != base
    # Quality thresholds do not change a snapshot's content, so they keep its address.
    stricter = config.model_copy(
        update={"quality": config.quality.model_copy(update={"min_rows": 10})}
    )
    assert content_hash(stricter, DS, files) == base
    assert content_hash(config, "2024-03-02", files) != base


def test_identical_bytes_landed_for_two_dates_keep_their_own_provenance(config, root):
    land_batch(generate_batch(DS, 40), root, DS)
    other = "2024-03-02"
    land_batch(generate_batch(DS, 40), root, other)  # the same file landed again

    first, second = ingest_batch(config, DS), ingest_batch(config, other)

    assert first.sha256 != second.sha256 and second.created
    manifest = load_manifest(second.snapshot_uri)
    assert manifest["ds"] == other
    assert manifest["source"]["uri"] == config.source_uri(other)
    assert all(f"ds={other}" in f["uri"] for f in manifest["source"]["files"])


def test_same_batch_at_two_roots_gets_the_same_hash(tmp_path):
    df = generate_batch(DS, 50)
    shas = []
    for name in ("one", "two"):
        root = tmp_path / name
        land_batch(df, root, DS)
        shas.append(
            ingest_batch(
                load_config(CREDIT_CONFIG, overrides={"storage": {"root": str(root)}}), DS
            ).sha256
        )
    assert shas[0] == shas[1]


# --------------------------------------------------------------------------- chunking


def test_many_small_chunks_and_parts_give_the_same_snapshot(root, tmp_path, monkeypatch):
    df = generate_batch(DS, ROWS)
    land_batch(df, root, DS, files=2)
    one_chunk = ingest_batch(
        load_config(CREDIT_CONFIG, overrides={"storage": {"root": str(root)}}), DS
    )

    chunked_root = tmp_path / "chunked"
    land_batch(df, chunked_root, DS, files=2)
    monkeypatch.setattr(snapshots, "ROWS_PER_PART", 70)
    config = with_chunk_rows(
        load_config(CREDIT_CONFIG, overrides={"storage": {"root": str(chunked_root)}}), 25
    )
    chunked = ingest_batch(config, DS)

    manifest = load_manifest(chunked.snapshot_uri)
    assert len(manifest["files"]) == 4  # 240 rows, 70 per part
    assert [f["rows"] for f in manifest["files"]] == [70, 70, 70, 30]
    meta = pq.ParquetFile(Path(chunked.snapshot_uri) / "part-00000.parquet").metadata
    assert meta.num_row_groups > 1
    assert chunked.sha256 == one_chunk.sha256
    assert read_snapshot_table(chunked.snapshot_uri).equals(
        read_snapshot_table(one_chunk.snapshot_uri)
    )
    batches = list(
        iter_snapshot_batches(chunked.snapshot_uri, batch_size=40, columns=["age", "default"])
    )
    assert all(len(b) <= 40 for b in batches)
    assert pd.concat(batches, ignore_index=True).equals(
        read_snapshot(one_chunk.snapshot_uri, columns=["age", "default"])
    )


def test_bad_value_in_a_late_chunk_keeps_the_whole_column_as_text(config, root):
    df = generate_batch(DS, ROWS)
    df["age"] = df["age"].astype(object)
    df.loc[ROWS - 1, "age"] = "forty"
    land_batch(df, root, DS)

    result = ingest_batch(with_chunk_rows(config, 20), DS)

    manifest = load_manifest(result.snapshot_uri)
    assert manifest["type_mismatches"] == {
        "age": {"declared_type": "integer", "count": 1, "examples": ["forty"]}
    }
    out = read_snapshot(result.snapshot_uri)
    assert out["age"].iloc[0] == str(df["age"].iloc[0])
    assert out["age"].iloc[-1] == "forty"
    assert len(out) == ROWS
    assert out["loan_amount"].dtype == "float64"  # other columns still typed


# --------------------------------------------------------------------------- values the gate must see


def test_text_in_numeric_column_is_kept_and_recorded(config, root):
    df = generate_batch(DS, ROWS, corrupt="text_in_numeric")
    land_batch(df, root, DS)

    result = ingest_batch(config, DS)

    manifest = load_manifest(result.snapshot_uri)
    bad = (df["loan_amount"] == "twelve thousand").sum()
    assert manifest["type_mismatches"]["loan_amount"] == {
        "declared_type": "float",
        "count": int(bad),
        "examples": ["twelve thousand"],
    }
    assert {c["name"]: c["arrow_type"] for c in manifest["columns"]}["loan_amount"] == "string"
    assert any("loan_amount" in issue and "twelve thousand" in issue for issue in result.issues)
    out = read_snapshot(result.snapshot_uri)
    assert (out["loan_amount"] == "twelve thousand").sum() == bad
    assert out["loan_amount"].isna().sum() == 0  # nothing coerced away


@pytest.mark.parametrize(
    ("corrupt", "key", "expected"),
    [
        pytest.param("missing_column", "missing_columns", ["interest_rate"], id="missing-column"),
        pytest.param("extra_column", "unexpected_columns", ["internal_note"], id="extra-column"),
    ],
)
def test_column_set_differences_are_recorded(config, root, corrupt, key, expected):
    land_batch(generate_batch(DS, ROWS, corrupt=corrupt), root, DS)

    result = ingest_batch(config, DS)

    manifest = load_manifest(result.snapshot_uri)
    assert manifest[key] == expected
    names = [c["name"] for c in manifest["columns"]]
    present = [n for n in config.column_names if n not in manifest["missing_columns"]]
    assert names == present + manifest["unexpected_columns"]  # configured order, extras last
    assert any(expected[0] in issue for issue in result.issues)
    if corrupt == "extra_column":
        assert [c["declared_type"] for c in manifest["columns"]][-1] is None
        assert read_snapshot(result.snapshot_uri)["internal_note"].eq("x").all()


@pytest.mark.parametrize(
    "corrupt", ["nulls_in_required", "out_of_range", "unknown_category", "duplicate_ids"]
)
def test_gate_level_problems_pass_through_ingest_unchanged(config, root, corrupt):
    df = generate_batch(DS, ROWS, corrupt=corrupt)
    land_batch(df, root, DS)

    result = ingest_batch(config, DS)

    assert load_manifest(result.snapshot_uri)["type_mismatches"] == {}
    out = read_snapshot(result.snapshot_uri)
    for name in ("loan_amount", "age", "home_ownership", "application_id"):
        assert out[name].isna().sum() == df[name].isna().sum()
        assert out[name].astype(str).tolist() == df[name].astype(str).tolist()


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
    assert conv.array.type == snapshots.arrow_type(ctype)
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


# --------------------------------------------------------------------------- bad input


def test_no_batch_for_the_date(config, root):
    with pytest.raises(NoBatchError, match="no batch for ds=2024-03-01") as info:
        ingest_batch(config, DS)
    assert info.value.source_uri == config.source_uri(DS)
    assert not (root / "snapshots").exists()


def test_no_batch_names_files_of_another_format_and_ignores_marker_files(config, root):
    folder = batch_dir(root)
    generate_batch(DS, 10).to_parquet(folder / "part-000.parquet")
    (folder / "_SUCCESS").write_text("")
    (folder / ".part-000.csv.crc").write_text("")
    with pytest.raises(NoBatchError, match=r"found only .*part-000\.parquet"):
        ingest_batch(config, DS)


def test_marker_and_hidden_files_do_not_count(config, root):
    land_batch(generate_batch(DS, 20), root, DS)
    first = ingest_batch(config, DS)
    folder = batch_dir(root)
    (folder / "_SUCCESS").write_text("")
    (folder / ".hidden.csv").write_text("garbage")
    (folder / "_temporary").mkdir()
    (folder / "_temporary" / "x.csv").write_text("garbage")
    second = ingest_batch(config, DS)
    assert second.sha256 == first.sha256 and not second.created


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


def test_bad_logical_date(config):
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        ingest_batch(config, "01/03/2024")


# --------------------------------------------------------------------------- atomicity


def test_crash_mid_write_leaves_no_snapshot_and_rerun_completes(config, root, monkeypatch):
    land_batch(generate_batch(DS, ROWS), root, DS)
    calls = {"n": 0}
    real_write = snapshots._PartWriter.write

    def crash_after_first_chunk(self, table):  # fault injection: the process dies mid-write
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError("disk full")
        real_write(self, table)

    monkeypatch.setattr(snapshots._PartWriter, "write", crash_after_first_chunk)
    with pytest.raises(OSError, match="disk full"):
        ingest_batch(with_chunk_rows(config, 30), DS)
    assert list((root / "snapshots").iterdir()) == []  # no snapshot, no staging leftovers

    monkeypatch.setattr(snapshots._PartWriter, "write", real_write)
    result = ingest_batch(config, DS)
    assert result.created and result.rows == ROWS


def test_snapshot_folder_without_manifest_is_absent_and_replaced(config, root):
    land_batch(generate_batch(DS, ROWS), root, DS)
    good = ingest_batch(config, DS)
    snap = Path(good.snapshot_uri)
    # Simulate a write that died before its manifest: parts present, one of them garbage.
    (snap / "manifest.json").unlink()
    (snap / "part-00000.parquet").write_bytes(b"half a file")
    (snap / "part-00007.parquet").write_bytes(b"stray part")

    with pytest.raises(SnapshotNotFoundError, match=r"manifest\.json is missing"):
        load_manifest(good.snapshot_uri)
    with pytest.raises(SnapshotNotFoundError):
        read_snapshot(good.snapshot_uri)

    again = ingest_batch(config, DS)

    assert again.created and again.sha256 == good.sha256
    assert sorted(p.name for p in snap.iterdir()) == ["manifest.json", "part-00000.parquet"]
    assert len(read_snapshot(again.snapshot_uri)) == ROWS


def test_leftover_staging_folders_do_not_count_and_stale_ones_are_removed(config, root):
    land_batch(generate_batch(DS, ROWS), root, DS)
    sha = content_hash(
        config, DS, [("part-000.csv", sha256_file(batch_dir(root) / "part-000.csv"))]
    )
    snaps = root / "snapshots"
    stale = snaps / f".tmp-{sha}-deadbeef0000"
    fresh = snaps / f".tmp-{sha}-cafe00000000"
    for leftover in (stale, fresh):
        leftover.mkdir(parents=True)
        (leftover / "part-00000.parquet").write_bytes(b"partial")
    old = 1_000_000_000
    os.utime(stale, (old, old))

    result = ingest_batch(config, DS)

    assert result.created and result.sha256 == sha
    assert not stale.exists()  # stale leftovers of the same snapshot are cleaned up
    assert fresh.exists()  # a recent one may belong to a concurrent writer: left alone
    assert len(read_snapshot(result.snapshot_uri)) == ROWS


# --------------------------------------------------------------------------- readers


def test_readers_select_columns_and_reject_unknown_ones(config, root):
    land_batch(generate_batch(DS, ROWS), root, DS)
    uri = ingest_batch(config, DS).snapshot_uri

    assert list(read_snapshot(uri, columns=["default", "age"]).columns) == ["default", "age"]
    assert sum(len(b) for b in iter_snapshot_batches(uri, batch_size=100)) == ROWS
    with pytest.raises(StorageError, match=r"has no column\(s\) \['nope'\]"):
        read_snapshot(uri, columns=["age", "nope"])


def test_load_manifest_of_a_missing_snapshot(tmp_path):
    with pytest.raises(SnapshotNotFoundError, match="no snapshot at") as info:
        load_manifest(str(tmp_path / "snapshots" / ("0" * 64)))
    assert info.value.uri.endswith("0" * 64)


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


def test_concurrent_writer_that_finished_first_wins(config, root, monkeypatch):
    land_batch(generate_batch(DS, 60), root, DS)
    winner = ingest_batch(config, DS)
    final = Path(winner.snapshot_uri)
    before = tree(final)
    # The other writer checked for the manifest before the winner wrote it, then built
    # its own copy: simulate by hiding the manifest from the up-front existence check.
    real_exists = snapshots.LocalStorage.exists
    monkeypatch.setattr(
        snapshots.LocalStorage,
        "exists",
        lambda self, uri: False if uri.endswith("manifest.json") else real_exists(self, uri),
    )

    loser = ingest_batch(config, DS)

    assert (loser.sha256, loser.created) == (winner.sha256, False)
    assert tree(final) == before  # the published snapshot was not touched
    assert [p.name for p in (root / "snapshots").iterdir()] == [winner.sha256]  # no staging left

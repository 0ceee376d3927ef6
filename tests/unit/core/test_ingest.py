"""core.ingest on the local-directory layout: the snapshot and its manifest, the content
address, idempotency, chunking and part roll-over, what the gate must see, missing
batches, and atomic publishing (the S3 path runs in tests/integration/test_ingest_s3.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from mlops_loop.core import ingest
from mlops_loop.core.config import ColumnType, load_config
from mlops_loop.core.ingest import content_hash, ingest_batch
from mlops_loop.core.snapshots import (
    SNAPSHOT_FORMAT_VERSION,
    iter_snapshot_batches,
    load_manifest,
    read_snapshot,
    read_snapshot_table,
)
from mlops_loop.core.storage import LocalStorage, sha256_file
from mlops_loop.exceptions import ConfigError, NoBatchError, SnapshotNotFoundError
from mlops_loop_devtools.sample_data import generate_batch, land_batch
from tests.fixtures.landed_batches import (  # noqa: F401 - fixtures
    CREDIT_CONFIG,
    DS,
    ROWS,
    batch_dir,
    checksums,
    local_config,
    tree,
    with_chunk_rows,
)

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
    monkeypatch.setattr(ingest, "ROWS_PER_PART", 70)
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


def test_bad_logical_date(config):
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        ingest_batch(config, "01/03/2024")


# --------------------------------------------------------------------------- atomicity


def test_crash_mid_write_leaves_no_snapshot_and_rerun_completes(config, root, monkeypatch):
    land_batch(generate_batch(DS, ROWS), root, DS)
    calls = {"n": 0}
    real_write = ingest.PartWriter.write

    def crash_after_first_chunk(self, table):  # fault injection: the process dies mid-write
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError("disk full")
        real_write(self, table)

    monkeypatch.setattr(ingest.PartWriter, "write", crash_after_first_chunk)
    with pytest.raises(OSError, match="disk full"):
        ingest_batch(with_chunk_rows(config, 30), DS)
    assert list((root / "snapshots").iterdir()) == []  # no snapshot, no staging leftovers

    monkeypatch.setattr(ingest.PartWriter, "write", real_write)
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


def test_concurrent_writer_that_finished_first_wins(config, root, monkeypatch):
    land_batch(generate_batch(DS, 60), root, DS)
    winner = ingest_batch(config, DS)
    final = Path(winner.snapshot_uri)
    before = tree(final)
    # The other writer checked for the manifest before the winner wrote it, then built
    # its own copy: simulate by hiding the manifest from the up-front existence check.
    real_exists = LocalStorage.exists
    monkeypatch.setattr(
        LocalStorage,
        "exists",
        lambda self, uri: False if uri.endswith("manifest.json") else real_exists(self, uri),
    )

    loser = ingest_batch(config, DS)

    assert (loser.sha256, loser.created) == (winner.sha256, False)
    assert tree(final) == before  # the published snapshot was not touched
    assert [p.name for p in (root / "snapshots").iterdir()] == [winner.sha256]  # no staging left


# --------------------------------------------------------------------------- one look for a batch


def test_find_batch_before_and_after_the_batch_lands(config, root):
    from mlops_loop.core.ingest import find_batch

    source = config.source_uri(DS)
    nothing = find_batch(config, DS)
    assert (nothing.found, nothing.files, nothing.others) == (False, (), ())
    assert nothing.looked_for == f"*.csv, *.csv.gz, *.csv.bz2 under {source}"
    assert (
        nothing.describe()
        == f"no batch for credit_default ds={DS} yet: looked for {nothing.looked_for}"
    )

    folder = batch_dir(root)
    (folder / "_SUCCESS").write_text("")
    generate_batch(DS, 10).to_parquet(folder / "part-000.parquet")
    other_format = find_batch(config, DS)
    assert not other_format.found
    assert other_format.describe().endswith("; found only ['_SUCCESS', 'part-000.parquet']")

    land_batch(generate_batch(DS, 20), root, DS, files=2)
    landed = find_batch(config, DS)
    assert landed.found and landed.files == ("part-000.csv", "part-001.csv")
    assert landed.describe() == (
        f"batch for credit_default ds={DS} has landed: 2 csv file(s) under {source} "
        "(part-000.csv, part-001.csv)"
    )
    assert landed.to_xcom() == {
        "dataset": "credit_default",
        "ds": DS,
        "source_uri": source,
        "files": ["part-000.csv", "part-001.csv"],
    }
    # Looking reads and writes nothing.
    assert not (root / "snapshots").exists()


def test_find_batch_refuses_a_bad_date(config):
    from mlops_loop.core.ingest import find_batch

    with pytest.raises(ValueError, match="YYYY-MM-DD, got '2024/03/01'"):
        find_batch(config, "2024/03/01")


# --------------------------------------------------------------------------- S3 needs an endpoint or a connection
# Without either, boto3 would use whatever AWS credentials the worker happens to have,
# against the public endpoint: refused unless the config opts into the default chain.

S3_ROOT = "s3://bucket/credit"


def without_s3_settings(tmp_path: Path) -> Path:
    """credit_default.yaml with an empty ``storage.s3`` section."""
    import yaml

    raw = yaml.safe_load(CREDIT_CONFIG.read_text())
    raw["storage"] = {"root": str(tmp_path / "data")}
    path = tmp_path / "credit_default.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def assert_names_the_keys(message: str, key: str, uri: str) -> None:
    assert f"{key} {uri!r} is on S3" in message, message
    for setting in ("aws_conn_id", "endpoint_url", "use_default_credentials: true"):
        assert f"storage.s3.{setting}" in message, message


@pytest.mark.parametrize(
    "s3",
    [
        pytest.param(None, id="no-s3-section"),
        pytest.param({}, id="empty-s3-section"),
        pytest.param({"region_name": "eu-west-1", "max_attempts": 3}, id="region-only"),
        pytest.param({"use_default_credentials": False}, id="opt-in-false"),
    ],
)
def test_s3_root_without_endpoint_or_connection_is_refused_at_load(s3):
    storage = {"root": S3_ROOT, **({"s3": s3} if s3 is not None else {})}
    with pytest.raises(ConfigError) as info:
        load_config(CREDIT_CONFIG, overrides={"storage": storage})
    assert str(CREDIT_CONFIG) in str(info.value)
    assert_names_the_keys(str(info.value), "storage.root", S3_ROOT)


def test_storage_root_moved_to_s3_by_the_environment_is_refused_too(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_LOOP_STORAGE_ROOT", "s3://mlops-loop")
    with pytest.raises(ConfigError) as info:
        load_config(without_s3_settings(tmp_path))
    assert_names_the_keys(str(info.value), "storage.root", "s3://mlops-loop/credit_default")
    # The shipped config names its connection (docker-compose.yml defines it), so the
    # stack that moves every root to S3 loads it.
    config = load_config(CREDIT_CONFIG)
    assert config.root == "s3://mlops-loop/credit_default"
    assert config.storage.s3.aws_conn_id == "mlops_s3"


@pytest.mark.parametrize(
    "s3",
    [
        pytest.param({"endpoint_url": "http://127.0.0.1:9000"}, id="endpoint"),
        pytest.param({"aws_conn_id": "mlops_s3"}, id="connection-with-endpoint-in-its-extra"),
        pytest.param({"use_default_credentials": True}, id="default-chain-on-purpose"),
    ],
)
def test_s3_root_with_an_endpoint_a_connection_or_the_opt_in_loads(s3):
    config = load_config(CREDIT_CONFIG, overrides={"storage": {"root": S3_ROOT, "s3": s3}})
    assert config.root == S3_ROOT


def test_local_root_needs_no_s3_settings(tmp_path):
    assert load_config(without_s3_settings(tmp_path)).storage.s3.explicit is False


def test_s3_source_without_endpoint_or_connection_is_refused_before_any_request(tmp_path):
    from mlops_loop.hooks.s3 import dataset_s3_credentials

    source = "s3://landing/raw/ds={ds}/"
    overrides = {"storage": {"root": str(tmp_path)}, "source": {"uri": source}}
    config = load_config(CREDIT_CONFIG, overrides=overrides)
    with pytest.raises(ConfigError) as info:
        dataset_s3_credentials(config)
    assert "dataset 'credit_default'" in str(info.value)
    assert_names_the_keys(str(info.value), "source.uri", source)

    opted_in = load_config(
        CREDIT_CONFIG,
        overrides={
            **overrides,
            "storage": {"root": str(tmp_path), "s3": {"use_default_credentials": True}},
        },
    )
    creds = dataset_s3_credentials(opted_in)
    assert creds is not None and creds.endpoint_url is None  # boto3's chain, on purpose


# --------------------------------------------------------------------------- several files disagreeing


def land_two_parquet_files(root: Path, change) -> tuple[Path, Path]:
    """The batch as two Parquet files, ``change`` applied to the second one's frame."""
    df = generate_batch(DS, ROWS)
    folder = root / "raw" / f"ds={DS}"
    folder.mkdir(parents=True, exist_ok=True)
    first, second = folder / "part-000.parquet", folder / "part-001.parquet"
    half = len(df) // 2
    df.iloc[:half].to_parquet(first, index=False)
    change(df.iloc[half:].copy()).to_parquet(second, index=False)
    return first, second


def _age_as_text(df: pd.DataFrame) -> pd.DataFrame:
    df["age"] = df["age"].astype(str)
    df.iloc[3, df.columns.get_loc("age")] = "old"
    return df


@pytest.mark.parametrize(
    ("change", "arrow_type", "mismatches"),
    [
        pytest.param(lambda d: d.assign(age=d["age"].astype(str)), "int64", {}, id="digits"),
        pytest.param(lambda d: d.assign(age=d["age"].astype(float)), "int64", {}, id="float"),
        pytest.param(_age_as_text, "string", {"age": ["old"]}, id="text"),
    ],
)
def test_parquet_files_disagreeing_in_a_column_type_give_one_snapshot_schema(
    root, change, arrow_type, mismatches
):
    """Each file is normalised to the declared type, so the snapshot's parts share one
    schema; values that do not parse keep the column as text and are named for the gate."""
    from tests.fixtures.landed_batches import parquet_config

    config = parquet_config(root)
    land_two_parquet_files(root, change)

    result = ingest_batch(config, DS)

    manifest = load_manifest(result.snapshot_uri)
    (age,) = [c for c in manifest["columns"] if c["name"] == "age"]
    assert age["arrow_type"] == arrow_type
    types = {
        str(pq.read_schema(Path(result.snapshot_uri) / part["name"]).field("age").type)
        for part in manifest["files"]
    }
    assert types == {arrow_type}
    assert {k: v["examples"] for k, v in manifest["type_mismatches"].items()} == mismatches


def test_parquet_file_missing_a_column_is_refused_naming_file_and_column(root):
    from mlops_loop.exceptions import MixedSchemaError
    from tests.fixtures.landed_batches import parquet_config

    config = parquet_config(root)
    _, second = land_two_parquet_files(root, lambda d: d.drop(columns=["region"]))

    with pytest.raises(MixedSchemaError) as err:
        ingest_batch(config, DS)

    assert second.name in str(err.value)
    assert "'region'" in str(err.value)
    assert err.value.file_uri is not None and err.value.file_uri.endswith(second.name)
    assert not (root / "snapshots").exists() or not any((root / "snapshots").iterdir())

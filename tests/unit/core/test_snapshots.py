"""core.snapshots: the readers other stages use, a snapshot without its manifest or with
a part missing, and the one-line issues a manifest flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_loop.core.ingest import ingest_batch
from mlops_loop.core.snapshots import (
    iter_snapshot_batches,
    load_manifest,
    manifest_issues,
    read_snapshot,
)
from mlops_loop.exceptions import SnapshotNotFoundError, StorageError
from mlops_loop_devtools.sample_data import generate_batch, land_batch
from tests.fixtures.landed_batches import DS, ROWS

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


def test_a_part_listed_in_the_manifest_but_missing_is_named(config, root):
    land_batch(generate_batch(DS, ROWS), root, DS)
    uri = ingest_batch(config, DS).snapshot_uri
    part = Path(uri) / "part-00000.parquet"
    part.unlink()

    with pytest.raises(
        StorageError, match=r"snapshot part .*part-00000\.parquet listed in the manifest is missing"
    ) as info:
        read_snapshot(uri)
    assert info.value.uri == str(part)
    with pytest.raises(StorageError, match="listed in the manifest is missing"):
        list(iter_snapshot_batches(uri))


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        pytest.param({"rows": 10}, (), id="clean"),
        pytest.param({"rows": 0}, ("0 data rows",), id="empty"),
        pytest.param(
            {
                "rows": 5,
                "type_mismatches": {
                    "b": {"count": 1, "declared_type": "float", "examples": ["x"]},
                    "a": {"count": 2, "declared_type": "integer", "examples": ["1.5", "y"]},
                },
            },
            (
                "column 'a': 2 value(s) not integer, kept as text (e.g. ['1.5', 'y'])",
                "column 'b': 1 value(s) not float, kept as text (e.g. ['x'])",
            ),
            id="type-mismatches-by-column-name",
        ),
        pytest.param(
            {"rows": 5, "missing_columns": ["age"], "unexpected_columns": ["note"]},
            ("missing columns ['age']", "unexpected columns ['note']"),
            id="column-set-differences",
        ),
    ],
)
def test_manifest_issues(manifest, expected):
    assert manifest_issues(manifest) == expected

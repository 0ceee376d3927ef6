"""Training-set assembly from the validated index: time split, content address, errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mlops_loop.core.config import TrainingWindow, load_config
from mlops_loop.core.ingest import ingest_batch
from mlops_loop.core.snapshots import read_snapshot
from mlops_loop.core.training_set import (
    ValidatedSnapshot,
    assemble_training_set,
    record_validated,
    validated_snapshots,
)
from mlops_loop.exceptions import TrainingSetError
from mlops_loop_devtools.sample_data import generate_batch, land_batch

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def config(tmp_path):
    return load_config(
        REPO / "include/config/credit_default.yaml",
        overrides={"storage": {"root": str(tmp_path / "data")}},
    )


def validate_days(config, days, rows=300):
    for ds in days:
        land_batch(generate_batch(ds, rows=rows), config.root, ds)
        snap = ingest_batch(config, ds)
        record_validated(config, ValidatedSnapshot(ds=ds, sha256=snap.sha256, snapshot_uri=snap.snapshot_uri, rows=snap.rows))


def test_holdout_is_the_most_recent_date_and_train_precedes_valid(config):
    days = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]
    validate_days(config, days)
    ts = assemble_training_set(config, until_ds="2026-01-04")
    train, valid, holdout = (read_snapshot(u) for u in (ts.train_uri, ts.valid_uri, ts.holdout_uri))
    assert ts.rows == {"train": len(train), "valid": len(valid), "holdout": len(holdout)}
    assert len(train) + len(valid) == 900 and len(holdout) == 300
    assert set(holdout["applied_at"].dt.date.astype(str)) == {"2026-01-04"}
    assert train["applied_at"].max() <= valid["applied_at"].min() < holdout["applied_at"].min()
    assert len(valid) == pytest.approx(0.2 * 900, abs=1)
    # Nothing leaks between splits.
    ids = [set(f["application_id"]) for f in (train, valid, holdout)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])


def test_same_inputs_same_set_and_nothing_rewritten(config):
    validate_days(config, ["2026-01-01", "2026-01-02"])
    first = assemble_training_set(config, until_ds="2026-01-02")
    manifest = Path(first.uri) / "manifest.json"
    before = manifest.stat().st_mtime_ns
    again = assemble_training_set(config, until_ds="2026-01-02")
    assert (again.sha256, again.created) == (first.sha256, False)
    assert manifest.stat().st_mtime_ns == before
    # A new validated day gives a different training set.
    validate_days(config, ["2026-01-03"])
    assert assemble_training_set(config, until_ds="2026-01-03").sha256 != first.sha256


def test_window_excludes_old_and_future_dates(config):
    validate_days(config, ["2026-01-01", "2026-01-10", "2026-01-11", "2026-01-20"])
    ts = assemble_training_set(config, until_ds="2026-01-11", window=TrainingWindow(window_days=5))
    assert [m["ds"] for m in ts.members] == ["2026-01-10", "2026-01-11"]


def test_one_validated_date_is_split_by_time(config):
    validate_days(config, ["2026-01-05"], rows=1000)
    ts = assemble_training_set(config, until_ds="2026-01-05")
    assert ts.rows == {"train": 700, "valid": 150, "holdout": 150}


def test_no_validated_data_names_the_window(config):
    with pytest.raises(TrainingSetError, match="no validated snapshots of credit_default between"):
        assemble_training_set(config, until_ds="2026-01-05")


def test_too_small_split_is_refused(config):
    validate_days(config, ["2026-01-01", "2026-01-02"], rows=60)
    with pytest.raises(TrainingSetError, match="the train split of credit_default up to 2026-01-02 has 48 rows, fewer than the minimum 50"):
        assemble_training_set(config, until_ds="2026-01-02")


def test_index_lists_entries_oldest_first(config):
    validate_days(config, ["2026-01-02", "2026-01-01"])
    assert [e.ds for e in validated_snapshots(config)] == ["2026-01-01", "2026-01-02"]
    assert isinstance(read_snapshot(validated_snapshots(config)[0].snapshot_uri), pd.DataFrame)


def test_without_until_ds_the_latest_validated_date_is_used(config):
    validate_days(config, ["2026-01-01", "2026-01-02", "2026-01-03"])
    ts = assemble_training_set(config)
    assert ts.members[-1]["ds"] == "2026-01-03"
    assert ts.sha256 == assemble_training_set(config, until_ds="2026-01-03").sha256

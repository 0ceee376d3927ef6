"""Training-set assembly from the validated index: time split, content address, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from mlops_loop.core.config import TrainingWindow, load_config
from mlops_loop.core.ingest import ingest_batch
from mlops_loop.core.snapshots import read_snapshot
from mlops_loop.core.storage import sha256_file
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


def test_a_changed_batch_supersedes_and_each_date_counts_once(config):
    import json
    import shutil

    from mlops_loop.core.training_set import current_validated

    validate_days(config, ["2026-01-01", "2026-01-02"], rows=300)
    (first_day, old) = validated_snapshots(config)
    # The source re-lands 2026-01-02 with other rows; its new snapshot passes the gate later.
    shutil.rmtree(Path(config.root) / "raw" / "ds=2026-01-02")
    validate_days(config, ["2026-01-02"], rows=400)
    assert len(list((Path(config.root) / "validated" / "ds=2026-01-02").glob("*.json"))) == 2
    listed = validated_snapshots(config)
    assert [(e.ds, e.rows) for e in listed] == [("2026-01-01", 300), ("2026-01-02", 400)]
    new = listed[1]
    assert new.sha256 != old.sha256 and new.validated_at > old.validated_at
    assert current_validated(config, "2026-01-02") == new
    assert current_validated(config, "2026-01-03") is None
    ts = assemble_training_set(config, until_ds="2026-01-02")
    assert [m["ds"] for m in ts.members] == ["2026-01-01", "2026-01-02"]
    assert ts.members[1]["sha256"] == new.sha256
    assert ts.rows["holdout"] == 400

    # Validated again later (the old files landed once more), the old snapshot is the
    # date's again; a pointer written before validation times were recorded is oldest.
    record_validated(config, ValidatedSnapshot(**{**old.__dict__, "validated_at": ""}))
    assert current_validated(config, "2026-01-02").sha256 == old.sha256
    legacy = Path(config.root) / "validated" / "ds=2026-01-01" / f"{'0' * 64}.json"
    legacy.write_text(json.dumps({"ds": "2026-01-01", "sha256": "0" * 64, "snapshot_uri": "x", "rows": 1}))
    assert current_validated(config, "2026-01-01") == first_day


# ----------------------------------------------- the window's end and the champion's input


@pytest.mark.parametrize(
    ("requested", "events", "newest", "end", "note"),
    [
        pytest.param(None, [], "2026-01-03", "2026-01-03", "the newest validated date", id="newest"),
        pytest.param("2026-01-02", [], "2026-01-03", "2026-01-02", "the requested date", id="requested"),
        pytest.param(
            None, ["2026-01-03"], "2026-01-03", "2026-01-03", "it includes 2026-01-03", id="event-inside"
        ),
        pytest.param(
            "2026-01-01",
            ["2026-01-03"],
            "2026-01-04",
            "2026-01-03",
            "moved from the requested date 2026-01-01 to reach 2026-01-03",
            id="requested-too-early-moves-to-event",
        ),
        pytest.param(
            None,
            ["2026-01-05", "2026-01-02"],
            "2026-01-03",
            "2026-01-03",
            "it includes 2026-01-02, 2026-01-05",
            id="event-after-newest-stays-at-newest",
        ),
        pytest.param(
            "2026-01-01",
            ["2026-01-05"],
            "2026-01-03",
            "2026-01-03",
            "(no validated data after 2026-01-03)",
            id="moved-but-capped-at-newest",
        ),
    ],
)
def test_training_window_end(requested, events, newest, end, note):
    from mlops_loop.core.training_set import training_window_end

    got, how = training_window_end(requested, events, newest)
    assert got == end
    assert note in how, how


def test_training_window_end_says_when_an_event_lies_before_the_window():
    from mlops_loop.core.training_set import training_window_end

    end, note = training_window_end(None, ["2026-01-01"], "2026-03-01", window_days=30)
    assert end == "2026-03-01"
    assert "event date(s) 2026-01-01 lie before the window's start 2026-01-31" in note


@pytest.mark.parametrize(
    ("requested", "events", "newest", "error", "match"),
    [
        pytest.param("01/02/2026", [], None, ValueError, "YYYY-MM-DD, got '01/02/2026'", id="bad-requested"),
        pytest.param(None, ["2026-1-2"], "2026-01-03", ValueError, "got '2026-1-2'", id="bad-event-date"),
        pytest.param(None, [], None, TrainingSetError, "no until_ds given", id="nothing"),
    ],
)
def test_training_window_end_rejects(requested, events, newest, error, match):
    from mlops_loop.core.training_set import training_window_end

    with pytest.raises(error, match=match):
        training_window_end(requested, events, newest)


def test_drift_date_moves_the_window_and_no_new_data_gives_the_same_set(config):
    validate_days(config, ["2026-01-01", "2026-01-02", "2026-01-03"])
    plain = assemble_training_set(config)
    # A drift report of the newest validated date: the same set (content address and all).
    same = assemble_training_set(config, must_include_ds=["2026-01-03"])
    assert (same.sha256, same.created, same.until_ds) == (plain.sha256, False, "2026-01-03")
    # A report dated after the newest validated day: still that set, and the note says why.
    later = assemble_training_set(config, must_include_ds=["2026-01-06"])
    assert later.sha256 == plain.sha256
    assert "no validated data after 2026-01-03" in later.window_note
    # A form date before the drifted day is moved forward to include it.
    moved = assemble_training_set(config, until_ds="2026-01-02", must_include_ds=["2026-01-03"])
    assert moved.sha256 == plain.sha256 and moved.members[-1]["ds"] == "2026-01-03"
    assert "moved from the requested date 2026-01-02" in moved.window_note
    stored = (Path(plain.uri) / "manifest.json").read_text()
    assert "window_note" not in stored  # a run's note, not part of the set


def test_split_hashes_are_what_the_trainer_records(config):
    from mlops_loop.core.snapshots import load_manifest
    from mlops_loop.core.training_set import split_sha256

    validate_days(config, ["2026-01-01", "2026-01-02"])
    ts = assemble_training_set(config)
    assert load_manifest(ts.train_uri)["sha256"] == split_sha256(ts.sha256, "train")
    assert load_manifest(ts.valid_uri)["sha256"] == split_sha256(ts.sha256, "valid")


def test_the_trainer_and_the_worker_share_one_input_identity():
    from mlops_loop.core import training_set
    from mlops_loop.training import train

    assert train.training_input_hash is training_set.training_input_hash
    assert train.INPUT_HASH_TAG == training_set.TRAINING_INPUT_TAG == "training_input_sha256"


CANDIDATE = {
    "train_snapshot_sha256": "t" * 64,
    "valid_snapshot_sha256": "v" * 64,
    "config_hash": "c" * 64,
    "model_type": "hist_gradient_boosting",
    "seed": "42",
    "code_version": "abc1234",
    "trainer_image": "mlops-loop/trainer:latest",
}


@pytest.mark.parametrize(
    ("champion", "tags", "up_to_date", "reason"),
    [
        pytest.param(None, None, False, "m has no champion yet: training", id="no-champion"),
        pytest.param(
            "3", {**CANDIDATE}, False, "carries no training_input_sha256 tag", id="champion-without-input-tag"
        ),
        pytest.param(
            "3",
            {**CANDIDATE, "training_input_sha256": "same"},
            True,
            "nothing new for m: champion v3 was trained on this very input (training split "
            "tttttttttttt, validation split vvvvvvvvvvvv, config cccccccccccc, code abc1234 in "
            "mlops-loop/trainer:latest",
            id="identical-input",
        ),
        pytest.param(
            "3",
            {**CANDIDATE, "training_input_sha256": "other", "train_snapshot_sha256": "o" * 64},
            False,
            "training input differs from champion v3 of m: training split oooooooooooo -> tttttttttttt",
            id="new-data",
        ),
        pytest.param(
            "3",
            {**CANDIDATE, "training_input_sha256": "other", "code_version": "0ld"},
            False,
            "code version 0ld -> abc1234",
            id="new-code",
        ),
        pytest.param(
            "3",
            {**CANDIDATE, "training_input_sha256": "other", "model_type": "mlp"},
            False,
            "model type mlp -> hist_gradient_boosting",
            id="other-model-type-from-the-form",
        ),
        pytest.param(
            "3",
            {**CANDIDATE, "training_input_sha256": "other"},
            False,
            "differs from champion v3 of m: training settings (hyperparameters)",
            id="other-hyperparameters-from-the-form",
        ),
    ],
)
def test_compare_with_champion(champion, tags, up_to_date, reason):
    from mlops_loop.core.training_set import compare_with_champion

    got = compare_with_champion("m", "same", CANDIDATE, champion, tags)
    assert got.up_to_date is up_to_date
    assert reason in got.reason, got.reason
    assert got.to_xcom()["champion_version"] == champion


def test_form_overrides_change_the_training_input(config):
    """A form with other hyperparameters or another model type is another input; the
    same values as the config are the same input."""
    from mlops_loop.core.trainer_protocol import TrainRequest, config_payload
    from mlops_loop.core.training_set import resolve_train_settings, training_input_hash

    def identity(**hyperparameters):
        request = TrainRequest(
            config=config_payload(config),
            train_snapshot_uri="/t",
            valid_snapshot_uri="/v",
            hyperparameters=hyperparameters,
        )
        cfg, settings = resolve_train_settings(request)
        return training_input_hash(settings, cfg, "t", "v", {"code_version": "x", "trainer_image": "i"})

    plain = identity()
    assert identity(model_type=config.training.model_type) == plain
    assert identity(model_type="hist_gradient_boosting") != plain
    assert identity(max_epochs=3) != plain


def train_request(config, **extra):
    from mlops_loop.core.trainer_protocol import TrainRequest, config_payload

    doc = {"config": config_payload(config), "train_snapshot_uri": "/nowhere/a", "valid_snapshot_uri": "/nowhere/b"}
    doc.update(extra)
    return TrainRequest.model_validate(doc)


def test_request_overrides_reach_the_settings(config):
    from mlops_loop.core.training_set import resolve_train_settings

    _, settings = resolve_train_settings(
        train_request(config, seed=9, registered_model_name="m", hyperparameters={"max_epochs": 2})
    )
    assert (settings.seed, settings.registered_model_name, settings.mlp.max_epochs) == (9, "m", 2)


def test_invalid_config_in_request_names_the_key(config):
    from mlops_loop.core.training_set import resolve_train_settings
    from mlops_loop.exceptions import ConfigError

    bad = train_request(config)
    bad.config["task"] = "ranking"
    with pytest.raises(ConfigError, match="task"):
        resolve_train_settings(bad)


# ------------------------------------------------------- streaming assembly == pandas reference


def _reference_splits(config, ts, holdout_days=1, valid_fraction=0.2):
    """The training set as assemble_training_set built it in pandas before it streamed:
    every member read whole, concatenated, stably sorted by (ds, timestamp), split."""
    frames = []
    for m in ts.members:
        frame = read_snapshot(m["snapshot_uri"])
        frame["__ds"] = m["ds"]
        frames.append(frame)
    data = pd.concat(frames, ignore_index=True)
    order = ["__ds"] + ([config.timestamp_column] if config.timestamp_column else [])
    data = data.sort_values(order, kind="stable").reset_index(drop=True)
    dates = sorted({m["ds"] for m in ts.members})
    if len(dates) > holdout_days:
        mask = data["__ds"].isin(dates[-holdout_days:])
        older, holdout = data[~mask], data[mask]
        n_valid = max(1, round(len(older) * valid_fraction))
        train, valid = older.iloc[: len(older) - n_valid], older.iloc[len(older) - n_valid :]
    else:
        n = len(data)
        a, b = int(n * 0.70), int(n * 0.85)
        train, valid, holdout = data.iloc[:a], data.iloc[a:b], data.iloc[b:]
    return {
        name: frame.drop(columns="__ds").reset_index(drop=True)
        for name, frame in {"train": train, "valid": valid, "holdout": holdout}.items()
    }


def _land_shuffled(config, days, rows, *, shuffle=True, int_nulls_on=None):
    """Days whose rows are not in time order, with many equal timestamps (to the hour)."""
    import numpy as np

    for i, ds in enumerate(days):
        frame = generate_batch(ds, rows=rows)
        frame["applied_at"] = frame["applied_at"].dt.floor("h")
        if shuffle:
            frame = frame.sample(frac=1.0, random_state=i).reset_index(drop=True)
        if ds == int_nulls_on:
            frame["open_accounts"] = frame["open_accounts"].astype("float64")
            frame.loc[np.arange(len(frame)) % 7 == 3, "open_accounts"] = np.nan
        land_batch(frame, config.root, ds)
        snap = ingest_batch(config, ds)
        record_validated(
            config, ValidatedSnapshot(ds=ds, sha256=snap.sha256, snapshot_uri=snap.snapshot_uri, rows=snap.rows)
        )


@pytest.mark.parametrize(
    ("timestamp_column", "shuffle", "days"),
    [
        pytest.param("applied_at", True, ["2026-02-01", "2026-02-02", "2026-02-03"], id="unsorted-with-ties"),
        pytest.param("applied_at", False, ["2026-02-01", "2026-02-02", "2026-02-03"], id="already-in-time-order"),
        pytest.param(None, True, ["2026-02-01", "2026-02-02", "2026-02-03"], id="no-timestamp-column"),
        pytest.param("applied_at", True, ["2026-02-01"], id="one-date"),
    ],
)
def test_streamed_splits_equal_the_pandas_reference(tmp_path, timestamp_column, shuffle, days):
    import pyarrow.parquet as pq

    overrides = {
        "storage": {"root": str(tmp_path / "data")},
        "ingest": {"rows_per_chunk": 1000},
        "timestamp_column": timestamp_column,
    }
    config = load_config(REPO / "include/config/credit_default.yaml", overrides=overrides)
    _land_shuffled(config, days, rows=2300, shuffle=shuffle)
    ts = assemble_training_set(config, until_ds=days[-1])
    reference = _reference_splits(config, ts)
    snapshot_part = Path(ts.members[0]["snapshot_uri"]) / "part-00000.parquet"
    snapshot_schema = pq.read_schema(snapshot_part).remove_metadata()
    for name, expected in reference.items():
        split = Path(getattr(ts, f"{name}_uri"))
        got = read_snapshot(str(split))
        pd.testing.assert_frame_equal(got, expected)
        assert ts.rows[name] == len(expected)
        manifest = json.loads((split / "manifest.json").read_text())
        assert manifest["rows"] == len(expected)
        assert manifest["columns"] == [{"name": c, "dtype": str(t)} for c, t in expected.dtypes.items()]
        assert sum(f["rows"] for f in manifest["files"]) == len(expected)
        for f in manifest["files"]:
            part = split / f["name"]
            assert (f["size"], f["sha256"]) == (part.stat().st_size, sha256_file(part))
            assert pq.read_schema(part).remove_metadata() == snapshot_schema
        # Row groups of rows_per_chunk rows.
        assert max(pq.ParquetFile(split / "part-00000.parquet").metadata.row_group(i).num_rows
                   for i in range(pq.ParquetFile(split / "part-00000.parquet").num_row_groups)) <= 1000
    # Nothing but the set's folders was left behind, and the set is found again.
    assert assemble_training_set(config, until_ds=days[-1]).created is False


def test_integer_column_with_nulls_keeps_its_snapshot_type(tmp_path):
    """pandas turned an integer column with nulls into float64 for every split; the parts
    now keep the snapshot's int64 (the manifest still records the window's pandas dtype,
    and every value is the same)."""
    overrides = {"storage": {"root": str(tmp_path / "data")}, "ingest": {"rows_per_chunk": 1000}}
    config = load_config(REPO / "include/config/credit_default.yaml", overrides=overrides)
    days = ["2026-02-01", "2026-02-02", "2026-02-03"]
    _land_shuffled(config, days, rows=1200, int_nulls_on="2026-02-03")
    ts = assemble_training_set(config, until_ds=days[-1])
    reference = _reference_splits(config, ts)
    for name, expected in reference.items():
        split = Path(getattr(ts, f"{name}_uri"))
        got = read_snapshot(str(split))
        pd.testing.assert_frame_equal(got, expected, check_dtype=False)
        manifest = json.loads((split / "manifest.json").read_text())
        assert {"name": "open_accounts", "dtype": "float64"} in manifest["columns"]
    assert str(read_snapshot(ts.train_uri)["open_accounts"].dtype) == "int64"


def test_half_written_set_is_invisible_and_leaves_no_temporary_files(config, monkeypatch, tmp_path):
    import tempfile

    from mlops_loop.core import training_set as module

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    validate_days(config, ["2026-01-01", "2026-01-02"])
    real = module.write_json
    calls = []

    def failing(storage, uri, payload):
        calls.append(uri)
        if uri.endswith("holdout/manifest.json"):
            raise OSError("disk full")
        return real(storage, uri, payload)

    monkeypatch.setattr(module, "write_json", failing)
    with pytest.raises(OSError, match="disk full"):
        assemble_training_set(config, until_ds="2026-01-02")
    assert not list((tmp_path / "tmp").iterdir())
    assert not list(Path(config.root).glob("training_sets/*/manifest.json"))
    monkeypatch.setattr(module, "write_json", real)
    assert assemble_training_set(config, until_ds="2026-01-02").created is True


def test_a_split_rolls_over_to_new_part_files(tmp_path, monkeypatch):
    from mlops_loop.core import ingest

    overrides = {"storage": {"root": str(tmp_path / "data")}, "ingest": {"rows_per_chunk": 1000}}
    config = load_config(REPO / "include/config/credit_default.yaml", overrides=overrides)
    days = ["2026-02-01", "2026-02-02", "2026-02-03"]
    _land_shuffled(config, days, rows=1500)
    monkeypatch.setattr(ingest, "ROWS_PER_PART", 1100)
    ts = assemble_training_set(config, until_ds=days[-1])
    manifest = json.loads((Path(ts.train_uri) / "manifest.json").read_text())
    assert [f["name"] for f in manifest["files"]] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [f["rows"] for f in manifest["files"]] == [1100, 1100, 200]
    pd.testing.assert_frame_equal(read_snapshot(ts.train_uri), _reference_splits(config, ts)["train"])


def test_members_with_different_columns_are_unified(tmp_path):
    """A day landed without a column (its snapshot lacks it): the splits hold the column,
    null on that day's rows, as the pandas assembly did."""
    overrides = {"storage": {"root": str(tmp_path / "data")}, "ingest": {"rows_per_chunk": 1000}}
    config = load_config(REPO / "include/config/credit_default.yaml", overrides=overrides)
    days = ["2026-02-01", "2026-02-02", "2026-02-03"]
    for ds in days:
        frame = generate_batch(ds, rows=400)
        if ds == "2026-02-01":
            frame = frame.drop(columns="region")
        land_batch(frame, config.root, ds)
        snap = ingest_batch(config, ds)
        record_validated(
            config, ValidatedSnapshot(ds=ds, sha256=snap.sha256, snapshot_uri=snap.snapshot_uri, rows=snap.rows)
        )
    ts = assemble_training_set(config, until_ds=days[-1])
    reference = _reference_splits(config, ts)
    for name, expected in reference.items():
        split = Path(getattr(ts, f"{name}_uri"))
        pd.testing.assert_frame_equal(read_snapshot(str(split)), expected)
        manifest = json.loads((split / "manifest.json").read_text())
        assert manifest["columns"] == [{"name": c, "dtype": str(t)} for c, t in expected.dtypes.items()]
    assert read_snapshot(ts.train_uri)["region"].isna().sum() == 400

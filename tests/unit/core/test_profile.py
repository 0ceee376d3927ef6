"""core/profile.py: the inputs (columns, Parquet batches) and the reference profile
(streamed equals in memory, save/load, a champion without one)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops_loop.core.config import DatasetConfig, DriftSettings
from mlops_loop.core.profile import (
    ParquetBatches,
    build_profile,
    load_profile,
    monitored_features,
    save_profile,
)
from mlops_loop.core.storage import LocalStorage
from mlops_loop.exceptions import DriftError, ReferenceProfileMissing
from tests.fixtures.drift_frames import frame, toy_config


@pytest.fixture(scope="module")
def config() -> DatasetConfig:
    return toy_config()


def test_monitored_features_skip_id_target_and_time(config: DatasetConfig) -> None:
    assert monitored_features(config) == {
        "x": "numeric",
        "k": "numeric",
        "z": "numeric",
        "color": "categorical",
        "flag": "categorical",
    }
    with pytest.raises(DriftError, match="'nope'"):
        monitored_features(config, DriftSettings(features=["nope"]))


def same_profile(a: dict, b: dict) -> bool:
    """Equal, except float moments summed in another order may differ in the last bits."""

    def split(profile: dict) -> tuple[dict, list[float]]:
        out = json.loads(json.dumps(profile))
        moments = []
        for f in out["features"].values():
            for key in ("mean", "std"):
                moments.append(f.pop(key, None) or 0.0)
        return out, moments

    (ra, ma), (rb, mb) = split(a), split(b)
    return ra == rb and np.allclose(ma, mb, rtol=1e-12, atol=1e-15)


def test_streamed_profile_equals_in_memory_profile(config: DatasetConfig, tmp_path) -> None:
    ref = frame(4000, 9)
    whole = build_profile(ref, config, sample_size=500)
    parts = [ref.iloc[i : i + 700] for i in range(0, len(ref), 700)]
    assert same_profile(build_profile(parts, config, sample_size=500), whole)
    table = pa.Table.from_pandas(ref, preserve_index=False)
    path = tmp_path / "ref.parquet"
    pq.write_table(table, path, row_group_size=700)
    assert same_profile(
        build_profile(ParquetBatches(path, batch_size=700), config, sample_size=500), whole
    )
    # A one-shot generator is read once: numeric bin counts come from the sample.
    once = build_profile((p for p in parts), config, sample_size=500)
    assert once["features"]["x"]["counts_source"] == "sample"
    assert once["features"]["x"]["edges"] == whole["features"]["x"]["edges"]
    assert once["features"]["color"] == whole["features"]["color"]
    json.dumps(whole)  # JSON-serialisable as is


def test_parquet_batches_reads_a_snapshot_folder_in_name_order(
    config: DatasetConfig, tmp_path
) -> None:
    ref = frame(900, 120)
    for i, part in enumerate((ref.iloc[:400], ref.iloc[400:])):
        pq.write_table(
            pa.Table.from_pandas(part, preserve_index=False), tmp_path / f"part-{i:03d}.parquet"
        )
    batches = ParquetBatches(tmp_path, columns=["x", "color"], batch_size=128)
    rows = [len(b) for b in batches]
    assert sum(rows) == 900 and max(rows) <= 128
    assert [len(b) for b in batches] == rows  # re-iterable
    assert same_profile(
        build_profile(batches, config, features=["x", "color"]),
        build_profile(ref, config, features=["x", "color"]),
    )
    with pytest.raises(DriftError, match="no such Parquet"):
        list(ParquetBatches(tmp_path / "nope.parquet"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DriftError, match=r"no \.parquet files"):
        list(ParquetBatches(tmp_path / "empty"))


def test_champion_without_profile(config: DatasetConfig, tmp_path) -> None:
    storage = LocalStorage()
    uri = str(tmp_path / "models" / "7" / "profile.json")
    with pytest.raises(ReferenceProfileMissing) as info:
        load_profile(storage, uri, model_version="7")
    assert info.value.profile_uri == uri and info.value.model_version == "7"
    profile = build_profile(frame(500, 71), config, scores=np.linspace(0, 1, 300))
    save_profile(storage, uri, profile)
    assert load_profile(storage, uri) == json.loads(json.dumps(profile))

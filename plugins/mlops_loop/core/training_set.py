"""Validated-snapshot index and training-set assembly.

When a snapshot passes its quality gate, :func:`record_validated` writes a small pointer
``validated/ds=<ds>/<sha256>.json``. :func:`assemble_training_set` takes the validated
snapshots in a window of logical dates and splits them by time: the most recent validated
date(s) become the holdout (fresh data neither model has seen), the older data is split
into train and validation by the timestamp column. The result is itself content-addressed:
``training_sets/<sha256>/{train,valid,holdout}/`` are snapshot-shaped folders (Parquet
part + manifest.json) and ``training_sets/<sha256>/manifest.json`` is written last.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from mlops_loop.core.config import DatasetConfig, TrainingWindow, check_ds
from mlops_loop.core.storage import S3Credentials, join_uri, open_storage, read_json, write_json
from mlops_loop.exceptions import TrainingSetError

TRAINING_SET_FORMAT_VERSION = 1
SPLITS = ("train", "valid", "holdout")


@dataclass(frozen=True)
class ValidatedSnapshot:
    ds: str
    sha256: str
    snapshot_uri: str
    rows: int
    result_uri: str = ""


@dataclass(frozen=True)
class TrainingSet:
    sha256: str
    uri: str
    train_uri: str
    valid_uri: str
    holdout_uri: str
    rows: dict[str, int]
    members: list[dict[str, str]] = field(default_factory=list)
    created: bool = True

    def to_xcom(self) -> dict[str, Any]:
        return asdict(self)


def record_validated(
    config: DatasetConfig, entry: ValidatedSnapshot, *, credentials: S3Credentials | None = None
) -> str:
    """Add a snapshot to the validated index; idempotent. Returns the pointer's URI."""
    uri = join_uri(config.root, "validated", f"ds={check_ds(entry.ds)}", f"{entry.sha256}.json")
    write_json(open_storage(uri, credentials), uri, asdict(entry))
    return uri


def validated_snapshots(
    config: DatasetConfig,
    *,
    credentials: S3Credentials | None = None,
    since_ds: str | None = None,
    until_ds: str | None = None,
) -> list[ValidatedSnapshot]:
    """Validated snapshots with since_ds <= ds <= until_ds, oldest first."""
    prefix = join_uri(config.root, "validated") + "/"
    storage = open_storage(prefix, credentials)
    out = []
    for obj in storage.list(prefix):
        if not obj.uri.endswith(".json"):
            continue
        entry = ValidatedSnapshot(**read_json(storage, obj.uri))
        if (since_ds and entry.ds < since_ds) or (until_ds and entry.ds > until_ds):
            continue
        out.append(entry)
    return sorted(out, key=lambda e: (e.ds, e.sha256))


def training_set_hash(members: list[ValidatedSnapshot], spec: dict[str, Any]) -> str:
    payload = {
        "members": [(m.ds, m.sha256) for m in members],
        "spec": spec,
        "format_version": TRAINING_SET_FORMAT_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def assemble_training_set(
    config: DatasetConfig,
    *,
    until_ds: str | None = None,
    credentials: S3Credentials | None = None,
    window: TrainingWindow | None = None,
) -> TrainingSet:
    """Build (or find) the training set for the validated data up to ``until_ds``;
    ``window`` defaults to the config's ``training.window``; ``until_ds`` left out means
    the most recent validated date (what a data-triggered run wants).

    With validated data on only one date, that date is split by time into train /
    valid / holdout (70 / 15 / 15) so a first model can still be trained and judged on
    rows it has not seen.
    """
    import pandas as pd

    from mlops_loop.core.snapshots import read_snapshot

    window = window or config.training.window
    window_days, holdout_days = window.window_days, window.holdout_days
    valid_fraction, min_rows = window.valid_fraction, window.min_rows_per_split
    if not until_ds:
        latest = validated_snapshots(config, credentials=credentials)
        if not latest:
            raise TrainingSetError(
                f"no validated snapshots of {config.name} yet: ingest and quality-gate a batch first"
            )
        until_ds = latest[-1].ds
    end = date.fromisoformat(check_ds(until_ds))
    since = (end - timedelta(days=window_days - 1)).isoformat()
    members = validated_snapshots(config, credentials=credentials, since_ds=since, until_ds=until_ds)
    if not members:
        raise TrainingSetError(
            f"no validated snapshots of {config.name} between {since} and {until_ds}: "
            "ingest and quality-gate at least one batch first"
        )
    spec = {
        "window_days": window_days,
        "holdout_days": holdout_days,
        "valid_fraction": valid_fraction,
        "timestamp_column": config.timestamp_column,
        "until_ds": until_ds,
    }
    sha = training_set_hash(members, spec)
    set_uri = join_uri(config.root, "training_sets", sha)
    manifest_uri = join_uri(set_uri, "manifest.json")
    storage = open_storage(set_uri, credentials)
    if storage.exists(manifest_uri):
        found = read_json(storage, manifest_uri)
        return TrainingSet(**{**found["training_set"], "created": False})

    frames = []
    for m in members:
        frame = read_snapshot(m.snapshot_uri, credentials=credentials)
        frame["__ds"] = m.ds
        frames.append(frame)
    data = pd.concat(frames, ignore_index=True)
    order = ["__ds"] + ([config.timestamp_column] if config.timestamp_column else [])
    data = data.sort_values(order, kind="stable").reset_index(drop=True)

    dates = sorted({m.ds for m in members})
    if len(dates) > holdout_days:
        holdout_mask = data["__ds"].isin(dates[-holdout_days:])
        older = data[~holdout_mask]
        holdout = data[holdout_mask]
        n_valid = max(1, round(len(older) * valid_fraction))
        train, valid = older.iloc[: len(older) - n_valid], older.iloc[len(older) - n_valid :]
    else:
        n = len(data)
        a, b = int(n * 0.70), int(n * 0.85)
        train, valid, holdout = data.iloc[:a], data.iloc[a:b], data.iloc[b:]
    splits = {"train": train, "valid": valid, "holdout": holdout}
    for name, frame in splits.items():
        if len(frame) < min_rows:
            raise TrainingSetError(
                f"the {name} split of {config.name} up to {until_ds} has {len(frame)} rows, "
                f"fewer than the minimum {min_rows}; land more validated data or widen window_days"
            )

    result = TrainingSet(
        sha256=sha,
        uri=set_uri,
        train_uri=join_uri(set_uri, "train"),
        valid_uri=join_uri(set_uri, "valid"),
        holdout_uri=join_uri(set_uri, "holdout"),
        rows={k: len(v) for k, v in splits.items()},
        members=[{"ds": m.ds, "sha256": m.sha256, "snapshot_uri": m.snapshot_uri} for m in members],
    )
    with tempfile.TemporaryDirectory(prefix="mlops-trainset-") as tmp:
        for name, frame in splits.items():
            _write_split(storage, Path(tmp), set_uri, sha, name, frame.drop(columns="__ds"), config)
    write_json(storage, manifest_uri, {"training_set": asdict(result), "spec": spec})
    return result


def _write_split(storage: Any, tmp: Path, set_uri: str, set_sha: str, name: str, frame: Any, config: DatasetConfig) -> None:
    """One split as a snapshot-shaped folder: part-00000.parquet, then manifest.json."""
    from mlops_loop.core.storage import sha256_file

    local = tmp / f"{name}.parquet"
    frame.to_parquet(local, index=False)
    split_uri = join_uri(set_uri, name)
    storage.upload(local, join_uri(split_uri, "part-00000.parquet"))
    manifest = {
        "sha256": hashlib.sha256(f"{set_sha}:{name}".encode()).hexdigest(),
        "dataset": config.name,
        "kind": f"training_set.{name}",
        "training_set_sha256": set_sha,
        "rows": len(frame),
        "columns": [{"name": str(c), "dtype": str(t)} for c, t in frame.dtypes.items()],
        "files": [{"name": "part-00000.parquet", "size": local.stat().st_size,
                   "sha256": sha256_file(local), "rows": len(frame)}],
    }
    write_json(storage, join_uri(split_uri, "manifest.json"), manifest)

"""Validated-snapshot index and training-set assembly.

When a snapshot passes its quality gate, :func:`record_validated` writes a small pointer
``validated/ds=<ds>/<sha256>.json``. :func:`assemble_training_set` takes the validated
snapshots in a window of logical dates and splits them by time: the most recent validated
date(s) become the holdout (fresh data neither model has seen), the older data is split
into train and validation by the timestamp column. The result is itself content-addressed:
``training_sets/<sha256>/{train,valid,holdout}/`` are snapshot-shaped folders (Parquet
parts + manifest.json) and ``training_sets/<sha256>/manifest.json`` is written last. The
assembly streams, holding at most one snapshot in memory (see assemble_training_set).

The window ends at the form's ``until_ds`` or the newest validated date, and never before
the dates of the asset events that started the run (:func:`training_window_end`): a
drift-triggered run trains on data that includes the drifted days.

The identity of a training input (:func:`training_input_hash`: train and valid snapshot
hashes, config hash, resolved training settings, code version, trainer image) is shared by
the trainer, which reuses a version trained from the same input, and the worker, which
does not start training at all when that input is the current champion's
(:func:`compare_with_champion`).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_loop.core.config import DatasetConfig, TrainingWindow, check_ds
from mlops_loop.core.storage import S3Credentials, join_uri, open_storage, read_json, write_json
from mlops_loop.exceptions import TrainingSetError

if TYPE_CHECKING:
    import pyarrow as pa

    from mlops_loop.core.config import TrainingSettings
    from mlops_loop.core.trainer_protocol import TrainRequest

TRAINING_SET_FORMAT_VERSION = 1
SPLITS = ("train", "valid", "holdout")
# The model version tag with training_input_hash() (written by the trainer).
TRAINING_INPUT_TAG = "training_input_sha256"


@dataclass(frozen=True)
class ValidatedSnapshot:
    ds: str
    sha256: str
    snapshot_uri: str
    rows: int
    result_uri: str = ""
    # When the snapshot passed its gate (ISO 8601, UTC): of two validated snapshots of one
    # date (a changed batch landed again), the newer one supersedes the older.
    validated_at: str = ""


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
    until_ds: str = ""
    window_note: str = ""  # how the window's end was chosen (this run's, not stored)

    def to_xcom(self) -> dict[str, Any]:
        return asdict(self)

    def stored(self) -> dict[str, Any]:
        """What the set's manifest records (without this run's window note)."""
        return {k: v for k, v in asdict(self).items() if k != "window_note"}


def record_validated(
    config: DatasetConfig, entry: ValidatedSnapshot, *, credentials: S3Credentials | None = None
) -> str:
    """Add a snapshot to the validated index, or mark it validated again (it then
    supersedes the date's other snapshots). ``entry.validated_at`` left empty is now.
    Returns the pointer's URI."""
    uri = join_uri(config.root, "validated", f"ds={check_ds(entry.ds)}", f"{entry.sha256}.json")
    if not entry.validated_at:
        entry = replace(entry, validated_at=datetime.now(timezone.utc).isoformat())
    write_json(open_storage(uri, credentials), uri, asdict(entry))
    return uri


def validated_snapshots(
    config: DatasetConfig,
    *,
    credentials: S3Credentials | None = None,
    since_ds: str | None = None,
    until_ds: str | None = None,
) -> list[ValidatedSnapshot]:
    """The validated snapshot of each date with since_ds <= ds <= until_ds, oldest date
    first. A date validated more than once (a changed batch landed again) counts with its
    newest validated snapshot only: see current_validated()."""
    prefix = join_uri(config.root, "validated") + "/"
    if since_ds and since_ds == until_ds:
        prefix = join_uri(prefix, f"ds={check_ds(since_ds)}") + "/"
    storage = open_storage(prefix, credentials)
    newest: dict[str, ValidatedSnapshot] = {}
    for obj in storage.list(prefix):
        if not obj.uri.endswith(".json"):
            continue
        entry = ValidatedSnapshot(**read_json(storage, obj.uri))
        if (since_ds and entry.ds < since_ds) or (until_ds and entry.ds > until_ds):
            continue
        if entry.ds not in newest or _supersedes(entry, newest[entry.ds]):
            newest[entry.ds] = entry
    return [newest[ds] for ds in sorted(newest)]


def _supersedes(entry: ValidatedSnapshot, other: ValidatedSnapshot) -> bool:
    """``entry`` passed its gate after ``other`` (a pointer written before validation
    times were recorded counts as oldest; the hash breaks an exact tie)."""
    return (entry.validated_at, entry.sha256) > (other.validated_at, other.sha256)


def current_validated(
    config: DatasetConfig, ds: str, *, credentials: S3Credentials | None = None
) -> ValidatedSnapshot | None:
    """The snapshot that is ``ds``'s validated data now (the newest that passed), or None."""
    found = validated_snapshots(config, credentials=credentials, since_ds=ds, until_ds=ds)
    return found[0] if found else None


def training_set_hash(members: list[ValidatedSnapshot], spec: dict[str, Any]) -> str:
    payload = {
        "members": [(m.ds, m.sha256) for m in members],
        "spec": spec,
        "format_version": TRAINING_SET_FORMAT_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def training_window_end(
    requested: str | None,
    event_dates: Sequence[str],
    newest_validated: str | None,
    *,
    window_days: int | None = None,
) -> tuple[str, str]:
    """The last date of the training window and a line saying how it was chosen.

    ``requested`` (the form's ``until_ds``) when given, else ``newest_validated``. When
    an event that started the run names a later date (a drift report of that day), the
    window moves forward to it, but never past the newest validated date: there is no
    validated data after it, and every day the drift monitor measured was validated by
    then. Raises ValueError for a date that is not ``YYYY-MM-DD`` and TrainingSetError
    when there is neither a requested nor a validated date.
    """
    dates = sorted({check_ds(str(d)) for d in event_dates})
    if requested:
        base, how = check_ds(str(requested).strip()), "the requested date"
    elif newest_validated:
        base, how = check_ds(newest_validated), "the newest validated date"
    else:
        raise TrainingSetError("no until_ds given and no validated date to end the window at")
    end = base
    if dates and dates[-1] > base:
        end = max(base, min(dates[-1], newest_validated or dates[-1]))
    if end != base:
        note = (
            f"window ends at {end}, moved from {how} {base} to reach {dates[-1]}, the date of "
            "the event that started this run"
        )
    else:
        note = f"window ends at {base}, {how}"
        if dates:
            note += f"; it includes {', '.join(dates)}, the date(s) of the events that started this run"
    if dates and dates[-1] > end:
        note += f" (no validated data after {end})"
    if dates and window_days:
        start = (date.fromisoformat(end) - timedelta(days=window_days - 1)).isoformat()
        before = [d for d in dates if d < start]
        if before:
            note += (
                f"; event date(s) {', '.join(before)} lie before the window's start {start} "
                f"(training.window.window_days {window_days})"
            )
    return end, note


def assemble_training_set(
    config: DatasetConfig,
    *,
    until_ds: str | None = None,
    credentials: S3Credentials | None = None,
    window: TrainingWindow | None = None,
    must_include_ds: Sequence[str] = (),
) -> TrainingSet:
    """Build (or find) the training set for the validated data up to ``until_ds``;
    ``window`` defaults to the config's ``training.window``; ``until_ds`` left out means
    the most recent validated date (what a data-triggered run wants).
    ``must_include_ds``: dates the window must reach, the ``ds`` of the asset events that
    started the run (a drift report's date); see :func:`training_window_end`.

    With validated data on only one date, that date is split by time into train /
    valid / holdout (70 / 15 / 15) so a first model can still be trained and judged on
    rows it has not seen.

    Memory is bounded by one snapshot (one day's batch), not the window: the split sizes
    come from the members' manifests (their row counts), so the cut points are known
    before any data is read; then each snapshot streams, in (ds, timestamp) order, into
    one Parquet writer per split (row groups of ``ingest.rows_per_chunk`` rows, a new part
    file every ``core.ingest.ROWS_PER_PART`` rows). Ordering a snapshot that is not already
    in timestamp order needs that snapshot in memory (a stable Arrow sort); one already in
    order, or a dataset without a timestamp column (file order), streams row group by row
    group. The rows of each split, their order, the manifests and the set's hash are those
    of the earlier all-in-pandas assembly; the parts keep the snapshots' Arrow schema (the
    pandas round trip used to turn an integer column with nulls into float64 in every
    split; the manifest's ``columns`` still record the pandas dtypes of the window's rows).
    A split's folder is complete before its manifest, and the set's manifest is written
    last: a half-written set is never found.
    """
    from mlops_loop.core.snapshots import load_manifest

    window = window or config.training.window
    window_days, holdout_days = window.window_days, window.holdout_days
    valid_fraction, min_rows = window.valid_fraction, window.min_rows_per_split
    latest = None  # the whole index, read only when the window's end depends on it
    if not until_ds or must_include_ds:
        latest = validated_snapshots(config, credentials=credentials)
        if not latest:
            raise TrainingSetError(
                f"no validated snapshots of {config.name} yet: ingest and quality-gate a batch first"
            )
    until_ds, window_note = training_window_end(
        until_ds, must_include_ds, latest[-1].ds if latest else None, window_days=window_days
    )
    end = date.fromisoformat(until_ds)
    since = (end - timedelta(days=window_days - 1)).isoformat()
    if latest is not None:
        members = [m for m in latest if since <= m.ds <= until_ds]
    else:
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
        return TrainingSet(
            **{
                **found["training_set"],
                "created": False,
                "until_ds": until_ds,
                "window_note": window_note,
            }
        )

    manifests = [load_manifest(m.snapshot_uri, credentials=credentials) for m in members]
    counts = [int(mf["rows"]) for mf in manifests]
    cuts = _split_cuts(members, counts, holdout_days, valid_fraction)
    rows = dict(zip(SPLITS, (cuts[0], cuts[1] - cuts[0], sum(counts) - cuts[1]), strict=True))
    for name, n in rows.items():
        if n < min_rows:
            raise TrainingSetError(
                f"the {name} split of {config.name} up to {until_ds} has {n} rows, "
                f"fewer than the minimum {min_rows}; land more validated data or widen window_days"
            )

    result = TrainingSet(
        sha256=sha,
        uri=set_uri,
        train_uri=join_uri(set_uri, "train"),
        valid_uri=join_uri(set_uri, "valid"),
        holdout_uri=join_uri(set_uri, "holdout"),
        rows=rows,
        members=[{"ds": m.ds, "sha256": m.sha256, "snapshot_uri": m.snapshot_uri} for m in members],
        until_ds=until_ds,
        window_note=window_note,
    )
    with tempfile.TemporaryDirectory(prefix="mlops-trainset-") as tmp:
        files, dtypes = _stream_splits(
            config, members, manifests, counts, cuts, Path(tmp), credentials
        )
        for name in SPLITS:
            split_uri = join_uri(set_uri, name)
            for entry in files[name]:
                storage.upload(Path(tmp) / name / entry["name"], join_uri(split_uri, entry["name"]))
            manifest = {
                "sha256": split_sha256(sha, name),
                "dataset": config.name,
                "kind": f"training_set.{name}",
                "training_set_sha256": sha,
                "rows": rows[name],
                "columns": [{"name": c, "dtype": t} for c, t in dtypes],
                "files": files[name],
            }
            write_json(storage, join_uri(split_uri, "manifest.json"), manifest)
    write_json(storage, manifest_uri, {"training_set": result.stored(), "spec": spec})
    return result


def _split_cuts(
    members: Sequence[ValidatedSnapshot],
    counts: Sequence[int],
    holdout_days: int,
    valid_fraction: float,
) -> tuple[int, int]:
    """Where valid and holdout start in the window's rows in (ds, timestamp) order: train
    is ``[0, a)``, valid ``[a, b)``, holdout ``[b, rows)``. The newest ``holdout_days``
    dates are the holdout and the last ``valid_fraction`` of the older rows are valid; with
    no more dates than that, the rows are split 70 / 15 / 15."""
    total = sum(counts)
    dates = sorted({m.ds for m in members})
    if len(dates) > holdout_days:
        held = set(dates[-holdout_days:])
        older = sum(n for m, n in zip(members, counts, strict=True) if m.ds not in held)
        n_valid = max(1, round(older * valid_fraction))
        return max(older - n_valid, 0), older
    return int(total * 0.70), int(total * 0.85)


def _stream_splits(
    config: DatasetConfig,
    members: Sequence[ValidatedSnapshot],
    manifests: Sequence[dict[str, Any]],
    counts: Sequence[int],
    cuts: tuple[int, int],
    tmp: Path,
    credentials: S3Credentials | None,
) -> tuple[dict[str, list[dict[str, Any]]], list[tuple[str, str]]]:
    """Write the window's rows, snapshot by snapshot in (ds, timestamp) order, into one
    :class:`~mlops_loop.core.snapshots.PartWriter` per split under ``tmp/<split>/``.

    Memory: one snapshot at most. Without a timestamp column, or when a snapshot is
    already in timestamp order (checked on that column alone), its row groups stream
    through. Otherwise the snapshot is read whole and taken in sorted order chunk by chunk
    (a stable Arrow sort, nulls and NaN last, as pandas ``sort_values`` would put them).
    The parts keep the snapshots' Arrow schema; when the members' columns differ they are
    unified (permissive promotion, a missing column null).

    Returns each split's manifest ``files`` and the columns with the pandas dtypes the
    window's rows have as one DataFrame (what the manifests recorded when the set was
    assembled in pandas), worked out from a few sampled rows per chunk.
    """
    import pyarrow as pa

    from mlops_loop.core.ingest import ROWS_PER_PART
    from mlops_loop.core.snapshots import PartWriter

    chunk_rows = config.ingest.rows_per_chunk
    schema = _window_schema(members, manifests, credentials)
    bounds = dict(zip(SPLITS, ((0, cuts[0]), cuts, (cuts[1], sum(counts))), strict=True))
    samples = []
    writers: dict[str, PartWriter] = {}
    try:
        offset = 0
        for member, expected in zip(members, counts, strict=True):
            picked: list[pa.Table] = []
            seen = 0
            for chunk in _sorted_chunks(member, config.timestamp_column, chunk_rows, credentials):
                if schema is None:
                    schema = chunk.schema.remove_metadata()
                chunk = _conform(chunk, schema)
                if not writers:
                    writers = {
                        name: PartWriter(
                            tmp / name, schema, row_group_rows=chunk_rows, rows_per_part=ROWS_PER_PART
                        )
                        for name in SPLITS
                    }
                picked.append(_dtype_sample(chunk))
                for name, (lo, hi) in bounds.items():
                    start, stop = max(lo, offset + seen), min(hi, offset + seen + chunk.num_rows)
                    if start < stop:
                        writers[name].write(chunk.slice(start - offset - seen, stop - start))
                seen += chunk.num_rows
            if seen != expected:
                raise TrainingSetError(
                    f"snapshot {member.snapshot_uri} ({member.ds}) has {seen} rows, but its "
                    f"manifest says {expected}"
                )
            offset += seen
            samples.append(pa.concat_tables(picked) if picked else None)
        if schema is None:  # every member empty: nothing told the schema
            schema = _window_schema(members, manifests, credentials, force=True)
            assert schema is not None
        if not writers:
            writers = {
                name: PartWriter(
                    tmp / name, schema, row_group_rows=chunk_rows, rows_per_part=ROWS_PER_PART
                )
                for name in SPLITS
            }
        files = {name: writer.finish() for name, writer in writers.items()}
    finally:
        for writer in writers.values():
            writer.close()
    frames = [(s if s is not None else schema.empty_table()).to_pandas() for s in samples]
    import pandas as pd

    dtypes = pd.concat(frames, ignore_index=True).dtypes
    return files, [(str(c), str(t)) for c, t in dtypes.items()]


def _window_schema(
    members: Sequence[ValidatedSnapshot],
    manifests: Sequence[dict[str, Any]],
    credentials: S3Credentials | None,
    *,
    force: bool = False,
) -> pa.Schema | None:
    """The one schema of the window's parts. None (take the first chunk's) when every
    member's manifest lists the same columns and types, the usual case; otherwise the
    members' Parquet schemas unified."""
    import pyarrow as pa

    from mlops_loop.core.snapshots import snapshot_schema

    def listed(manifest: dict[str, Any]) -> list[tuple[Any, Any]]:
        return [(c.get("name"), c.get("arrow_type")) for c in manifest.get("columns", [])]

    if not force and all(listed(mf) == listed(manifests[0]) for mf in manifests):
        return None
    schemas = [snapshot_schema(m.snapshot_uri, credentials=credentials) for m in members]
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise TrainingSetError(
            f"the validated snapshots of the window have columns that cannot be combined: {exc}"
        ) from exc


def _conform(chunk: pa.Table, schema: pa.Schema) -> pa.Table:
    """``chunk`` with ``schema``'s columns and types (a missing column all null)."""
    import pyarrow as pa

    if chunk.schema.remove_metadata() == schema:
        return chunk.replace_schema_metadata(None)
    columns = [
        chunk.column(f.name).cast(f.type) if f.name in chunk.column_names
        else pa.nulls(chunk.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _sorted_chunks(
    member: ValidatedSnapshot,
    timestamp_column: str | None,
    chunk_rows: int,
    credentials: S3Credentials | None,
) -> Iterator[pa.Table]:
    """The member's rows as tables of at most ``chunk_rows`` rows, in timestamp order
    (stable: ties keep file order), or file order without a timestamp column."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from mlops_loop.core.snapshots import iter_snapshot_tables, read_snapshot_table

    def streamed() -> Iterator[pa.Table]:
        yield from iter_snapshot_tables(
            member.snapshot_uri, credentials=credentials, batch_size=chunk_rows
        )

    if not timestamp_column:
        yield from streamed()
        return
    key = read_snapshot_table(
        member.snapshot_uri, credentials=credentials, columns=[timestamp_column]
    ).column(0)
    if pa.types.is_floating(key.type):  # pandas puts NaN with the nulls, last
        key = pc.if_else(pc.is_nan(key), pa.scalar(None, key.type), key)
    order = pc.sort_indices(
        pa.table({"key": key}), sort_keys=[("key", "ascending")]
    )
    del key
    if np.array_equal(order.to_numpy(), np.arange(len(order))):
        yield from streamed()
        return
    table = read_snapshot_table(member.snapshot_uri, credentials=credentials)
    for start in range(0, len(order), chunk_rows):
        yield table.take(order.slice(start, chunk_rows))


def _dtype_sample(chunk: pa.Table) -> pa.Table:
    """A few rows of ``chunk`` that convert to pandas with the dtypes the whole chunk
    would: the first row and each column's first null and first non-null value."""
    import pyarrow.compute as pc

    picked = {0} if chunk.num_rows else set()
    for column in chunk.columns:
        if column.null_count:
            nulls = pc.is_null(column)
            picked.add(pc.index(nulls, True).as_py())
            first_valid = pc.index(nulls, False).as_py()
            if first_valid >= 0:
                picked.add(first_valid)
    return chunk.take(sorted(picked))


def split_sha256(set_sha: str, split: str) -> str:
    """The manifest hash of one split of a training set (what the trainer records as
    ``train_snapshot_sha256`` / ``valid_snapshot_sha256``)."""
    return hashlib.sha256(f"{set_sha}:{split}".encode()).hexdigest()


# --------------------------------------------------------------- identity of a training input


def resolve_train_settings(request: TrainRequest) -> tuple[DatasetConfig, TrainingSettings]:
    """The request's dataset config and its training settings with the request's
    overrides, as the trainer resolves them. Raises ConfigError naming the key."""
    from mlops_loop.core.config import training_settings

    config = request.dataset_config()
    overrides = dict(request.hyperparameters)
    for key in ("seed", "registered_model_name", "experiment_name"):
        value = getattr(request, key)
        if value is not None:
            overrides[key] = value
    return config, training_settings(config, overrides)


def training_input_hash(
    settings: TrainingSettings,
    config: DatasetConfig,
    train_sha: str,
    valid_sha: str,
    request_tags: Mapping[str, str],
) -> str:
    """Identity of a training input: snapshots, config, resolved settings, code and image.
    The trainer reuses a registered version carrying the same hash unless asked to
    retrain; the worker compares it with the champion's before starting anything."""
    payload = {
        "train": train_sha,
        "valid": valid_sha,
        "config": config.config_hash(),
        "settings": settings.model_dump(mode="json"),
        "code_version": request_tags.get("code_version", ""),
        "trainer_image": request_tags.get("trainer_image", ""),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# Tags compared one by one to say what differs from the champion (all are in the hash).
_COMPARED_TAGS = (
    ("train_snapshot_sha256", "training split"),
    ("valid_snapshot_sha256", "validation split"),
    ("config_hash", "config"),
    ("model_type", "model type"),
    ("seed", "seed"),
    ("code_version", "code version"),
    ("trainer_image", "trainer image"),
)


@dataclass(frozen=True)
class ChampionComparison:
    """Whether this run's training input is the one the current champion was trained on.

    ``up_to_date``: the champion carries the same ``training_input_sha256``, so training
    would only find the champion again (the trainer reuses it) and evaluation would
    compare it with itself. ``reason``: one line for the log, the XCom and the summary.
    """

    up_to_date: bool
    reason: str
    model_name: str
    champion_version: str | None
    training_input_sha256: str
    differences: list[str] = field(default_factory=list)

    def to_xcom(self) -> dict[str, Any]:
        return asdict(self)


def compare_with_champion(
    model_name: str,
    input_sha256: str,
    candidate_tags: Mapping[str, str],
    champion_version: str | None,
    champion_tags: Mapping[str, str] | None,
) -> ChampionComparison:
    """Compare a training input (its :func:`training_input_hash` and the tags the trainer
    would record: snapshot hashes, config hash, model type, seed, code version, trainer
    image) with the current champion's model version tags.

    Up to date only when the champion's ``training_input_sha256`` equals ``input_sha256``:
    the training set, config, code, image AND the resolved settings (with a form's model
    type and hyperparameters) are the champion's. No champion, or a champion without that
    tag, is never up to date (nothing to compare with, so train).
    """

    def result(up_to_date: bool, reason: str, differences: list[str] | None = None) -> ChampionComparison:
        return ChampionComparison(
            up_to_date, reason, model_name, champion_version, input_sha256, differences or []
        )

    if champion_version is None:
        return result(False, f"{model_name} has no champion yet: training")
    tags = dict(champion_tags or {})
    recorded = tags.get(TRAINING_INPUT_TAG)
    if not recorded:
        return result(
            False,
            f"champion v{champion_version} of {model_name} carries no {TRAINING_INPUT_TAG} tag, "
            "so its training input is unknown: training",
        )
    if recorded == input_sha256:
        code = candidate_tags.get("code_version") or "unknown"
        image = candidate_tags.get("trainer_image") or "a local trainer process"
        return result(
            True,
            f"nothing new for {model_name}: champion v{champion_version} was trained on this very "
            f"input (training split {candidate_tags.get('train_snapshot_sha256', '?')[:12]}, "
            f"validation split {candidate_tags.get('valid_snapshot_sha256', '?')[:12]}, config "
            f"{candidate_tags.get('config_hash', '?')[:12]}, code {code} in {image}, the same "
            "training settings), so it is not trained and evaluated again; new validated data, "
            "a config or code change, or other hyperparameters in the trigger form start a new "
            "training",
        )
    def shown(key: str, value: str) -> str:
        return value[:12] if key.endswith(("sha256", "_hash")) else value

    differences = [
        f"{label} {shown(key, str(tags[key]))} -> {shown(key, str(candidate_tags[key]))}"
        for key, label in _COMPARED_TAGS
        if key in tags and key in candidate_tags and tags[key] != candidate_tags[key]
    ]
    if not differences:
        differences = ["training settings (hyperparameters)"]
    return result(
        False,
        f"training input differs from champion v{champion_version} of {model_name}: "
        + "; ".join(differences),
        differences,
    )

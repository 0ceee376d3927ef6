"""Drift inputs and the reference profile of a champion's training data.

Airflow-free. Once per champion::

    profile = build_profile(ParquetBatches(training_snapshot), config, scores=holdout_scores)
    save_profile(storage, uri, profile)

and each night ``load_profile(storage, uri)`` hands it to :func:`core.drift.measure_drift`.

Choices (and why):

* **Inputs.** A DataFrame, an Arrow table or record batch, or an iterable of them
  (:class:`ParquetBatches` reads Parquet files by row groups with bounded memory). Columns
  are read as float64 (missing, NaN and +-inf alike are missing) or as category counts
  (dictionary codes counted without hashing strings).
* **Bins.** Per numeric feature the reference stores ``n_bins`` quantile edges taken from
  the reference sample below (exact when the data has at most ``sample_size`` values).
  Bins are ``[e[i-1], e[i])`` with open ends; missing values (NaN, null, +-inf) are their
  own bin. A feature with at most ``n_bins`` distinct values gets one bin per value (a
  constant column gets ``< c``, ``== c``, ``> c``), so collapsed edges never hide a change.
  Reference bin counts are exact: an iterable that can be read twice (a DataFrame, a list
  of batches, :class:`ParquetBatches`) is read twice (pass 1: moments and sample, which fix
  the edges; pass 2: counts). A one-shot iterator is read once and its numeric bin counts
  come from the sample (``counts_source: "sample"`` in the profile).
* **Sample.** The profile keeps a uniform sample of up to ``sample_size`` (10k) non-missing
  values per numeric feature (bottom-k of a random key per row, so it streams), stored as
  sorted distinct values with counts: the reference side of the two-sample KS test.
* **Categorical.** Frequencies of the top 100 categories, the rest counted as ``other``.
* **Prediction scores.** The champion's holdout scores are profiled like one more numeric
  feature (:data:`PREDICTION`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_loop.core.config import ColumnType, DatasetConfig, DriftSettings
from mlops_loop.exceptions import DriftError, ReferenceProfileMissing

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from mlops_loop.core.storage import Storage

PROFILE_FORMAT = 1
MAX_CATEGORIES = 100
SUMMARY_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
PREDICTION = "prediction"


# --------------------------------------------------------------------------- inputs


class ParquetBatches:
    """Re-iterable record batches of Parquet files, read by row groups with bounded memory.

    ``paths``: files, or folders whose ``*.parquet`` files are read in name order (a
    snapshot). Each ``iter()`` opens the files again, so :func:`build_profile` can read it
    twice. ``read_dictionary``: (categorical) columns to read dictionary-encoded, which
    makes counting them much cheaper. ``filesystem``: a ``pyarrow.fs`` filesystem (for
    example ``S3FileSystem``) when the paths are not local.
    """

    def __init__(
        self,
        paths: str | Path | Sequence[str | Path],
        *,
        columns: Sequence[str] | None = None,
        batch_size: int = 262_144,
        read_dictionary: Sequence[str] | None = None,
        filesystem: Any = None,
    ) -> None:
        self.paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        self.filesystem = filesystem
        self.columns = list(columns) if columns is not None else None
        self.batch_size = batch_size
        self.read_dictionary = list(read_dictionary) if read_dictionary else None

    def _files(self) -> list[str]:
        if self.filesystem is not None:
            return [str(p) for p in self.paths]
        files: list[str] = []
        for path in map(Path, self.paths):
            if path.is_dir():
                found = sorted(path.glob("*.parquet"))
                if not found:
                    raise DriftError(f"no .parquet files in {path}")
                files.extend(str(f) for f in found)
            elif path.exists():
                files.append(str(path))
            else:
                raise DriftError(f"no such Parquet file or folder: {path}")
        return files

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        import pyarrow.parquet as pq

        for path in self._files():
            # pre_buffer=False: with read-ahead, memory grew with the file (about 40 MB per
            # million rows here) instead of staying at one batch.
            with pq.ParquetFile(
                path,
                read_dictionary=self.read_dictionary,
                filesystem=self.filesystem,
                pre_buffer=False,
            ) as parquet:
                yield from parquet.iter_batches(batch_size=self.batch_size, columns=self.columns)


def iter_batches(source: Any) -> Iterator[Any]:
    """The batches of a DataFrame / Arrow table / record batch, or of an iterable of them."""
    import pandas as pd
    import pyarrow as pa

    if isinstance(source, (pd.DataFrame, pa.Table, pa.RecordBatch)):
        source = [source]
    if source is None:
        raise DriftError("no data given (None instead of a DataFrame or an iterable of batches)")
    for batch in source:
        if isinstance(batch, (pd.DataFrame, pa.Table, pa.RecordBatch)):
            yield batch
        else:
            raise DriftError(
                f"batches must be pandas DataFrames or Arrow tables/record batches, got {type(batch).__name__}"
            )


def _is_one_shot(source: Any) -> bool:
    import pandas as pd
    import pyarrow as pa

    if isinstance(source, (pd.DataFrame, pa.Table, pa.RecordBatch, list, tuple)):
        return False
    return iter(source) is source


def score_parts(scores: Any) -> Iterable[np.ndarray]:
    """Scores as one array-like (a list of one array) or an iterable of array-likes."""
    import pandas as pd

    if isinstance(scores, (np.ndarray, pd.Series)) or (
        isinstance(scores, (list, tuple)) and (len(scores) == 0 or np.ndim(scores[0]) == 0)
    ):
        return [_as_float(np.asarray(scores), PREDICTION)]
    return (_as_float(np.asarray(part), PREDICTION) for part in scores)


def _as_float(values: np.ndarray, name: str) -> np.ndarray:
    if values.ndim != 1:
        raise DriftError(
            f"{name}: expected one value per row, got an array of shape {values.shape}",
            feature=name,
        )
    try:
        return values.astype("float64", copy=False)
    except (TypeError, ValueError) as exc:
        raise DriftError(f"{name}: values are not numeric ({exc})", feature=name) from exc


def _column(batch: Any, name: str) -> Any:
    import pandas as pd

    names = list(batch.columns) if isinstance(batch, pd.DataFrame) else batch.schema.names
    if name not in names:
        raise DriftError(f"the data has no column {name!r} (columns: {names})", feature=name)
    return batch[name] if isinstance(batch, pd.DataFrame) else batch.column(name)


def _numeric_values(batch: Any, name: str) -> np.ndarray:
    return numeric_values_owned(batch, name)[0]


def numeric_values_owned(batch: Any, name: str) -> tuple[np.ndarray, bool]:
    """A column as float64 (missing -> NaN), and whether the array is a fresh copy that
    nothing else references (so it may be sorted in place)."""
    import pandas as pd
    import pyarrow as pa

    col = _column(batch, name)
    try:
        if isinstance(col, pd.Series):
            if col.dtype == bool:
                col = col.astype("float64")
            return col.to_numpy(dtype="float64", na_value=np.nan), False
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if col.null_count or not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
            col = col.cast(pa.float64())  # nulls become NaN below
        out = col.to_numpy(zero_copy_only=False) if isinstance(col, pa.Array) else col.to_numpy()
        if out.dtype != np.float64:
            return out.astype("float64"), True
        # Arrow never hands out writable views of its (immutable) buffers: a writable
        # result is a fresh conversion (nulls filled with NaN) that only we hold.
        return out, bool(out.flags.writeable)
    except (TypeError, ValueError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DriftError(
            f"column {name!r} is monitored as numeric but has non-numeric values: {exc}",
            feature=name,
        ) from exc


def category_counts(batch: Any, name: str) -> tuple[dict[str, int], int]:
    """(counts per category as text, missing count) of one batch."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    col = _column(batch, name)
    counts: dict[str, int] = {}
    if isinstance(col, pd.Series) and isinstance(col.dtype, pd.CategoricalDtype):
        codes = col.cat.codes.to_numpy()
        valid = codes[codes >= 0]
        tally = np.bincount(valid, minlength=len(col.cat.categories))
        for key, count in zip(col.cat.categories, tally, strict=True):
            if count:
                text = str(key)
                counts[text] = counts.get(text, 0) + int(count)
        return counts, int(codes.size - valid.size)
    if isinstance(col, pd.Series):
        missing = int(col.isna().sum())
        for key, count in col.value_counts(dropna=True).items():
            text = str(key)
            counts[text] = counts.get(text, 0) + int(count)
        return counts, missing
    if pa.types.is_dictionary(col.type):
        # Count the integer codes (no hashing of strings), then name them.
        missing = 0
        for piece in col.chunks if isinstance(col, pa.ChunkedArray) else [col]:
            indices = piece.indices if not piece.null_count else pc.drop_null(piece.indices)
            tally = np.bincount(
                indices.to_numpy(zero_copy_only=False), minlength=len(piece.dictionary)
            )
            missing += int(piece.null_count)
            for key, count in zip(piece.dictionary.to_pylist(), tally.tolist(), strict=True):
                if not count:
                    continue
                if key is None:
                    missing += count
                    continue
                text = str(key)
                counts[text] = counts.get(text, 0) + count
        return counts, missing
    missing = int(col.null_count)
    vc = pc.value_counts(col)
    for key, count in zip(
        vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True
    ):
        if key is None:
            continue
        text = str(key)
        counts[text] = counts.get(text, 0) + int(count)
    return counts, missing


def monitored_features(
    config: DatasetConfig, settings: DriftSettings | None = None
) -> dict[str, str]:
    """Feature name -> "numeric" | "categorical" for the features drift looks at.

    ``settings.features`` when given, else every feature column except dates/timestamps
    (a time column drifts by definition).
    """
    names = settings.features if settings is not None and settings.features else None
    candidates = names if names is not None else config.feature_columns
    kinds: dict[str, str] = {}
    for name in candidates:
        try:
            col = config.column(name)
        except KeyError:
            raise DriftError(
                f"drift.features names {name!r}, which is not a column of dataset {config.name!r}",
                feature=name,
            ) from None
        if col.type in (ColumnType.DATE, ColumnType.TIMESTAMP):
            if names is not None:
                raise DriftError(
                    f"feature {name!r} is a {col.type.value} column; drift monitors values, not time",
                    feature=name,
                )
            continue
        kinds[name] = "numeric" if col.type.is_numeric else "categorical"
    if not kinds:
        raise DriftError(f"dataset {config.name!r} has no feature columns to monitor")
    return kinds


# --------------------------------------------------------------------------- streaming pieces


class _Moments:
    """Count, mean, variance (Chan's parallel merge), min and max of finite values."""

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, v: np.ndarray, *, is_sorted: bool = False) -> None:
        k = int(v.size)
        if k == 0:
            return
        total = float(v.sum())
        mean = total / k
        squares = float(np.einsum("i,i->", v, v))  # not np.dot: BLAS threads stall on busy hosts
        m2 = squares - total * mean
        if m2 < 1e-6 * squares:  # cancellation (mean large against the spread): exact way
            d = v - mean
            m2 = float(np.einsum("i,i->", d, d))
        delta = mean - self.mean
        total = self.n + k
        self.mean += delta * k / total
        self.m2 += m2 + delta * delta * self.n * k / total
        self.n = total
        self.min = min(self.min, float(v[0] if is_sorted else v.min()))
        self.max = max(self.max, float(v[-1] if is_sorted else v.max()))

    def summary(self) -> dict[str, float | None]:
        if self.n == 0:
            return {"mean": None, "std": None, "min": None, "max": None}
        std = math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0
        return {"mean": self.mean, "std": std, "min": self.min, "max": self.max}


class _BottomK:
    """Uniform sample without replacement of up to ``k`` values: keep the smallest keys."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.keys = np.empty(0)
        self.values = np.empty(0)

    def add(self, keys: np.ndarray, values: np.ndarray) -> None:
        if self.keys.size >= self.k:
            keep = keys < self.keys.max()
            keys, values = keys[keep], values[keep]
        if keys.size == 0:
            return
        all_keys = np.concatenate([self.keys, keys])
        all_values = np.concatenate([self.values, values])
        if all_keys.size > self.k:
            idx = np.argpartition(all_keys, self.k - 1)[: self.k]
            all_keys, all_values = all_keys[idx], all_values[idx]
        self.keys, self.values = all_keys, all_values


class NumericCounter:
    """Streams values into fixed bins and locates reference sample values in them (KS).

    Pass 2 of a profile counts the reference into its bins; drift counts recent values
    into the same bins and against the reference sample."""

    def __init__(self, edges: np.ndarray, support: np.ndarray) -> None:
        self.edges = edges
        self.support = support
        self.bin_counts = np.zeros(edges.size + 1, dtype=np.int64)
        self.below = np.zeros(support.size, dtype=np.int64)  # recent values < support[j]
        self.at_or_below = np.zeros(support.size, dtype=np.int64)  # recent values <= support[j]
        self.missing = 0
        self.moments = _Moments()

    def add(self, values: np.ndarray, *, owned: bool = False) -> None:
        # One sort; NaN sorts last and -inf / +inf at the ends, so the finite values are a
        # slice of the sorted copy (no mask, no second copy). ``owned``: ``values`` is a
        # fresh array of ours, sorted in place.
        if owned:
            values.sort()
            ordered = values
        else:
            ordered = np.sort(values)
        lo = int(np.searchsorted(ordered, -np.inf, side="right"))
        hi = int(np.searchsorted(ordered, np.inf, side="left"))
        xs = ordered[lo:hi]
        self.missing += int(values.size - xs.size)
        if xs.size == 0:
            return
        cut = np.searchsorted(xs, self.edges, side="left")
        self.bin_counts += np.diff(cut, prepend=0, append=xs.size)
        if self.support.size:
            left = np.searchsorted(xs, self.support, side="left")
            self.below += left
            # "<=" differs from "<" only where a support value occurs in the batch: search
            # again for those alone (few for continuous data, few distinct for discrete).
            hit = xs[np.minimum(left, xs.size - 1)] == self.support
            right = left.copy()
            right[hit] = np.searchsorted(xs, self.support[hit], side="right")
            self.at_or_below += right
        self.moments.add(xs, is_sorted=True)

    @property
    def n(self) -> int:
        return int(self.bin_counts.sum())


def _edges_from_sample(sample: np.ndarray, n_bins: int) -> np.ndarray:
    distinct = np.unique(sample)
    if distinct.size == 0:
        return np.empty(0)
    if distinct.size <= n_bins:
        # One bin per observed value, plus "below the smallest" and "above the largest".
        return np.append(distinct, np.nextafter(distinct[-1], np.inf))
    inner = np.quantile(sample, np.arange(1, n_bins) / n_bins)
    return np.unique(inner)


# --------------------------------------------------------------------------- profile


class _NumericSketch:
    """Pass 1 of a numeric column: moments, missing count, a uniform sample."""

    def __init__(self, sample_size: int) -> None:
        self.moments = _Moments()
        self.sample = _BottomK(sample_size)
        self.missing = 0

    def add(self, values: np.ndarray, keys: np.ndarray) -> None:
        finite = np.isfinite(values)
        if finite.all():
            v, k = values, keys
        else:
            v, k = values[finite], keys[finite]
        self.missing += int(values.size - v.size)
        self.moments.add(v)
        self.sample.add(k, v)

    @property
    def sample_is_everything(self) -> bool:
        return self.moments.n == self.sample.values.size

    def counter(self, n_bins: int) -> NumericCounter:
        self.sorted_sample = np.sort(self.sample.values)
        self.edges = _edges_from_sample(self.sorted_sample, n_bins)
        return NumericCounter(self.edges, np.empty(0))

    def profile(self, counter: NumericCounter, source: str) -> dict[str, Any]:
        values = self.sorted_sample
        support, support_counts = np.unique(values, return_counts=True)
        quantiles = (
            {
                str(q): float(x)
                for q, x in zip(
                    SUMMARY_QUANTILES, np.quantile(values, SUMMARY_QUANTILES), strict=True
                )
            }
            if values.size
            else {}
        )
        return {
            "kind": "numeric",
            "count": self.moments.n + self.missing,
            "missing": self.missing,
            **self.moments.summary(),
            "quantiles": quantiles,
            "edges": self.edges.tolist(),
            "bin_counts": counter.bin_counts.tolist(),
            "counts_source": source,
            "sample_values": support.tolist(),
            "sample_counts": support_counts.tolist(),
        }


def _profile_arrays(
    read: Any, names: Sequence[str], *, one_shot: bool, n_bins: int, sample_size: int, seed: int
) -> dict[str, dict[str, Any]]:
    """Numeric profiles of ``names``. ``read()`` yields dicts name -> values per batch;
    it is called twice unless ``one_shot`` (then bin counts come from the samples)."""
    rng = np.random.default_rng(seed)
    sketches = {n: _NumericSketch(sample_size) for n in names}
    for arrays in read():
        keys = None
        for name, values in arrays.items():
            if keys is None or keys.size != values.size:
                keys = rng.random(values.size)
            sketches[name].add(values, keys)
    counters = {n: s.counter(n_bins) for n, s in sketches.items()}
    exact = [n for n, s in sketches.items() if s.sample_is_everything]
    sources = dict.fromkeys(names, "sample" if one_shot else "exact")
    for name in exact:
        counters[name].add(sketches[name].sorted_sample)
        sources[name] = "exact"
    second = [n for n in names if n not in exact]
    if second and not one_shot:
        for arrays in read(second):
            for name, values in arrays.items():
                counters[name].add(values)
    elif second:
        for name in second:
            counters[name].add(sketches[name].sorted_sample)
    return {n: sketches[n].profile(counters[n], sources[n]) for n in names}


def _categorical_profile(counts: dict[str, int], missing: int) -> dict[str, Any]:
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = dict(ordered[:MAX_CATEGORIES])
    other = sum(c for _, c in ordered[MAX_CATEGORIES:])
    return {
        "kind": "categorical",
        "count": sum(counts.values()) + missing,
        "missing": missing,
        "categories": kept,
        "other": other,
    }


def build_profile(
    frame_or_batches: pd.DataFrame | pa.Table | Iterable[Any],
    config: DatasetConfig,
    *,
    scores: Any = None,
    n_bins: int = 10,
    sample_size: int = 10_000,
    features: Sequence[str] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Reference profile (JSON-serialisable) of the champion's training data.

    :param frame_or_batches: a DataFrame / Arrow table, or an iterable of them or of Arrow
        record batches (for example :class:`ParquetBatches`). Re-iterable input is read
        twice for exact bin counts; a one-shot iterator once (numeric counts from the sample).
    :param config: the dataset config (column types, feature columns).
    :param scores: the champion's prediction scores on its holdout (an array, or an
        iterable of arrays), profiled like a numeric feature; ``None`` to skip.
    :param n_bins: quantile bins per numeric feature.
    :param sample_size: reference values kept per numeric feature for KS.
    :param features: features to profile; default every monitored feature of ``config``.
    :param seed: seed of the sampling (same data + seed -> same profile).
    """
    if n_bins < 2:
        raise DriftError(f"n_bins must be at least 2, got {n_bins}")
    if sample_size < 1:
        raise DriftError(f"sample_size must be positive, got {sample_size}")
    kinds = monitored_features(config, DriftSettings(features=list(features)) if features else None)
    numeric = [n for n, k in kinds.items() if k == "numeric"]
    categorical = [n for n, k in kinds.items() if k == "categorical"]
    one_shot = _is_one_shot(frame_or_batches)
    rows = 0
    cat_counts: dict[str, dict[str, int]] = {n: {} for n in categorical}
    cat_missing = dict.fromkeys(categorical, 0)
    first_pass = True

    def read(names: Sequence[str] = numeric) -> Iterator[dict[str, np.ndarray]]:
        nonlocal rows, first_pass
        for batch in iter_batches(frame_or_batches):
            if first_pass:
                rows += len(batch)
                for name in categorical:
                    counts, missing = category_counts(batch, name)
                    merge_counts(cat_counts[name], counts)
                    cat_missing[name] += missing
            yield {name: _numeric_values(batch, name) for name in names}
        first_pass = False

    profiles = _profile_arrays(
        read, numeric, one_shot=one_shot, n_bins=n_bins, sample_size=sample_size, seed=seed
    )
    for name in categorical:
        profiles[name] = _categorical_profile(cat_counts[name], cat_missing[name])
    prediction = None
    if scores is not None:
        parts = score_parts(scores)

        def read_scores(names: Sequence[str] = (PREDICTION,)) -> Iterator[dict[str, np.ndarray]]:
            for part in parts:
                yield {PREDICTION: part}

        prediction = _profile_arrays(
            read_scores,
            [PREDICTION],
            one_shot=_is_one_shot(parts),
            n_bins=n_bins,
            sample_size=sample_size,
            seed=seed,
        )[PREDICTION]
        if prediction["count"] == 0:
            raise DriftError(
                "scores are empty: the reference profile needs the champion's holdout scores",
                feature=PREDICTION,
            )
    return {
        "format": PROFILE_FORMAT,
        "dataset": config.name,
        "rows": rows,
        "n_bins": n_bins,
        "sample_size": sample_size,
        "seed": seed,
        "features": {name: profiles[name] for name in kinds},
        "prediction": prediction,
    }


def merge_counts(into: dict[str, int], counts: dict[str, int]) -> None:
    """Add per-category ``counts`` into ``into``."""
    for key, count in counts.items():
        into[key] = into.get(key, 0) + count


def save_profile(storage: Storage, uri: str, profile: dict[str, Any]) -> None:
    """Write a profile as JSON (atomically, through the storage backend)."""
    from mlops_loop.core.storage import write_json

    write_json(storage, uri, profile)


def load_profile(storage: Storage, uri: str, *, model_version: str | None = None) -> dict[str, Any]:
    """Read a stored profile; :class:`ReferenceProfileMissing` when there is none."""
    from mlops_loop.core.storage import read_json

    if not storage.exists(uri):
        raise ReferenceProfileMissing(
            f"no reference profile at {uri}"
            + (f" for champion version {model_version}" if model_version else "")
            + "; build it from the champion's training data (build_profile) before measuring drift",
            profile_uri=uri,
            model_version=model_version,
        )
    profile = read_json(storage, uri)
    check_profile(profile, uri=uri, model_version=model_version)
    return profile


def check_profile(
    profile: Any, *, uri: str | None = None, model_version: str | None = None
) -> None:
    """:class:`ReferenceProfileMissing` for None, :class:`DriftError` for anything that is
    not a profile of this format."""
    if profile is None:
        raise ReferenceProfileMissing(
            "no reference profile given: the champion has none yet; build it with build_profile",
            profile_uri=uri,
            model_version=model_version,
        )
    if (
        not isinstance(profile, dict)
        or profile.get("format") != PROFILE_FORMAT
        or "features" not in profile
    ):
        fmt = profile.get("format") if isinstance(profile, dict) else type(profile).__name__
        raise DriftError(
            f"not a reference profile of format {PROFILE_FORMAT} (got {fmt!r}){f' at {uri}' if uri else ''}"
        )

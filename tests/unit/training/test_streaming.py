"""Training splits larger than ``training.max_rows_in_memory`` (issue 15): the label pass,
the row-group sampler, the MLP's streaming fit, and run_training end to end against a real
MLflow server with a cap of 1,000 rows and splits of a few thousand rows in many row groups.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from mlops_loop.core.config import DatasetConfig
from mlops_loop.core.targets import TRAIN_TARGET_MEAN_TAG
from mlops_loop.core.trainer_protocol import TrainRequest
from mlops_loop.exceptions import TrainingError
from mlops_loop.training import models, train
from tests.fixtures.servers import copy_snapshot_to_s3

REPO = Path(__file__).resolve().parents[3]
CAP = 1_000
ROW_GROUP = 400
FAST_MLP = {"hidden_sizes": [16], "max_epochs": 4, "patience": 4, "batch_size": 64, "lr": 0.01}


# --- data ----------------------------------------------------------------------------------


def make_frame(rows: int, seed: int, task: str = "text") -> pd.DataFrame:
    """An easy problem: the label follows x1 + x2 (plus a little noise); some unlabelled rows.
    ``task``: ``text`` (yes/no), ``bool`` or ``regression``."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    x1[rng.random(rows) < 0.03] = np.nan
    signal = np.nan_to_num(x1) + x2
    positive = signal + rng.normal(scale=0.3, size=rows) > 0
    label: Any
    if task == "text":
        label = np.where(positive, "yes", "no").astype(object)
    elif task == "bool":
        label = positive.astype(object)
    else:
        label = 3.0 * signal + 10.0 + rng.normal(scale=0.2, size=rows)
        label = label.astype(object)
    missing = rng.random(rows) < 0.05
    label = pd.Series(label, dtype=object)
    label[missing] = None
    return pd.DataFrame(
        {
            "row_id": [f"r{seed}-{i}" for i in range(rows)],
            "x1": x1,
            "x2": x2,
            "segment": rng.choice(["a", "b", "c"], size=rows),
            "flag": rng.random(rows) < 0.5,
            "label": label,
        }
    )


def write_snapshot(folder: Path, frame: pd.DataFrame, *, parts: int = 2) -> str:
    """A snapshot-shaped folder: ``parts`` Parquet files of ROW_GROUP-row groups and a
    manifest.json (rows, columns, files, sha256) written last."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    files = []
    for number, part in enumerate(np.array_split(np.arange(len(frame)), parts)):
        name = f"part-{number:05d}.parquet"
        table = pa.Table.from_pandas(frame.iloc[part], preserve_index=False)
        pq.write_table(table, folder / name, row_group_size=ROW_GROUP)
        files.append({"name": name, "rows": len(part)})
    schema = pa.Table.from_pandas(frame.head(1), preserve_index=False).schema
    manifest = {
        "rows": len(frame),
        "columns": [{"name": f.name, "arrow_type": str(f.type)} for f in schema],
        "files": files,
        "sha256": uuid.uuid4().hex * 2,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return str(folder)


def make_config(task: str = "text", **training: Any) -> DatasetConfig:
    raw = yaml.safe_load((REPO / "include" / "config" / "credit_default.yaml").read_text())
    target_type = {"text": "string", "bool": "boolean", "regression": "float"}
    raw["columns"] = [
        {"name": "row_id", "type": "string", "nullable": False},
        {"name": "x1", "type": "float"},
        {"name": "x2", "type": "float"},
        {"name": "segment", "type": "category"},
        {"name": "flag", "type": "boolean"},
        {"name": "label", "type": target_type[task]},
    ]
    raw.update(target="label", id_column="row_id", timestamp_column=None, name="stream_test")
    raw["task"] = "regression" if task == "regression" else "classification"
    raw["positive_label"] = "yes" if task == "text" else None
    raw["storage"]["root"] = "/nowhere"
    raw["quality"]["suite"] = str(REPO / "include" / "expectations" / "credit_default.json")
    raw["training"]["mlp"].update(FAST_MLP, **training.pop("mlp", {}))
    raw["training"].update({"max_rows_in_memory": CAP, "cpu_threads": 1, **training})
    raw["training"]["hist_gradient_boosting"].update(max_iter=20)
    return DatasetConfig.model_validate({**raw, "config_dir": "/tmp"})


def open_groups(uri: str, stack: contextlib.ExitStack, chunk_rows: int = 250):
    from mlops_loop.core.snapshots import load_manifest

    columns = ["row_id", "x1", "x2", "segment", "flag", "label"]
    return train.SnapshotRowGroups(
        uri, None, columns, load_manifest(uri), chunk_rows=chunk_rows, parts=stack
    )


# --- the label pass and the sampler -----------------------------------------------------------


def test_label_pass_is_exact_over_the_whole_split(tmp_path: Path) -> None:
    frame = make_frame(3_000, seed=1, task="regression")
    uri = write_snapshot(tmp_path / "s", frame)
    with contextlib.ExitStack() as stack:
        groups = open_groups(uri, stack)
        summary, per_group = train.label_pass(groups, make_config("regression"), training=True)
    labels = frame["label"].dropna().astype("float64").to_numpy()
    assert len(groups.groups) == 8  # 2 parts of 1,500 rows in groups of 400
    assert summary.rows == len(labels) == sum(per_group)
    assert summary.mean == pytest.approx(labels.mean(), rel=1e-12)
    assert summary.std == pytest.approx(labels.std(), rel=1e-10)
    assert groups.largest_chunk <= 250


def test_a_class_seen_only_in_the_last_row_group_still_counts(tmp_path: Path) -> None:
    frame = make_frame(3_000, seed=2)
    frame["label"] = "no"
    frame.loc[2_950:, "label"] = "yes"  # positives only in the very last row group
    uri = write_snapshot(tmp_path / "late", frame)
    config = make_config()
    with contextlib.ExitStack() as stack:
        summary, _ = train.label_pass(open_groups(uri, stack), config, training=True)
    assert summary.positives == 50 and summary.rows == 3_000

    frame["label"] = "no"
    uri = write_snapshot(tmp_path / "none", frame)
    with contextlib.ExitStack() as stack, pytest.raises(TrainingError, match="never occurs"):
        train.label_pass(open_groups(uri, stack), config, training=True)


def test_a_third_label_spread_over_row_groups_is_refused(tmp_path: Path) -> None:
    # Every chunk alone holds two labels (the second part yes/maybe); the split has three.
    frame = make_frame(3_000, seed=3)
    frame.loc[1_500:, "label"] = np.where(frame["x2"][1_500:] > 0, "yes", "maybe")
    uri = write_snapshot(tmp_path / "s", frame)
    with contextlib.ExitStack() as stack, pytest.raises(TrainingError, match="3 distinct labels"):
        train.label_pass(open_groups(uri, stack), make_config(), training=True)


def test_sample_is_uniform_exact_in_size_and_seeded(tmp_path: Path) -> None:
    frame = make_frame(4_000, seed=4)
    uri = write_snapshot(tmp_path / "s", frame)
    config = make_config()
    with contextlib.ExitStack() as stack:
        groups = open_groups(uri, stack)
        _, per_group = train.label_pass(groups, config)

        def sample(seed: int) -> pd.DataFrame:
            return train.sample_rows(groups, config, per_group, CAP, np.random.default_rng(seed))

        first, again, other = sample(0), sample(0), sample(1)
    assert len(first) == CAP and first["row_id"].is_unique
    assert set(first["row_id"]) <= set(frame.loc[frame["label"].notna(), "row_id"])
    pd.testing.assert_frame_equal(first, again)
    assert set(first["row_id"]) != set(other["row_id"])
    assert set(first["label"]) == {0, 1} and first["label"].dtype == "int64"
    # Every row group contributes, about in proportion to its rows (10 groups of ~380 labelled).
    group_of = first["row_id"].str.split("-").str[1].astype(int) // ROW_GROUP
    counts = group_of.value_counts()
    assert len(counts) == 10 and counts.min() > 50 and counts.max() < 160


# --- the streaming fit ------------------------------------------------------------------------


def _chunked(x: np.ndarray, y: np.ndarray, chunk: int, seed: int):
    def chunks(epoch: int):
        starts = np.arange(0, len(x), chunk)
        for start in np.random.default_rng([seed, epoch]).permutation(starts):
            yield x[start : start + chunk], y[start : start + chunk]

    return chunks


@pytest.fixture
def one_thread():
    """One torch thread, as training.cpu_threads: 1 (a small model on a busy shared host)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_thread")
def test_fit_mlp_stream_holds_at_most_the_buffer_and_one_chunk_and_is_deterministic() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3_000, 4)).astype(np.float32)
    y = (x[:, 0] - x[:, 1] > 0).astype(np.float32)
    hp = SimpleNamespace(dropout=0.0, weight_decay=0.0, **FAST_MLP)

    def fit(seed: int) -> models.MlpFit:
        return models.fit_mlp_stream(
            _chunked(x[:2_500], y[:2_500], 250, seed), x[2_500:], y[2_500:],
            n_inputs=4, rows=2_500, positives=float(y[:2_500].sum()), buffer_rows=500,
            hp=hp, task="classification", class_weight="balanced", seed=seed, device="cpu",
        )  # fmt: skip

    first, second, other = fit(0), fit(0), fit(1)
    assert first.peak_rows <= 500 + 250
    assert first.rows_seen == 2_500 * first.epochs_run  # every row once per epoch
    assert first.history[-1].metrics["valid_roc_auc"] > 0.97
    for name, weights in first.weights.items():
        np.testing.assert_array_equal(weights, second.weights[name])
    assert any(not np.array_equal(w, other.weights[k]) for k, w in first.weights.items())


# --- run_training end to end ------------------------------------------------------------------


@pytest.fixture
def tracking(mlflow_server, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    return mlflow_server.url


def run(
    config: DatasetConfig, train_uri: str, valid_uri: str, log: Any = None, **extra: Any
) -> dict[str, Any]:
    doc = {
        "config": {**config.model_dump(mode="json"), "config_dir": config.config_dir},
        "train_snapshot_uri": train_uri,
        "valid_snapshot_uri": valid_uri,
        "registered_model_name": f"stream_{uuid.uuid4().hex[:8]}",
        **extra,
    }
    return train.run_training(TrainRequest.model_validate(doc), log=log or (lambda line: None))


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str, pd.DataFrame]]:
    """Per target kind: a 4,000-row training split (10 row groups) and a 1,500-row
    validation split, both above the cap of 1,000."""
    out = {}
    for number, task in enumerate(("text", "bool", "regression")):
        root = tmp_path_factory.mktemp(f"stream-{task}")
        train_frame = make_frame(4_000, seed=10 + number, task=task)
        valid_frame = make_frame(1_500, seed=20 + number, task=task)
        out[task] = (
            write_snapshot(root / "train", train_frame),
            write_snapshot(root / "valid", valid_frame),
            train_frame,
        )
    return out


@pytest.mark.parametrize("task", ["text", "bool", "regression"])
def test_mlp_streams_a_split_above_the_cap(task: str, splits, tracking: str) -> None:
    from mlflow import MlflowClient

    train_uri, valid_uri, frame = splits[task]
    result = run(make_config(task), train_uri, valid_uri)

    labelled = frame["label"].notna().sum()
    assert result["params"]["train_data"] == "streamed"
    assert result["params"]["train_rows"] == labelled  # every labelled row, streamed
    assert result["params"]["valid_rows"] == CAP  # the validation split is sampled to the cap
    assert result["tags"]["mlops_loop.valid_rows_sampled"] == str(CAP)
    assert "mlops_loop.train_rows_sampled" not in result["tags"]
    run_metrics = MlflowClient(tracking_uri=tracking).get_run(result["run_id"]).data.metrics
    assert run_metrics["peak_rows_in_memory"] <= CAP
    assert run_metrics["largest_chunk_rows"] <= CAP // 4
    values = frame["label"].dropna()
    if task == "regression":
        expected_mean = values.astype(float).mean()
        assert result["metrics"]["r2"] > 0.9
    else:
        expected_mean = (values == ("yes" if task == "text" else True)).mean()
        assert result["metrics"]["roc_auc"] > 0.95
    assert float(result["tags"][TRAIN_TARGET_MEAN_TAG]) == pytest.approx(expected_mean, rel=1e-9)


def test_streamed_mlp_is_deterministic_for_a_seed(splits, tracking: str) -> None:
    train_uri, valid_uri, _ = splits["text"]
    config = make_config(mlp={"max_epochs": 2})
    first = run(config, train_uri, valid_uri, seed=3)
    second = run(config, train_uri, valid_uri, seed=3)
    assert first["metrics"] == second["metrics"]


def test_hist_gradient_boosting_trains_on_a_sample_of_exactly_the_cap(
    splits, tracking: str
) -> None:
    from mlflow import MlflowClient

    train_uri, valid_uri, frame = splits["text"]
    lines: list[str] = []
    result = run(
        make_config(model_type="hist_gradient_boosting"), train_uri, valid_uri, lines.append
    )
    assert any("seeded uniform sample of 1000 of the" in line for line in lines)
    labelled = int(frame["label"].notna().sum())
    assert result["params"]["train_data"] == "sampled"
    assert result["params"]["train_rows"] == CAP
    assert result["params"]["train_rows_total"] == labelled
    tags = (
        MlflowClient(tracking_uri=tracking)
        .get_model_version(result["model_name"], result["model_version"])
        .tags
    )
    assert tags["mlops_loop.train_rows_sampled"] == str(CAP)
    assert tags["mlops_loop.train_rows_total"] == str(labelled)
    assert tags["mlops_loop.max_rows_in_memory"] == str(CAP)
    # The target mean is the whole split's, not the sample's.
    expected = (frame["label"].dropna() == "yes").mean()
    assert float(tags[TRAIN_TARGET_MEAN_TAG]) == pytest.approx(expected, rel=1e-9)
    assert result["metrics"]["roc_auc"] > 0.95


def test_splits_within_the_cap_stay_in_memory(tmp_path: Path, tracking: str) -> None:
    train_uri = write_snapshot(tmp_path / "train", make_frame(900, seed=30))
    valid_uri = write_snapshot(tmp_path / "valid", make_frame(300, seed=31))
    result = run(make_config(mlp={"max_epochs": 1}), train_uri, valid_uri)
    assert result["params"]["train_data"] == "in_memory"
    assert not any(key.startswith("mlops_loop.") for key in result["tags"])


@pytest.mark.usefixtures("trainer_s3_env")
def test_streamed_mlp_from_s3_matches_the_local_run(
    splits, tracking: str, s3_credentials, s3_bucket: str
) -> None:
    """The same splits on an S3 endpoint stream to the same model: each part is fetched
    once to a temporary file and read by row groups, as on local storage."""
    train_uri, valid_uri, _ = splits["text"]
    remote = {
        uri: copy_snapshot_to_s3(s3_credentials, uri, f"{s3_bucket}/snapshots/{Path(uri).name}")
        for uri in (train_uri, valid_uri)
    }

    config = make_config(mlp={"max_epochs": 2})
    local = run(config, train_uri, valid_uri, seed=3)
    from_s3 = run(config, remote[train_uri], remote[valid_uri], seed=3)
    assert from_s3["params"]["train_data"] == "streamed"
    assert from_s3["tags"]["train_snapshot_uri"].startswith("s3://")
    assert from_s3["metrics"] == local["metrics"]

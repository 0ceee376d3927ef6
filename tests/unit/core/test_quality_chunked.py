"""The chunked quality gate (``quality.chunk_rows``) against the whole-batch gate.

Snapshots come from the sample generator (landed as CSV, ingested with row groups of
10,000 rows) and are validated with real Great Expectations both ways: the chunked run
must give the same verdict and, per expectation, the same success and counts. Batches are
25,000 rows, so the chunked run sees three chunks (10,000 + 10,000 + 5,000), and bad
values are placed so that a per-chunk verdict would differ from the whole batch's.
The 1M-row agreement check lives in benchmarks/bench_quality.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops_loop.core.config import DatasetConfig, load_config
from mlops_loop.core.ingest import ingest_batch
from mlops_loop.core.quality import (
    PARTIAL_UNEXPECTED,
    expectation_scope,
    iter_validation_chunks,
    run_suite,
    run_suite_chunked,
    starter_suite,
    validate_snapshot,
)
from mlops_loop.core.snapshots import load_manifest, read_snapshot
from mlops_loop.exceptions import QualityGateFailed
from mlops_loop_devtools.sample_data import generate_batch, land_batch

REPO = Path(__file__).resolve().parents[3]
CREDIT = REPO / "include" / "config" / "credit_default.yaml"
ROWS = 25_000
CHUNK = 10_000
DS = "2024-06-01"


def chunked_config(root: Path) -> DatasetConfig:
    return load_config(
        CREDIT,
        overrides={
            "storage": {"root": str(root)},
            "ingest": {"rows_per_chunk": CHUNK},
            "quality": {"suite": None, "chunk_rows": CHUNK},
        },
    )


def snapshot_of(root: Path, df: pd.DataFrame) -> tuple[DatasetConfig, str]:
    config = chunked_config(root)
    land_batch(df, root, DS)
    return config, ingest_batch(config, DS).snapshot_uri


def bad_batch() -> pd.DataFrame:
    """Every kind of fault the issue names; several only in the last chunk."""
    df = generate_batch(DS, rows=ROWS)
    last = ROWS - 1
    df.loc[last - 3, "loan_amount"] = -5.0  # range violation, last chunk only
    df.loc[last, "region"] = "atlantis"  # bad category, last chunk only
    df.loc[last - 1, "application_id"] = df.loc[0, "application_id"]  # duplicated id
    # 1,500 nulls in the first chunk: 15% of that chunk but 6% of the batch (limit 10%).
    df.loc[0:1_499, "annual_income"] = np.nan
    # 3,000 nulls spread over two chunks: 12% of the batch (limit 10%).
    df.loc[9_000:11_999, "credit_score"] = np.nan
    df["employment_years"] = (df["employment_years"] * 3).clip(upper=70)  # mean shift
    return df


@pytest.fixture(scope="module")
def suite() -> dict[str, Any]:
    config = chunked_config(Path("/unused"))
    return starter_suite(config, generate_batch("2024-01-15", rows=5_000))


def runs(root: Path, df: pd.DataFrame, suite: dict[str, Any]) -> tuple[dict, dict, str]:
    _, uri = snapshot_of(root, df)
    manifest = load_manifest(uri)
    whole = run_suite(suite, read_snapshot(uri))
    chunked = run_suite_chunked(suite, uri, manifest, chunk_rows=CHUNK)
    return whole, chunked, uri


@pytest.fixture(scope="module")
def clean_runs(
    tmp_path_factory: pytest.TempPathFactory, suite: dict[str, Any]
) -> tuple[dict, dict, str]:
    return runs(tmp_path_factory.mktemp("clean"), generate_batch(DS, rows=ROWS), suite)


@pytest.fixture(scope="module")
def bad_runs(
    tmp_path_factory: pytest.TempPathFactory, suite: dict[str, Any]
) -> tuple[dict, dict, str]:
    return runs(tmp_path_factory.mktemp("bad"), bad_batch(), suite)


def key(item: dict[str, Any]) -> str:
    cfg = item["expectation_config"]
    kwargs = {k: v for k, v in cfg["kwargs"].items() if k != "batch_id"}
    return json.dumps([cfg["type"], kwargs], sort_keys=True, default=str)


def per_expectation(result: dict[str, Any]) -> dict[str, tuple]:
    out = {}
    for item in result["results"]:
        res = item.get("result") or {}
        out[key(item)] = (
            item["success"],
            res.get("element_count"),
            res.get("unexpected_count"),
            res.get("missing_count"),
            res.get("observed_value"),
        )
    return out


# --------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("which", ["clean_runs", "bad_runs"])
def test_chunked_and_whole_batch_agree_per_expectation(which, request):
    whole, chunked, _ = request.getfixturevalue(which)
    assert chunked["success"] == whole["success"]
    assert chunked["statistics"] == whole["statistics"]
    assert per_expectation(chunked) == per_expectation(whole)


def test_clean_batch_passes_chunked(clean_runs):
    _, chunked, _ = clean_runs
    assert chunked["success"], [key(r) for r in chunked["results"] if not r["success"]]


@pytest.mark.parametrize(
    ("kind", "column"),
    [
        pytest.param("expect_column_values_to_be_between", "loan_amount", id="range"),
        pytest.param("expect_column_values_to_be_in_set", "region", id="category"),
        pytest.param("expect_column_values_to_be_unique", "application_id", id="duplicate-id"),
        pytest.param("expect_column_values_to_not_be_null", "credit_score", id="null-burst"),
        pytest.param("expect_column_mean_to_be_between", "employment_years", id="mean-shift"),
    ],
)
def test_each_injected_fault_fails_its_expectation(bad_runs, kind, column):
    _, chunked, _ = bad_runs
    (item,) = [
        r
        for r in chunked["results"]
        if r["expectation_config"]["type"] == kind
        and r["expectation_config"]["kwargs"].get("column") == column
    ]
    assert item["success"] is False


def test_null_burst_within_one_chunk_is_judged_on_the_whole_batch(bad_runs):
    """15% nulls in one chunk (plus the generator's own), under 10% of the batch: passes."""
    _, chunked, _ = bad_runs
    (item,) = [
        r
        for r in chunked["results"]
        if r["expectation_config"]["type"] == "expect_column_values_to_not_be_null"
        and r["expectation_config"]["kwargs"].get("column") == "annual_income"
    ]
    assert item["success"] is True
    count = item["result"]["unexpected_count"]
    assert 1_500 <= count < ROWS // 10
    assert item["result"]["unexpected_percent"] == pytest.approx(count / ROWS * 100)


def test_examples_and_indexes_come_from_the_right_rows(bad_runs):
    whole, chunked, _ = bad_runs
    for kind, column in [
        ("expect_column_values_to_be_between", "loan_amount"),
        ("expect_column_values_to_be_in_set", "region"),
    ]:
        got = [
            r["result"]
            for r in (whole, chunked)
            for r in r["results"]
            if r["expectation_config"]["type"] == kind
            and r["expectation_config"]["kwargs"].get("column") == column
        ]
        w, c = got
        assert c["partial_unexpected_list"] == w["partial_unexpected_list"]
        assert c["partial_unexpected_index_list"] == w["partial_unexpected_index_list"]


def test_row_level_and_whole_batch_scopes():
    assert expectation_scope("expect_column_values_to_be_between") == "row"
    assert expectation_scope("expect_column_values_to_be_unique") == "whole"
    assert expectation_scope("expect_column_median_to_be_between") == "whole"
    assert expectation_scope("expect_table_row_count_to_be_between") == "whole"
    assert expectation_scope("expect_table_columns_to_match_set") == "schema"


# --------------------------------------------------------------------------- the gate


def test_gate_catches_a_bad_value_only_in_the_last_chunk(tmp_path):
    df = generate_batch(DS, rows=ROWS)
    df.loc[ROWS - 1, "loan_amount"] = 123_456_789.0
    df.loc[ROWS - 2, "region"] = "atlantis"
    config, uri = snapshot_of(tmp_path, df)
    outcome = validate_snapshot(config, uri, raise_on_failure=False)
    assert outcome.success is False
    assert outcome.stats["chunked"] is True
    assert outcome.stats["rows"] == ROWS
    assert "loan_amount: expect_column_values_to_be_between" in outcome.summary
    assert "e.g. 123456789" in outcome.summary
    assert "e.g. 'atlantis'" in outcome.summary
    assert f"1 of {ROWS} rows are unexpected" in outcome.summary
    folder = Path(outcome.quarantine_uri or "")
    stored = json.loads((folder / "result.json").read_text())
    assert stored["success"] is False
    assert (folder / "data_docs" / "index.html").is_file()
    assert list((folder / "data_docs").rglob("validations/**/*.html"))


# --------------------------------------------------------------------------- schema


def rewrite_part(uri: str, change: Callable[[pa.Table], pa.Table]) -> str:
    """Rewrite the snapshot's last part file with ``change`` applied; returns its name."""
    manifest = load_manifest(uri)
    name = manifest["files"][-1]["name"]
    path = Path(uri) / name
    table = change(pq.read_table(path))
    pq.write_table(table, path, row_group_size=CHUNK)
    return name


@pytest.fixture
def small_snapshot(tmp_path: Path) -> tuple[DatasetConfig, str]:
    config, uri = snapshot_of(tmp_path, generate_batch(DS, rows=3_000))
    # Split into two parts so one can disagree with the other.
    manifest = load_manifest(uri)
    path = Path(uri) / manifest["files"][0]["name"]
    table = pq.read_table(path)
    pq.write_table(table.slice(0, 1_500), path)
    pq.write_table(table.slice(1_500), Path(uri) / "part-99999.parquet")
    manifest["files"].append({"name": "part-99999.parquet", "rows": 1_500})
    (Path(uri) / "manifest.json").write_text(json.dumps(manifest))
    return config, uri


@pytest.mark.parametrize(
    ("change", "words"),
    [
        pytest.param(
            lambda t: t.set_column(
                t.schema.get_field_index("age"), "age", t.column("age").cast(pa.string())
            ),
            ["'age'", "string", "int64"],
            id="int-vs-string",
        ),
        pytest.param(lambda t: t.drop_columns(["region"]), ["'region'", "missing"], id="missing"),
    ],
)
def test_parts_disagreeing_in_schema_are_refused(small_snapshot, change, words):
    config, uri = small_snapshot
    name = rewrite_part(uri, change)
    manifest = load_manifest(uri)
    with pytest.raises(QualityGateFailed) as chunked:
        list(iter_validation_chunks(uri, manifest, chunk_rows=CHUNK))
    with pytest.raises(QualityGateFailed) as gate:
        validate_snapshot(config, uri)
    for err in (chunked.value, gate.value):
        assert name in str(err)
        for word in words:
            assert word in str(err)
    assert not (Path(config.root) / "quarantine").exists()
    assert not (Path(config.root) / "reports").exists()


# --------------------------------------------------------------------------- aggregates


def _exp(kind: str, **kwargs: Any) -> dict[str, Any]:
    return {"type": kind, "kwargs": kwargs, "meta": {}}


def test_aggregates_are_computed_exactly_from_arrow_columns():
    import pyarrow as pa

    from mlops_loop.core.quality import aggregate_result

    numbers = pa.chunked_array([[1.0, None, 3.0], [float("nan"), 4.0, 10.0]])
    mean = aggregate_result(
        _exp("expect_column_mean_to_be_between", column="x", min_value=4.5), numbers
    )
    assert mean["result"]["observed_value"] == pytest.approx(4.5) and mean["success"]
    strict = aggregate_result(
        _exp("expect_column_mean_to_be_between", column="x", min_value=4.5, strict_min=True),
        numbers,
    )
    assert not strict["success"]
    median = aggregate_result(
        _exp("expect_column_median_to_be_between", column="x", max_value=3.0), numbers
    )
    assert median["result"]["observed_value"] == 3.5 and not median["success"]  # (3 + 4) / 2

    ids = pa.chunked_array([["a", "b", None], ["c", "b", "d", "a"]])
    unique = aggregate_result(_exp("expect_column_values_to_be_unique", column="id"), ids)
    res = unique["result"]
    assert not unique["success"]
    assert (res["element_count"], res["missing_count"], res["unexpected_count"]) == (7, 1, 4)
    assert res["partial_unexpected_list"] == ["a", "b", "b", "a"]
    assert res["partial_unexpected_index_list"] == [0, 1, 4, 6]
    relaxed = aggregate_result(
        _exp("expect_column_values_to_be_unique", column="id", mostly=0.3), ids
    )
    assert relaxed["success"]  # 2 of 6 present values are unique

    contain = aggregate_result(
        _exp("expect_column_distinct_values_to_contain_set", column="id", value_set=["a", "z"]), ids
    )
    assert not contain["success"] and contain["result"]["partial_missing_list"] == ["z"]
    count = aggregate_result(
        _exp(
            "expect_column_unique_value_count_to_be_between", column="id", min_value=4, max_value=4
        ),
        ids,
    )
    assert count["success"] and count["result"]["observed_value"] == 4
    rows = aggregate_result(_exp("expect_table_row_count_to_be_between", min_value=8), None, rows=7)
    assert not rows["success"] and rows["result"]["observed_value"] == 7


def test_aggregates_left_to_ge():
    import pyarrow as pa

    from mlops_loop.core.quality import aggregate_result

    text = pa.chunked_array([["a", "b"]])
    assert (
        aggregate_result(_exp("expect_column_mean_to_be_between", column="t", min_value=0), text)
        is None
    )
    numbers = pa.chunked_array([[1.0, 2.0]])
    assert (
        aggregate_result(
            _exp("expect_column_stdev_to_be_between", column="x", min_value=0), numbers
        )
        is None
    )


# --------------------------------------------------------------------------- Arrow row checks


def typed_frame(rows: int = 30_000) -> pd.DataFrame:
    """Every column type the fast row checks take, each with faults: nulls, NaN, values out
    of range or out of set, some only in the last chunk."""
    rng = np.random.default_rng(3)
    df = pd.DataFrame(
        {
            "f": rng.normal(0, 1, rows),
            "i": rng.integers(0, 100, rows),
            "i_null": pd.array(rng.integers(0, 100, rows), dtype="Int64"),
            "s": pd.array(rng.choice(["a", "b", "c"], rows), dtype="str"),
            "b": rng.random(rows) < 0.5,
            "b_null": pd.array(rng.random(rows) < 0.5, dtype="boolean"),
            "t": pd.date_range("2024-01-01", periods=rows, freq="min"),
            "cat": pd.Categorical(rng.choice(["x", "y"], rows), categories=["x", "y", "w"]),
        }
    )
    df.loc[[9, rows - 6], "cat"] = ["w", None]
    df.loc[[5, 17_000, rows - 1], "f"] = np.nan
    df.loc[[rows - 2, rows - 3], "f"] = [9.0, -9.0]
    df.loc[rows - 4, "i"] = 1000
    df.loc[[2, rows - 5], "i_null"] = pd.NA
    df.loc[[100, 20_000], "s"] = None
    df.loc[range(rows - 30, rows), "s"] = "zz"  # 30 unexpected: more than the 20 examples
    df.loc[[7, rows - 1], "b_null"] = pd.NA
    return df


def snapshot_from_frame(root: Path, df: pd.DataFrame, row_group: int) -> tuple[str, dict]:
    """A one-part snapshot folder of ``df`` (row groups of ``row_group`` rows) with its
    manifest.json; returns its uri and manifest."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, root / "part-00000.parquet", row_group_size=row_group)
    manifest = {
        "rows": len(df),
        "files": [{"name": "part-00000.parquet"}],
        "columns": [
            {"name": f.name, "arrow_type": str(f.type)}
            for f in pq.read_schema(root / "part-00000.parquet")
        ],
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return str(root), manifest


FAST_SUITE = [
    _exp("expect_column_values_to_not_be_null", column=c)
    for c in ("f", "i", "i_null", "s", "b", "b_null", "t", "cat")
] + [
    _exp("expect_column_values_to_not_be_null", column="f", mostly=0.99),
    _exp("expect_column_values_to_be_between", column="f", min_value=-3, max_value=3),
    _exp("expect_column_values_to_be_between", column="f", min_value=-3.0, mostly=0.5),
    _exp("expect_column_values_to_be_between", column="i", min_value=0, max_value=99),
    _exp("expect_column_values_to_be_between", column="i", min_value=0, strict_min=True),
    _exp("expect_column_values_to_be_between", column="i_null", max_value=98, strict_max=True),
    _exp("expect_column_values_to_be_between", column="t", min_value="2024-01-01"),
    _exp("expect_column_values_to_be_in_set", column="s", value_set=["a", "b", "c"]),
    _exp("expect_column_values_to_be_in_set", column="s", value_set=["a", "b", "c", 1]),
    _exp("expect_column_values_to_be_in_set", column="i", value_set=list(range(50))),
    _exp("expect_column_values_to_be_in_set", column="f", value_set=[0, 1.5]),
    _exp("expect_column_values_to_be_in_set", column="b", value_set=[True]),
    _exp("expect_column_values_to_be_in_set", column="b_null", value_set=[True, False]),
    _exp("expect_column_values_to_be_in_set", column="i", value_set=[True, 1]),
    _exp("expect_column_values_to_be_in_set", column="cat", value_set=["x", "y"]),
    _exp("expect_column_values_to_be_in_type_list", column="cat", type_list=["str"]),
    _exp("expect_column_values_to_be_in_type_list", column="s", type_list=["str"]),
    _exp("expect_column_values_to_be_in_type_list", column="s", type_list=["int"]),
    _exp("expect_column_values_to_be_in_type_list", column="i", type_list=["int64"]),
    _exp("expect_column_values_to_be_in_type_list", column="i_null", type_list=["int64"]),
    _exp("expect_column_values_to_be_in_type_list", column="i_null", type_list=["float64"]),
    _exp("expect_column_values_to_be_in_type_list", column="b_null", type_list=["bool"]),
    _exp("expect_column_values_to_be_of_type", column="f", type_="float64"),
    _exp("expect_column_values_to_match_regex", column="s", regex="^[abc]$"),
    _exp("expect_table_columns_to_match_set", column_set=["f", "i"], exact_match=False),
]


def comparable(item: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """success and result; ``partial_unexpected_counts`` only where the merged result is
    exact (at most 20 unexpected values, and not GE's per-NaN counting of nulls), and an
    observed float to 12 significant digits (a mean summed in another order)."""
    result = dict(item.get("result") or {})
    kind = item["expectation_config"]["type"]
    if (result.get("unexpected_count") or 0) > PARTIAL_UNEXPECTED or kind.endswith("not_be_null"):
        result.pop("partial_unexpected_counts", None)
    if isinstance(result.get("observed_value"), float):  # a mean: summation order
        result["observed_value"] = float(f"{result['observed_value']:.12g}")
    return item["success"], json.loads(json.dumps(result, default=str))


@pytest.mark.parametrize("chunk_rows", [10_000, 1_000_000])
def test_arrow_row_checks_give_ge_results(tmp_path, chunk_rows):
    df = typed_frame()
    uri, manifest = snapshot_from_frame(tmp_path / "snap", df, row_group=5_000)
    suite = {"name": "typed", "expectations": FAST_SUITE}
    whole = run_suite(suite, read_snapshot(uri))
    chunked = run_suite_chunked(suite, uri, manifest, chunk_rows=chunk_rows)
    by_key = {key(item): comparable(item) for item in whole["results"]}
    mismatches = {
        key(item): (comparable(item), by_key[key(item)])
        for item in chunked["results"]
        if comparable(item) != by_key[key(item)]
    }
    assert not mismatches
    assert chunked["statistics"] == whole["statistics"]


def test_which_row_checks_arrow_takes_and_which_it_leaves_to_ge():
    from mlops_loop.core.quality import row_result

    table = pa.Table.from_pandas(typed_frame(), preserve_index=False)

    def computed(exp: dict[str, Any]) -> bool:
        return row_result(exp, table.column(exp["kwargs"]["column"])) is not None

    taken = [e for e in FAST_SUITE if "column" in e["kwargs"] and computed(e)]
    left = [
        (e["type"], e["kwargs"]) for e in FAST_SUITE if "column" in e["kwargs"] and not computed(e)
    ]
    assert len(taken) == 21
    assert left == [
        ("expect_column_values_to_be_between", {"column": "t", "min_value": "2024-01-01"}),
        ("expect_column_values_to_be_in_set", {"column": "i", "value_set": [True, 1]}),
        ("expect_column_values_to_be_in_type_list", {"column": "cat", "type_list": ["str"]}),
        ("expect_column_values_to_be_in_type_list", {"column": "s", "type_list": ["str"]}),
        ("expect_column_values_to_be_in_type_list", {"column": "s", "type_list": ["int"]}),
        ("expect_column_values_to_be_in_type_list", {"column": "i", "type_list": ["int64"]}),
        ("expect_column_values_to_be_in_type_list", {"column": "i_null", "type_list": ["int64"]}),
        ("expect_column_values_to_be_in_type_list", {"column": "i_null", "type_list": ["float64"]}),
        ("expect_column_values_to_be_in_type_list", {"column": "b_null", "type_list": ["bool"]}),
        ("expect_column_values_to_be_of_type", {"column": "f", "type_": "float64"}),
        ("expect_column_values_to_match_regex", {"column": "s", "regex": "^[abc]$"}),
    ]
    row = row_result(
        _exp("expect_column_values_to_be_between", column="i", min_value=0, max_value=99),
        pa.chunked_array([[5, 120], [None, -1, 7]]),
    )
    res = row["result"]
    assert not row["success"]
    assert (res["element_count"], res["missing_count"], res["unexpected_count"]) == (5, 1, 2)
    assert res["partial_unexpected_list"] == [120, -1]
    assert res["partial_unexpected_index_list"] == [1, 3]


@pytest.fixture(scope="module")
def million() -> pd.DataFrame:
    return generate_batch(DS, rows=1_000_000)


@pytest.mark.parametrize("faults", [False, True], ids=["clean", "bad-values"])
def test_a_million_rows_chunked_and_whole_agree(tmp_path, suite, million, faults):
    """The issue's check at its size: on the same 1M-row batch, the chunked gate and GE
    over the whole batch give the same verdict and, per expectation, the same success,
    counts and examples, with and without injected bad values."""
    df = million.copy()
    if faults:
        rows = len(df)
        df.loc[rows - 7, "loan_amount"] = -5.0  # range, last chunk only
        df.loc[[12, 600_001], "region"] = "atlantis"  # category, first and third chunk
        df.loc[rows - 2, "application_id"] = df.loc[3, "application_id"]  # duplicated id
        df.loc[240_000:260_000, "annual_income"] = np.nan  # a null burst across chunks
        df.loc[rows - 1, "credit_score"] = np.nan
    uri, manifest = snapshot_from_frame(tmp_path / "snap", df, row_group=100_000)
    whole = run_suite(suite, read_snapshot(uri))
    chunked = run_suite_chunked(suite, uri, manifest, chunk_rows=250_000)
    assert chunked["success"] == whole["success"] == (not faults)
    assert chunked["statistics"] == whole["statistics"]
    by_key = {key(item): comparable(item) for item in whole["results"]}
    assert {key(item): comparable(item) for item in chunked["results"]} == by_key

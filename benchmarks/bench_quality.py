"""Great Expectations validation vs the same checks in vectorised pandas/numpy, one run.

    .local/venv/bin/python benchmarks/bench_quality.py                 # 1M rows x 20 columns
    .local/venv/bin/python benchmarks/bench_quality.py --rows 100000   # quicker
    .local/venv/bin/python benchmarks/bench_quality.py --end-to-end    # + ingest and the full gate

Data: the credit-default sample (16 columns) plus 4 extra numeric columns, landed as CSV
and ingested into a snapshot, which both sides then read. The suite is the config's
schema suite plus the reference-profile checks (``starter_suite`` on a 50,000-row
reference): columns, types, nulls, ranges, categories, id uniqueness, row count, means,
medians and category presence. The pandas side implements each of those expectation
types directly (``pandas_checks``), and the run asserts that both sides agree on every
expectation's pass/fail.

Each measured step runs in a forked child that resets its peak RSS (``clear_refs``) and
reports how far ``VmHWM`` rose above its RSS at the start, i.e. memory on top of the
already loaded frame. GE's import and the snapshot read are outside the GE time.
Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_loop.core.config import DatasetConfig, load_config
from mlops_loop.core.ingest import ingest_batch
from mlops_loop.core.quality import run_suite, starter_suite, validate_snapshot
from mlops_loop.core.snapshots import read_snapshot
from mlops_loop_devtools.sample_data import generate_batch, land_batch

REPO = Path(__file__).resolve().parents[1]
CREDIT = REPO / "include" / "config" / "credit_default.yaml"
DS = "2024-02-01"
EXTRA = [f"extra_{i}" for i in range(4)]


# --------------------------------------------------------------------------- data


def bench_config(root: Path) -> DatasetConfig:
    base = load_config(CREDIT, overrides={"storage": {"root": str(root)}})
    raw = base.model_dump()
    raw["columns"] += [
        {"name": c, "type": "float", "nullable": False, "min": -100.0, "max": 100.0} for c in EXTRA
    ]
    raw["quality"]["suite"] = None
    raw["config_dir"] = base.config_dir
    return DatasetConfig.model_validate(raw)


def batch(ds: str, rows: int) -> pd.DataFrame:
    df = generate_batch(ds, rows=rows)
    rng = np.random.default_rng(7)
    for i, name in enumerate(EXTRA):
        df[name] = np.round(rng.normal(i, 1 + i, rows), 4)
    return df


# --------------------------------------------------------------------------- pandas side


def _dtype_ok(series: pd.Series, type_list: list[str]) -> bool:
    """The snapshot's dtype is one the logical type allows (text: any string dtype)."""
    if "str" in type_list and pd.api.types.is_string_dtype(series.dtype):
        if series.dtype != object:
            return True
        return bool(series.dropna().map(type).eq(str).all())
    return series.dtype.name in type_list


def pandas_checks(suite: dict[str, Any], df: pd.DataFrame) -> list[bool]:
    """Each expectation of ``suite`` evaluated with vectorised pandas/numpy."""
    out: list[bool] = []
    rows = len(df)
    for exp in suite["expectations"]:
        kind, kw = exp["type"], exp["kwargs"]
        col = df[kw["column"]] if "column" in kw else None
        if kind == "expect_table_columns_to_match_set":
            ok = set(df.columns) == set(kw["column_set"])
        elif kind == "expect_table_row_count_to_be_between":
            ok = kw["min_value"] <= rows and (kw["max_value"] is None or rows <= kw["max_value"])
        elif kind == "expect_column_values_to_be_in_type_list":
            ok = _dtype_ok(col, kw["type_list"])
        elif kind == "expect_column_values_to_not_be_null":
            ok = col.isna().mean() <= 1.0 - kw.get("mostly", 1.0) + 1e-12
        elif kind == "expect_column_values_to_be_between":
            values = col.to_numpy(dtype="float64", na_value=np.nan)
            lo = -np.inf if kw["min_value"] is None else kw["min_value"]
            hi = np.inf if kw["max_value"] is None else kw["max_value"]
            ok = not bool(np.any((values < lo) | (values > hi)))
        elif kind == "expect_column_values_to_be_in_set":
            ok = bool((col.isin(kw["value_set"]) | col.isna()).all())
        elif kind == "expect_column_values_to_be_unique":
            ok = not bool(col.dropna().duplicated().any())
        elif kind in ("expect_column_mean_to_be_between", "expect_column_median_to_be_between"):
            stat = col.mean() if "mean" in kind else col.median()
            ok = kw["min_value"] <= stat <= kw["max_value"]
        elif kind == "expect_column_distinct_values_to_contain_set":
            ok = set(kw["value_set"]) <= set(col.dropna().unique())
        else:
            raise NotImplementedError(kind)
        out.append(bool(ok))
    return out


# --------------------------------------------------------------------------- measuring


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _child(fn: Callable[[], Any], conn: Any) -> None:
    # Reset this process's peak RSS (VmHWM) to its current RSS, then measure above it.
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    base = _status_kib("VmRSS")
    start = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - start
    conn.send((seconds, (_status_kib("VmHWM") - base) * 1024, value))
    conn.close()


def measure(fn: Callable[[], Any]) -> tuple[float, int, Any]:
    """(seconds, peak RSS growth, return value) of fn, run in a forked child."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fn, child))
    proc.start()
    seconds, peak, value = parent.recv()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"benchmark step failed with exit code {proc.exitcode}")
    return seconds, max(peak, 0), value


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--end-to-end", action="store_true", help="also time ingest + validate_snapshot"
    )
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        root = Path(tmp)
        config = bench_config(root)
        t = time.perf_counter()
        land_batch(batch(DS, args.rows), root, DS)
        land_seconds = time.perf_counter() - t
        ingest_s, ingest_mem, snapshot_uri = measure(lambda: ingest_batch(config, DS).snapshot_uri)
        df = read_snapshot(snapshot_uri)
        assert df.shape == (args.rows, 20), df.shape
        suite = starter_suite(config, batch("2024-01-15", 50_000))

        t = time.perf_counter()
        import great_expectations  # import cost reported, not counted

        ge_import = time.perf_counter() - t

        pd_s, pd_mem, pd_verdicts = measure(lambda: pandas_checks(suite, df))
        ge_s, ge_mem, ge_result = measure(
            lambda: [bool(r["success"]) for r in run_suite(suite, df)["results"]]
        )
        # GE returns results in suite order; both sides must agree on each expectation.
        assert ge_result == pd_verdicts, [
            (e["type"], e["kwargs"].get("column"), g, p)
            for e, g, p in zip(suite["expectations"], ge_result, pd_verdicts, strict=True)
            if g != p
        ]
        gate = None
        if args.end_to_end:
            gate = measure(lambda: validate_snapshot(config, snapshot_uri).stats)

    n = args.rows
    print(f"### Quality gate: Great Expectations vs vectorised pandas ({n:,} rows x 20 columns)\n")
    print(
        f"Suite: {len(suite['expectations'])} expectations (schema + profile). "
        f"{platform.python_version()}, pandas {pd.__version__}, "
        f"great_expectations {great_expectations.__version__}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f} at the end (a shared machine inflates times). "
        f"GE import {ge_import:.1f} s (not counted). All {len(ge_result)} verdicts agree.\n"
    )
    print("| step | rows | seconds | rows/s | peak memory above the loaded frame |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| GE 1.x `run_suite` (no Data Docs) | {n:,} | {ge_s:.2f} | {n / ge_s:,.0f} | {mib(ge_mem)} |"
    )
    print(f"| same checks, pandas/numpy | {n:,} | {pd_s:.2f} | {n / pd_s:,.0f} | {mib(pd_mem)} |")
    print(f"| **ratio GE / pandas** | | **{ge_s / pd_s:.1f}x** | | |")
    print()
    print("| other step | seconds | rows/s | peak memory |")
    print("|---|---:|---:|---:|")
    print(f"| land CSV (sample generator, not the pipeline) | {land_seconds:.1f} | | |")
    print(
        f"| ingest_batch (CSV -> Parquet snapshot) | {ingest_s:.1f} | {n / ingest_s:,.0f} | {mib(ingest_mem)} |"
    )
    if gate is not None:
        g_s, g_mem, _ = gate
        print(
            f"| validate_snapshot (read + GE + Data Docs + store) | {g_s:.1f} | {n / g_s:,.0f} | {mib(g_mem)} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

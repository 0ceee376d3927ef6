"""The quality gate: whole-batch GE, the chunked gate and the same checks in pandas, one run.

    .local/venv/bin/python benchmarks/bench_quality.py                 # 1M rows x 20 columns
    .local/venv/bin/python benchmarks/bench_quality.py --quick         # 100,000 rows
    .local/venv/bin/python benchmarks/bench_quality.py --end-to-end    # + the full gate
    .local/venv/bin/python benchmarks/bench_quality.py --rows 10000000 --chunked-only
    ... --report PATH                                                  # Markdown for make bench

On the same snapshot: GE 1.x over the whole batch (``run_suite``), the chunked gate
(``run_suite_chunked``, ``--chunk-rows`` rows per chunk, the snapshot written with row
groups of that size) and ``pandas_checks``. The run asserts that the chunked and the
whole-batch verdicts agree on every expectation (success and unexpected counts) and that
GE agrees with pandas. ``--chunked-only`` skips the whole-batch and pandas sides (and never
loads the batch into this process), to measure the chunked gate's peak RSS on batches
too big for them; the batch is then landed as several CSV files, 1M rows each.

Data: the credit-default sample (16 columns) plus 4 extra numeric columns, landed as CSV
and ingested into a snapshot, which both sides then read. The suite is the config's
schema suite plus the reference-profile checks (``starter_suite`` on a 50,000-row
reference): columns, types, nulls, ranges, categories, id uniqueness, row count, means,
medians and category presence. The pandas side implements each of those expectation
types directly (``pandas_checks``), and the run asserts that both sides agree on every
expectation's pass/fail.

Each measured step runs in a forked child that resets its peak RSS (``clear_refs``) and
reports how far ``VmHWM`` rose above its RSS at the start, i.e. memory on top of the
already loaded frame (the chunked gate reads the snapshot itself, so its figure includes
reading), and the child's absolute peak RSS. GE's import and the snapshot read for the
whole-batch sides are outside their times. Prints (and with ``--report`` writes) Markdown.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report

from mlops_loop.core.config import DatasetConfig, load_config
from mlops_loop.core.ingest import ingest_batch
from mlops_loop.core.quality import (
    run_suite,
    run_suite_chunked,
    starter_suite,
    validate_snapshot,
)
from mlops_loop.core.snapshots import load_manifest, read_snapshot
from mlops_loop_devtools.sample_data import generate_batch, land_batch

REPO = Path(__file__).resolve().parents[1]
CREDIT = REPO / "include" / "config" / "credit_default.yaml"
DS = "2024-02-01"
EXTRA = [f"extra_{i}" for i in range(4)]


# --------------------------------------------------------------------------- data


def bench_config(root: Path, chunk_rows: int = 1_000_000) -> DatasetConfig:
    base = load_config(
        CREDIT,
        overrides={
            "storage": {"root": str(root)},
            "ingest": {"rows_per_chunk": chunk_rows},
            "quality": {"chunk_rows": chunk_rows, "max_rows": None},
        },
    )
    raw = base.model_dump()
    raw["columns"] += [
        {"name": c, "type": "float", "nullable": False, "min": -100.0, "max": 100.0} for c in EXTRA
    ]
    raw["quality"]["suite"] = None
    raw["config_dir"] = base.config_dir
    return DatasetConfig.model_validate(raw)


def batch(ds: str, rows: int, *, seed: int = 42, first_id: int = 0) -> pd.DataFrame:
    df = generate_batch(ds, rows=rows, seed=seed)
    if first_id:
        df["application_id"] = [f"{ds.replace('-', '')}-{first_id + i:09d}" for i in range(rows)]
    rng = np.random.default_rng(7 + seed)
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
        elif kind == "expect_column_unique_value_count_to_be_between":
            distinct = col.nunique(dropna=True)
            lo, hi = kw.get("min_value"), kw.get("max_value")
            ok = (lo is None or distinct >= lo) and (hi is None or distinct <= hi)
        elif kind == "expect_column_distinct_values_to_contain_set":
            ok = set(kw["value_set"]) <= set(col.dropna().unique())
        else:
            raise NotImplementedError(kind)
        out.append(bool(ok))
    return out


# --------------------------------------------------------------------------- measuring


def _child(fn: Callable[[], Any], conn: Any) -> None:
    # Reset this process's peak RSS (VmHWM) to its current RSS, then measure above it.
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    base = report.status_kib("VmRSS")
    start = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - start
    peak = report.status_kib("VmHWM")
    conn.send((seconds, (peak - base) * 1024, peak * 1024, value))
    conn.close()


LAST_PEAK: list[int] = [0]


def measure(fn: Callable[[], Any]) -> tuple[float, int, Any]:
    """(seconds, peak RSS growth, return value) of fn, run in a forked child; the child's
    absolute peak RSS is left in LAST_PEAK[0]."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fn, child))
    proc.start()
    child.close()  # so a child that dies without sending makes recv() fail, not hang
    try:
        seconds, peak, absolute, value = parent.recv()
    except EOFError:
        proc.join()
        raise RuntimeError(f"benchmark step died with exit code {proc.exitcode}") from None
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"benchmark step failed with exit code {proc.exitcode}")
    LAST_PEAK[0] = absolute
    return seconds, max(peak, 0), value


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def _key(item: dict[str, Any]) -> str:
    cfg = item["expectation_config"]
    kwargs = {k: v for k, v in cfg["kwargs"].items() if k != "batch_id"}
    return repr((cfg["type"], sorted(kwargs.items(), key=lambda kv: kv[0])))


def verdicts(result: dict[str, Any]) -> dict[str, tuple[bool, Any]]:
    """Per expectation: (success, unexpected count) keyed by type and kwargs."""
    return {
        _key(r): (bool(r["success"]), (r.get("result") or {}).get("unexpected_count"))
        for r in result["results"]
    }


def land_in_parts(root: Path, rows: int, part_rows: int = 1_000_000) -> None:
    """Land ``rows`` rows as CSV parts of ``part_rows``, never holding more than one part."""
    folder = root / "raw" / f"ds={DS}"
    folder.mkdir(parents=True, exist_ok=True)
    done = 0
    while done < rows:
        n = min(part_rows, rows - done)
        batch(DS, n, seed=1 + done // part_rows, first_id=done + 1).to_csv(
            folder / f"part-{done // part_rows:03d}.csv", index=False
        )
        done += n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--rows", type=int, default=None, help="default 1,000,000 (--quick 100,000)"
    )
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=None,
        help="default rows / 4, at most the config default (quality.chunk_rows)",
    )
    parser.add_argument("--quick", action="store_true", help="a CI-sized run")
    parser.add_argument("--report", default=None, help="write the Markdown tables here")
    parser.add_argument(
        "--chunked-only", action="store_true", help="only the chunked gate (peak RSS at scale)"
    )
    parser.add_argument(
        "--end-to-end", action="store_true", help="also time validate_snapshot (chunked)"
    )
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    n = args.rows or (100_000 if args.quick else 1_000_000)
    from mlops_loop.core.config import QualitySettings

    default_chunk = QualitySettings.model_fields["chunk_rows"].default
    chunk_rows = args.chunk_rows or min(default_chunk, max(10_000, n // 4))
    shown = list(argv if argv is not None else sys.argv[1:])
    if "--report" in shown:
        at = shown.index("--report")
        del shown[at : at + 2]
    command = " ".join(["benchmarks/bench_quality.py", *shown])

    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        root = Path(tmp)
        config = bench_config(root, chunk_rows)
        t = time.perf_counter()
        if args.chunked_only:
            land_in_parts(root, n)
        else:
            land_batch(batch(DS, n), root, DS)
        land_seconds = time.perf_counter() - t
        ingest_s, ingest_mem, snapshot_uri = measure(lambda: ingest_batch(config, DS).snapshot_uri)
        manifest = load_manifest(snapshot_uri)
        assert manifest["rows"] == n, manifest["rows"]
        suite = starter_suite(config, batch("2024-01-15", 50_000))

        t = time.perf_counter()
        import great_expectations  # import cost reported, not counted

        ge_import = time.perf_counter() - t

        def chunked() -> dict[str, Any]:
            result = run_suite_chunked(suite, snapshot_uri, manifest, chunk_rows=chunk_rows)
            return {"success": result["success"], "verdicts": verdicts(result)}

        ch_s, ch_mem, ch = measure(chunked)
        ch_peak = LAST_PEAK[0]
        rows_table: list[list[object]] = []
        notes = []
        if not args.chunked_only:
            df = read_snapshot(snapshot_uri)
            assert df.shape == (n, 20), df.shape
            pd_s, pd_mem, pd_verdicts = measure(lambda: pandas_checks(suite, df))
            pd_peak = LAST_PEAK[0]
            ge_s, ge_mem, ge_result = measure(lambda: run_suite(suite, df))
            ge_peak = LAST_PEAK[0]
            whole = verdicts(ge_result)
            # Chunked and whole-batch GE agree on every expectation, counts included.
            assert ch["verdicts"] == whole, [
                (k, whole.get(k), ch["verdicts"].get(k))
                for k in set(whole) | set(ch["verdicts"])
                if whole.get(k) != ch["verdicts"].get(k)
            ]
            assert ch["success"] == ge_result["success"]
            # GE returns results in suite order; pandas agrees on each expectation.
            ge_order = [bool(r["success"]) for r in ge_result["results"]]
            assert ge_order == pd_verdicts, [
                (e["type"], e["kwargs"].get("column"), g, p)
                for e, g, p in zip(suite["expectations"], ge_order, pd_verdicts, strict=True)
                if g != p
            ]
            del df
            rows_table += [
                [
                    "GE 1.x whole batch (`run_suite`, no Data Docs)",
                    n,
                    round(ge_s, 2),
                    int(n / ge_s),
                    mib(ge_mem),
                    mib(ge_peak),
                    report.ratio(ge_s, pd_s),
                ],
                [
                    f"chunked gate (`run_suite_chunked`, {chunk_rows:,} rows/chunk)",
                    n,
                    round(ch_s, 2),
                    int(n / ch_s),
                    mib(ch_mem),
                    mib(ch_peak),
                    report.ratio(ch_s, pd_s),
                ],
                [
                    "same checks, pandas/numpy (`pandas_checks`)",
                    n,
                    round(pd_s, 2),
                    int(n / pd_s),
                    mib(pd_mem),
                    mib(pd_peak),
                    "1.00x",
                ],
            ]
            notes.append(
                f"All {len(whole)} expectations agree between the chunked and the whole-batch "
                "gate (success and unexpected counts), and GE agrees with pandas. "
                f"Verdict: {'pass' if ch['success'] else 'fail'}. The whole-batch run is GE "
                "alone; the chunked gate computes not-null, between, in-set and the aggregates "
                "in Arrow in GE's result shape, has GE judge the type checks and the column "
                "set, and runs GE over the chunks for any other row-level kind "
                "(core/quality.py)."
            )
        else:
            rows_table.append(
                [
                    f"chunked gate (`run_suite_chunked`, {chunk_rows:,} rows/chunk)",
                    n,
                    round(ch_s, 2),
                    int(n / ch_s),
                    mib(ch_mem),
                    mib(ch_peak),
                    "n/a",
                ]
            )
            notes.append(
                f"Chunked only; verdict: {'pass' if ch['success'] else 'fail'}; peak RSS "
                f"{ch_peak / 2**30:.2f} GiB (target <= 1.5 GiB)."
            )
        gate = None
        if args.end_to_end:
            gate = measure(lambda: validate_snapshot(config, snapshot_uri).stats)

    other = [
        ["land CSV (sample generator, not the pipeline)", round(land_seconds, 1), "", ""],
        [
            "ingest_batch (CSV -> Parquet snapshot)",
            round(ingest_s, 1),
            int(n / ingest_s),
            mib(ingest_mem),
        ],
    ]
    if gate is not None:
        g_s, g_mem, _ = gate
        other.append(
            [
                "validate_snapshot (chunked: read + GE + Data Docs + store)",
                round(g_s, 1),
                int(n / g_s),
                mib(g_mem),
            ]
        )
    markdown = "\n\n".join(
        [
            report.run_line(command, quick=args.quick),
            f"Suite: {len(suite['expectations'])} expectations (schema + profile) on "
            f"{n:,} rows x 20 columns; {platform.python_version()}, pandas {pd.__version__}, "
            f"great_expectations {great_expectations.__version__}; GE import "
            f"{ge_import:.1f} s (not counted). " + " ".join(notes),
            report.table(
                [
                    "step",
                    "rows",
                    "seconds",
                    "rows/s",
                    "peak memory above start",
                    "peak RSS (absolute)",
                    "time vs pandas",
                ],
                rows_table,
            ),
            report.table(["other step", "seconds", "rows/s", "peak memory"], other),
        ]
    )
    report.write_report(args.report, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

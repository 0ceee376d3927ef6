"""Drift benchmark: 1M rows x 20 mixed features, reference vs current.

    .local/venv/bin/python benchmarks/bench_drift.py            # everything (~4 min)
    .local/venv/bin/python benchmarks/bench_drift.py --skip-evidently --skip-10m
    .local/venv/bin/python benchmarks/bench_drift.py --quick --report PATH   # make bench

``--quick``: 100,000-row chunks (100k reference vs 100k current, and 10 x 100k streamed)
under ``.local/bench-drift-quick/``, without Evidently (it needs its own virtualenv).

Rows of the Markdown table it prints:

* ours, in memory: ``measure_drift`` on the current 1M rows already loaded as an Arrow
  table (Evidently also gets its frames loaded), the reference profile built beforehand.
* lower bound: one ``np.sort`` per numeric column of the same data (float64 arrays ready).
* Evidently 0.7.23 ``DataDriftPreset()`` with its default tests on the same Parquet files,
  in its own virtual environment (created here on first use; Evidently does not import
  next to pandas 3).
* ours, streamed: ``measure_drift`` reading the Parquet file by record batches, 1M and
  10M rows: time should grow about linearly, peak memory should not grow.

Every measurement runs in a fresh Python process, so "peak RSS" is that process's high-water
mark and "added" is the peak minus the memory held after loading the inputs.
Data, profile and results live under ``.local/bench-drift/``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from report import peak_rss_mb, run_line, write_report

ROOT = Path(__file__).resolve().parents[1]
# The parent sets these for its workers (quick mode: smaller chunks, another folder).
WORK = Path(os.environ.get("BENCH_DRIFT_WORK", ROOT / ".local" / "bench-drift"))
EVIDENTLY_VENV = ROOT / ".local" / "bench-evidently-venv"
EVIDENTLY_REQUIREMENTS = ["evidently==0.7.23", "pandas<3", "pyarrow"]
CHUNK_ROWS = int(os.environ.get("BENCH_DRIFT_CHUNK_ROWS", 1_000_000))
ROW_GROUP = min(250_000, CHUNK_ROWS // 4)

EXTRA_NUMERIC = [
    "utilization",
    "months_since_delinquency",
    "num_inquiries",
    "tenure_days",
    "balance",
]
EXTRA_CATEGORICAL = ["channel", "state"]
CHANNELS = ["web", "mobile", "branch", "broker", "partner", "phone"]
STATES = [f"S{i:02d}" for i in range(50)]


# --------------------------------------------------------------------------- data


def dataset_config() -> Any:
    from mlops_loop.core.config import DatasetConfig, load_config

    base = load_config(ROOT / "include" / "config" / "credit_default.yaml")
    raw = base.model_dump(mode="json")
    raw["columns"] += [
        {"name": "utilization", "type": "float"},
        {"name": "months_since_delinquency", "type": "float"},
        {"name": "num_inquiries", "type": "integer"},
        {"name": "tenure_days", "type": "integer"},
        {"name": "balance", "type": "float"},
        {"name": "channel", "type": "category"},
        {"name": "state", "type": "category"},
    ]
    raw["name"] = "bench_drift"
    return DatasetConfig.model_validate(raw)


def chunk(ds: str, rows: int, *, seed: int, drift: float) -> Any:
    """One chunk: the credit-default generator (13 features) plus 7 more (20 in all)."""
    import pyarrow as pa

    from mlops_loop_devtools.sample_data import generate_batch

    df = generate_batch(ds, rows, seed=seed, drift=drift)
    rng = np.random.default_rng(seed + 7)
    df["utilization"] = np.clip(rng.beta(2 + drift, 3, rows), 0, 1)
    msd = rng.exponential(24, rows)
    msd[rng.random(rows) < 0.4] = np.nan
    df["months_since_delinquency"] = msd
    df["num_inquiries"] = rng.poisson(1.5 + drift, rows)
    df["tenure_days"] = rng.integers(0, 3650, rows)
    df["balance"] = np.round(np.exp(rng.normal(8 + 0.2 * drift, 1.1, rows)), 2)
    df["channel"] = rng.choice(CHANNELS, rows, p=[0.35, 0.3, 0.15, 0.1, 0.05, 0.05])
    weights = 1 / np.arange(1, len(STATES) + 1)
    df["state"] = rng.choice(STATES, rows, p=weights / weights.sum())
    return pa.Table.from_pandas(df, preserve_index=False)


def write_parquet(path: Path, chunks: int, *, seed: int, drift: float, first_day: int) -> None:
    import pyarrow.parquet as pq

    if path.exists():
        return
    tmp = path.with_suffix(".tmp")
    writer = None
    try:
        for i in range(chunks):
            table = chunk(
                f"2026-{first_day + i // 28:02d}-{1 + i % 28:02d}",
                CHUNK_ROWS,
                seed=seed + i,
                drift=drift,
            )
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table, row_group_size=ROW_GROUP)
    finally:
        if writer is not None:
            writer.close()
    tmp.rename(path)


# --------------------------------------------------------------------------- workers (each in its own process)


def features() -> tuple[list[str], list[str]]:
    from mlops_loop.core.profile import monitored_features

    kinds = monitored_features(dataset_config())
    numeric = [n for n, k in kinds.items() if k == "numeric"]
    categorical = [n for n, k in kinds.items() if k == "categorical"]
    return numeric, categorical


def worker(mode: str) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from mlops_loop.core.drift import measure_drift
    from mlops_loop.core.profile import ParquetBatches, build_profile

    config = dataset_config()
    numeric, categorical = features()
    columns = numeric + categorical
    # Warm up on a few rows read from the first row group only: imports (scipy) and first
    # calls stay outside the timing, and the memory high-water mark stays low.
    small = next(
        iter(
            ParquetBatches(
                WORK / "current.parquet",
                columns=columns,
                batch_size=2000,
                read_dictionary=categorical,
            )
        )
    )
    warm_profile = build_profile([small], config)
    measure_drift(warm_profile, small, config, config.drift)
    del small, warm_profile
    if mode == "profile":
        start = time.perf_counter()
        source = ParquetBatches(
            WORK / "reference.parquet", columns=columns, read_dictionary=categorical
        )
        profile = build_profile(source, config, n_bins=config.drift.n_bins)
        seconds = time.perf_counter() - start
        (WORK / "profile.json").write_text(json.dumps(profile))
        return {
            "seconds": seconds,
            "peak_rss_mb": peak_rss_mb(),
            "profile_kb": (WORK / "profile.json").stat().st_size / 1024,
        }
    profile = json.loads((WORK / "profile.json").read_text())
    if mode == "ours-memory":
        table = pq.read_table(
            WORK / "current.parquet", columns=columns, read_dictionary=categorical
        )
        before = peak_rss_mb()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            result = measure_drift(profile, table, config, config.drift)
            times.append(time.perf_counter() - start)
        return {
            "seconds": min(times),
            "all_seconds": times,
            "peak_rss_mb": peak_rss_mb(),
            "rss_before_mb": before,
            "verdict": result.verdict,
            "drifted": result.drifted_features,
            "warned": result.warned_features,
        }
    if mode == "sort":
        table = pq.read_table(WORK / "current.parquet", columns=numeric)
        arrays = [table.column(n).to_numpy().astype("float64") for n in numeric]
        before = peak_rss_mb()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            for a in arrays:
                np.sort(a)
            times.append(time.perf_counter() - start)
        return {"seconds": min(times), "peak_rss_mb": peak_rss_mb(), "rss_before_mb": before}
    if mode.startswith("ours-stream-"):
        path = WORK / ("current.parquet" if mode == "ours-stream-1m" else "current_10m.parquet")
        before = peak_rss_mb()
        start = time.perf_counter()
        batches = ParquetBatches(
            path, columns=columns, batch_size=ROW_GROUP, read_dictionary=categorical
        )
        result = measure_drift(profile, batches, config, config.drift)
        return {
            "seconds": time.perf_counter() - start,
            "rows": result.rows,
            "peak_rss_mb": peak_rss_mb(),
            "rss_before_mb": before,
            "verdict": result.verdict,
        }
    raise SystemExit(f"unknown worker mode {mode!r}")


def run_worker(mode: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", mode],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if out.returncode != 0:
        raise SystemExit(f"worker {mode} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def evidently_python() -> Path:
    python = EVIDENTLY_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(EVIDENTLY_VENV)], check=True)
    probe = subprocess.run(
        [str(python), "-c", "import evidently"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *EVIDENTLY_REQUIREMENTS], check=True
        )
    return python


def run_evidently() -> dict[str, Any]:
    numeric, categorical = features()
    out = subprocess.run(
        [
            str(evidently_python()),
            str(ROOT / "benchmarks" / "evidently_drift.py"),
            "--reference",
            str(WORK / "reference.parquet"),
            "--current",
            str(WORK / "current.parquet"),
            "--numeric",
            ",".join(numeric),
            "--categorical",
            ",".join(categorical),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "DO_NOT_TRACK": "1", "EVIDENTLY_DISABLE_TELEMETRY": "1"},
    )
    if out.returncode != 0:
        raise SystemExit(f"evidently run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument("--skip-10m", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--report", help="write the section's Markdown here")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return
    global WORK, CHUNK_ROWS, ROW_GROUP
    if args.quick:
        WORK, CHUNK_ROWS, ROW_GROUP = ROOT / ".local" / "bench-drift-quick", 100_000, 25_000
        args.skip_evidently = True
        os.environ.update(BENCH_DRIFT_WORK=str(WORK), BENCH_DRIFT_CHUNK_ROWS=str(CHUNK_ROWS))

    WORK.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    write_parquet(WORK / "reference.parquet", 1, seed=1, drift=0.0, first_day=1)
    write_parquet(WORK / "current.parquet", 1, seed=1001, drift=0.3, first_day=3)
    if not args.skip_10m:
        write_parquet(WORK / "current_10m.parquet", 10, seed=2001, drift=0.3, first_day=3)
    print(f"data ready in {time.perf_counter() - t0:.0f} s under {WORK}", file=sys.stderr)

    numeric, categorical = features()
    results: dict[str, dict[str, Any]] = {}
    for mode in (
        "profile",
        "sort",
        "ours-memory",
        "ours-stream-1m",
        *(() if args.skip_10m else ("ours-stream-10m",)),
    ):
        results[mode] = run_worker(mode)
        print(f"{mode}: {results[mode]}", file=sys.stderr)
    if not args.skip_evidently:
        results["evidently"] = run_evidently()
        print(f"evidently: {results['evidently']}", file=sys.stderr)
    (WORK / "results.json").write_text(json.dumps(results, indent=2))
    table = markdown(results, len(numeric), len(categorical))
    (WORK / "results.md").write_text(table)
    command = "benchmarks/bench_drift.py" + (" --quick" if args.quick else "") + "".join(
        f" --{flag}" for flag in ("skip-evidently", "skip-10m")
        if getattr(args, flag.replace("-", "_")) and not args.quick
    )
    skipped = (
        "Evidently not run (quick mode: it needs its own virtualenv; `make bench` runs it)."
        if args.quick else ("Evidently not run (--skip-evidently)." if args.skip_evidently else "")
    )
    write_report(args.report, "\n".join([run_line(command, quick=args.quick), "", table, skipped]))


def rows_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


def markdown(r: dict[str, dict[str, Any]], n_numeric: int, n_categorical: int) -> str:
    ours = r["ours-memory"]["seconds"]

    def added(x: dict[str, Any]) -> str:
        if "rss_before_mb" not in x:
            return ""
        return f"{x['peak_rss_mb'] - x['rss_before_mb']:.0f}"

    one, ten = rows_label(CHUNK_ROWS), rows_label(10 * CHUNK_ROWS)
    lines = [
        f"Drift benchmark: {one} reference rows vs {one} current rows, 20 features ({n_numeric} numeric, "
        f"{n_categorical} categorical); machine: {os.cpu_count()} cores (shared).",
        "",
        "| measurement | rows | seconds | peak RSS MB | added peak MB | ratio |",
        "|---|---:|---:|---:|---:|---|",
    ]
    sort = r["sort"]["seconds"]
    lines.append(
        f"| ours: measure_drift, data in memory (best of 3) | {one} | {ours:.2f} | {r['ours-memory']['peak_rss_mb']:.0f} | "
        f"{added(r['ours-memory'])} | {ours / sort:.2f}x the np.sort bound (target <= 3x) |"
    )
    lines.append(
        f"| lower bound: one np.sort per numeric column ({n_numeric}) | {one} | {sort:.2f} | {r['sort']['peak_rss_mb']:.0f} | {added(r['sort'])} | 1x |"
    )
    if "evidently" in r:
        ev = r["evidently"]
        lines.append(
            f"| {ev['tool']} | {one} | {ev['seconds']:.1f} | {ev['peak_rss_mb']:.0f} | {added(ev)} | "
            f"ours is {ev['seconds'] / ours:.0f}x faster (target >= 50x) |"
        )
    s1 = r["ours-stream-1m"]
    lines.append(
        f"| ours: streamed from Parquet by {ROW_GROUP:,}-row batches | {one} | {s1['seconds']:.2f} | {s1['peak_rss_mb']:.0f} | {added(s1)} | |"
    )
    if "ours-stream-10m" in r:
        s10 = r["ours-stream-10m"]
        lines.append(
            f"| ours: streamed from Parquet by {ROW_GROUP:,}-row batches | {ten} | {s10['seconds']:.2f} | {s10['peak_rss_mb']:.0f} | "
            f"{added(s10)} | time x{s10['seconds'] / s1['seconds']:.1f} for 10x rows; peak RSS x{s10['peak_rss_mb'] / s1['peak_rss_mb']:.2f} |"
        )
    p = r["profile"]
    lines.append(
        f"| build_profile of the reference (two streamed passes, once per champion) | {one} | {p['seconds']:.2f} | "
        f"{p['peak_rss_mb']:.0f} | | profile JSON {p['profile_kb']:.0f} KB |"
    )
    lines.append("")
    lines.append(
        f"Our verdict on the current data: {r['ours-memory']['verdict']} (drift: {', '.join(r['ours-memory']['drifted']) or '-'}; "
        f"warn: {', '.join(r['ours-memory']['warned']) or '-'})"
        + (
            f"; Evidently flags: {', '.join(r['evidently']['drifted']) or '-'}."
            if "evidently" in r
            else "."
        )
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

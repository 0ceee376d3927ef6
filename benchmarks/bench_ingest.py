"""Ingest + validate 1M rows x 20 columns: wall time, rows/s and peak memory per stage.

    .local/venv/bin/python benchmarks/bench_ingest.py                # 1M rows, CSV and Parquet
    .local/venv/bin/python benchmarks/bench_ingest.py --rows 100000  # quicker
    .local/venv/bin/python benchmarks/bench_ingest.py --quick --report PATH  # 100,000 rows, CSV only

Data: ``bench_quality.batch`` (the credit-default sample's 16 columns plus 4 extra numeric
columns) landed once as one CSV file and once as one Parquet file. The dataset config is
``bench_quality.bench_config`` written to a YAML file in the temp dir with a reviewed-style
suite (schema + profile checks from ``starter_suite`` on a 50,000-row reference, as the
shipped credit-default suite is made); every stage loads it with
``load_config(path, overrides=...)`` as the operators do.

Stages, each in its own fresh Python process so one stage's memory cannot inflate
another's peak:

- ``ingest_batch``: landed file -> content-addressed Parquet snapshot;
- ``validate_snapshot``: the whole quality gate on that snapshot (read it, run the GE suite,
  build Data Docs, store the result);
- both, one after the other in one process, on a fresh root (so ingest really writes).

Peak memory is the process's ``VmHWM`` (peak RSS, interpreter and imports included: what a
worker slot needs); the RSS right before the timed call is shown beside it. Imports of
pandas/pyarrow/Great Expectations happen before the timer and are reported separately.

``benchmarks/bench_quality.py`` compares Great Expectations with the same checks in
vectorised pandas on an already loaded frame; this benchmark measures the pipeline stages
a DAG run executes, from landed files, for both source formats.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from bench_quality import DS, batch, bench_config
from report import run_line, status_kib, table, write_report

from mlops_loop.core.config import DatasetConfig, load_config
from mlops_loop_devtools.sample_data import land_batch

REFERENCE_DS = "2024-01-15"
REFERENCE_ROWS = 50_000
STAGES = ("ingest", "validate", "ingest+validate")
FORMATS = ("csv", "parquet")
RSS_BOUND_MIB = 4 * 1024


# --------------------------------------------------------------------------- setup (parent)


def write_config(tmp: Path) -> Path:
    """bench_quality's 20-column config with a schema + profile suite, as a YAML file."""
    from mlops_loop.core.quality import starter_suite

    config = bench_config(tmp / "unused-root")
    suite_path = tmp / "suite.json"
    suite = starter_suite(config, batch(REFERENCE_DS, REFERENCE_ROWS))
    suite_path.write_text(json.dumps(suite, indent=2))
    raw = config.model_dump(mode="json")
    raw["quality"]["suite"] = str(suite_path)
    path = tmp / "bench_dataset.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def stage_config(config_path: Path, root: Path, fmt: str) -> DatasetConfig:
    return load_config(
        config_path,
        overrides={
            "storage": {"root": str(root)},
            "source": {"uri": "{root}/raw/ds={ds}/", "format": fmt},
        },
    )


def clone_raw(src_root: Path, dst_root: Path) -> None:
    """A second root with the same landed files (hard links: landed data is read-only)."""
    src, dst = src_root / "raw", dst_root / "raw"
    for path in src.rglob("*"):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)


def run_stage(stage: str, config_path: Path, root: Path, fmt: str, snapshot: str | None) -> dict:
    cmd = [sys.executable, __file__, "--stage", stage, "--config", str(config_path)]
    cmd += ["--root", str(root), "--format", fmt]
    if snapshot:
        cmd += ["--snapshot", snapshot]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"stage {stage} ({fmt}) failed:\n{proc.stderr[-4000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


# --------------------------------------------------------------------------- one stage (child)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return usage.ru_utime + usage.ru_stime


def child(args: argparse.Namespace) -> int:
    logging.disable(logging.WARNING)
    t = time.perf_counter()
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    from mlops_loop.core.ingest import ingest_batch
    from mlops_loop.core.quality import validate_snapshot

    if args.stage != "ingest":
        import great_expectations  # noqa: F401
    imports = time.perf_counter() - t

    config = stage_config(Path(args.config), Path(args.root), args.format)
    out: dict[str, Any] = {"imports_s": imports, "rss_before_kib": status_kib("VmRSS")}
    cpu = _cpu_seconds()
    t = time.perf_counter()
    if args.stage in ("ingest", "ingest+validate"):
        snap = ingest_batch(config, DS)
        assert snap.created, "ingest found an existing snapshot: the root is not fresh"
        out["ingest_s"] = time.perf_counter() - t
        out.update(snapshot=snap.snapshot_uri, rows=snap.rows)
        snapshot_uri = snap.snapshot_uri
    else:
        snapshot_uri = args.snapshot
    if args.stage in ("validate", "ingest+validate"):
        v = time.perf_counter()
        result = validate_snapshot(config, snapshot_uri, raise_on_failure=False)
        out["validate_s"] = time.perf_counter() - v
        out["success"] = bool(result.success)
        out["expectations"] = result.stats.get("evaluated")
    out["seconds"] = time.perf_counter() - t
    out["cpu_s"] = _cpu_seconds() - cpu
    out["peak_kib"] = status_kib("VmHWM")
    print(json.dumps(out))
    return 0


# --------------------------------------------------------------------------- report


def mib(kib: int) -> str:
    return f"{kib / 1024:,.0f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", type=int, help="default 1,000,000 (quick 100,000)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--report", help="write the section's Markdown here")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, help="default both (quick: csv)")
    # Internal: run one stage in this process and print its measurements as JSON.
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--format", choices=FORMATS, help=argparse.SUPPRESS)
    parser.add_argument("--snapshot", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        return child(args)

    logging.disable(logging.WARNING)
    n = args.rows = args.rows or (100_000 if args.quick else 1_000_000)
    args.formats = args.formats or (["csv"] if args.quick else list(FORMATS))
    load_before = os.getloadavg()[0]
    rows: list[tuple[str, str, dict[str, Any]]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        t = time.perf_counter()
        config_path = write_config(tmp)
        notes.append(
            f"config + suite from a {REFERENCE_ROWS:,}-row reference: {time.perf_counter() - t:.1f} s"
        )
        t = time.perf_counter()
        df = batch(DS, n)
        assert df.shape == (n, 20), df.shape
        notes.append(f"generate {n:,} rows: {time.perf_counter() - t:.1f} s")
        for fmt in args.formats:
            root = tmp / fmt
            t = time.perf_counter()
            (landed,) = land_batch(df, root, DS, fmt=fmt)
            notes.append(
                f"land {fmt}: {time.perf_counter() - t:.1f} s, {landed.stat().st_size / 2**20:,.0f} MiB"
            )
        del df
        for fmt in args.formats:
            root = tmp / fmt
            ingest = run_stage("ingest", config_path, root, fmt, None)
            assert ingest["rows"] == n, ingest
            rows.append((fmt, "ingest_batch", ingest))
            validate = run_stage("validate", config_path, root, fmt, ingest["snapshot"])
            rows.append((fmt, "validate_snapshot", validate))
            fresh = tmp / f"{fmt}-together"
            clone_raw(root, fresh)
            both = run_stage("ingest+validate", config_path, fresh, fmt, None)
            rows.append((fmt, "ingest_batch + validate_snapshot", both))
            imports = both["imports_s"]
            notes.append(f"imports before the timer ({fmt} run, incl. GE): {imports:.1f} s")

    body = []
    for fmt, stage, m in rows:
        gate = ""
        if "success" in m:
            gate = "pass" if m["success"] else "FAIL"
        split = ""
        if "ingest_s" in m and "validate_s" in m:
            split = f" ({m['ingest_s']:.1f} + {m['validate_s']:.1f})"
        body.append([
            fmt, stage, f"{m['seconds']:.1f}{split}", f"{m['cpu_s']:.1f}", int(n / m["seconds"]),
            mib(m["peak_kib"]), mib(m["rss_before_kib"]),
            f"{m['peak_kib'] / 1024 / RSS_BOUND_MIB:.2f}x", gate,
        ])
    command = "benchmarks/bench_ingest.py" + (" --quick" if args.quick else f" --rows {n}")
    markdown = "\n".join([
        run_line(command, quick=args.quick),
        "",
        f"{n:,} rows x 20 columns; each stage in a fresh process, peak = VmHWM of that "
        f"process; ratio = peak RSS to the 4 GiB per-stage bound (issue 15). 1-min load "
        f"average {load_before:.1f} at the start: wall time varies with load, CPU seconds "
        "(user + system, all threads) much less.",
        "",
        table(
            ["source", "stage", "seconds", "CPU s", "rows/s", "peak RSS", "RSS before the call",
             "peak / 4 GiB", "gate"],
            body,
        ),
        "",
        *[f"- {line}" for line in notes],
    ])
    write_report(args.report, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

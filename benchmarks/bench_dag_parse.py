"""DAG parse time: each DAG file next to a bare `import airflow.sdk`, in one run.

Each measurement is a fresh interpreter (what a DAG processor pays per file when it does
not fork from a warm parent), repeated; the table reports the median and the ratio to the
bare import. Run: .local/venv/bin/python benchmarks/bench_dag_parse.py [--repeat 7]
[--quick (1 repeat)] [--report PATH] (see benchmarks/report.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from report import run_line, table, write_report

REPO = Path(__file__).resolve().parents[1]

TIMER = """
import time
t0 = time.perf_counter()
{body}
print(time.perf_counter() - t0)
"""


def timed(body: str, repeat: int) -> float:
    env = dict(os.environ, AIRFLOW__CORE__LOAD_EXAMPLES="False")
    env.setdefault("MLOPS_LOOP_CONFIG_DIR", str(REPO / "include" / "config"))
    runs = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", TIMER.format(body=body)],
            capture_output=True, text=True, check=True, env=env,
        ).stdout
        runs.append(float(out.strip().splitlines()[-1]))
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, help="fresh interpreters per row (default 7, quick 1)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--report", help="write the section's Markdown here")
    args = parser.parse_args()
    args.repeat = args.repeat or (1 if args.quick else 7)
    # Warm the bytecode caches once so the first row is not penalised.
    timed("import airflow.sdk", 1)
    rows = [("bare `import airflow.sdk`", timed("import airflow.sdk", args.repeat))]
    for dag_file in sorted((REPO / "dags").glob("*.py")):
        body = f"import runpy; runpy.run_path({str(dag_file)!r})"
        rows.append((f"dags/{dag_file.name}", timed(body, args.repeat)))
    base = rows[0][1]
    command = "benchmarks/bench_dag_parse.py" + (" --quick" if args.quick else f" --repeat {args.repeat}")
    markdown = "\n".join([
        run_line(command, quick=args.quick),
        "",
        table(
            ["what", f"median s ({args.repeat} fresh interpreters)", "ratio to bare import"],
            [[name, round(secs, 3), f"{secs / base:.2f}x"] for name, secs in rows],
        ),
    ])
    write_report(args.report, markdown)


if __name__ == "__main__":
    main()

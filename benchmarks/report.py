"""What every benchmark script shares for `make bench` (benchmarks/run_all.py).

Each script accepts ``--quick`` (a CI-sized run, seconds to a few minutes) and
``--report PATH``: it then writes its section's Markdown (tables only, no heading) to PATH,
starting with :func:`run_line`. run_all.py puts that text between the section's markers
``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` in docs/benchmarks.md, where NAME is
the script's file name without ``bench_`` and ``.py``.
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (1 min) / {five:.1f} (5 min)"


def run_line(command: str, *, quick: bool = False) -> str:
    """The first line of every section: what ran, when, on what, under which load."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = " (quick mode)" if quick else ""
    return (
        f"`{command}`{mode}: {when}, {os.cpu_count()} cores, {platform.machine()}, "
        f"load average {load_average()} at the end of the run."
    )


def ratio(value: float, anchor: float) -> str:
    """``value / anchor`` as ``12.3x`` (``n/a`` when the anchor is zero)."""
    return f"{value / anchor:.2f}x" if anchor > 0 else "n/a"


def table(header: list[str], rows: list[list[object]]) -> str:
    """A Markdown table; numbers right-aligned."""
    def cell(v: object) -> str:
        return f"{v:,.3f}" if isinstance(v, float) else (f"{v:,}" if isinstance(v, int) else str(v))

    aligns = ["---:" if rows and isinstance(rows[0][i], (int, float)) else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(aligns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(path: str | Path | None, markdown: str) -> None:
    """Write the section's Markdown to ``path`` (when given); always print it."""
    print(markdown)
    if path:
        Path(path).write_text(markdown.rstrip() + "\n")


def status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS now, VmHWM the peak since start or the
    last ``clear_refs``)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM) in MiB; ru_maxrss would include the
    parent's, which Linux carries across exec."""
    return status_kib("VmHWM") / 1024

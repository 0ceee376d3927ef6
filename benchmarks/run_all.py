"""Run every benchmark and rewrite its section of docs/benchmarks.md (``make bench``).

    .local/venv/bin/python benchmarks/run_all.py                      # all, full size
    .local/venv/bin/python benchmarks/run_all.py --quick              # CI-sized, own output file
    .local/venv/bin/python benchmarks/run_all.py --only drift,scoring

Each ``benchmarks/bench_*.py`` runs in its own subprocess with ``--report TMPFILE`` (and
``--quick`` in quick mode) under a timeout. The Markdown it writes replaces the text between
``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` in the output file (NAME: the file name
without ``bench_`` and ``.py``); the file is rewritten atomically, once, at the end. A script
that fails or times out leaves its old section in place and makes the exit status 1; one
that exits 75 (it cannot run here, e.g. no CUDA device) is reported as skipped and leaves
its section as it was.

Quick mode writes to ``.local/bench/benchmarks-quick.md`` (a copy of docs/benchmarks.md on
the first run) so CI-sized numbers never overwrite the real tables; ``--output`` overrides.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "benchmarks"
DOC = REPO / "docs" / "benchmarks.md"
QUICK_DOC = REPO / ".local" / "bench" / "benchmarks-quick.md"

# Seconds per script before it is killed; quick mode gets QUICK_TIMEOUT_S.
TIMEOUT_S = {"loop": 3600, "drift": 3600, "container": 3600}
DEFAULT_TIMEOUT_S = 1800
QUICK_TIMEOUT_S = 600
QUICK_TIMEOUT_S_FOR = {"loop": 1200}  # the loop starts MLflow and trains twice, even small


# A script that cannot run here (no CUDA device) exits with this (EX_TEMPFAIL) and writes
# nothing: its section keeps the last run from a machine that could.
SKIPPED = 75


def marker_re(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"(<!-- bench:{re.escape(name)} -->\n)(.*?)(<!-- /bench:{re.escape(name)} -->)", re.S
    )


def replace_section(text: str, name: str, markdown: str) -> str:
    """``text`` with the section NAME's body replaced by ``markdown``; KeyError when the
    markers are missing."""
    pattern = marker_re(name)
    if not pattern.search(text):
        raise KeyError(f"no <!-- bench:{name} --> ... <!-- /bench:{name} --> markers")
    body = markdown.strip() + "\n"
    return pattern.sub(lambda m: m.group(1) + body + m.group(3), text, count=1)


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def discover() -> dict[str, Path]:
    return {p.stem.removeprefix("bench_"): p for p in sorted(BENCH_DIR.glob("bench_*.py"))}


@dataclass
class Outcome:
    name: str
    seconds: float
    ok: bool
    why: str = ""
    markdown: str = ""
    skipped: bool = False


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the script's process group, SIGKILL after 15 s."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_script(name: str, script: Path, *, quick: bool, timeout: float, log_dir: Path) -> Outcome:
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        report = Path(tmp) / "section.md"
        cmd = [sys.executable, str(script), "--report", str(report)] + (["--quick"] if quick else [])
        log = log_dir / f"{name}.log"
        started = time.perf_counter()
        with log.open("w") as fh:
            # Its own process group, so that a timeout also ends what it started (stage
            # processes, a local MLflow server).
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                stop_group(proc)
                return Outcome(name, time.perf_counter() - started, False, f"timed out after {timeout:.0f} s; log {log}")
        seconds = time.perf_counter() - started
        if proc.returncode == SKIPPED:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            return Outcome(name, seconds, True, tail[0][:200], skipped=True)
        if proc.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            return Outcome(name, seconds, False, f"exit {proc.returncode}: {tail[0][:200]} (log {log})")
        if not report.exists() or not report.read_text().strip():
            return Outcome(name, seconds, False, f"wrote no report (log {log})")
        return Outcome(name, seconds, True, markdown=report.read_text())


def _status(outcome: Outcome) -> str:
    return "skipped" if outcome.skipped else ("ok" if outcome.ok else "FAILED")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="CI-sized runs of every script")
    parser.add_argument("--only", help="comma-separated names (e.g. quality,drift)")
    parser.add_argument("--skip", help="comma-separated names to leave out")
    parser.add_argument(
        "--output", type=Path,
        help=f"file whose sections are rewritten (default {DOC.relative_to(REPO)}; "
        f"quick: {QUICK_DOC.relative_to(REPO)})",
    )
    parser.add_argument("--timeout", type=float, help="seconds per script (overrides the defaults)")
    parser.add_argument("--list", action="store_true", help="list the scripts and exit")
    args = parser.parse_args(argv)

    scripts = discover()
    if args.list:
        print("\n".join(scripts))
        return 0
    names = list(scripts)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(scripts))
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(scripts)}")
        names = [n for n in names if n in wanted]
    if args.skip:
        names = [n for n in names if n not in {s.strip() for s in args.skip.split(",")}]

    output: Path = args.output or (QUICK_DOC if args.quick else DOC)
    if not output.exists():
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DOC, output)
    text = output.read_text()
    missing = [n for n in names if not marker_re(n).search(text)]
    if missing and output.resolve() != DOC.resolve() and args.output is None:
        # The quick copy predates a section added to docs/benchmarks.md: start it again.
        shutil.copyfile(DOC, output)
        text = output.read_text()
        missing = [n for n in names if not marker_re(n).search(text)]
    if missing:
        print(f"no markers in {output} for: {', '.join(missing)}", file=sys.stderr)
        return 2

    log_dir = REPO / ".local" / "bench" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    for name in names:
        timeout = args.timeout or (
            QUICK_TIMEOUT_S_FOR.get(name, QUICK_TIMEOUT_S) if args.quick
            else TIMEOUT_S.get(name, DEFAULT_TIMEOUT_S)
        )
        print(f"== {name} ({'quick, ' if args.quick else ''}timeout {timeout:.0f} s)", flush=True)
        outcome = run_script(name, scripts[name], quick=args.quick, timeout=timeout, log_dir=log_dir)
        outcomes.append(outcome)
        print(f"   {_status(outcome)} in {outcome.seconds:.1f} s {outcome.why}", flush=True)
        if outcome.ok and not outcome.skipped:
            text = replace_section(text, name, outcome.markdown)
            write_atomically(output, text)  # after each script: a later crash loses nothing

    total = sum(o.seconds for o in outcomes)
    failed = [o for o in outcomes if not o.ok]
    print(f"\nSummary ({output}):")
    for o in outcomes:
        print(f"  {o.name:<18} {_status(o):<7} {o.seconds:8.1f} s  {o.why}")
    print(f"  {'total':<18} {'':<7} {total:8.1f} s; {len(outcomes) - len(failed)} ran, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Reports on a disk that fills up while they are rewritten: the previous report stays
byte-identical, no temp file is left, and the error names the file and says the disk is
full. The fault is injected at the lowest level the code uses (``os.write`` to files under
the report folder stores a budget of bytes, then fails with ENOSPC, as a filling disk
does), so every byte the storage layer writes counts."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from mlops_loop.core.decision_report import write_decision_record
from mlops_loop.core.drift import measure_drift
from mlops_loop.core.drift_report import write_reports
from mlops_loop.core.profile import build_profile
from mlops_loop.core.storage import LocalStorage
from mlops_loop.exceptions import StorageError
from tests.fixtures.decisions import decision_dict
from tests.fixtures.drift_frames import frame, settings, toy_config


def disk_full_after(monkeypatch: pytest.MonkeyPatch, folder: Path, budget: int) -> list[int]:
    """From now on, files under ``folder`` get ``budget`` more bytes in all, then every
    write fails with ENOSPC (writes elsewhere are untouched). Returns [bytes refused]."""
    real = os.write
    left = [budget]
    refused = [0]
    prefix = str(folder.resolve())

    def write(fd: int, data) -> int:
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            path = ""
        if not path.startswith(prefix):
            return real(fd, data)
        if left[0] <= 0:
            refused[0] += len(data)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real(fd, bytes(data[: left[0]]))
        left[0] -= n
        return n

    monkeypatch.setattr(os, "write", write)
    return refused


def snapshot_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def drift_results():
    config = toy_config()
    profile = build_profile(frame(2000, 1), config)
    calm = measure_drift(profile, frame(800, 2), config, settings())
    shifted = measure_drift(profile, frame(800, 3, x_shift=1.5), config, settings())
    return profile, calm, shifted


def drift_sizes(tmp_path: Path, drift_results) -> dict[str, int]:
    """The size of each file of the second report, written once elsewhere."""
    profile, _, shifted = drift_results
    folder = tmp_path / "measure"
    write_reports(LocalStorage(), str(folder), shifted, None, profile, meta={"ds": "2026-03-02"})
    return {p.name: p.stat().st_size for p in folder.iterdir()}


@pytest.mark.parametrize(
    ("fails_in", "into"),
    [
        pytest.param("report.json", 0.0, id="at-the-first-byte"),
        pytest.param("report.json", 0.5, id="half-way-through-report.json"),
        pytest.param("report.html", 0.5, id="half-way-through-report.html"),
        pytest.param("manifest.json", 0.5, id="half-way-through-the-manifest"),
    ],
)
def test_drift_report_rewritten_on_a_full_disk_stays_the_previous_one(
    tmp_path, monkeypatch, drift_results, fails_in, into
):
    profile, calm, shifted = drift_results
    sizes = drift_sizes(tmp_path, drift_results)
    storage = LocalStorage()
    folder = tmp_path / "reports" / "drift" / "ds=2026-03-02"
    write_reports(storage, str(folder), calm, None, profile, meta={"ds": "2026-03-02"})
    before = snapshot_of(folder)

    order = ["report.json", "report.html", "manifest.json"]  # the order they are written
    budget = sum(sizes[n] for n in order[: order.index(fails_in)]) + int(sizes[fails_in] * into)
    refused = disk_full_after(monkeypatch, folder, budget)
    with pytest.raises(StorageError, match=rf"cannot write .*{fails_in}: no space left") as info:
        write_reports(storage, str(folder), shifted, None, profile, meta={"ds": "2026-03-02"})
    monkeypatch.undo()

    assert refused[0] > 0  # the disk really filled up during this write
    assert info.value.uri == str(folder / fails_in)
    assert snapshot_of(folder) == before  # all three files, byte for byte; no temp file
    # With space again the rerun replaces the report.
    write_reports(storage, str(folder), shifted, None, profile, meta={"ds": "2026-03-02"})
    assert {n: len(b) for n, b in snapshot_of(folder).items()} == sizes


@pytest.mark.parametrize(
    ("fails_in", "into", "page_after"),
    [
        pytest.param("report.html", 0.0, "previous", id="at-the-first-byte"),
        pytest.param("report.html", 0.5, "previous", id="half-way-through-the-page"),
        pytest.param("decision.json", 0.5, "previous", id="half-way-through-the-record"),
    ],
)
def test_decision_record_rewritten_on_a_full_disk_keeps_the_previous_pair(
    tmp_path, monkeypatch, fails_in, into, page_after
):
    """The page and the record (last: it marks the record complete) are written as one
    pair: wherever the disk fills, both keep their previous bytes."""
    storage = LocalStorage()
    root = str(tmp_path / "credit_default")
    first = write_decision_record(storage, root, decision_dict(), context={"run": "first"})
    folder = Path(first["json_uri"]).parent
    before = snapshot_of(folder)
    elsewhere = write_decision_record(
        storage, str(tmp_path / "measure"), decision_dict(), context={"run": "second"}
    )
    new = snapshot_of(Path(elsewhere["json_uri"]).parent)
    new["decision.json"] = new["decision.json"].replace(
        str(tmp_path / "measure").encode(), root.encode()
    )
    assert new != before

    order = ["report.html", "decision.json"]
    budget = sum(len(new[n]) for n in order[: order.index(fails_in)]) + int(
        len(new[fails_in]) * into
    )
    refused = disk_full_after(monkeypatch, folder, budget)
    with pytest.raises(StorageError, match=rf"cannot write .*{fails_in}: no space left"):
        write_decision_record(storage, root, decision_dict(), context={"run": "second"})
    monkeypatch.undo()

    assert refused[0] > 0
    after = snapshot_of(folder)
    assert sorted(after) == ["decision.json", "report.html"]  # no temp file left
    assert after["decision.json"] == before["decision.json"]
    assert after["report.html"] == (before if page_after == "previous" else new)["report.html"]

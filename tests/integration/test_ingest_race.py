"""Two ingests of one date racing at publish, as real processes: on local disk and on a
real S3-compatible server over HTTP. Pauses and rendezvous are injected at the publish
protocol's steps through the ``storage._pause`` test hook (and, for the local rename,
around ``os.rename`` itself). Exactly one ingest publishes; the other reports that same
snapshot (``created=False``, same sha256); a folder with a manifest is never removed and
nothing is left behind (staging folders, parts of a loser's upload, multipart uploads)."""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mlops_loop.core.config import load_config
from mlops_loop.core.ingest import content_hash
from mlops_loop.core.snapshots import read_snapshot
from mlops_loop.core.storage import S3Credentials, S3Storage, sha256_file, split_s3
from mlops_loop_devtools.sample_data import generate_batch, land_batch

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CREDIT_CONFIG = REPO / "include" / "config" / "credit_default.yaml"
DS = "2024-05-03"
ROWS = 300

Plan = dict[str, list[tuple[str, Any]]]


# ------------------------------------------------------------------ the worker processes


def _make_pause(plan: Plan, sync: dict[str, Any], seen: list[str], creds: S3Credentials | None):
    """A ``storage._pause`` that records the steps reached and runs each step's actions the
    first time: ("set", event), ("wait", event), ("barrier", name) (a broken or timed-out
    barrier is passed: under the lock only one writer gets there), ("sleep", seconds),
    ("wait_for", uri) until that object or file exists."""

    def pause(step: str) -> None:
        first = step not in seen
        seen.append(step)
        for action, arg in plan.get(step, []) if first else []:
            if action == "set":
                sync[arg].set()
            elif action == "wait":
                assert sync[arg].wait(timeout=120), f"{arg} never happened"
            elif action == "barrier":
                _rendezvous(sync[arg])
            elif action == "sleep":
                time.sleep(arg)
            elif action == "wait_for":
                deadline = time.monotonic() + 120
                while not _exists(arg, creds):
                    assert time.monotonic() < deadline, f"{arg} never appeared"
                    time.sleep(0.02)

    return pause


def _rendezvous(barrier: Any) -> None:
    """Wait for the others at ``barrier``, for 3 s at most (one that never comes, because
    it waits for a lock this process holds, breaks the barrier for everyone)."""
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait(timeout=3)


def _exists(uri: str, creds: S3Credentials | None) -> bool:
    if uri.startswith("s3://"):
        return S3Storage(creds).exists(uri)
    return Path(uri).exists()


def _ingester(
    overrides: dict[str, Any],
    creds: S3Credentials | None,
    plan: Plan,
    sync: dict[str, Any],
    out: Any,
) -> None:
    """One ingest of DS, started together with the others at ``sync["start"]``."""
    import os

    from mlops_loop.core import storage
    from mlops_loop.core.ingest import ingest_batch

    seen: list[str] = []
    storage._pause = _make_pause(plan, sync, seen, creds)
    if "rename" in plan:  # a rendezvous right at the rename onto the snapshot's address
        real_rename = os.rename

        def rename(src: Any, dst: Any) -> None:
            final = Path(dst)
            if final.parent.name == "snapshots" and not final.name.startswith("."):
                for action, arg in plan["rename"]:
                    if action == "barrier":
                        _rendezvous(sync[arg])
            real_rename(src, dst)

        os.rename = rename
    if "no_lock" in plan:  # a filesystem that cannot lock a folder
        storage._folder_lock = lambda folder: contextlib.nullcontext()
    config = load_config(CREDIT_CONFIG, overrides=overrides)
    sync["start"].wait(timeout=120)
    try:
        result: dict[str, Any] = ingest_batch(config, DS, credentials=creds).to_xcom()
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    out.put({**result, "steps": seen, "name": plan.get("name", [("", "")])[0][1]})


def run_ingests(
    overrides: dict[str, Any],
    creds: S3Credentials | None,
    plans: list[Plan],
    events: tuple[str, ...] = (),
) -> dict[str, dict[str, Any]]:
    """One process per plan, all starting together; results by the plan's name."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    sync: dict[str, Any] = {"start": ctx.Barrier(len(plans)), "both": ctx.Barrier(len(plans))}
    sync.update({e: ctx.Event() for e in events})
    procs = [ctx.Process(target=_ingester, args=(overrides, creds, p, sync, out)) for p in plans]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in plans]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return {r["name"]: r for r in results}


def named(name: str, **steps: list[tuple[str, Any]]) -> Plan:
    return {"name": [("name", name)], **{k.replace("_", "."): v for k, v in steps.items()}}


class Watcher:
    """Polls whether the snapshot's manifest exists, from the moment it first appears: a
    published snapshot must never vanish, not even for a moment."""

    def __init__(self, uri: str, creds: S3Credentials | None = None) -> None:
        self.uri, self.creds = uri, creds
        self.seen = False
        self.vanished = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        storage = S3Storage(self.creds) if self.creds is not None else None
        while not self._stop.is_set():
            there = storage.exists(self.uri) if storage else Path(self.uri).exists()
            if there:
                self.seen = True
            elif self.seen:
                self.vanished += 1
            time.sleep(0.002 if storage is None else 0.05)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=10)


def assert_one_publisher(results: dict[str, dict[str, Any]], winner: str, sha: str) -> None:
    assert all("error" not in r for r in results.values()), results
    assert {r["sha256"] for r in results.values()} == {sha}
    assert len({r["snapshot_uri"] for r in results.values()}) == 1
    assert {name: r["created"] for name, r in results.items()} == {
        name: name == winner for name in results
    }, results


# ------------------------------------------------------------------ local disk


@pytest.fixture
def local_batch(tmp_path: Path) -> tuple[dict[str, Any], Path, str]:
    root = tmp_path / "data"
    paths = land_batch(generate_batch(DS, ROWS), root, DS, files=2)
    overrides = {"storage": {"root": str(root)}}
    config = load_config(CREDIT_CONFIG, overrides=overrides)
    sha = content_hash(config, DS, [(p.name, sha256_file(p)) for p in paths])
    return overrides, root, sha


def test_two_local_ingests_renaming_together_one_publishes_the_other_reports_it(local_batch):
    """Both built the snapshot and reach the rename onto its address at the same moment.
    Before: the second rename failed with a raw ``OSError [Errno 39] Directory not empty``."""
    overrides, root, sha = local_batch
    final = root / "snapshots" / sha
    watcher = Watcher(str(final / "manifest.json"))
    plans = [named(n, rename=[("barrier", "both")]) for n in ("a", "b")]
    results = run_ingests(overrides, None, plans)
    watcher.stop()

    assert all("error" not in r for r in results.values()), results
    winner = next(n for n, r in results.items() if r["created"])
    assert_one_publisher(results, winner, sha)
    assert watcher.seen and watcher.vanished == 0
    assert [p.name for p in (root / "snapshots").iterdir()] == [sha]  # no staging left
    assert len(read_snapshot(str(final))) == ROWS


@pytest.mark.parametrize("lock", ["locked", "no-lock"])
def test_local_ingest_that_found_a_leftover_never_removes_the_published_snapshot(local_batch, lock):
    """A folder without manifest (an interrupted write) is at the address. ``a`` decides to
    replace it; ``b`` publishes first (without the folder lock, as on a filesystem that
    cannot lock, it gets past the check meanwhile). Before: ``a`` then removed ``b``'s
    just-published snapshot with ``rmtree`` and both reported ``created``. Now ``a`` only
    ever renames the folder aside, finds the manifest, puts it back and reports it."""
    overrides, root, sha = local_batch
    final = root / "snapshots" / sha
    final.mkdir(parents=True)
    (final / "part-00000.parquet").write_bytes(b"half a file")
    manifest = str(final / "manifest.json")
    watcher = Watcher(manifest)

    extra = {"no_lock": [("", "")]} if lock == "no-lock" else {}
    if lock == "locked":
        # a holds the folder lock through its decision; b waits for it, then finds the
        # snapshot a published.
        a = named("a", publish_replace=[("set", "a_decided"), ("sleep", 1.0)])
        b = named("b", publish_start=[("wait", "a_decided")])
        winner = "a"
    else:
        # a looked (no manifest) and is about to replace the leftover when b publishes.
        a = named("a", publish_replace=[("set", "a_decided"), ("wait_for", manifest)])
        b = named("b", publish_check=[("wait", "a_decided")])
        winner = "b"
    results = run_ingests(overrides, None, [{**a, **extra}, {**b, **extra}], ("a_decided",))
    watcher.stop()

    assert_one_publisher(results, winner, sha)
    assert watcher.seen
    if lock == "locked":
        assert watcher.vanished == 0
    assert sorted(p.name for p in final.iterdir()) == ["manifest.json", "part-00000.parquet"]
    assert [p.name for p in (root / "snapshots").iterdir()] == [sha]  # nothing set aside left
    assert len(read_snapshot(str(final))) == ROWS


# ------------------------------------------------------------------ S3


@pytest.fixture
def s3_batch(
    tmp_path: Path, s3_credentials: S3Credentials, s3_bucket: str
) -> tuple[dict[str, Any], S3Storage, str]:
    storage = S3Storage(s3_credentials)
    paths = land_batch(generate_batch(DS, ROWS), tmp_path / "landing", DS, files=2)
    for path in paths:
        storage.upload(path, f"{s3_bucket}/raw/ds={DS}/{path.name}")
    s3 = {"endpoint_url": s3_credentials.endpoint_url, "region_name": "us-east-1"}
    overrides = {"storage": {"root": s3_bucket, "s3": s3}}
    config = load_config(CREDIT_CONFIG, overrides=overrides)
    sha = content_hash(config, DS, [(p.name, sha256_file(p)) for p in paths])
    return overrides, storage, sha


def objects(storage: S3Storage, prefix_uri: str) -> dict[str, tuple[str, str]]:
    bucket, prefix = split_s3(prefix_uri)
    listed = storage.client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"].rsplit("/", 1)[-1]: (o["ETag"], str(o["LastModified"])) for o in listed}


def no_multipart_uploads(storage: S3Storage, bucket_uri: str) -> bool:
    bucket, _ = split_s3(bucket_uri)
    return not storage.client.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_two_s3_ingests_writing_the_manifest_together_one_publishes_the_other_reports_it(
    s3_batch, s3_credentials, s3_bucket
):
    """Both uploaded their parts and PUT the manifest at the same moment. Before: both
    reported ``created`` (two publishers of one snapshot). The manifest is a conditional
    PUT now: exactly one creates it."""
    overrides, storage, sha = s3_batch
    final = f"{s3_bucket}/snapshots/{sha}"
    plans = [named(n, publish_commit=[("barrier", "both")]) for n in ("a", "b")]
    results = run_ingests(overrides, s3_credentials, plans)

    assert all("publish.commit" in r["steps"] for r in results.values()), results
    winner = next(n for n, r in results.items() if r["created"])
    assert_one_publisher(results, winner, sha)
    assert sorted(objects(storage, f"{final}/")) == ["manifest.json", "part-00000.parquet"]
    assert no_multipart_uploads(storage, s3_bucket)
    assert len(read_snapshot(final, credentials=s3_credentials)) == ROWS


def test_s3_ingest_that_finds_the_snapshot_published_mid_way_writes_and_removes_nothing(
    s3_batch, s3_credentials, s3_bucket
):
    """``a`` starts publishing, stalls before its part upload until ``b`` has published
    the whole snapshot, then stops: ``b``'s objects are neither overwritten nor removed
    and ``a`` reports ``b``'s snapshot."""
    overrides, storage, sha = s3_batch
    final = f"{s3_bucket}/snapshots/{sha}"
    manifest = f"{final}/manifest.json"
    watcher = Watcher(manifest, s3_credentials)
    a = named("a", publish_part=[("set", "a_started"), ("wait_for", manifest), ("sleep", 0.3)])
    b = named("b", publish_check=[("wait", "a_started")])
    before_a_resumes: dict[str, tuple[str, str]] = {}

    def record() -> None:  # b's objects as b left them, before a goes on
        deadline = time.monotonic() + 120
        while not storage.exists(manifest) and time.monotonic() < deadline:
            time.sleep(0.02)
        before_a_resumes.update(objects(storage, f"{final}/"))

    recorder = threading.Thread(target=record, daemon=True)
    recorder.start()
    results = run_ingests(overrides, s3_credentials, [a, b], ("a_started",))
    recorder.join(timeout=10)
    watcher.stop()

    assert_one_publisher(results, "b", sha)
    assert watcher.seen and watcher.vanished == 0
    assert objects(storage, f"{final}/") == before_a_resumes  # same ETags and times
    assert no_multipart_uploads(storage, s3_bucket)
    assert len(read_snapshot(final, credentials=s3_credentials)) == ROWS

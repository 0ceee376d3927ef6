"""The promotion lock under interleavings: several processes promote against a real MLflow
server, with delays and rendezvous injected at the lock protocol's steps through the
``registry._pause`` test hook. Each ends with exactly one promotion, no lock or retire
guard left behind, and an audit trail that agrees with the champion alias."""

from __future__ import annotations

import multiprocessing
import random
import time
import uuid
from typing import Any

import pytest

from mlops_loop.core import registry

pytestmark = pytest.mark.integration

Plan = dict[str, list[tuple[str, Any]]]


@pytest.fixture(scope="module")
def model_uri(mlflow_server) -> str:
    import mlflow
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(mlflow_server.url)
    mlflow.set_experiment("test-promotion-race")
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            LogisticRegression().fit(x, [0, 0, 1, 1]),
            name="model",
            pip_requirements=["scikit-learn"],
        )
    return str(info.model_uri)


@pytest.fixture
def client(mlflow_server):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=mlflow_server.url)


def new_model(client, model_uri: str, n: int) -> tuple[str, list[str]]:
    """A fresh registered model with ``n`` versions, version 1 already champion."""
    import mlflow

    name = f"race-{uuid.uuid4().hex[:8]}"
    mlflow.set_tracking_uri(client.tracking_uri)
    versions = [str(mlflow.register_model(model_uri, name).version) for _ in range(n)]
    registry.promote(
        client,
        name,
        versions[0],
        expected_champion=None,
        decision_uri="u",
        airflow_run="r",
        reason="first",
    )
    return name, versions


def dead_lock(client, name: str, expires_in: float = -1.0) -> str:
    """The lock row a promoter leaves when it dies holding the lock."""
    token = f"dead-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(
        registry.lock_name(name),
        tags={
            "lock.owner": token,
            "lock.holder": "ghost:1",
            "lock.expires_at": f"{time.time() + expires_in:.3f}",
        },
    )
    return token


def assert_consistent(
    client, name: str, champion: str, moves: list[tuple[str | None, str]]
) -> None:
    """The alias is ``champion``, the audit trail records exactly ``moves`` in order (each
    from the previous one's target), and no lock or retire guard is left."""
    assert registry.get_champion(client, name) == champion
    trail = registry.audit_trail(client, name)
    assert [(e["from"], e["to"]) for e in trail] == moves, trail
    seqs = [int(e["seq"]) for e in trail]
    assert seqs == sorted(set(seqs))
    left = client.search_registered_models(filter_string=f"name LIKE '{registry.lock_name(name)}%'")
    assert [m.name for m in left] == []


# ------------------------------------------------------------------ the worker processes


def _make_pause(once: Plan, every: dict[str, float], sync: dict[str, Any], seen: list[str]):
    """A ``registry._pause`` that records the steps reached and, at each step, runs the
    step's ``once`` actions the first time (("sleep", s), ("set", event), ("wait",
    event), ("barrier", name)) and sleeps ``every[step]`` seconds each time."""

    def pause(step: str) -> None:
        first = step not in seen
        seen.append(step)
        for action, arg in once.get(step, []) if first else []:
            if action == "sleep":
                time.sleep(arg)
            elif action == "set":
                sync[arg].set()
            elif action == "wait":
                assert sync[arg].wait(timeout=120), f"{arg} never happened"
            elif action == "barrier":
                sync[arg].wait(timeout=120)
        time.sleep(every.get(step, 0.0))

    return pause


def _promoter(url: str, rounds: list[dict[str, Any]], sync: dict[str, Any], out: Any) -> None:
    """Run one promotion per round (all processes start each round together at
    ``sync["start"]``); put each round's result (or error) on ``out``."""
    import mlflow

    from mlops_loop.core import registry as reg

    client = mlflow.MlflowClient(tracking_uri=url)
    client.search_registered_models(max_results=1)  # connect before the start line
    for r in rounds:
        seen: list[str] = []
        reg._pause = _make_pause(r.get("once", {}), r.get("every", {}), sync, seen)
        sync["start"].wait(timeout=300)
        try:
            result = reg.promote(
                client, r["name"], r["version"], expected_champion=r["expected"], decision_uri=f"u{r['version']}",
                airflow_run=f"race-{r['version']}", reason="race", lock_ttl=r["ttl"], lock_timeout=120,
            ).to_dict()  # fmt: skip
        except Exception as exc:
            result = {"outcome": type(exc).__name__, "detail": str(exc), "version": r["version"]}
        out.put({**result, "round": r["round"], "steps": seen})


def run_promoters(
    url: str, plans: list[list[dict[str, Any]]], events: tuple[str, ...] = ()
) -> list[dict]:
    """One process per entry of ``plans`` (its rounds); returns every result."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    sync: dict[str, Any] = {"start": ctx.Barrier(len(plans))}
    sync.update({e: ctx.Event() for e in events})
    sync["both"] = ctx.Barrier(2)
    procs = [ctx.Process(target=_promoter, args=(url, rounds, sync, out)) for rounds in plans]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for rounds in plans for _ in rounds]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results


# --------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("second_waits", [False, True], ids=["together", "after-first-holds"])
def test_two_breakers_of_one_expired_lock_promote_once(
    client, model_uri, mlflow_server, second_waits
):
    """Both read the same expired lock before either breaks it. ``together``: both try to
    break it at once. ``after-first-holds``: the second acts on its old read only once
    the first has broken the lock and holds a new one; before the retire guard it
    deleted that new lock and both moved the alias."""
    name, (v1, v2, v3) = new_model(client, model_uri, 3)
    dead_lock(client, name)
    common = {"name": name, "expected": v1, "ttl": 30.0, "round": 0}
    first = {
        **common,
        "version": v2,
        "once": {
            "lock.expired": [("barrier", "both")],
            "move.audit": [("set", "first_holds"), ("sleep", 1.5)],
        },
    }
    wait = [("wait", "first_holds")] if second_waits else []
    second = {**common, "version": v3, "once": {"lock.expired": [("barrier", "both"), *wait]}}
    results = run_promoters(mlflow_server.url, [[first], [second]], events=("first_holds",))

    assert all("lock.expired" in r["steps"] for r in results)  # both did read the expired lock
    assert sorted(r["outcome"] for r in results) == ["promoted", "stale"], results
    winner = next(r for r in results if r["outcome"] == "promoted")["version"]
    assert_consistent(client, name, winner, [(None, v1), (v1, winner)])


def test_renewed_lease_keeps_a_slow_holder_s_lock(client, model_uri, mlflow_server):
    """The holder takes longer than its ttl but renews before each write, so a waiting
    promoter never finds the lock expired (without renewal it broke it and both moved)."""
    name, (v1, v2, v3) = new_model(client, model_uri, 3)
    ttl = 4.0  # each step waits 1.6 s: the holder works for more than its ttl
    slow = [("sleep", 1.6)]
    holder = {
        "name": name, "version": v2, "expected": v1, "ttl": ttl, "round": 0,
        "once": {"move.audit": [("set", "held"), *slow], "move.alias": slow, "move.tags": slow},
    }  # fmt: skip
    waiter = {
        "name": name,
        "version": v3,
        "expected": v1,
        "ttl": ttl,
        "round": 0,
        "once": {"lock.create": [("wait", "held")]},
    }
    results = run_promoters(mlflow_server.url, [[holder], [waiter]], events=("held",))

    by_version = {r["version"]: r for r in results}
    assert by_version[v2]["outcome"] == "promoted", results
    assert by_version[v3]["outcome"] == "stale", results
    assert "lock.expired" not in by_version[v3]["steps"]
    assert_consistent(client, name, v2, [(None, v1), (v1, v2)])


def test_holder_stalled_past_its_lease_loses_the_lock_and_moves_nothing(
    client, model_uri, mlflow_server
):
    """The holder stalls (before its alias write) longer than its lease; another promoter
    breaks the lock and promotes. The stalled one then finds its lease gone, raises
    PromotionLockLost and removes its own audit entry: the trail matches the alias."""
    name, (v1, v2, v3) = new_model(client, model_uri, 3)
    ttl = 3.0
    stalled = {
        "name": name, "version": v2, "expected": v1, "ttl": ttl, "round": 0,
        "once": {"move.alias": [("set", "stalled"), ("wait", "promoted")]},
    }  # fmt: skip
    breaker = {
        "name": name, "version": v3, "expected": v1, "ttl": ttl, "round": 0,
        "once": {"lock.create": [("wait", "stalled")], "lock.release": [("set", "promoted")]},
    }  # fmt: skip
    results = run_promoters(
        mlflow_server.url, [[stalled], [breaker]], events=("stalled", "promoted")
    )

    by_version = {r["version"]: r for r in results}
    assert by_version[v3]["outcome"] == "promoted" and "lock.expired" in by_version[v3]["steps"], (
        results
    )
    assert by_version[v2]["outcome"] == "PromotionLockLost", results
    assert "lease ran out before move.alias" in by_version[v2]["detail"]
    assert_consistent(client, name, v3, [(None, v1), (v1, v3)])


def test_breaker_stalled_holding_the_retire_guard_is_taken_over(client, model_uri, mlflow_server):
    """A breaker wins the retire guard and stalls past the guard's lease (as if it died);
    another takes the guard over (guard 2), breaks the lock and promotes. The stalled
    breaker wakes to a new lock and deletes nothing."""
    name, (v1, v2, v3) = new_model(client, model_uri, 3)
    dead_lock(client, name)
    ttl = 3.0
    stalled = {
        "name": name, "version": v2, "expected": v1, "ttl": ttl, "round": 0,
        "once": {"lock.retire": [("set", "guarded"), ("wait", "promoted")]},
    }  # fmt: skip
    other = {
        "name": name, "version": v3, "expected": v1, "ttl": ttl, "round": 0,
        "once": {"lock.create": [("wait", "guarded")], "lock.release": [("set", "promoted")]},
    }  # fmt: skip
    results = run_promoters(mlflow_server.url, [[stalled], [other]], events=("guarded", "promoted"))

    by_version = {r["version"]: r for r in results}
    assert by_version[v3]["outcome"] == "promoted", results
    assert by_version[v2]["outcome"] == "stale", results
    assert_consistent(client, name, v3, [(None, v1), (v1, v3)])


def test_random_delays_at_every_step_end_with_one_promotion(client, model_uri, mlflow_server):
    """Four processes, three rounds, each round starting from a dead holder's expired
    lock, with seeded random delays at every step: stalls of the breakers longer than the
    lease (guard takeovers), holders slow but within their lease."""
    rng = random.Random(13)
    ttl, workers, n_rounds = 3.0, 4, 3
    models = []
    for _ in range(n_rounds):
        name, versions = new_model(client, model_uri, workers + 1)
        dead_lock(client, name)
        models.append((name, versions))
    breaker_steps = ("lock.create", "lock.expired", "lock.retire")
    holder_steps = ("move.tags", "move.audit", "move.alias", "lock.release")
    plans: list[list[dict[str, Any]]] = [[] for _ in range(workers)]
    for rnd, (name, versions) in enumerate(models):
        for w in range(workers):
            every = {s: rng.choice([0.0, 0.0, 0.05, 0.3]) for s in holder_steps}
            every.update({s: rng.choice([0.0, 0.05, 0.2]) for s in breaker_steps})
            # A one-off long stall of a breaker: longer than the lease of the guard it holds.
            once = {rng.choice(breaker_steps): [("sleep", rng.choice([0.0, ttl + 0.5]))]}
            plans[w].append({
                "name": name, "version": versions[w + 1], "expected": versions[0], "ttl": ttl,
                "round": rnd, "every": every, "once": once,
            })  # fmt: skip
    results = run_promoters(mlflow_server.url, plans)

    for rnd, (name, versions) in enumerate(models):
        got = [r for r in results if r["round"] == rnd]
        promoted = [r for r in got if r["outcome"] == "promoted"]
        assert len(promoted) == 1, got
        # Stale, or (a loaded machine) a lease that ran out: never a second move.
        assert all(
            r["outcome"] in ("stale", "PromotionLockLost") for r in got if r not in promoted
        ), got
        assert_consistent(
            client,
            name,
            promoted[0]["version"],
            [(None, versions[0]), (versions[0], promoted[0]["version"])],
        )

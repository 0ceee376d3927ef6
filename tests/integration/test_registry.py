"""Champion alias operations against a real MLflow tracking server: compare-and-set
promotion, racing promotions from separate processes, rollback, validation tags."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from typing import Any

import pytest

from mlops_loop.core import registry
from mlops_loop.core.compare import Decision
from mlops_loop.exceptions import (
    PromotionLockLost,
    PromotionLockTimeout,
    RegistryError,
    RollbackRefused,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model_uri(mlflow_server) -> str:
    """One tiny sklearn model logged once; every test registers versions of it."""
    import mlflow
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(mlflow_server.url)
    mlflow.set_experiment("test-registry")
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    model = LogisticRegression().fit(x, [0, 0, 1, 1])
    with mlflow.start_run():
        # Explicit requirements: inferring them loads the model in a subprocess (slow).
        info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
    return str(info.model_uri)


@pytest.fixture
def client(mlflow_server):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=mlflow_server.url)


@pytest.fixture
def model_name(request) -> str:
    return f"reg-{request.node.name[:30]}-{uuid.uuid4().hex[:6]}".replace("[", "-").replace("]", "")


def register(client, name: str, model_uri: str, n: int = 1) -> list[str]:
    """Register ``n`` versions of the logged model under ``name``."""
    import mlflow

    mlflow.set_tracking_uri(client.tracking_uri)
    return [str(mlflow.register_model(model_uri, name).version) for _ in range(n)]


def passed(client, name: str, version: str) -> None:
    registry.mark_validation(
        client, name, version, {"outcome": "promote", "decision_id": "d", "reasons": ["ok"]}
    )


def test_first_promotion_then_stale_cas(client, model_name, model_uri):
    v1, v2, v3 = register(client, model_name, model_uri, 3)
    assert registry.get_champion(client, model_name) is None

    first = registry.promote(
        client, model_name, v1, expected_champion=None, decision_uri="s3://b/d1/decision.json",
        airflow_run="train/manual__1", reason="beats baseline",
    )  # fmt: skip
    assert first.outcome == "promoted" and first.previous_champion is None
    assert registry.get_champion(client, model_name) == v1
    tags = client.get_model_version(model_name, v1).tags
    assert tags["previous_champion"] == "none"
    assert tags["decision_uri"] == "s3://b/d1/decision.json"
    assert tags["airflow_run"] == "train/manual__1"
    assert tags["promoted_at"]

    second = registry.promote(
        client,
        model_name,
        v2,
        expected_champion=v1,
        decision_uri="u2",
        airflow_run="r2",
        reason="better",
    )
    assert second.outcome == "promoted" and second.previous_champion == v1

    # v3 was evaluated against v1, but v2 is champion now: do not overwrite.
    stale = registry.promote(
        client,
        model_name,
        v3,
        expected_champion=v1,
        decision_uri="u3",
        airflow_run="r3",
        reason="better",
    )
    assert stale.outcome == "stale"
    assert f"version {v1}" in stale.detail and f"version {v2}" in stale.detail
    assert registry.get_champion(client, model_name) == v2
    assert "promoted_at" not in client.get_model_version(model_name, v3).tags

    trail = registry.audit_trail(client, model_name)
    assert [(e["seq"], e["from"], e["to"]) for e in trail] == [(1, None, v1), (2, v1, v2)]
    assert no_lock_left(client, model_name)


def test_rerun_of_promote_is_a_noop(client, model_name, model_uri):
    (v1,) = register(client, model_name, model_uri)
    kwargs: dict[str, Any] = dict(
        expected_champion=None, decision_uri="u", airflow_run="r", reason="x"
    )
    assert registry.promote(client, model_name, v1, **kwargs).outcome == "promoted"
    promoted_at = client.get_model_version(model_name, v1).tags["promoted_at"]
    again = registry.promote(client, model_name, v1, **kwargs)
    assert again.outcome == "noop"
    assert client.get_model_version(model_name, v1).tags["promoted_at"] == promoted_at
    assert len(registry.audit_trail(client, model_name)) == 1


def test_promote_unknown_version_is_an_error(client, model_name, model_uri):
    register(client, model_name, model_uri)
    with pytest.raises(RegistryError, match=r"version 99 .* does not exist"):
        registry.promote(
            client,
            model_name,
            "99",
            expected_champion=None,
            decision_uri=None,
            airflow_run=None,
            reason="x",
        )


def _race_worker(url: str, name: str, version: str, expected: str, barrier: Any, out: Any) -> None:
    import mlflow

    from mlops_loop.core import registry as reg

    client = mlflow.MlflowClient(tracking_uri=url)
    client.get_registered_model(name)  # warm the HTTP connection before the start line
    barrier.wait(timeout=300)  # both processes are imported and connected: go together
    result = reg.promote(
        client, name, version, expected_champion=expected, decision_uri=f"u{version}",
        airflow_run=f"race-{version}", reason="race",
    )  # fmt: skip
    out.put(result.to_dict())


def test_racing_promotions_from_two_processes_have_one_winner(
    client, model_name, model_uri, mlflow_server
):
    v1, v2, v3 = register(client, model_name, model_uri, 3)
    registry.promote(
        client,
        model_name,
        v1,
        expected_champion=None,
        decision_uri="u",
        airflow_run="r",
        reason="first",
    )

    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    barrier = ctx.Barrier(2)
    procs = [
        ctx.Process(target=_race_worker, args=(mlflow_server.url, model_name, v, v1, barrier, out))
        for v in (v2, v3)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=400) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0

    outcomes = sorted(r["outcome"] for r in results)
    assert outcomes == ["promoted", "stale"], results
    winner = next(r for r in results if r["outcome"] == "promoted")
    loser = next(r for r in results if r["outcome"] == "stale")
    assert registry.get_champion(client, model_name) == winner["version"]
    assert loser["current_champion"] == winner["version"]
    trail = registry.audit_trail(client, model_name)
    # No lost update: one entry per move, the winner's move recorded from v1.
    assert [(e["from"], e["to"]) for e in trail] == [(None, v1), (v1, winner["version"])]
    assert no_lock_left(client, model_name)


def no_lock_left(client, name: str) -> bool:
    """Neither the lock nor a retire guard of it is left."""
    prefix = registry.lock_name(name)
    return not client.search_registered_models(filter_string=f"name LIKE '{prefix}%'")


def test_dead_holder_lock_row_times_out_then_is_broken(client, model_name, model_uri):
    """A promoter died holding the lock: until its lease ends the next promotion waits and
    times out naming the holder; after it, the lock is broken and the promotion goes on."""
    (v1,) = register(client, model_name, model_uri)
    lname = registry.lock_name(model_name)
    client.create_registered_model(
        lname,
        tags={
            "lock.owner": "other",
            "lock.holder": "elsewhere:1",
            "lock.expires_at": f"{time.time() + 600}",
        },
    )
    with pytest.raises(PromotionLockTimeout, match="elsewhere:1") as caught:
        registry.promote(
            client, model_name, v1, expected_champion=None, decision_uri=None, airflow_run=None,
            reason="x", lock_timeout=1.0,
        )  # fmt: skip
    assert caught.value.holder == "elsewhere:1" and caught.value.lock_name == lname
    assert registry.get_champion(client, model_name) is None
    assert (
        client.get_registered_model(lname).tags["lock.owner"] == "other"
    )  # a live lease is never broken
    # The lease ran out: the next promotion breaks the lock.
    client.set_registered_model_tag(lname, "lock.expires_at", f"{time.time() - 1}")
    result = registry.promote(
        client,
        model_name,
        v1,
        expected_champion=None,
        decision_uri=None,
        airflow_run=None,
        reason="x",
    )
    assert result.outcome == "promoted"
    assert [(e["from"], e["to"]) for e in registry.audit_trail(client, model_name)] == [(None, v1)]
    assert no_lock_left(client, model_name)


def _failing(real: Any, when: Any) -> Any:
    """``real``, except that it raises an MLflow error for the calls ``when`` accepts."""
    from mlflow.exceptions import MlflowException

    def call(*args: Any, **kwargs: Any) -> Any:
        if when(*args):
            raise MlflowException(
                "injected: the tracking server failed", error_code="INTERNAL_ERROR"
            )
        return real(*args, **kwargs)

    return call


@pytest.mark.parametrize("failing_step", ["alias", "audit"])
def test_mlflow_failure_under_the_lock_releases_it_and_changes_nothing(
    client, model_name, model_uri, monkeypatch, failing_step
):
    v1, v2 = register(client, model_name, model_uri, 2)
    registry.promote(
        client,
        model_name,
        v1,
        expected_champion=None,
        decision_uri="u",
        airflow_run="r",
        reason="x",
    )
    client.set_model_version_tag(model_name, v2, "airflow_run", "earlier-run")
    before = dict(client.get_model_version(model_name, v2).tags)
    if failing_step == "alias":
        monkeypatch.setattr(
            client,
            "set_registered_model_alias",
            _failing(client.set_registered_model_alias, lambda *a: True),
        )
    else:
        audit = registry.AUDIT_TAG_PREFIX
        monkeypatch.setattr(
            client,
            "set_registered_model_tag",
            _failing(client.set_registered_model_tag, lambda n, k, v: k.startswith(audit)),
        )

    with pytest.raises(Exception, match="injected"):
        registry.promote(
            client,
            model_name,
            v2,
            expected_champion=v1,
            decision_uri="u2",
            airflow_run="r2",
            reason="y",
        )
    monkeypatch.undo()

    assert registry.get_champion(client, model_name) == v1
    assert [(e["from"], e["to"]) for e in registry.audit_trail(client, model_name)] == [(None, v1)]
    assert (
        dict(client.get_model_version(model_name, v2).tags) == before
    )  # the version's tags put back
    assert no_lock_left(client, model_name)
    again = registry.promote(
        client,
        model_name,
        v2,
        expected_champion=v1,
        decision_uri="u2",
        airflow_run="r2",
        reason="y",
    )
    assert again.outcome == "promoted" and again.audit_seq == 2


def test_lost_lock_stops_the_move(client, model_name, model_uri, monkeypatch):
    """The lock is taken over (here: deleted and re-created by someone else) while the
    promotion works: the next write under it is refused with PromotionLockLost and the
    champion does not move."""
    v1, v2 = register(client, model_name, model_uri, 2)
    registry.promote(
        client,
        model_name,
        v1,
        expected_champion=None,
        decision_uri="u",
        airflow_run="r",
        reason="x",
    )
    lname = registry.lock_name(model_name)

    def take_over(step: str) -> None:
        if step == "move.alias":
            client.delete_registered_model(lname)
            client.create_registered_model(
                lname,
                tags={
                    "lock.owner": "thief",
                    "lock.holder": "thief:9",
                    "lock.expires_at": f"{time.time() + 60}",
                },
            )

    monkeypatch.setattr(registry, "_pause", take_over)
    with pytest.raises(PromotionLockLost, match=r"taken over before move\.alias") as caught:
        registry.promote(
            client,
            model_name,
            v2,
            expected_champion=v1,
            decision_uri="u",
            airflow_run="r",
            reason="y",
        )
    assert caught.value.holder == "thief:9"
    assert registry.get_champion(client, model_name) == v1
    assert [(e["from"], e["to"]) for e in registry.audit_trail(client, model_name)] == [(None, v1)]
    # The thief's lock is not ours to release.
    assert client.get_registered_model(lname).tags["lock.owner"] == "thief"


def test_release_stalled_past_its_guard_lease_still_releases(
    client, model_name, model_uri, monkeypatch
):
    """The holder stalls while releasing, longer than the retire guard's lease, and no one
    else is waiting to break the lock: it retries with a fresh guard instead of leaving
    the lock to block the next promotion for a whole ttl."""
    (v1,) = register(client, model_name, model_uri)
    stalled: list[str] = []

    def stall_once(step: str) -> None:
        if step == "lock.retire" and not stalled:
            stalled.append(step)
            time.sleep(3.2)

    monkeypatch.setattr(registry, "_pause", stall_once)
    result = registry.promote(
        client, model_name, v1, expected_champion=None, decision_uri="u", airflow_run="r",
        reason="x", lock_ttl=3.0,
    )  # fmt: skip
    assert result.outcome == "promoted" and stalled
    assert no_lock_left(client, model_name)


def test_rollback_restores_previous_champion_and_walks_back(client, model_name, model_uri):
    v1, v2, v3 = register(client, model_name, model_uri, 3)
    for v in (v1, v2, v3):
        passed(client, model_name, v)
    kw: dict[str, Any] = dict(decision_uri="u", airflow_run="r", reason="better")
    registry.promote(client, model_name, v1, expected_champion=None, **kw)
    registry.promote(client, model_name, v2, expected_champion=v1, **kw)
    registry.promote(client, model_name, v3, expected_champion=v2, **kw)

    back = registry.rollback(
        client, model_name, reason="v3 misbehaves in production", airflow_run="rollback/1"
    )
    assert back.outcome == "rolled_back" and back.previous_champion == v3 and back.version == v2
    assert registry.get_champion(client, model_name) == v2
    tags = client.get_model_version(model_name, v2).tags
    assert tags["rollback_reason"] == "v3 misbehaves in production"
    assert tags["previous_champion"] == v3
    # A second rollback goes further back instead of flipping to v3 again.
    assert registry.rollback(client, model_name, reason="v2 too").version == v1
    trail = registry.audit_trail(client, model_name)
    assert [(e["action"], e["from"], e["to"]) for e in trail][-2:] == [
        ("rollback", v3, v2),
        ("rollback", v2, v1),
    ]
    # Named target that passed validation.
    assert (
        registry.rollback(client, model_name, to_version=v3, reason="fixed upstream").version == v3
    )


def test_rollback_refuses_unknown_failed_and_unvalidated_versions(client, model_name, model_uri):
    v1, v2, v3 = register(client, model_name, model_uri, 3)
    passed(client, model_name, v1)
    registry.mark_validation(
        client, model_name, v2, {"outcome": "reject", "decision_id": "d2", "reasons": ["worse"]}
    )
    registry.promote(
        client,
        model_name,
        v1,
        expected_champion=None,
        decision_uri="u",
        airflow_run="r",
        reason="x",
    )

    with pytest.raises(RollbackRefused, match="needs a reason"):
        registry.rollback(client, model_name, to_version=v1, reason=" ")
    with pytest.raises(RollbackRefused, match=r"version 42 .* does not exist"):
        registry.rollback(client, model_name, to_version="42", reason="typo")
    with pytest.raises(RollbackRefused, match="validation_status=failed"):
        registry.rollback(client, model_name, to_version=v2, reason="try it")
    with pytest.raises(RollbackRefused, match="validation_status=none"):
        registry.rollback(client, model_name, to_version=v3, reason="try it")
    with pytest.raises(RollbackRefused, match="no previous champion"):
        registry.rollback(client, model_name, reason="nothing before v1")
    assert registry.get_champion(client, model_name) == v1

    forced = registry.rollback(
        client, model_name, to_version=v2, reason="incident 7: v1 broken", force=True
    )
    assert forced.outcome == "rolled_back" and registry.get_champion(client, model_name) == v2
    assert client.get_model_version(model_name, v2).tags["rollback_reason"].startswith("[forced] ")
    assert registry.audit_trail(client, model_name)[-1]["forced"] is True


def test_champion_alias_to_deleted_version(client, model_name, model_uri):
    v1, v2 = register(client, model_name, model_uri, 2)
    registry.promote(
        client,
        model_name,
        v1,
        expected_champion=None,
        decision_uri="u",
        airflow_run="r",
        reason="x",
    )
    client.delete_model_version(model_name, v1)

    status = registry.champion_status(client, model_name)
    assert status.state == "deleted" and status.version is None and status.deleted_version == v1
    assert "was deleted" in status.detail
    assert registry.get_champion(client, model_name) is None
    # An evaluation that still saw v1 is stale; one that saw no champion may promote.
    stale = registry.promote(
        client, model_name, v2, expected_champion=v1, decision_uri="u", airflow_run="r", reason="x"
    )
    assert stale.outcome == "stale" and "deleted" in stale.detail
    ok = registry.promote(
        client,
        model_name,
        v2,
        expected_champion=None,
        decision_uri="u",
        airflow_run="r",
        reason="x",
    )
    assert ok.outcome == "promoted" and registry.get_champion(client, model_name) == v2


def test_mark_validation_tags_from_a_decision(client, model_name, model_uri):
    (v1,) = register(client, model_name, model_uri)
    decision = Decision(
        outcome="reject", reasons=["guardrail brier regressed"], task="classification",
        primary_metric="roc_auc", higher_is_better=True, method="bootstrap",
        compared_against="champion:3", n_rows=1000, decision_id="abc123",
    )  # fmt: skip
    tags = registry.mark_validation(
        client, model_name, v1, decision, decision_uri="/r/decision.json"
    )
    stored = client.get_model_version(model_name, v1).tags
    assert stored["validation_status"] == "failed" == tags["validation_status"]
    assert stored["decision_id"] == "abc123"
    assert stored["validation_reason"] == "reject: guardrail brier regressed"
    assert stored["decision_uri"] == "/r/decision.json"


def test_decision_record_is_logged_as_run_artifacts(client, tmp_path):
    import numpy as np

    from mlops_loop.core.compare import decide
    from mlops_loop.core.config import EvaluationSettings
    from mlops_loop.core.decision_report import CurveData, write_decision_record
    from mlops_loop.core.storage import LocalStorage

    rng = np.random.default_rng(0)
    y = (rng.random(600) < 0.3).astype(int)
    challenger = np.clip(0.5 * y + 0.5 * rng.random(600), 0, 1)
    decision = decide(
        y,
        challenger,
        None,
        EvaluationSettings(n_bootstrap=100, min_holdout_rows=100),
        challenger_version="1",
    )
    run = client.create_run(client.create_experiment(f"decisions-{uuid.uuid4().hex[:6]}"))
    out = write_decision_record(
        LocalStorage(), str(tmp_path), decision, CurveData("classification", y, challenger, None),
        mlflow_client=client, run_id=run.info.run_id,
    )  # fmt: skip
    logged = {f.path for f in client.list_artifacts(run.info.run_id, out["artifact_path"])}
    assert logged == {
        f"{out['artifact_path']}/decision.json",
        f"{out['artifact_path']}/report.html",
    }

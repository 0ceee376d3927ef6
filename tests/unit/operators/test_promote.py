"""PromoteModelOperator / RollbackChampionOperator: argument checks and the no-op paths
without services; promotion, re-run, stale compare-and-set and rollback against a real
MLflow server (marked integration)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from mlops_loop.exceptions import PromotionStale, RollbackRefused
from mlops_loop.operators.promote import PromoteModelOperator, RollbackChampionOperator
from tests.fixtures.decisions import decision_dict

DEAD_SERVER = "http://127.0.0.1:9"  # nothing listens: a registry call would fail loudly
CONFIG = Path(__file__).resolve().parents[3] / "include" / "config" / "credit_default.yaml"


@pytest.mark.parametrize("cls", [PromoteModelOperator, RollbackChampionOperator])
def test_template_fields_are_constructor_arguments(cls):
    params = inspect.signature(cls.__init__).parameters
    assert all(f in params for f in cls.template_fields)


def test_promote_needs_a_decision():
    with pytest.raises(ValueError, match="decision"):
        PromoteModelOperator(task_id="p")


@pytest.mark.parametrize("outcome", ["reject", "insufficient_data"])
def test_promote_is_a_noop_unless_the_decision_says_promote(outcome):
    op = PromoteModelOperator(
        task_id="p", decision=decision_dict(outcome), mlflow_tracking_uri=DEAD_SERVER
    )
    result = op.execute({})
    assert result["outcome"] == "rejected"
    assert result["promoted_version"] is None
    assert outcome in result["why"]


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"model_name": "m", "reason": ""}, id="empty-reason"),
        pytest.param({"model_name": "m", "reason": "   "}, id="blank-reason"),
        pytest.param({"reason": "why"}, id="no-model-or-config"),
    ],
)
def test_rollback_arguments_are_checked(kwargs):
    cause = "needs a reason" if "model_name" in kwargs else "pass model_name or config_path"
    with pytest.raises(ValueError, match=cause):
        RollbackChampionOperator(task_id="r", **kwargs)


# --------------------------------------------------------------- with a real MLflow server


def _register(client, name: str, runs: int) -> list[str]:
    """Register ``runs`` versions (an artifact-less run each is enough for alias moves)."""
    import mlflow

    if client.search_registered_models(f"name = '{name}'") == []:
        client.create_registered_model(name)

    mlflow.set_tracking_uri(client.tracking_uri)
    versions = []
    for _ in range(runs):
        with mlflow.start_run() as run:
            pass
        mv = client.create_model_version(
            name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
        )
        versions.append(str(mv.version))
    return versions


@pytest.mark.integration
def test_promote_rerun_and_stale_against_a_real_registry(mlflow_server):
    import mlflow

    from mlops_loop.core.registry import audit_trail, get_champion

    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    name = "unit_promote_model"
    v1, v2, v3 = _register(client, name, 3)

    def op(version: str, expected: str | None, **kw):
        d = decision_dict(
            model_name=name, challenger_version=version, expected_champion_version=expected
        )
        return PromoteModelOperator(
            task_id="p", decision=d, mlflow_tracking_uri=mlflow_server.url, **kw
        )

    first = op(v1, None).execute({})
    assert first == {
        **first,
        "outcome": "promoted",
        "promoted_version": v1,
        "previous_champion": None,
    }
    trail = audit_trail(client, name)
    assert op(v1, None).execute({})["outcome"] == "noop"
    assert audit_trail(client, name) == trail

    # v2 was evaluated against "no champion", but v1 is champion now: stale, not overwritten.
    with pytest.raises(PromotionStale, match="not overwriting") as info:
        op(v2, None).execute({})
    assert info.value.current == v1 and info.value.expected is None
    assert get_champion(client, name) == v1
    stale = op(v2, None, fail_on_stale=False).execute({})
    assert stale["outcome"] == "stale" and stale["promoted_version"] is None
    assert get_champion(client, name) == v1

    assert op(v3, v1).execute({})["promoted_version"] == v3
    client.set_model_version_tag(name, v1, "validation_status", "passed")
    back = RollbackChampionOperator(
        task_id="r", model_name=name, reason="bad v3", mlflow_tracking_uri=mlflow_server.url
    ).execute({})
    assert (
        back["outcome"] == "rolled_back"
        and back["version"] == v1
        and back["previous_champion"] == v3
    )
    with pytest.raises(RollbackRefused, match="does not exist"):
        RollbackChampionOperator(
            task_id="r",
            model_name=name,
            reason="typo",
            to_version="77",
            mlflow_tracking_uri=mlflow_server.url,
        ).execute({})
    assert get_champion(client, name) == v1


@pytest.mark.integration
def test_promotion_reason_comes_from_what_started_the_run(mlflow_server):
    """Empty reason: the drift report that started the run is the promotion_reason tag
    and the audit entry's reason; a typed reason wins; with nothing known, the decision's
    reasons (as before)."""
    import mlflow

    from mlops_loop.core.registry import audit_trail
    from tests.unit.operators.test_triggers import DRIFT_EXTRA, REPORT, context, event

    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    name = "unit_promote_reason_model"
    v1, v2, v3 = _register(client, name, 3)
    drift_run = context(event("mlops_loop.credit_default.retrain_requested", DRIFT_EXTRA))

    def promote(version: str, expected: str | None, reason: str, ctx) -> dict:
        d = decision_dict(
            model_name=name, challenger_version=version, expected_champion_version=expected
        )
        return PromoteModelOperator(
            task_id="p", decision=d, reason=reason, mlflow_tracking_uri=mlflow_server.url
        ).execute(ctx)

    derived = f"drift report 2026-04-22: drift in interest_rate, credit_score (report {REPORT})"
    assert promote(v1, None, "", drift_run)["reason"] == derived
    assert client.get_model_version(name, v1).tags["promotion_reason"] == derived
    assert audit_trail(client, name)[-1]["reason"] == derived

    promote(v2, v1, "a person's reason", drift_run)
    assert client.get_model_version(name, v2).tags["promotion_reason"] == "a person's reason"

    promote(v3, v2, "", {})
    assert client.get_model_version(name, v3).tags["promotion_reason"] == (
        "decision abc: roc_auc 0.80 vs 0.70"
    )


@pytest.mark.integration
def test_rollback_targets_must_have_passed_validation_unless_forced_with_a_reason(mlflow_server):
    """A previous champion that was never validated (or was inconclusive) is no default
    rollback target; force needs a reason and is recorded as forced."""
    import mlflow

    from mlops_loop.core.registry import audit_trail, get_champion, promote, rollback

    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    name = "unit_rollback_unvalidated_model"
    v1, v2 = _register(client, name, 2)  # neither carries validation_status
    promote(
        client, name, v1, expected_champion=None, decision_uri=None, airflow_run=None, reason="a"
    )
    promote(client, name, v2, expected_champion=v1, decision_uri=None, airflow_run=None, reason="b")

    def op(**kw):
        return RollbackChampionOperator(
            task_id="r", model_name=name, mlflow_tracking_uri=mlflow_server.url, **kw
        )

    with pytest.raises(RollbackRefused, match=r"validation_status=none \(previous champion\)"):
        op(reason="v2 misbehaves").execute({})
    client.set_model_version_tag(name, v1, "validation_status", "inconclusive")
    with pytest.raises(RollbackRefused, match="validation_status=inconclusive"):
        op(reason="v2 misbehaves").execute({})
    with pytest.raises(RollbackRefused, match="needs a reason"):
        rollback(client, name, reason=" ", force=True)
    assert get_champion(client, name) == v2

    back = op(reason="incident 3: v2 down", force="True").execute({})
    assert back["outcome"] == "rolled_back" and back["version"] == v1
    assert (
        client.get_model_version(name, v1).tags["rollback_reason"] == "[forced] incident 3: v2 down"
    )
    entry = audit_trail(client, name)[-1]
    assert (entry["reason"], entry["forced"]) == ("incident 3: v2 down", True)


def test_promote_and_rollback_never_show_credentials_of_a_tracking_uri():
    uri = "https://alice:s3cret@mlflow.example.com"
    promote = PromoteModelOperator(
        task_id="p", decision={"outcome": "reject"}, mlflow_tracking_uri=uri
    )
    rollback = RollbackChampionOperator(
        task_id="r", config_path="x.yaml", reason="r", mlflow_tracking_uri=uri
    )
    for op in (promote, rollback):
        assert op.mlflow_tracking_uri == "https://mlflow.example.com"  # the rendered field
        server = op.mlflow_hook.server  # signs in with them, shows none
        assert server.uri == "https://mlflow.example.com"
        assert server.secrets["MLFLOW_TRACKING_PASSWORD"] == "s3cret"


@pytest.mark.parametrize(
    ("decided", "match"),
    [
        pytest.param({"model_name": "another_datasets_model"}, "not 'credit_default_model'", id="other-model"),
        pytest.param({"challenger_version": "1"}, "this run trained version 7", id="other-version"),
    ],
)  # fmt: skip
def test_promote_refuses_a_decision_about_another_model_or_version(decided, match):
    """The decision is the trainer's output: a tampered one naming another dataset's
    model, or a version this run did not train, moves nothing (no server is asked)."""
    from mlops_loop.exceptions import RegistryError

    decision = decision_dict(
        **{"model_name": "credit_default_model", "challenger_version": "7", **decided}
    )
    op = PromoteModelOperator(
        task_id="p",
        decision=decision,
        config_path=str(CONFIG),
        challenger_version="7",
        mlflow_tracking_uri=DEAD_SERVER,
    )
    with pytest.raises(RegistryError, match=match):
        op.execute({})

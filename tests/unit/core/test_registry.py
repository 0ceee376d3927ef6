"""The promotion lock's pure parts; the protocol itself is tested against a real MLflow
server in tests/integration/test_registry.py and test_promotion_race.py."""

from __future__ import annotations

import time

import pytest

from mlops_loop.core import registry
from mlops_loop.exceptions import PromotionLockLost


def test_retire_guard_names_are_valid_model_names_for_any_owner_token():
    lname = registry.lock_name("credit")
    odd = registry._guard_name(lname, "a/b:c", 1)
    assert odd.startswith("credit.__promotion_lock__.retire.") and odd.endswith(".1")
    assert "/" not in odd and ":" not in odd
    assert registry._guard_name(lname, "a/b:c", 2) != odd
    assert registry._guard_name(lname, "other", 1) != odd
    assert registry._guard_name(lname, "a/b:c", 1) == odd


@pytest.mark.parametrize(
    ("expires_at", "expired"),
    [
        pytest.param(None, False, id="no-expiry-never-expires"),
        pytest.param("soon", True, id="garbage"),
        pytest.param(-1.0, True, id="past"),
        pytest.param(60.0, False, id="future"),
    ],
)
def test_lock_expiry(expires_at, expired):
    if isinstance(expires_at, float):
        expires_at = f"{time.time() + expires_at:.3f}"
    tags = {} if expires_at is None else {"lock.expires_at": expires_at}
    assert registry._expired(tags) is expired


def test_a_lease_that_ran_out_is_never_renewed():
    """No request at all (client None): a breaker may already be deleting the lock."""
    lease = registry.Lease(
        None, "m", "m.__promotion_lock__", "tok", ttl=10.0, expires_at=time.time() + 1.0
    )
    with pytest.raises(PromotionLockLost, match=r"lease ran out before move\.alias") as caught:
        lease.renew("move.alias")  # 1 s left is inside the margin (a quarter of the ttl)
    assert caught.value.lock_name == "m.__promotion_lock__" and caught.value.model_name == "m"


@pytest.mark.parametrize(
    ("entry", "alias_now", "live", "applied"),
    [
        ({"from": "1", "to": "2"}, "2", True, True),  # the move happened
        ({"from": "1", "to": "2"}, "1", True, False),  # the promoter died before the alias write
        ({"from": None, "to": "1"}, None, True, False),  # the same, for a first promotion
        ({"from": "1", "to": "2"}, None, False, True),  # champion deleted since (alias dropped)
        ({"from": "1", "to": "2"}, "5", True, True),  # moved by hand afterwards: still happened
        ({"from": "1", "to": "2", "applied": False}, "2", True, False),  # marked by a later holder
    ],
    ids=["moved", "alias-never-moved", "first-never-moved", "target-deleted", "moved-by-hand", "marked"],
)  # fmt: skip
def test_newest_audit_entry_counts_only_when_its_alias_moved(entry, alias_now, live, applied):
    from mlops_loop.core.registry import _last_move_applied

    assert _last_move_applied(entry, alias_now, lambda version: live) is applied

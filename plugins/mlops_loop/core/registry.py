"""The MLflow model registry side of champion/challenger: who is champion, a compare-and-set
promotion with an audit trail, rollback, and validation tags on model versions.

MLflow has no conditional ("compare-and-set") write. What its server does provide
atomically is creating a registered model: the name is a primary key, so of two clients
creating the same name exactly one succeeds and the other gets RESOURCE_ALREADY_EXISTS.
Everything below is built on that one primitive.

The lock: a registered model ``<name>.__promotion_lock__`` exists while one promotion or
rollback of ``<name>`` is moving the alias. Its tags: ``lock.owner`` (a random token per
acquisition), ``lock.holder`` (host:pid) and ``lock.expires_at`` (the end of its lease).
Whoever creates it holds it (confirmed by re-reading the owner). The holder renews the
lease (``Lease.renew``) right before each write: it re-reads ``lock.owner``, refuses once
its own lease has run out, and extends ``lock.expires_at`` by ``lock_ttl``. So nothing
is written (PromotionLockLost) after the lock is lost.

Breaking a lock whose holder died: once ``lock.expires_at`` has passed, a waiter breaks
it, but deletion by name is unconditional, so only the winner of a retire guard deletes:
the registered model ``<lock>.retire.<hash of the owner token>.<k>``, created atomically.
The winner re-reads the lock and deletes it only if it still carries the same expired
owner token; since tokens are never reused, a breaker that read an old token can never
delete a newer lock. Then everyone races to create the lock again, and one wins. A guard
whose own holder died is taken over after its lease by creating guard ``k + 1``. The
holder releases its lock through the same guard.

Under the lock a promotion re-reads the alias, compares it with the champion the
evaluation saw, and only then moves it, so racing promotions end with exactly one winner
and the losers report "stale". What is left, as with any lease without a fencing token
checked by the storage (MLflow has none): writers that bypass the lock (a person moving
the alias in the MLflow UI); a process that stalls between its last check and the write
that follows it for longer than the lease it then had left (at least LEASE_MARGIN of
``lock_ttl``: 75 s by default); host clocks that disagree by more than that margin. A
holder that loses the lock leaves the tags it already wrote on the target version (a
later holder may own them now). A lock row without ``lock.expires_at`` (made by hand)
never expires.

Audit trail: every alias move appends a registered-model tag ``audit.champion.<seq>``
(JSON: action, from, to, reason, decision URI, Airflow run, time, holder). Tags are
written under the lock, so sequence numbers never collide. The entry is written just
before the alias moves and the version's tags (promoted_at, ...) only after it, so a
promoter that dies between two writes leaves either nothing, or an entry whose alias
never moved, or a move whose version tags are missing. The entry is removed again when
the alias write fails and the server still answers. When it does not, the entry stays
behind: :func:`audit_trail` reports the newest entry as not applied while the alias
still points where the entry started (readers never see a move that did not happen),
and the next lock holder marks it ``applied: false`` in the tag before writing its own
entry (or, for a move whose version tags are missing, writes them from the entry).

``_pause(step)`` is a no-op test hook at each step of the protocol (see its docstring).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from mlops_loop.exceptions import (
    PromotionLockLost,
    PromotionLockTimeout,
    RegistryError,
    RollbackRefused,
)

log = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
LOCK_SUFFIX = ".__promotion_lock__"
AUDIT_TAG_PREFIX = "audit.champion."
DEFAULT_LOCK_TIMEOUT = 60.0
DEFAULT_LOCK_TTL = 300.0
# A holder stops writing this fraction of its ttl before its lease ends: room for clock
# skew between hosts and for one slow MLflow request.
LEASE_MARGIN = 0.25
GUARD_INFIX = ".retire."
TAG_LOCK_OWNER = "lock.owner"
TAG_LOCK_HOLDER = "lock.holder"
TAG_LOCK_EXPIRES = "lock.expires_at"
TAG_GUARD_EXPIRES = "guard.expires_at"
MAX_TAG_VALUE = 5000  # kept well below MLflow's limit so tags stay readable in the UI

# Model version tags.
TAG_VALIDATION_STATUS = "validation_status"  # passed | failed | inconclusive
TAG_DECISION_ID = "decision_id"
TAG_VALIDATION_REASON = "validation_reason"
TAG_DECISION_URI = "decision_uri"
TAG_PREVIOUS_CHAMPION = "previous_champion"
TAG_AIRFLOW_RUN = "airflow_run"
TAG_PROMOTED_AT = "promoted_at"
TAG_PROMOTION_REASON = "promotion_reason"
TAG_ROLLED_BACK_AT = "rolled_back_at"
TAG_ROLLBACK_REASON = "rollback_reason"
TAG_APPROVED_BY = "approved_by"  # the person who approved the promotion (evaluation.approval)
TAG_APPROVED_AT = "approved_at"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _error_code(exc: BaseException) -> str:
    return str(getattr(exc, "error_code", "") or "")


def _is_missing(exc: BaseException) -> bool:
    return _error_code(exc) == "RESOURCE_DOES_NOT_EXIST"


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# ------------------------------------------------------------------------ champion lookup


@dataclass(frozen=True)
class ChampionStatus:
    """What the champion alias points at.

    ``state``: ``present`` (a live version), ``none`` (no alias, never promoted or the
    model is not registered), ``deleted`` (the last recorded champion was deleted, so the
    alias is gone or dangles). ``version`` is set only when present; ``deleted_version``
    names the version that was deleted.
    """

    model_name: str
    state: Literal["present", "none", "deleted"]
    version: str | None
    detail: str
    deleted_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def live_version(client: Any, name: str, version: str) -> Any | None:
    """The ModelVersion, or None when it does not exist or was deleted."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version(name, version)
    except MlflowException as exc:
        if _is_missing(exc) or _error_code(exc) == "INVALID_PARAMETER_VALUE":
            return None
        raise
    if str(getattr(mv, "current_stage", "")).lower() in ("deleted_internal", "deleted"):
        return None
    return mv


def _registered_model(client: Any, name: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if _is_missing(exc):
            return None
        raise


def champion_status(client: Any, name: str, alias: str = CHAMPION_ALIAS) -> ChampionStatus:
    """Read the alias and check the version behind it exists (one registry round trip
    for the model, one for the version)."""
    model = _registered_model(client, name)
    if model is None:
        return ChampionStatus(name, "none", None, f"model {name!r} is not registered")
    aliased = dict(getattr(model, "aliases", {}) or {}).get(alias)
    if aliased is not None:
        aliased = str(aliased)
        if live_version(client, name, aliased) is not None:
            return ChampionStatus(name, "present", aliased, f"{alias} is version {aliased}")
        return ChampionStatus(
            name, "deleted", None,
            f"alias {alias!r} of {name!r} points at version {aliased}, which was deleted: no valid champion",
            deleted_version=aliased,
        )  # fmt: skip
    # The SQL registry drops an alias together with its version; the audit trail still
    # says which version was champion, so a deletion is reported instead of silence.
    trail = _applied_only(client, model)
    last = next((e for e in reversed(trail) if e.get("alias", CHAMPION_ALIAS) == alias), None)
    if last and last.get("to") and live_version(client, name, str(last["to"])) is None:
        gone = str(last["to"])
        return ChampionStatus(
            name, "deleted", None,
            f"alias {alias!r} of {name!r} is gone: its last recorded target, version {gone}, was deleted; "
            "no valid champion",
            deleted_version=gone,
        )  # fmt: skip
    return ChampionStatus(name, "none", None, f"{name!r} has no {alias!r} alias")


def get_champion(client: Any, name: str, alias: str = CHAMPION_ALIAS) -> str | None:
    """The champion's version number, or None (logged with the reason when the champion
    was deleted)."""
    status = champion_status(client, name, alias)
    if status.state == "deleted":
        log.warning("%s", status.detail)
    return status.version


# ---------------------------------------------------------------------------- the lock


def lock_name(name: str) -> str:
    return f"{name}{LOCK_SUFFIX}"


def _guard_name(lname: str, owner: str, k: int) -> str:
    # Hashed: an owner token read from a hand-made lock may hold characters a name may not.
    return f"{lname}{GUARD_INFIX}{hashlib.sha256(owner.encode()).hexdigest()[:16]}.{k}"


def _pause(step: str) -> None:
    """Test hook, a no-op: called at each step of the lock protocol, always *before* the
    check that guards the step's write, so a delay injected here models a stall the
    protocol must survive. Tests replace it (``monkeypatch.setattr(registry, "_pause",
    ...)`` or, in a worker process, plain assignment). Steps: ``lock.create`` (before each
    attempt to create the lock), ``lock.expired`` (an expired lock was read; before
    breaking it), ``lock.retire`` (retire guard won; before re-reading the lock and
    deleting it), ``move.audit``, ``move.alias`` (under the lock, before the lease is
    renewed for that write), ``move.tags`` (after the alias moved, before the version's
    tags are written), ``lock.release``."""


def _tags(model: Any) -> dict[str, str]:
    return {} if model is None else dict(getattr(model, "tags", {}) or {})


def _expired(tags: Mapping[str, str], key: str = TAG_LOCK_EXPIRES) -> bool:
    # No expiry tag: never expires (a lock made by hand to freeze promotions); garbage: expired.
    try:
        return float(tags.get(key, "inf")) < time.time()
    except ValueError:
        return True


def _create(client: Any, name: str, tags: Mapping[str, str], description: str) -> None:
    """Create a registered model; losing the race for its name is not an error (the
    caller reads the model to find out who won)."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, tags=dict(tags), description=description)
    except MlflowException as exc:
        # DOES_NOT_EXIST: the server lost the race it reports (the winner was deleted meanwhile).
        if _error_code(exc) not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
            raise


def _delete(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.delete_registered_model(name)
    except MlflowException as exc:
        if not _is_missing(exc):  # a retried request whose first try went through
            raise


def _retire(client: Any, lname: str, owner: str, ttl: float, *, expired_only: bool) -> bool:
    """Delete the lock ``lname`` only while its ``lock.owner`` still is ``owner`` (and,
    with ``expired_only``, its lease has run out); True when this call deleted it.

    Deleting by name is not conditional, so whoever deletes a lock must first win its
    retire guard, the registered model ``_guard_name(lname, owner, k)``: of several
    breakers of one expired lock exactly one creates it, and it re-reads the lock only
    after winning, so a breaker that read an old owner finds a new owner and deletes
    nothing. A guard whose holder died is taken over, after its own lease, by creating
    guard ``k + 1``; the holder of ``k`` checks that ``k + 1`` does not exist right
    before deleting. One stall past the guard's lease is retried with a fresh guard, so
    a slow release still releases.
    """
    for _ in range(2):
        done = _retire_once(client, lname, owner, ttl, expired_only=expired_only)
        if done is not None:
            return done
    return False


def _retire_once(
    client: Any, lname: str, owner: str, ttl: float, *, expired_only: bool
) -> bool | None:
    """One attempt of :func:`_retire`; None when it was too slow to delete safely."""
    me = uuid.uuid4().hex
    k = 1
    while True:
        guard = _guard_name(lname, owner, k)
        guard_expires = time.time() + ttl
        _create(
            client,
            guard,
            {
                "guard.owner": me,
                "guard.holder": _holder(),
                TAG_GUARD_EXPIRES: f"{guard_expires:.3f}",
            },
            f"Retiring promotion lock {lname!r} of owner {owner!r}; deleted when done.",
        )
        gtags = _tags(_registered_model(client, guard))
        if gtags.get("guard.owner") == me:
            break
        if not gtags or not _expired(gtags, TAG_GUARD_EXPIRES):
            return False  # another party is retiring this lock (or just did)
        k += 1
    gone, taken_over = False, False
    try:
        _pause("lock.retire")
        lock = _registered_model(client, lname)
        ltags = _tags(lock)
        if lock is None or ltags.get(TAG_LOCK_OWNER, "") != owner:
            gone = True  # tokens are never reused: this owner's lock is gone for good
            return False
        if expired_only and not _expired(ltags):
            return False  # the holder renewed its lease
        if _registered_model(client, _guard_name(lname, owner, k + 1)) is not None:
            taken_over = True
            return False
        if time.time() > guard_expires - ttl * LEASE_MARGIN:
            return None  # too slow: our guard may be taken over any moment
        _delete(client, lname)
        gone = True
        return True
    finally:
        if not taken_over:
            # Older guards of this owner are stale (their holders died); once the lock is
            # gone they guard nothing.
            for j in range(k, 0, -1) if gone else (k,):
                with contextlib.suppress(Exception):
                    _delete(client, _guard_name(lname, owner, j))


@dataclass
class Lease:
    """The promotion lock as held by this process. ``token`` is the lock's ``lock.owner``;
    ``expires_at`` the wall-clock end of the lease as last written on the lock."""

    client: Any
    model_name: str
    lock_name: str
    token: str
    ttl: float
    expires_at: float

    def _lost(self, why: str, holder: str | None = None) -> PromotionLockLost:
        return PromotionLockLost(
            f"lost the promotion lock {self.lock_name!r} ({why}); not changing {self.model_name!r}",
            model_name=self.model_name,
            lock_name=self.lock_name,
            holder=holder,
        )

    def renew(self, step: str) -> None:
        """Check that this process still owns the lock and extend its lease by ``ttl``;
        raise PromotionLockLost otherwise. Called right before each write under the lock.

        An expired lease is never renewed: a breaker may already be deleting the lock.
        The whole renewal must end inside the old lease, less LEASE_MARGIN, so the
        owner read and the tag write both hit this owner's lock."""
        _pause(step)
        safe_until = self.expires_at - self.ttl * LEASE_MARGIN
        if time.time() > safe_until:
            raise self._lost(f"its lease ran out before {step}")
        tags = _tags(_registered_model(self.client, self.lock_name))
        if tags.get(TAG_LOCK_OWNER) != self.token:
            raise self._lost(f"taken over before {step}", tags.get(TAG_LOCK_HOLDER))
        expires = time.time() + self.ttl
        self.client.set_registered_model_tag(self.lock_name, TAG_LOCK_EXPIRES, f"{expires:.3f}")
        if time.time() > safe_until:
            raise self._lost(f"renewing its lease before {step} took too long")
        self.expires_at = expires

    def owned(self) -> bool:
        """Whether this process still owns the lock (a read; False when unsure)."""
        try:
            tags = _tags(_registered_model(self.client, self.lock_name))
        except Exception:
            return False
        return (
            tags.get(TAG_LOCK_OWNER) == self.token
            and time.time() < self.expires_at - self.ttl * LEASE_MARGIN
        )


@contextlib.contextmanager
def promotion_lock(
    client: Any,
    name: str,
    *,
    timeout: float = DEFAULT_LOCK_TIMEOUT,
    ttl: float = DEFAULT_LOCK_TTL,
    purpose: str = "move champion alias",
) -> Iterator[Lease]:
    """Hold the promotion lock of model ``name`` for the block; yields the Lease, whose
    ``renew`` the block calls before each write.

    Creating the lock's registered model is the atomic step; after creating it the lock
    is re-read to confirm this token owns it. On contention this retries with jittered
    back-off until ``timeout`` and then raises PromotionLockTimeout naming the holder. A
    lock whose lease (``ttl`` seconds, renewed by the holder) ran out is broken through
    :func:`_retire`, so a crashed holder blocks promotions for at most ``ttl``. The lock
    is released on the way out, through the same guard, only if this token still owns it.
    """
    lname = lock_name(name)
    token = uuid.uuid4().hex
    deadline = time.monotonic() + timeout
    delay = 0.05
    holder: str | None = None
    while True:
        _pause("lock.create")
        expires = time.time() + ttl
        _create(
            client,
            lname,
            {
                TAG_LOCK_OWNER: token,
                TAG_LOCK_HOLDER: _holder(),
                TAG_LOCK_EXPIRES: f"{expires:.3f}",
                "lock.purpose": purpose,
            },
            f"Promotion lock for {name!r}, held by {_holder()} to {purpose}. "
            f"Broken by the next promotion once lock.expires_at has passed.",
        )
        current = _registered_model(client, lname)
        tags = _tags(current)
        if tags.get(TAG_LOCK_OWNER) == token:
            break  # ours (also when a retried create request found our own first try)
        if current is not None:
            holder = tags.get(TAG_LOCK_HOLDER)
            if _expired(tags):
                _pause("lock.expired")
                if _retire(client, lname, tags.get(TAG_LOCK_OWNER, ""), ttl, expired_only=True):
                    log.warning("broke expired promotion lock %s held by %s", lname, holder)
                    continue
        if time.monotonic() >= deadline:
            raise PromotionLockTimeout(
                f"could not take the promotion lock {lname!r} within {timeout:.0f}s; "
                f"held by {holder or 'unknown'}",
                model_name=name,
                lock_name=lname,
                holder=holder,
            )
        if current is not None:
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)
    lease = Lease(client, name, lname, token, ttl, expires)
    try:
        yield lease
    finally:
        # Never mask the block's own error; a lock that cannot be released expires after ttl.
        try:
            _pause("lock.release")
            if not _retire(client, lname, token, ttl, expired_only=False):
                log.warning("promotion lock %s was taken over while held; not releasing it", lname)
        except Exception as exc:
            log.warning(
                "could not release promotion lock %s (%s); it expires after %.0fs", lname, exc, ttl
            )


# -------------------------------------------------------------------------- audit trail


def _audit_from_tags(tags: Mapping[str, str]) -> list[dict[str, Any]]:
    entries = []
    for key, value in tags.items():
        if key.startswith(AUDIT_TAG_PREFIX):
            try:
                entries.append(json.loads(value))
            except ValueError:
                entries.append({"seq": int(key.rsplit(".", 1)[-1]), "unreadable": value})
    return sorted(entries, key=lambda e: int(e.get("seq", 0)))


def _last_move_applied(entry: Mapping[str, Any], alias_now: str | None, is_live: Any) -> bool:
    """Whether the newest entry of an alias describes a move that happened. Not applied:
    the alias still points where the entry started (its promoter died between the two
    writes). Without an alias the move happened only if its target was deleted since (the
    SQL registry drops an alias together with its version)."""
    if entry.get("applied") is False:
        return False
    if alias_now is None:
        return entry.get("to") is not None and not is_live(str(entry["to"]))
    frm = entry.get("from")
    return frm is None or str(frm) != str(alias_now)


def _flag_applied(client: Any, name: str, model: Any) -> list[dict[str, Any]]:
    """Every entry with ``applied`` set. Only the newest entry of each alias can be an
    unmarked leftover: the next lock holder marks it before appending (_reconcile)."""
    entries = _audit_from_tags(_tags(model))
    aliases = {k: str(v) for k, v in dict(getattr(model, "aliases", {}) or {}).items()}
    last: dict[str, dict[str, Any]] = {}
    for entry in entries:
        entry["applied"] = entry.get("applied", True) is not False
        if "unreadable" not in entry:
            last[str(entry.get("alias", CHAMPION_ALIAS))] = entry
    for alias, entry in last.items():
        entry["applied"] = _last_move_applied(
            entry, aliases.get(alias), lambda v: live_version(client, name, v) is not None
        )
    return entries


def _applied_only(client: Any, model: Any) -> list[dict[str, Any]]:
    return [e for e in _flag_applied(client, model.name, model) if e["applied"]]


def audit_trail(client: Any, name: str, *, include_unapplied: bool = False) -> list[dict[str, Any]]:
    """Every recorded move of the champion alias of ``name``, oldest first, each with
    ``applied: True``. ``include_unapplied``: also the entries of moves that never
    happened (a promoter lost the server between its audit entry and the alias write),
    with ``applied: False``."""
    model = _registered_model(client, name)
    if model is None:
        return []
    entries = _flag_applied(client, name, model)
    return entries if include_unapplied else [e for e in entries if e["applied"]]


def _audit_key(seq: int) -> str:
    return f"{AUDIT_TAG_PREFIX}{seq:06d}"


def _next_audit_seq(client: Any, name: str) -> int:
    """The next entry's sequence number; call only while holding the promotion lock."""
    trail = audit_trail(client, name, include_unapplied=True)
    return max((int(e.get("seq", 0)) for e in trail), default=0) + 1


def _write_audit(client: Any, name: str, seq: int, entry: Mapping[str, Any]) -> None:
    payload = {"seq": seq, **{k: v for k, v in entry.items() if k != "applied"}}
    if entry.get("applied") is False:
        payload["applied"] = False
    text = json.dumps(payload, sort_keys=True)
    if len(text) > MAX_TAG_VALUE:
        payload["reason"] = str(payload.get("reason", ""))[:1000] + "..."
        text = json.dumps(payload, sort_keys=True)
    client.set_registered_model_tag(name, _audit_key(seq), text)


# ----------------------------------------------------------------- promotion / rollback


@dataclass(frozen=True)
class PromotionResult:
    """What a promotion or rollback did. ``outcome``:

    - ``promoted`` / ``rolled_back``: the alias moved from ``previous_champion`` to ``version``;
    - ``noop``: ``version`` already was champion, nothing changed;
    - ``stale``: the champion changed since the evaluation (``expected_champion``), so the
      alias was left at ``current_champion``; ``detail`` says why.
    """

    outcome: Literal["promoted", "rolled_back", "noop", "stale"]
    model_name: str
    version: str
    previous_champion: str | None
    current_champion: str | None
    expected_champion: str | None
    detail: str
    audit_seq: int | None = None
    at: str | None = None

    @property
    def moved(self) -> bool:
        return self.outcome in ("promoted", "rolled_back")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _require_version(
    client: Any, name: str, version: str, error: type[RegistryError] = RegistryError
) -> Any:
    mv = live_version(client, name, version)
    if mv is None:
        if _registered_model(client, name) is None:
            raise error(f"model {name!r} is not registered", model_name=name, version=version)
        raise error(
            f"version {version} of {name!r} does not exist (or was deleted)",
            model_name=name,
            version=version,
        )
    return mv


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TAG_VALUE else text[: MAX_TAG_VALUE - 3] + "..."


def _version_tags(entry: Mapping[str, Any]) -> dict[str, str]:
    """The tags a move writes on its target version, all derived from its audit entry
    (so the next lock holder can write them if the mover died before it could)."""
    tags = {
        TAG_PREVIOUS_CHAMPION: str(entry.get("from") or "none"),
        TAG_AIRFLOW_RUN: str(entry.get("airflow_run") or ""),
    }
    reason = str(entry.get("reason") or "")
    if entry.get("action") == "rollback":
        tags[TAG_ROLLED_BACK_AT] = str(entry.get("at") or "")
        tags[TAG_ROLLBACK_REASON] = _clip(("[forced] " if entry.get("forced") else "") + reason)
        return tags
    tags[TAG_DECISION_URI] = str(entry.get("decision_uri") or "")
    tags[TAG_PROMOTED_AT] = str(entry.get("at") or "")
    tags[TAG_PROMOTION_REASON] = _clip(reason)
    approval = entry.get("approval") or {}
    if approval.get("approval") == "approved":
        tags[TAG_APPROVED_BY] = str(approval.get("by") or "")
        tags[TAG_APPROVED_AT] = str(approval.get("at") or "")
    return tags


def _moved_at_tag(entry: Mapping[str, Any]) -> str:
    return TAG_ROLLED_BACK_AT if entry.get("action") == "rollback" else TAG_PROMOTED_AT


def _reconcile(lease: Lease, alias: str) -> None:
    """Under the lock, before anything else is written: settle what a mover that lost the
    server midway left behind. An entry whose alias never moved is marked ``applied:
    false`` in its tag; a move whose version tags are missing gets them from its entry."""
    client, name = lease.client, lease.model_name
    model = _registered_model(client, name)
    if model is None:
        return
    entries = [
        e for e in _flag_applied(client, name, model)
        if "unreadable" not in e and e.get("alias", CHAMPION_ALIAS) == alias
    ]  # fmt: skip
    if not entries:
        return
    last = entries[-1]
    stored = json.loads(_tags(model)[_audit_key(int(last["seq"]))])
    if not last["applied"] and stored.get("applied") is not False:
        lease.renew("reconcile")
        log.warning(
            "audit entry %s of %s (%s -> %s) describes a move that never happened; marking it",
            last["seq"], name, last.get("from"), last.get("to"),
        )  # fmt: skip
        _write_audit(
            client, name, int(last["seq"]),
            {**stored, "applied": False, "reconciled_at": _now(), "reconciled_by": _holder()},
        )  # fmt: skip
        return
    target = str(last.get("to"))
    mv = live_version(client, name, target) if last["applied"] else None
    if mv is not None and _tags(mv).get(_moved_at_tag(last)) != str(last.get("at") or ""):
        lease.renew("reconcile")
        log.warning(
            "version %s of %s lacks the tags of audit entry %s; writing them",
            target,
            name,
            last["seq"],
        )
        for key, value in _version_tags(last).items():
            client.set_model_version_tag(name, target, key, value)


def _move_alias(
    lease: Lease,
    alias: str,
    current: str | None,
    target: str,
    audit: Mapping[str, Any],
    airflow_run: str | None,
    at: str,
) -> int:
    """Append the audit entry, move the alias, then tag ``target`` (tags derived from the
    entry); returns the entry's sequence number. The entry and the alias write are each
    preceded by ``lease.renew``, so neither is written once the lock is lost.

    The entry goes before the alias so that no move is ever without an entry; if the
    alias write fails the entry is removed again (best effort; a leftover is reported as
    not applied, see the module docstring). The version's tags follow the move: a
    failure there raises, with the move done and audited."""
    client, name = lease.client, lease.model_name
    audit_key: str | None = None
    entry = {
        "alias": alias, "from": current, "to": target, **audit,
        "airflow_run": airflow_run, "at": at, "holder": _holder(),
    }  # fmt: skip
    try:
        lease.renew("move.audit")
        seq = _next_audit_seq(client, name)
        audit_key = _audit_key(seq)  # set before the write: a failed request may have applied
        _write_audit(client, name, seq, entry)
        lease.renew("move.alias")
        client.set_registered_model_alias(name, alias, target)
    except BaseException:
        _undo_move(lease, alias, target, audit_key)
        raise
    _pause("move.tags")
    try:
        for key, value in _version_tags(entry).items():
            client.set_model_version_tag(name, target, key, value)
    except Exception:
        log.error(
            "%s of %s moved from %s to %s (audit entry %s), but writing the version's tags "
            "failed; the next promotion or rollback writes them from the audit entry",
            alias, name, current or "none", target, seq,
        )  # fmt: skip
        raise
    return seq


def _undo_move(lease: Lease, alias: str, target: str, audit_key: str | None) -> None:
    """Best effort after a failed alias write: unless the alias did reach ``target``,
    drop this move's audit entry (its key is this move's own: a later holder numbers
    after it)."""
    client, name = lease.client, lease.model_name
    if audit_key is None:
        return
    try:
        model = _registered_model(client, name)
        if str(dict(getattr(model, "aliases", {}) or {}).get(alias)) == target:
            return  # the move went through (a request that failed after the server applied it)
        client.delete_registered_model_tag(name, audit_key)
    except Exception as exc:
        log.error(
            "could not remove audit entry %s of %s after the failed move to %s: %s "
            "(it is reported as not applied)", audit_key, name, target, exc,
        )  # fmt: skip


def promote(
    client: Any,
    name: str,
    version: str | int,
    *,
    expected_champion: str | int | None,
    decision_uri: str | None,
    airflow_run: str | None,
    reason: str,
    approval: Mapping[str, Any] | None = None,
    alias: str = CHAMPION_ALIAS,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    lock_ttl: float = DEFAULT_LOCK_TTL,
) -> PromotionResult:
    """Move ``alias`` to ``version`` only if it still points at ``expected_champion``.

    ``approval``: the record of a person's approval (``approval``, ``by``, ``at``), stored
    with the promotion as ``approved_by`` / ``approved_at`` tags and in the audit entry.

    ``expected_champion`` is the champion the evaluation compared against (None: there was
    none). Under the promotion lock the alias is re-read; if it differs, nothing changes
    and the result is ``stale``. Promoting the current champion is a ``noop``. Otherwise
    an audit entry is appended, the alias moves and the version gets tags
    (previous_champion, decision_uri, airflow_run, promoted_at, promotion_reason); the
    entry and the alias write each first check that the lock is still held
    (PromotionLockLost otherwise, nothing moved).
    An MLflow error under the lock releases it and leaves the champion unchanged.
    Raises RegistryError for an unknown or deleted version.
    """
    version = str(version)
    expected = None if expected_champion is None else str(expected_champion)
    _require_version(client, name, version)
    with promotion_lock(
        client, name, timeout=lock_timeout, ttl=lock_ttl, purpose=f"promote {version}"
    ) as lease:
        _reconcile(lease, alias)
        status = champion_status(client, name, alias)
        current = status.version
        if current == version:
            return PromotionResult(
                "noop", name, version, current, current, expected,
                f"version {version} already is {alias}; nothing changed",
            )  # fmt: skip
        if current != expected:
            seen = f"version {expected}" if expected else "no champion"
            now_is = f"version {current}" if current else status.detail
            return PromotionResult(
                "stale", name, version, current, current, expected,
                f"the evaluation compared against {seen}, but {alias} is now {now_is}; "
                "not overwriting it: re-evaluate against the current champion",
            )  # fmt: skip
        at = _now()
        audit: dict[str, Any] = {
            "action": "promote",
            "reason": reason,
            "decision_uri": decision_uri,
        }
        if approval and approval.get("approval") == "approved":
            audit["approval"] = {k: approval.get(k) for k in ("approval", "by", "at")}
        seq = _move_alias(lease, alias, current, version, audit, airflow_run, at)
    log.info("promoted %s version %s to %s (was %s)", name, version, alias, current)
    return PromotionResult(
        "promoted", name, version, current, version, expected,
        f"{alias} moved from {current or 'none'} to {version}", audit_seq=seq, at=at,
    )  # fmt: skip


def _previous_champion(trail: list[dict[str, Any]], current: str | None, alias: str) -> str | None:
    """The champion before ``current``: the 'from' of the latest promotion to it.

    Rollback entries are skipped, so repeated rollbacks walk further back instead of
    flipping between two versions.
    """
    for entry in reversed(trail):
        if entry.get("alias", CHAMPION_ALIAS) != alias or entry.get("action") != "promote":
            continue
        if current is None or str(entry.get("to")) == current:
            prev = entry.get("from")
            return None if prev is None else str(prev)
    return None


def rollback(
    client: Any,
    name: str,
    *,
    to_version: str | int | None = None,
    reason: str,
    force: bool = False,
    airflow_run: str | None = None,
    alias: str = CHAMPION_ALIAS,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    lock_ttl: float = DEFAULT_LOCK_TTL,
) -> PromotionResult:
    """Move ``alias`` back to the previous champion (from the audit trail) or to
    ``to_version``.

    Refuses (RollbackRefused) without a reason, for an unknown or deleted version, when
    there is no previous champion, and for a target (named or the previous champion)
    whose ``validation_status`` is not ``passed`` (failed, inconclusive or never
    validated), unless ``force``; the reason is then recorded as forced on the version
    and in the audit entry. Records rollback tags on the target version and an audit entry.
    """
    if not reason or not reason.strip():
        raise RollbackRefused("a rollback needs a reason", model_name=name)
    with promotion_lock(
        client, name, timeout=lock_timeout, ttl=lock_ttl, purpose="rollback"
    ) as lease:
        _reconcile(lease, alias)
        status = champion_status(client, name, alias)
        current = status.version
        if to_version is None:
            trail = audit_trail(client, name)
            target = _previous_champion(trail, current or status.deleted_version, alias)
            if target is None:
                raise RollbackRefused(
                    f"no previous champion of {name!r} in the audit trail (current: {current or status.detail}); "
                    "name a version with to_version",
                    model_name=name,
                )
        else:
            target = str(to_version)
        mv = _require_version(client, name, target, RollbackRefused)
        validation = dict(mv.tags or {}).get(TAG_VALIDATION_STATUS)
        named = to_version is not None
        refused = validation != "passed"  # never validated counts as not passed
        if refused and not force:
            raise RollbackRefused(
                f"version {target} of {name!r} has validation_status={validation or 'none'}"
                f"{'' if named else ' (previous champion)'}; only versions that passed validation are "
                "rollback targets unless force=True (with a reason)",
                model_name=name,
                version=target,
            )
        if target == current:
            return PromotionResult(
                "noop", name, target, current, current, current,
                f"version {target} already is {alias}; nothing changed",
            )  # fmt: skip
        at = _now()
        audit = {"action": "rollback", "reason": reason, "forced": bool(force and refused)}
        seq = _move_alias(lease, alias, current, target, audit, airflow_run, at)
    log.info("rolled back %s %s from %s to %s", name, alias, current, target)
    return PromotionResult(
        "rolled_back", name, target, current, target, current,
        f"{alias} rolled back from {current or 'none'} to {target}: {reason}", audit_seq=seq, at=at,
    )  # fmt: skip


def mark_validation(
    client: Any,
    name: str,
    version: str | int,
    decision: Any,
    *,
    decision_uri: str | None = None,
) -> dict[str, str]:
    """Tag a model version with the evaluation outcome: validation_status (passed | failed |
    inconclusive), decision_id, validation_reason, decision_uri. ``decision`` is a
    compare.Decision or its ``to_dict()``. Returns the tags written."""
    d: Mapping[str, Any] = decision.to_dict() if hasattr(decision, "to_dict") else decision
    outcome = d.get("outcome")
    status = d.get("validation_status") or {"promote": "passed", "reject": "failed"}.get(
        str(outcome), "inconclusive"
    )
    tags = {
        TAG_VALIDATION_STATUS: str(status),
        TAG_DECISION_ID: str(d.get("decision_id", "")),
        TAG_VALIDATION_REASON: _clip(f"{outcome}: " + "; ".join(map(str, d.get("reasons", [])))),
        "compared_against": str(d.get("compared_against", "")),
    }
    if decision_uri:
        tags[TAG_DECISION_URI] = decision_uri
    _require_version(client, name, str(version))
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value)
    return tags

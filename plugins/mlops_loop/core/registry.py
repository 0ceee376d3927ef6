"""The MLflow model registry side of champion/challenger: who is champion, a compare-and-set
promotion with an audit trail, rollback, and validation tags on model versions.

MLflow has no conditional ("compare-and-set") alias update. What its server does provide
atomically is creating a registered model: the name is a primary key, so of two clients
creating the same name exactly one succeeds and the other gets RESOURCE_ALREADY_EXISTS.
:func:`promotion_lock` uses that: a registered model named ``<name>.__promotion_lock__``
exists while one promotion or rollback of ``<name>`` is moving the alias. Under the lock a
promotion re-reads the alias, compares it with the champion the evaluation saw, and only
then moves it, so two promotions racing from different processes end with exactly one
winner and the loser reports "stale" instead of overwriting. The race window left is
against writers that bypass the lock (a person moving the alias in the MLflow UI) and
lies between the re-read and the move: a few milliseconds.

A lock whose holder died is broken once its lease (``lock_ttl``) has expired.

Audit trail: every alias move appends a registered-model tag ``audit.champion.<seq>``
(JSON: action, from, to, reason, decision URI, Airflow run, time, holder). Tags are
written under the lock, so sequence numbers never collide and no entry is lost.
"""

from __future__ import annotations

import contextlib
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

from mlops_loop.exceptions import PromotionLockTimeout, RegistryError, RollbackRefused

log = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
LOCK_SUFFIX = ".__promotion_lock__"
AUDIT_TAG_PREFIX = "audit.champion."
DEFAULT_LOCK_TIMEOUT = 60.0
DEFAULT_LOCK_TTL = 300.0
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
    trail = _audit_from_tags(getattr(model, "tags", {}) or {})
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


@contextlib.contextmanager
def promotion_lock(
    client: Any,
    name: str,
    *,
    timeout: float = DEFAULT_LOCK_TIMEOUT,
    ttl: float = DEFAULT_LOCK_TTL,
    purpose: str = "move champion alias",
) -> Iterator[str]:
    """Hold the promotion lock of model ``name`` for the block; yields the owner token.

    Creating the lock's registered model is the atomic step; on contention this retries
    with jittered back-off until ``timeout`` and then raises PromotionLockTimeout naming
    the holder. A lock older than its lease (``ttl`` seconds, stored on it) is deleted
    so a crashed holder cannot block promotions forever.
    """
    from mlflow.exceptions import MlflowException

    lname = lock_name(name)
    token = uuid.uuid4().hex
    deadline = time.monotonic() + timeout
    delay = 0.05
    holder: str | None = None
    while True:
        expires = time.time() + ttl
        try:
            client.create_registered_model(
                lname,
                tags={
                    "lock.owner": token,
                    "lock.holder": _holder(),
                    "lock.expires_at": f"{expires:.3f}",
                    "lock.purpose": purpose,
                },
                description=f"Promotion lock for {name!r}, held by {_holder()} to {purpose}. "
                f"Safe to delete if older than {ttl:.0f}s.",
            )
            break
        except MlflowException as exc:
            if _error_code(exc) not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
        current = _registered_model(client, lname)
        if current is not None:
            tags = dict(current.tags or {})
            holder = tags.get("lock.holder")
            try:
                expired = float(tags.get("lock.expires_at", "inf")) < time.time()
            except ValueError:
                expired = True
            if expired:
                log.warning("breaking expired promotion lock %s held by %s", lname, holder)
                with contextlib.suppress(MlflowException):
                    client.delete_registered_model(lname)
                continue
        if time.monotonic() >= deadline:
            raise PromotionLockTimeout(
                f"could not take the promotion lock {lname!r} within {timeout:.0f}s; "
                f"held by {holder or 'unknown'}",
                model_name=name,
                lock_name=lname,
                holder=holder,
            )
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 1.0)
    try:
        yield token
    finally:
        # Never mask the block's own error; a lock that cannot be released expires after ttl.
        try:
            current = _registered_model(client, lname)
            if current is not None and dict(current.tags or {}).get("lock.owner") == token:
                client.delete_registered_model(lname)
            else:
                log.warning("promotion lock %s was taken over while held; not releasing it", lname)
        except Exception as exc:
            log.warning("could not release promotion lock %s (%s); it expires after %.0fs", lname, exc, ttl)


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


def audit_trail(client: Any, name: str) -> list[dict[str, Any]]:
    """Every recorded move of the champion alias of ``name``, oldest first."""
    model = _registered_model(client, name)
    return [] if model is None else _audit_from_tags(dict(model.tags or {}))


def _append_audit(client: Any, name: str, entry: dict[str, Any]) -> int:
    """Write the next audit entry; call only while holding the promotion lock."""
    trail = audit_trail(client, name)
    seq = max((int(e.get("seq", 0)) for e in trail), default=0) + 1
    payload = {"seq": seq, **entry}
    text = json.dumps(payload, sort_keys=True)
    if len(text) > MAX_TAG_VALUE:
        payload["reason"] = str(payload.get("reason", ""))[:1000] + "..."
        text = json.dumps(payload, sort_keys=True)
    client.set_registered_model_tag(name, f"{AUDIT_TAG_PREFIX}{seq:06d}", text)
    return seq


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


def _require_version(client: Any, name: str, version: str, error: type[RegistryError] = RegistryError) -> Any:
    mv = live_version(client, name, version)
    if mv is None:
        if _registered_model(client, name) is None:
            raise error(f"model {name!r} is not registered", model_name=name, version=version)
        raise error(f"version {version} of {name!r} does not exist (or was deleted)", model_name=name, version=version)
    return mv


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TAG_VALUE else text[: MAX_TAG_VALUE - 3] + "..."


def _move_alias(
    client: Any,
    name: str,
    alias: str,
    current: str | None,
    target: str,
    tags: Mapping[str, str],
    audit: Mapping[str, Any],
    airflow_run: str | None,
    at: str,
) -> int:
    """Tag ``target`` (its own ``tags`` plus previous champion and Airflow run), move the
    alias to it, then append the audit entry; returns the entry's sequence number. The
    tags go first so the version is self-describing the moment it is champion."""
    all_tags = {TAG_PREVIOUS_CHAMPION: current or "none", TAG_AIRFLOW_RUN: airflow_run or "", **tags}
    for key, value in all_tags.items():
        client.set_model_version_tag(name, target, key, value)
    client.set_registered_model_alias(name, alias, target)
    entry = {"alias": alias, "from": current, "to": target, **audit}
    return _append_audit(client, name, {**entry, "airflow_run": airflow_run, "at": at, "holder": _holder()})


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
    the version gets tags (previous_champion, decision_uri, airflow_run, promoted_at,
    promotion_reason) before the alias moves, and an audit entry is appended.
    Raises RegistryError for an unknown or deleted version.
    """
    version = str(version)
    expected = None if expected_champion is None else str(expected_champion)
    _require_version(client, name, version)
    with promotion_lock(client, name, timeout=lock_timeout, ttl=lock_ttl, purpose=f"promote {version}"):
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
        tags = {
            TAG_DECISION_URI: decision_uri or "",
            TAG_PROMOTED_AT: at,
            TAG_PROMOTION_REASON: _clip(reason),
        }
        audit: dict[str, Any] = {"action": "promote", "reason": reason, "decision_uri": decision_uri}
        if approval and approval.get("approval") == "approved":
            tags[TAG_APPROVED_BY] = str(approval.get("by") or "")
            tags[TAG_APPROVED_AT] = str(approval.get("at") or "")
            audit["approval"] = {k: approval.get(k) for k in ("approval", "by", "at")}
        seq = _move_alias(client, name, alias, current, version, tags, audit, airflow_run, at)
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
    there is no previous champion, and for a version whose ``validation_status`` is not
    ``passed`` (named versions) or is ``failed`` (previous champions), unless ``force``.
    Records rollback tags on the target version and an audit entry.
    """
    if not reason or not reason.strip():
        raise RollbackRefused("a rollback needs a reason", model_name=name)
    with promotion_lock(client, name, timeout=lock_timeout, ttl=lock_ttl, purpose="rollback"):
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
        refused = (validation != "passed") if named else (validation == "failed")
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
        tags = {
            TAG_ROLLED_BACK_AT: at,
            TAG_ROLLBACK_REASON: _clip(("[forced] " if force and refused else "") + reason),
        }
        audit = {"action": "rollback", "reason": reason, "forced": bool(force and refused)}
        seq = _move_alias(client, name, alias, current, target, tags, audit, airflow_run, at)
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
    status = d.get("validation_status") or {"promote": "passed", "reject": "failed"}.get(str(outcome), "inconclusive")
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

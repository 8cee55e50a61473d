"""Every use case of API keys, written once: the pages, the DRF API, the admin and the
management command all call these.

Authentication is on the /v1/ hot path: it reads a key's entry from the shared cache (Redis
in production) and touches the database only on a miss. Every change to a key, or to its
owner, rewrites that entry after commit, so the very next request in any process sees it.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, transaction
from django.http import Http404
from django.utils import timezone

from accounts.models import Membership, Role, User
from accounts.selectors import personal_org
from apikeys import keyformat
from apikeys.cache import ENTRY_TTL, MISSING_TTL, entry_get, entry_store, take_ticket
from apikeys.models import ApiKey, ApiKeyEvent
from apikeys.signals import key_revoked, key_rotated
from core.bounds import column_range
from core.db import release_connection
from core.errors import InvalidApiKey, InvalidRequest, RateLimited

log = logging.getLogger(__name__)

LAST_USED_EVERY = 60  # seconds: at most one last_used write per key per minute
AUTH_FAILURES_PER_MINUTE = 30  # per client IP, then 429
_MISSING = "missing"


@dataclass(frozen=True, slots=True)
class KeyPrincipal:
    """Who is calling /v1/: everything the hot path needs, without a database read."""

    key_id: int
    public_id: str
    org_id: int  # the organization that owns the key: its plan, shared limits and usage
    owner_id: int  # the member who created the key
    owner_email: str
    plan_id: int | None  # the organization's plan
    allowed_models: frozenset[str] | None  # None: whatever the plan allows
    requests_per_minute: int | None
    tokens_per_minute: int | None
    expires_at: float | None
    # The key's own day and month budgets (None: only the plan's quotas).
    requests_per_day: int | None = None
    tokens_per_day: int | None = None
    requests_per_month: int | None = None
    tokens_per_month: int | None = None

    # DRF treats request.user as a user; these make it behave like an authenticated one.
    is_authenticated = True
    is_active = True

    @property
    def pk(self) -> int:
        return self.owner_id


def _creator_org(owner, org):
    """The organization a key is made in: `org` if `owner` is a member, else their personal
    one when no organization is named."""
    if org is None:
        org = personal_org(owner)
        if org is None:
            raise InvalidRequest("This user has no organization.", param="org")
        return org
    if not Membership.objects.filter(org=org, user=owner).exists():
        raise InvalidRequest("Only a member of the organization can create its keys.", param="org")
    return org


# --- writes -----------------------------------------------------------------------------------


def apikey_create(
    *,
    owner,
    name: str,
    org=None,
    expires_at: datetime | None = None,
    allowed_models=(),
    requests_per_minute: int | None = None,
    tokens_per_minute: int | None = None,
    requests_per_day: int | None = None,
    tokens_per_day: int | None = None,
    requests_per_month: int | None = None,
    tokens_per_month: int | None = None,
    actor=None,
    actor_label: str = "",
    ip: str | None = None,
    playground: bool = False,
) -> tuple[ApiKey, str]:
    """Make a key of `org` (default: `owner`'s personal organization), created by `owner`;
    returns the record and the raw key, which exists nowhere else afterwards."""
    name = (name or "").strip()
    if not name:
        raise InvalidRequest("Give the key a name.", param="name")
    if len(name) > 100:
        raise InvalidRequest("A key name has at most 100 characters.", param="name")
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidRequest("The expiry must be in the future.", param="expires_at")
    requests_per_minute = _key_cap("requests_per_minute", requests_per_minute)
    tokens_per_minute = _key_cap("tokens_per_minute", tokens_per_minute)
    org = _creator_org(owner, org)
    budgets = {
        field: _key_budget(field, value, org)
        for field, value in (
            ("requests_per_day", requests_per_day),
            ("tokens_per_day", tokens_per_day),
            ("requests_per_month", requests_per_month),
            ("tokens_per_month", tokens_per_month),
        )
    }
    public_id = keyformat.new_public_id()
    raw = keyformat.new_key(public_id)
    with transaction.atomic():
        key = ApiKey.objects.create(
            org=org,
            owner=owner,
            name=name,
            public_id=public_id,
            secret_hash=keyformat.hash_key(raw),
            hash_version=keyformat.current_hash_version(),
            expires_at=expires_at,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            playground=playground,
            **budgets,
        )
        if allowed_models:
            key.allowed_models.set(allowed_models)
        ApiKeyEvent.objects.create(
            key=key, kind=ApiKeyEvent.Kind.CREATED, actor=actor, actor_label=actor_label, ip=ip
        )
        transaction.on_commit(lambda: apikey_refresh_cache(public_id=public_id))
    log.info(
        "api key created", extra={"key_prefix": public_id, "owner_id": owner.pk, "org_id": org.pk}
    )
    return key, raw


def apikey_revoke(
    *, key: ApiKey, actor=None, actor_label: str = "", ip: str | None = None
) -> ApiKey:
    with transaction.atomic():
        updated = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        if updated:
            ApiKeyEvent.objects.create(
                key=key, kind=ApiKeyEvent.Kind.REVOKED, actor=actor, actor_label=actor_label, ip=ip
            )
        public_id = key.public_id
        transaction.on_commit(lambda: apikey_refresh_cache(public_id=public_id))
        if updated:
            transaction.on_commit(
                lambda: key_revoked.send(sender=ApiKey, key=key, actor=actor), robust=True
            )
    key.refresh_from_db()
    log.info("api key revoked", extra={"key_prefix": key.public_id})
    return key


_UNCHANGED = object()


def _key_cap(field: str, value: int | None) -> int | None:
    """A key's own rate cap: empty (the plan's), or from 1 to what its column holds."""
    if value is None:
        return None
    high = column_range(ApiKey, field)[1]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise InvalidRequest(
            f"{field} must be an integer from 1 to {high} (or empty for the plan's).",
            param=field,
        )
    return value


BUDGET_FIELDS = ("requests_per_day", "tokens_per_day", "requests_per_month", "tokens_per_month")
CAP_FIELDS = ("requests_per_minute", "tokens_per_minute")
EDITABLE_FIELDS = ("name", "expires_at", "allowed_models", *CAP_FIELDS, *BUDGET_FIELDS)


def _key_budget(field: str, value: int | None, org) -> int | None:
    """A key's own day or month budget: empty (the plan's quota only), or from 1 to what its
    column holds and no more than the organization's plan allows (a key only narrows it)."""
    if value is None:
        return None
    high = column_range(ApiKey, field)[1]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise InvalidRequest(
            f"{field} must be an integer from 1 to {high} (or empty for no key budget).",
            param=field,
        )
    plan = org.plan if org is not None else None
    ceiling = getattr(plan, field, None)
    if ceiling is not None and value > ceiling:
        plan_name = getattr(plan, "name", "")
        raise InvalidRequest(
            f"{field} can only narrow the plan: the organization's plan '{plan_name}' allows "
            f"{ceiling}. Give at most {ceiling}, or leave it empty.",
            param=field,
        )
    return value


def apikey_check_budgets(*, org, budgets: dict) -> None:
    """Raise InvalidRequest (naming the field) unless each budget given is allowed for a key
    of `org`: for forms that check before calling `apikey_update` (the admin's)."""
    for field in BUDGET_FIELDS:
        if field in budgets:
            _key_budget(field, budgets[field], org)


def _snapshot(key: ApiKey) -> dict:
    """What the audit trail compares before and after an update (JSON-ready)."""
    return {
        "name": key.name,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "allowed_models": sorted(m.public_id for m in key.allowed_models.all()),
        **{field: getattr(key, field) for field in (*CAP_FIELDS, *BUDGET_FIELDS)},
    }


def apikey_update(
    *,
    key: ApiKey,
    name=_UNCHANGED,
    expires_at=_UNCHANGED,
    allowed_models=_UNCHANGED,
    requests_per_minute=_UNCHANGED,
    tokens_per_minute=_UNCHANGED,
    requests_per_day=_UNCHANGED,
    tokens_per_day=_UNCHANGED,
    requests_per_month=_UNCHANGED,
    tokens_per_month=_UNCHANGED,
    actor=None,
    actor_label: str = "",
    ip: str | None = None,
) -> ApiKey:
    """Change a key's name, expiry, model subset, caps or budgets; only the arguments given
    change.

    The secret never changes here (`apikey_rotate` issues a new one). A change is an `updated`
    event in the audit trail with its before/after diff, and rewrites the cached entry after
    commit, so the next request in every process sees it. Nothing changed, nothing recorded.
    """
    fields: dict = {}
    if name is not _UNCHANGED:
        name = (name or "").strip()
        if not name:
            raise InvalidRequest("Give the key a name.", param="name")
        if len(name) > 100:
            raise InvalidRequest("A key name has at most 100 characters.", param="name")
        fields["name"] = name
    if expires_at is not _UNCHANGED:
        # A past expiry is allowed here: staff expire a key that way in the admin. The
        # customer's page and API refuse one (their forms and serializers).
        fields["expires_at"] = expires_at
    for field, value in (
        ("requests_per_minute", requests_per_minute),
        ("tokens_per_minute", tokens_per_minute),
    ):
        if value is not _UNCHANGED:
            fields[field] = _key_cap(field, value)
    for field, value in (
        ("requests_per_day", requests_per_day),
        ("tokens_per_day", tokens_per_day),
        ("requests_per_month", requests_per_month),
        ("tokens_per_month", tokens_per_month),
    ):
        if value is not _UNCHANGED:
            fields[field] = _key_budget(field, value, key.org)
    with transaction.atomic():
        # Locked: two edits at once each diff against what the other left.
        locked = ApiKey.objects.select_for_update().get(pk=key.pk)
        before = _snapshot(locked)
        if fields:
            ApiKey.objects.filter(pk=key.pk).update(**fields)
        if allowed_models is not _UNCHANGED:
            locked.allowed_models.set(allowed_models)
        locked.refresh_from_db()
        after = _snapshot(locked)
        diff = {
            field: [before[field], after[field]]
            for field in before
            if before[field] != after[field]
        }
        if diff:
            ApiKeyEvent.objects.create(
                key=key,
                kind=ApiKeyEvent.Kind.UPDATED,
                actor=actor,
                actor_label=actor_label,
                ip=ip,
                changes=diff,
            )
            public_id = key.public_id
            transaction.on_commit(lambda: apikey_refresh_cache(public_id=public_id))
    key.refresh_from_db()
    log.info("api key updated", extra={"key_prefix": key.public_id, "fields": sorted(diff)})
    return key


ROTATION_GRACE_DEFAULT = 86_400  # seconds the old secret keeps working after a rotation
ROTATION_GRACE_MAX = 30 * 86_400


def apikey_rotate(
    *,
    key: ApiKey,
    grace_seconds: int = ROTATION_GRACE_DEFAULT,
    actor=None,
    actor_label: str = "",
    ip: str | None = None,
) -> tuple[ApiKey, str]:
    """Issue a new secret for the same key (same id, name, caps, budgets and usage history);
    returns the key and the new raw secret, which exists nowhere else afterwards.

    The old secret keeps working for `grace_seconds` (0: it stops at once), then answers 401.
    Only one old secret is kept: rotating again within a grace ends the older one now.
    Audited as a `rotated` event; `apikeys.signals.key_rotated` is sent after commit."""
    if (
        isinstance(grace_seconds, bool)
        or not isinstance(grace_seconds, int)
        or not 0 <= grace_seconds <= ROTATION_GRACE_MAX
    ):
        raise InvalidRequest(
            f"grace_seconds must be an integer from 0 to {ROTATION_GRACE_MAX} (30 days).",
            param="grace_seconds",
        )
    raw = keyformat.new_key(key.public_id)
    with transaction.atomic():
        locked = ApiKey.objects.select_for_update().get(pk=key.pk)
        if locked.status != "active":
            raise InvalidRequest(
                f"This key is {locked.status}: only an active key can be rotated. "
                "Create a new key instead.",
                param="key",
            )
        now = timezone.now()
        grace_until = now + timedelta(seconds=grace_seconds) if grace_seconds else None
        ApiKey.objects.filter(pk=key.pk).update(
            secret_hash=keyformat.hash_key(raw),
            hash_version=keyformat.current_hash_version(),
            previous_secret_hash=locked.secret_hash if grace_until else "",
            previous_hash_version=locked.hash_version if grace_until else "",
            previous_valid_until=grace_until,
            rotated_at=now,
        )
        ApiKeyEvent.objects.create(
            key=key,
            kind=ApiKeyEvent.Kind.ROTATED,
            actor=actor,
            actor_label=actor_label,
            ip=ip,
            changes={
                "grace_seconds": grace_seconds,
                "previous_valid_until": grace_until.isoformat() if grace_until else None,
            },
        )
        public_id = key.public_id
        transaction.on_commit(lambda: apikey_refresh_cache(public_id=public_id))
        transaction.on_commit(
            lambda: key_rotated.send(sender=ApiKey, key=key, actor=actor, grace_until=grace_until),
            robust=True,
        )
    key.refresh_from_db()
    log.info("api key rotated", extra={"key_prefix": key.public_id, "grace_seconds": grace_seconds})
    return key, raw


def apikey_refresh_cache(*, public_id: str) -> None:
    """Rewrite the cached entry from the database (after a change has committed)."""
    try:
        _refresh_entry(public_id)
    except Exception:
        log.error(
            "key cache not refreshed (cache unavailable): the change reaches other "
            "processes within %ss",
            ENTRY_TTL,
            extra={"key_prefix": public_id},
        )


def apikeys_refresh_cache_for_owner(*, owner_id: int) -> None:
    for public_id in ApiKey.objects.filter(owner_id=owner_id).values_list("public_id", flat=True):
        apikey_refresh_cache(public_id=public_id)


def apikeys_refresh_cache_for_org(*, org_id: int) -> None:
    """Rewrite the entries of every key of an organization (its plan or suspension changed)."""
    for public_id in ApiKey.objects.filter(org_id=org_id).values_list("public_id", flat=True):
        apikey_refresh_cache(public_id=public_id)


def apikeys_revoke_for_member(*, org_id: int, user_id: int, actor=None) -> int:
    """Revoke every key `user_id` created in `org_id` (they left or were removed). Runs in the
    removal's transaction; each entry is rewritten after commit. Returns how many."""
    keys = list(ApiKey.objects.filter(org_id=org_id, owner_id=user_id, revoked_at__isnull=True))
    for key in keys:
        apikey_revoke(key=key, actor=actor, actor_label="" if actor else "member removed")
    return len(keys)


def _refresh_entry(public_id: str) -> dict | str:
    """Read the row and write the entry, versioned (see apikeys/cache.py): the ticket is
    taken before the read, so a slower refresh that read older data cannot write last."""
    ticket = take_ticket()
    entry = _load_entry(public_id)
    release_connection()
    entry_store(
        public_id, entry, ticket=ticket, ttl=MISSING_TTL if entry == _MISSING else ENTRY_TTL
    )
    return entry


# --- reads ------------------------------------------------------------------------------------


def apikey_get_for_owner(*, owner, key_id) -> ApiKey:
    """A key by id, only if it is the caller's: anything else is a 404, never a 403."""
    try:
        return ApiKey.objects.for_owner(owner).get(pk=int(key_id))
    except (ApiKey.DoesNotExist, ValueError, TypeError):
        raise Http404("No such key") from None


def apikey_get_for_member(*, membership: Membership, key_id) -> ApiKey:
    """A key of the member's organization by id: any of its keys for an admin or owner, only
    their own for a member. Anything else (another member's key, another organization's) is a
    404, never a 403."""
    try:
        return apikeys_visible_to(membership).get(pk=int(key_id))
    except (ApiKey.DoesNotExist, ValueError, TypeError):
        raise Http404("No such key") from None


def apikeys_visible_to(membership: Membership):
    keys = ApiKey.objects.for_org(membership.org_id)
    if not membership.allows(Role.ADMIN):
        keys = keys.filter(owner_id=membership.user_id)
    return keys


def _load_entry(public_id: str) -> dict | str:
    key = (
        ApiKey.objects.select_related("owner", "org")
        .prefetch_related("allowed_models")
        .filter(public_id=public_id)
        .first()
    )
    if key is None:
        return _MISSING
    owner = key.owner
    allowed = sorted(m.public_id for m in key.allowed_models.all())
    return {
        "id": key.pk,
        "public_id": key.public_id,
        "hash": key.secret_hash,
        "hash_version": key.hash_version,
        "org_id": key.org_id,
        "org_active": key.org.suspended_at is None,
        "owner_id": owner.pk,
        "owner_email": owner.email,
        "owner_active": owner.is_active,
        "plan_id": key.org.plan_id,
        "allowed_models": allowed or None,
        "rpm": key.requests_per_minute,
        "tpm": key.tokens_per_minute,
        "rpd": key.requests_per_day,
        "tpd": key.tokens_per_day,
        "rpmo": key.requests_per_month,
        "tpmo": key.tokens_per_month,
        "expires_at": key.expires_at.timestamp() if key.expires_at else None,
        "revoked": key.revoked_at is not None,
        "revoked_at": key.revoked_at.timestamp() if key.revoked_at else None,
        # The secret before the last rotation, and until when it works (its grace).
        "prev_hash": key.previous_secret_hash or None,
        "prev_hash_version": key.previous_hash_version,
        "prev_until": key.previous_valid_until.timestamp() if key.previous_valid_until else None,
        "rotated_at": key.rotated_at.timestamp() if key.rotated_at else None,
    }


_last_used_local: dict[int, float] = {}


def apikey_authenticate(*, raw_key: str | None, ip: str | None = None) -> KeyPrincipal:
    """The caller behind an Authorization header, or InvalidApiKey (one answer for every case).

    A client that keeps sending bad keys is throttled (429) per address, IPv6 per /64. The
    throttle is read before the database: a key missing from the cache costs a query, so a
    throttled client's random well-formed keys are refused first. A key that is real but
    revoked, expired, or whose creator or organization is suspended is not guessing: it
    answers 401 however often it is sent, so its holder learns what is wrong.
    """
    public_id = keyformat.parse_key(raw_key) if raw_key else None
    if raw_key is None or public_id is None:
        _count_failure(ip)
        raise InvalidApiKey()
    entry = _entry_for(public_id, ip)
    if not isinstance(entry, dict):
        _count_failure(ip)
        raise InvalidApiKey()
    now = time.time()
    current = keyformat.key_matches(raw_key, entry["hash"], entry["hash_version"])
    if not current and not _previous_secret_works(entry, raw_key, now):
        _count_failure(ip)
        raise InvalidApiKey()
    refusal = _refusal_for_known_key(entry, now)
    if refusal:
        raise InvalidApiKey(refusal)
    if current and keyformat.needs_rehash(entry["hash_version"]):
        _rehash(entry["id"], raw_key)
    _touch_last_used(entry["id"], now)
    allowed = entry["allowed_models"]
    return KeyPrincipal(
        key_id=entry["id"],
        public_id=entry["public_id"],
        org_id=entry["org_id"],
        owner_id=entry["owner_id"],
        owner_email=entry["owner_email"],
        plan_id=entry["plan_id"],
        allowed_models=frozenset(allowed) if allowed else None,
        requests_per_minute=entry["rpm"],
        tokens_per_minute=entry["tpm"],
        expires_at=entry["expires_at"],
        # .get: entries cached before budgets existed have none (they expire within ENTRY_TTL)
        requests_per_day=entry.get("rpd"),
        tokens_per_day=entry.get("tpd"),
        requests_per_month=entry.get("rpmo"),
        tokens_per_month=entry.get("tpmo"),
    )


def _previous_secret_works(entry: dict, raw_key: str, now: float) -> bool:
    """The secret before the key's last rotation, within its grace. Once the grace has ended
    its holder is told so (401), not counted as a guesser: they once held the key."""
    previous = entry.get("prev_hash")
    if not previous or not keyformat.key_matches(
        raw_key, previous, entry.get("prev_hash_version", "")
    ):
        return False
    until = entry.get("prev_until")
    if until is not None and until > now:
        return True
    ended = datetime.fromtimestamp(until, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if until else ""
    raise InvalidApiKey(
        "This API key was rotated: its previous secret stopped working"
        + (f" at {ended}" if ended else "")
        + ". Use the new secret (shown once when the key was rotated), or rotate it again at /keys."
    )


def _refusal_for_known_key(entry: dict, now: float) -> str:
    """Why a real key may not be used ('' if it may): said plainly, every time (its holder is
    not guessing, so neither the failed-auth throttle nor a vague message applies)."""

    def when(timestamp: float) -> str:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")

    if entry["revoked"]:
        revoked_at = entry.get("revoked_at")  # absent from entries cached before it was added
        on = f" on {when(revoked_at)}" if revoked_at else ""
        return f"This API key was revoked{on}. Create a new key at /keys."
    if entry["expires_at"] is not None and entry["expires_at"] <= now:
        return f"This API key expired on {when(entry['expires_at'])}. Create a new key at /keys."
    if not entry["owner_active"]:
        return "The account that owns this API key is deactivated."
    if not entry["org_active"]:
        return "The organization that owns this API key is suspended."
    return ""


def _entry_for(public_id: str, ip: str | None) -> dict | str:
    """The key's entry: from the cache (the hot path: one GET), else from the database once
    the client is known not to be throttled."""
    try:
        entry = entry_get(public_id)
    except Exception:
        log.warning("key cache unavailable, reading the key from the database")
        entry = _load_entry(public_id)
        release_connection()
        return entry
    # An entry written before organizations has no org_id: read it again, as on a miss.
    if entry is not None and not (isinstance(entry, dict) and "org_id" not in entry):
        return entry
    _refuse_if_throttled(ip)
    try:
        return _refresh_entry(public_id)
    except Exception:
        log.warning("key cache unavailable, reading the key from the database")
        entry = _load_entry(public_id)
        release_connection()
        return entry


def _cache_quietly(operation, *args):
    try:
        return operation(*args)
    except Exception:
        log.warning("shared cache unavailable (%s)", getattr(operation, "__name__", "op"))
        return None


def throttle_client(ip: str) -> str:
    """Whom the failed-auth throttle counts: an IPv4 address, or an IPv6 /64 (one host, or
    one customer's network, usually holds a whole /64, so counting single addresses would let
    it rotate through 2**64 of them)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _failure_bucket(ip: str) -> str:
    return f"authfail:{throttle_client(ip)}:{int(time.time() // 60)}"


def _throttled() -> RateLimited:
    return RateLimited(
        "Too many requests with an invalid API key from your address; wait before retrying.",
        headers={"Retry-After": str(60 - int(time.time() % 60))},
    )


def _refuse_if_throttled(ip: str | None) -> None:
    if ip and (_cache_quietly(cache.get, _failure_bucket(ip)) or 0) >= AUTH_FAILURES_PER_MINUTE:
        raise _throttled()


def _count_failure(ip: str | None) -> None:
    if not ip:
        return
    bucket = _failure_bucket(ip)
    _cache_quietly(cache.add, bucket, 0, 120)
    try:
        failures = cache.incr(bucket)
    except ValueError:  # expired between add and incr
        failures = 1
    except Exception:
        return
    if failures > AUTH_FAILURES_PER_MINUTE:
        raise _throttled()


def _touch_last_used(key_id: int, now: float) -> None:
    # In-process first (no round trip), then the shared cache decides which process writes.
    if now - _last_used_local.get(key_id, 0.0) < LAST_USED_EVERY:
        return
    _last_used_local[key_id] = now
    if not _cache_quietly(cache.add, f"apikey-used:{key_id}", 1, LAST_USED_EVERY):
        return
    if settings.USAGE_WRITE_BATCHED:
        # Where usage is written off the request (production), so is this: with PostgreSQL
        # down, the write waits DB_POOL_TIMEOUT (30 s) for a connection and then fails, and
        # the request that happened to be a minute after the last stamp waited with it and
        # answered 500. A lost stamp costs a minute of `last_used_at`; a request waits for none.
        threading.Thread(target=_last_used_write_quietly, args=(key_id,), daemon=True).start()
    else:
        _last_used_write(key_id)


def _last_used_write(key_id: int) -> None:
    try:
        ApiKey.objects.filter(pk=key_id).update(last_used_at=timezone.now())
    finally:
        release_connection()


def _last_used_write_quietly(key_id: int) -> None:
    try:
        _last_used_write(key_id)
    except DatabaseError as exc:
        log.warning("key last use not recorded: database unavailable (%s)", exc.__class__.__name__)


def _rehash(key_id: int, raw_key: str) -> None:
    """Move a key hashed under an old secret to the current one (see SECURITY.md)."""
    key = ApiKey.objects.filter(pk=key_id).first()
    if key is None:
        return
    ApiKey.objects.filter(pk=key_id).update(
        secret_hash=keyformat.hash_key(raw_key), hash_version=keyformat.current_hash_version()
    )
    apikey_refresh_cache(public_id=key.public_id)


# --- the playground's key ------------------------------------------------------------------

PLAYGROUND_KEY_NAME = "Playground"


def apikey_playground_principal(*, user, org=None) -> KeyPrincipal:
    """The principal the portal's playground calls /v1's pipeline with, for this user acting
    for `org` (default: their personal organization): the organization's plan and limits.

    The playground runs under a real key of the user's (flagged `playground`, named
    "Playground"), so its calls are limited and metered like any other, show up per key on the
    usage page and update its last use. The key is made
    on first use (and again if the user revoked it); its raw secret is thrown away at once:
    the browser never holds a key, the server builds the principal from the database row.
    """

    org = _creator_org(user, org)
    if org.suspended_at is not None:
        raise InvalidApiKey("This organization is suspended: its keys are refused.")

    def _active():
        return (
            ApiKey.objects.for_owner(user)
            .for_org(org)
            .active()
            .filter(playground=True)
            .prefetch_related("allowed_models")
            .order_by("-created_at")
            .first()
        )

    key = _active()
    if key is None:
        with transaction.atomic():
            # Lock the owner's row so two first requests at once make one key, not two.
            User.objects.select_for_update().filter(pk=user.pk).first()
            key = _active()
            if key is None:
                apikey_create(
                    owner=user,
                    org=org,
                    name=PLAYGROUND_KEY_NAME,
                    actor=user,
                    actor_label="playground",
                    playground=True,
                )
                key = _active()
    _touch_last_used(key.pk, time.time())
    allowed = sorted(m.public_id for m in key.allowed_models.all())
    return KeyPrincipal(
        key_id=key.pk,
        public_id=key.public_id,
        org_id=org.pk,
        owner_id=user.pk,
        owner_email=user.email,
        plan_id=org.plan_id,
        allowed_models=frozenset(allowed) if allowed else None,
        requests_per_minute=key.requests_per_minute,
        tokens_per_minute=key.tokens_per_minute,
        expires_at=key.expires_at.timestamp() if key.expires_at else None,
        requests_per_day=key.requests_per_day,
        tokens_per_day=key.tokens_per_day,
        requests_per_month=key.requests_per_month,
        tokens_per_month=key.tokens_per_month,
    )

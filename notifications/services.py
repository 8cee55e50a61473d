"""Every notification use case, written once: the detector (Celery beat), the receivers of
accounts' and apikeys' changes, the pages, the admin and the tasks all call these.

Exactly once: `notification_record` inserts the event under a unique constraint in its own
savepoint; a second insert of the same (organization, event, subject, metric, threshold,
period), from a second detector run or another process at the same moment, fails on the
constraint and delivers nothing. Delivery (the recipients' inbox rows in the same transaction;
mail and webhooks after commit, through Celery) follows only a successful insert.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import urllib3
from django.conf import settings
from django.core import signing
from django.core.cache import cache
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from accounts.models import Membership, Organization, Role, User
from apikeys.keyformat import KEY_PREFIX
from apikeys.models import ApiKey
from audit.services import staff_actions_record
from core.errors import InvalidRequest, PermissionDeniedError
from metering.limits import (
    BackendUnavailable,
    limits_key_period_usage_many,
    limits_period_usage_many,
)
from metering.models import UsageRecord
from notifications import tasks  # tasks call back into this module by attribute, at run time
from notifications.models import (
    DEFAULT_THRESHOLDS,
    THRESHOLD_CHOICES,
    EmailPreference,
    Event,
    InboxItem,
    Notification,
    OrgNotificationSettings,
    SubjectKind,
    WebhookDelivery,
    WebhookEndpoint,
    new_event_id,
    new_webhook_secret,
)

log = logging.getLogger(__name__)

UNSUBSCRIBE_SALT = "notifications.unsubscribe"
SIGNATURE_HEADER = "Cortensor-Signature"


@dataclass(frozen=True, slots=True)
class Subject:
    """What an event is about: (kind, id). Plan quotas: the organization; key budgets: the key."""

    kind: str
    id: int


# --- recording and fan-out ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NotificationSpec:
    """An event to record once: its identity (organization, event, subject, metric,
    threshold, period), what it says, and who else hears of it besides the owners and admins."""

    org_id: int
    event: str
    subject: Subject
    title: str
    data: dict[str, Any]
    metric: str = ""
    threshold: int = 0
    period: str = ""
    also_notify: tuple[int, ...] = ()
    # False: recorded (so never sent later) but not delivered (a higher threshold was).
    deliver: bool = True


RECORD_BATCH = 1000


def notifications_record(specs: list[NotificationSpec]) -> list[Notification]:
    """Record events once each and deliver the new ones; returns the ones this call recorded.

    One INSERT ... ON CONFLICT DO NOTHING per batch: a row the unique constraint already holds
    (recorded earlier, or by a concurrent run a moment ago) is skipped. Each row carries an
    event id made here, so reading the ids back tells exactly which rows this call inserted:
    those, and only those, are delivered (inbox rows now, mail and webhooks after commit)."""
    recorded: list[Notification] = []
    for start in range(0, len(specs), RECORD_BATCH):
        recorded += _record_batch(specs[start : start + RECORD_BATCH])
    return recorded


def _record_batch(specs: list[NotificationSpec]) -> list[Notification]:
    rows = [
        Notification(
            event_id=new_event_id(),
            org_id=spec.org_id,
            event=spec.event,
            subject_kind=spec.subject.kind,
            subject_id=spec.subject.id,
            metric=spec.metric,
            threshold=spec.threshold,
            period=spec.period,
            title=spec.title[:200],
            data=spec.data,
            delivered=spec.deliver,
        )
        for spec in specs
    ]
    with transaction.atomic():
        Notification.objects.bulk_create(rows, ignore_conflicts=True)
        inserted = {
            n.event_id: n
            for n in Notification.objects.filter(
                event_id__in=[r.event_id for r in rows]
            ).select_related("org")
        }
        mine = [
            (spec, inserted[row.event_id])
            for spec, row in zip(specs, rows, strict=True)
            if row.event_id in inserted
        ]
        _fan_out([(spec, n) for spec, n in mine if spec.deliver])
    for _spec, n in mine:
        log.info(
            "notification recorded",
            extra={"org_id": n.org_id, "event": n.event, "event_id": n.event_id},
        )
    return [n for _spec, n in mine]


def notification_record(
    *,
    org_id: int,
    event: str,
    subject: Subject,
    title: str,
    data: dict[str, Any],
    metric: str = "",
    threshold: int = 0,
    period: str = "",
    also_notify: Iterable[int] = (),
    deliver: bool = True,
) -> Notification | None:
    """Record one event once and deliver it: the organization's owners and admins (and
    `also_notify`, e.g. a key's creator) get it in the portal and by email unless they muted
    it; every enabled webhook endpoint gets a signed delivery. None: it was recorded before."""
    spec = NotificationSpec(
        org_id=org_id,
        event=event,
        subject=subject,
        title=title,
        data=data,
        metric=metric,
        threshold=threshold,
        period=period,
        also_notify=tuple(also_notify),
        deliver=deliver,
    )
    recorded = notifications_record([spec])
    return recorded[0] if recorded else None


def _fan_out(items: list[tuple[NotificationSpec, Notification]]) -> None:
    """Inbox rows and webhook deliveries for new notifications, in their transaction (a few
    queries for the whole batch); mail and webhook tasks after commit."""
    if not items:
        return
    org_ids = {n.org_id for _spec, n in items}
    admins: dict[int, list[int]] = defaultdict(list)
    for org_id, user_id in (
        Membership.objects.filter(org_id__in=org_ids, role__in=[Role.OWNER, Role.ADMIN])
        .order_by("pk")
        .values_list("org_id", "user_id")
    ):
        admins[org_id].append(user_id)
    endpoints: dict[int, list[WebhookEndpoint]] = defaultdict(list)
    for endpoint in WebhookEndpoint.objects.filter(org_id__in=org_ids, disabled_at__isnull=True):
        endpoints[endpoint.org_id].append(endpoint)
    inbox: list[InboxItem] = []
    deliveries: list[WebhookDelivery] = []
    now = timezone.now()
    for spec, notification in items:
        recipients = list(dict.fromkeys([*admins[notification.org_id], *spec.also_notify]))
        inbox += [InboxItem(user_id=uid, notification=notification) for uid in recipients if uid]
        if endpoints[notification.org_id]:
            body = webhook_event_body(notification)
            deliveries += [
                WebhookDelivery(
                    endpoint=endpoint,
                    notification=notification,
                    event_id=notification.event_id,
                    event=notification.event,
                    body=body,
                    next_attempt_at=now,
                )
                for endpoint in endpoints[notification.org_id]
            ]
    InboxItem.objects.bulk_create(inbox, batch_size=2000)
    created = WebhookDelivery.objects.bulk_create(deliveries, batch_size=1000)
    user_ids = sorted({item.user_id for item in inbox})
    notification_ids = [n.pk for _spec, n in items]
    delivery_ids = [d.pk for d in created]

    def after_commit() -> None:
        unread_refresh(user_ids=user_ids)
        for notification_id in notification_ids:
            tasks.send_notification_emails.delay(notification_id)
        for delivery_id in delivery_ids:
            tasks.deliver_webhook.delay(delivery_id)

    transaction.on_commit(after_commit)


# --- quotas: readings from generic sources --------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuotaReading:
    """One quota of one subject, now: `used` of `limit` in `period` (ending at `resets_at`)."""

    org_id: int
    subject: Subject
    metric: str  # requests_per_day, tokens_per_month, ...
    used: int
    limit: int
    period: str  # d20261127 or m202611: a new period notifies again
    resets_at: datetime
    label: str = "Your organization"  # whose quota, in a sentence
    also_notify: tuple[int, ...] = ()


QuotaSource = Callable[[int], Iterable[QuotaReading]]

_PLAN_METRICS = (
    ("rpd", "requests_per_day"),
    ("tpd", "tokens_per_day"),
    ("rpmo", "requests_per_month"),
    ("tpmo", "tokens_per_month"),
)
READ_BATCH = 5000  # organizations per batched counter read (4 counters each)


def plan_quota_readings(now_ms: int) -> Iterator[QuotaReading]:
    """The plan's daily and monthly quotas of every organization whose plan has one, read from
    the limit counters in batches (one pipelined MGET round trip per READ_BATCH orgs)."""
    quota = (
        Q(plan__requests_per_day__isnull=False)
        | Q(plan__tokens_per_day__isnull=False)
        | Q(plan__requests_per_month__isnull=False)
        | Q(plan__tokens_per_month__isnull=False)
    )
    rows = list(
        Organization.objects.filter(quota, suspended_at__isnull=True)
        .order_by("pk")
        .values_list(
            "pk",
            "plan__requests_per_day",
            "plan__tokens_per_day",
            "plan__requests_per_month",
            "plan__tokens_per_month",
        )
    )
    for start in range(0, len(rows), READ_BATCH):
        chunk = rows[start : start + READ_BATCH]
        periods, used = limits_period_usage_many(org_ids=[r[0] for r in chunk], _now_ms=now_ms)
        for org_id, *limits in chunk:
            yield from _readings(
                org_id, Subject(SubjectKind.ORG, org_id), limits, used[org_id], periods
            )


def _readings(org_id, subject, limits, used: dict, periods, **extra) -> Iterator[QuotaReading]:
    """A subject's readings of its day and month quotas (limits in _PLAN_METRICS' order)."""
    for (short, metric), limit in zip(_PLAN_METRICS, limits, strict=True):
        if not limit:
            continue
        daily = short in ("rpd", "tpd")
        yield QuotaReading(
            org_id=org_id,
            subject=subject,
            metric=metric,
            used=used[short],
            limit=limit,
            period=f"d{periods.day}" if daily else f"m{periods.month}",
            resets_at=periods.day_end if daily else periods.month_end,
            **extra,
        )


def key_budget_readings(now_ms: int) -> Iterator[QuotaReading]:
    """Each active key's own budgets (requests/tokens per day/month on the key), read from
    the key's counters in batches like the plan's; the key's creator hears of it too."""
    budget = (
        Q(requests_per_day__isnull=False)
        | Q(tokens_per_day__isnull=False)
        | Q(requests_per_month__isnull=False)
        | Q(tokens_per_month__isnull=False)
    )
    rows = list(
        ApiKey.objects.active()
        .filter(budget, org__suspended_at__isnull=True)
        .order_by("pk")
        .values_list(
            "pk",
            "org_id",
            "owner_id",
            "name",
            "public_id",
            "requests_per_day",
            "tokens_per_day",
            "requests_per_month",
            "tokens_per_month",
        )
    )
    for start in range(0, len(rows), READ_BATCH):
        chunk = rows[start : start + READ_BATCH]
        periods, used = limits_key_period_usage_many(
            keys_of=[(r[1], r[0]) for r in chunk], _now_ms=now_ms
        )
        for key_id, org_id, owner_id, name, public_id, *limits in chunk:
            yield from _readings(
                org_id,
                Subject(SubjectKind.KEY, key_id),
                limits,
                used[key_id],
                periods,
                label=f"The key {name} ({KEY_PREFIX}{public_id}…)",
                also_notify=(owner_id,),
            )


# Other quota sources (beside the plan's and the keys' budgets) register here.
QUOTA_SOURCES: list[QuotaSource] = [plan_quota_readings, key_budget_readings]


def quota_source_register(source: QuotaSource) -> None:
    if source not in QUOTA_SOURCES:
        QUOTA_SOURCES.append(source)


def org_thresholds_map() -> dict[int, list[int]]:
    """Organizations that chose their thresholds; the others have DEFAULT_THRESHOLDS."""
    return {
        org_id: sorted(t for t in thresholds if t in THRESHOLD_CHOICES)
        for org_id, thresholds in OrgNotificationSettings.objects.values_list(
            "org_id", "thresholds"
        )
    }


def _fmt(n: int) -> str:
    return f"{n:,}"


def _quota_words(metric: str) -> tuple[str, str]:
    what, _per, span = metric.partition("_per_")
    return what, span  # ("requests", "day")


def _quota_spec(reading: QuotaReading, threshold: int, *, deliver: bool) -> NotificationSpec:
    what, span = _quota_words(reading.metric)
    pct = reading.used * 100 // reading.limit if reading.limit else 0
    reached = threshold >= 100
    title = (
        f"{reading.label} has used {'all' if reached else f'{threshold}%'} of its {what} per {span}"
    )
    resets = reading.resets_at.astimezone(UTC)
    action = (
        f"Requests beyond the quota answer 429 insufficient_quota until {resets:%Y-%m-%d %H:%M} "
        "UTC. Move the organization to a larger plan, or spread the load over time."
        if reached
        else "Check which keys use the most on the usage page, and consider a larger plan "
        "before the quota runs out."
    )
    data = {
        "metric": reading.metric,
        "threshold": threshold,
        "used": reading.used,
        "limit": reading.limit,
        "percent": pct,
        "figure": f"{_fmt(reading.used)} of {_fmt(reading.limit)} {what} "
        f"{'today' if span == 'day' else 'this month'} ({pct}%)",
        "resets_at": resets.isoformat(),
        "action": action,
        "action_url": "/usage",
        "subject": {"kind": reading.subject.kind, "id": reading.subject.id},
    }
    return NotificationSpec(
        org_id=reading.org_id,
        event=Event.QUOTA,
        subject=reading.subject,
        title=title,
        data=data,
        metric=reading.metric,
        threshold=threshold,
        period=reading.period,
        also_notify=reading.also_notify,
        deliver=deliver,
    )


@dataclass
class DetectResult:
    orgs_read: int = 0
    readings: int = 0
    quota: int = 0
    expiring: int = 0
    first_calls: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def notifications_detect(*, now: datetime | None = None) -> DetectResult:
    """The detector (Celery beat, every minute): quota crossings from the limit counters, keys
    about to expire, keys' first successful calls. Safe to run twice or at once: every event
    is recorded under the unique constraint. Never on a /v1/ request's path."""
    started = time.monotonic()
    now = now or timezone.now()
    result = DetectResult()
    try:
        _detect_quotas(now, result)
    except BackendUnavailable as exc:  # Redis down: the next run catches up
        result.errors.append(f"quota counters unavailable: {exc}")
        log.warning("notifications: quota counters unavailable: %s", exc)
    result.expiring = _detect_expiring(now)
    result.first_calls = _detect_first_calls(now)
    unread_refresh()
    result.seconds = time.monotonic() - started
    return result


def _detect_quotas(now: datetime, result: DetectResult) -> None:
    now_ms = int(now.timestamp() * 1000)
    thresholds = org_thresholds_map()
    readings = [r for source in QUOTA_SOURCES for r in source(now_ms)]
    result.readings = len(readings)
    result.orgs_read = len({r.org_id for r in readings})
    periods = {r.period for r in readings}
    sent = set(
        Notification.objects.filter(event=Event.QUOTA, period__in=periods).values_list(
            "org_id", "subject_kind", "subject_id", "metric", "threshold", "period"
        )
    )
    specs: list[NotificationSpec] = []
    for reading in readings:
        if reading.limit <= 0:
            continue
        crossed = [
            t
            for t in thresholds.get(reading.org_id, DEFAULT_THRESHOLDS)
            if reading.used * 100 >= t * reading.limit
        ]
        new = [
            t
            for t in crossed
            if (
                reading.org_id,
                reading.subject.kind,
                reading.subject.id,
                reading.metric,
                t,
                reading.period,
            )
            not in sent
        ]
        if not new:
            continue
        top = max(new)
        # Lower thresholds crossed in the same minute are recorded (never sent later) but only
        # the highest is delivered: 0 → 100 % is one message.
        specs += [_quota_spec(reading, t, deliver=t == top) for t in sorted(new)]
    result.quota = sum(1 for n in notifications_record(specs) if n.delivered)


EXPIRY_DAYS = (7, 1)


def _detect_expiring(now: datetime) -> int:
    horizon = now + timedelta(days=max(EXPIRY_DAYS))
    keys: list[dict[str, Any]] = [
        dict(row)
        for row in ApiKey.objects.filter(
            revoked_at__isnull=True, expires_at__gt=now, expires_at__lte=horizon, playground=False
        ).values("pk", "org_id", "owner_id", "name", "public_id", "expires_at")
    ]
    if not keys:
        return 0
    sent = set(
        Notification.objects.filter(
            event=Event.KEY_EXPIRING,
            subject_kind=SubjectKind.KEY,
            subject_id__in=[k["pk"] for k in keys],
        ).values_list("subject_id", "threshold", "period")
    )
    specs: list[NotificationSpec] = []
    for key in keys:
        period = key["expires_at"].astimezone(UTC).isoformat()
        due = [d for d in EXPIRY_DAYS if key["expires_at"] - now <= timedelta(days=d)]
        new = [d for d in due if (key["pk"], d, period) not in sent]
        if new:
            nearest = min(new)
            specs += [_expiring_spec(key, d, period, deliver=d == nearest) for d in new]
    return sum(1 for n in notifications_record(specs) if n.delivered)


def _expiring_spec(key: dict, days: int, period: str, *, deliver: bool) -> NotificationSpec:
    when = key["expires_at"].astimezone(UTC)
    label = f"{key['name']} (ctsk_{key['public_id']}…)"
    return NotificationSpec(
        org_id=key["org_id"],
        event=Event.KEY_EXPIRING,
        subject=Subject(SubjectKind.KEY, key["pk"]),
        title=f"API key {label} expires in {'1 day' if days == 1 else f'{days} days'}",
        data={
            "key": {"id": key["pk"], "name": key["name"], "prefix": key["public_id"]},
            "days": days,
            "figure": f"Expires at {when:%Y-%m-%d %H:%M} UTC",
            "expires_at": when.isoformat(),
            "resets_at": None,
            "action": "Create a new key, move your applications to it, then revoke this "
            "one; requests with an expired key answer 401.",
            "action_url": "/keys",
        },
        threshold=days,
        period=period,
        also_notify=(key["owner_id"],),
        deliver=deliver,
    )


FIRST_CALL_WINDOW_DAYS = 30  # older keys were live before this feature: no note for them


def _detect_first_calls(now: datetime) -> int:
    """Keys with a successful usage record and no "you're live" note yet. `last_used_at`
    (already written at authentication, at most once a minute per key) narrows the candidates
    so the record table is only probed for keys that were used."""
    noted = Notification.objects.filter(
        event=Event.KEY_LIVE, subject_kind=SubjectKind.KEY, subject_id=OuterRef("pk")
    )
    succeeded = UsageRecord.objects.filter(
        org_id=OuterRef("org_id"), key_id=OuterRef("pk"), outcome=UsageRecord.Outcome.OK
    )
    keys = list(
        ApiKey.objects.filter(
            last_used_at__isnull=False,
            playground=False,
            created_at__gte=now - timedelta(days=FIRST_CALL_WINDOW_DAYS),
        )
        .filter(~Exists(noted), Exists(succeeded))
        .values("pk", "org_id", "owner_id", "name", "public_id")[:1000]
    )
    specs = []
    for key in keys:
        label = f"{key['name']} (ctsk_{key['public_id']}…)"
        specs.append(
            NotificationSpec(
                org_id=key["org_id"],
                event=Event.KEY_LIVE,
                subject=Subject(SubjectKind.KEY, key["pk"]),
                title=f"You're live: API key {label} made its first successful call",
                data={
                    "key": {"id": key["pk"], "name": key["name"], "prefix": key["public_id"]},
                    "figure": "First successful call",
                    "resets_at": None,
                    "action": "Watch requests, tokens and limits on the usage page; set up "
                    "notifications and webhooks so you hear about limits before your users do.",
                    "action_url": "/usage",
                },
                also_notify=(key["owner_id"],),
            )
        )
    return len(notifications_record(specs))


# --- keys and members (called by receivers) -------------------------------------------------


def _who(actor: User | None, label: str = "", *, org_id: int | None = None) -> str:
    """Who did it, as the organization may read it: a member by email; staff (not members)
    and commands as the operator they are, never a staff member's address."""
    if actor is None:
        return label or "an operator"
    if actor.is_staff and not Membership.objects.filter(org_id=org_id, user=actor).exists():
        return "Cortensor support"
    return actor.email


def notify_key_revoked(*, key: ApiKey, actor: User | None, actor_label: str = "") -> None:
    """A key was revoked by someone other than its creator (a member removal, an admin, staff):
    the creator hears of it, as do the owners and admins."""
    if actor is not None and actor.pk == key.owner_id:
        return
    label = f"{key.name} ({key.display_prefix})"
    notification_record(
        org_id=key.org_id,
        event=Event.KEY_REVOKED,
        subject=Subject(SubjectKind.KEY, key.pk),
        title=f"API key {label} was revoked by {_who(actor, actor_label, org_id=key.org_id)}",
        data={
            "key": {"id": key.pk, "name": key.name, "prefix": key.public_id},
            "actor": _who(actor, actor_label, org_id=key.org_id),
            "figure": f"Revoked at {timezone.now():%Y-%m-%d %H:%M} UTC",
            "resets_at": None,
            "action": "Requests with this key now answer 401. Create a new key if you still "
            "need one, and ask the organization's admins why it was revoked.",
            "action_url": "/keys",
        },
        also_notify=[key.owner_id],
    )


def notify_key_rotated(*, key: ApiKey, actor: User | None, **_: Any) -> None:
    """A key's secret was rotated by someone other than its creator. Ready for apikeys'
    `key_rotated` signal: `key_rotated.connect(lambda sender, key, actor, **kw:
    notify_key_rotated(key=key, actor=actor))`."""
    if actor is not None and actor.pk == key.owner_id:
        return
    now = timezone.now()
    label = f"{key.name} ({key.display_prefix})"
    notification_record(
        org_id=key.org_id,
        event=Event.KEY_ROTATED,
        subject=Subject(SubjectKind.KEY, key.pk),
        title=f"API key {label} was rotated by {_who(actor, org_id=key.org_id)}",
        data={
            "key": {"id": key.pk, "name": key.name, "prefix": key.public_id},
            "actor": _who(actor, org_id=key.org_id),
            "figure": f"Rotated at {now:%Y-%m-%d %H:%M} UTC",
            "resets_at": None,
            "action": "Applications using the old secret must switch to the new one; ask "
            "whoever rotated it for the new secret or create a key of your own.",
            "action_url": "/keys",
        },
        period=now.isoformat(),  # every rotation is its own event
        also_notify=[key.owner_id],
    )


def notify_member_invited(*, invitation) -> None:
    inviter = invitation.invited_by.email if invitation.invited_by_id else "an operator"
    notification_record(
        org_id=invitation.org_id,
        event=Event.MEMBER_INVITED,
        subject=Subject(SubjectKind.INVITATION, invitation.pk),
        title=f"{invitation.email} was invited as {invitation.role}",
        data={
            "email": invitation.email,
            "role": invitation.role,
            "invited_by": inviter,
            "figure": f"Invited by {inviter}; the invitation is valid for 7 days",
            "resets_at": None,
            "action": "Revoke the invitation on the organization page if it was not meant.",
            "action_url": "/org",
        },
    )


def notify_member_joined(*, membership: Membership) -> None:
    if not Membership.objects.filter(org_id=membership.org_id).exclude(pk=membership.pk).exists():
        return  # the organization's first owner, as it is made: nobody joined anything
    email = User.objects.filter(pk=membership.user_id).values_list("email", flat=True).first()
    notification_record(
        org_id=membership.org_id,
        event=Event.MEMBER_JOINED,
        subject=Subject(SubjectKind.MEMBERSHIP, membership.pk),
        title=f"{email} joined as {membership.role}",
        data={
            "email": email,
            "role": membership.role,
            "figure": f"Role: {membership.role}",
            "resets_at": None,
            "action": "Check the members and their roles on the organization page.",
            "action_url": "/org",
        },
    )


def notify_member_removed(*, org_id: int, user_id: int, actor: User | None) -> None:
    email = User.objects.filter(pk=user_id).values_list("email", flat=True).first()
    left = actor is not None and actor.pk == user_id
    who = _who(actor, org_id=org_id)
    title = f"{email} left the organization" if left else f"{email} was removed by {who}"
    notification_record(
        org_id=org_id,
        event=Event.MEMBER_REMOVED,
        subject=Subject(SubjectKind.USER, user_id),
        title=title,
        data={
            "email": email,
            "actor": who,
            "figure": "The keys they created in the organization were revoked",
            "resets_at": None,
            "action": "Replace any of their keys your applications still used.",
            "action_url": "/keys",
        },
        period=timezone.now().isoformat(),  # someone may leave, rejoin and leave again
    )


# --- inbox ------------------------------------------------------------------------------------


def _unread_key(user_id: int) -> str:
    return f"notifications:unread:{user_id}"


def unread_refresh(*, user_ids: Iterable[int] | None = None) -> int:
    """Write the unread counts the navigation shows into the cache (no expiry): for `user_ids`
    after their inbox changed, or (None) for every user with unread items, which the detector
    does every minute so a cache that lost its keys heals itself. One grouped, indexed count."""
    items = InboxItem.objects.filter(read_at__isnull=True)
    if user_ids is not None:
        user_ids = list(user_ids)
        items = items.filter(user_id__in=user_ids)
    counts = dict(
        items.order_by().values("user_id").annotate(n=Count("pk")).values_list("user_id", "n")
    )
    values = {_unread_key(uid): counts.get(uid, 0) for uid in (user_ids or [])}
    values.update({_unread_key(uid): n for uid, n in counts.items()})
    try:
        cache.set_many(values, timeout=None)
    except Exception:  # the cache is down: the detector writes them again next minute
        log.warning("notifications: unread counts not cached")
    return len(values)


def unread_count(*, user_id: int) -> int:
    """The navigation's unread count, from the cache only: a page never queries for it. The
    writers keep it (after commit) and the detector rewrites it every minute."""
    try:
        value = cache.get(_unread_key(user_id))
    except Exception:
        return 0
    return int(value or 0)


def inbox_mark_read(*, user: User, item_ids: Iterable[int] | None = None) -> int:
    """Mark the user's items read (all of them with no ids). Others' items are untouched."""
    items = InboxItem.objects.filter(user=user, read_at__isnull=True)
    if item_ids is not None:
        items = items.filter(pk__in=list(item_ids))
    with transaction.atomic():
        count = items.update(read_at=timezone.now())
        uid = user.pk
        transaction.on_commit(lambda: unread_refresh(user_ids=[uid]))
    return count


# --- preferences ------------------------------------------------------------------------------


def email_muted(*, user_id: int) -> set[str]:
    prefs = EmailPreference.objects.filter(user_id=user_id).values_list("muted", flat=True).first()
    return set(prefs or [])


def email_prefs_set(*, user: User, muted: Iterable[str]) -> list[str]:
    muted = sorted(set(muted))
    unknown = [m for m in muted if m not in Event.values]
    if unknown:
        raise InvalidRequest(f"Unknown event type {unknown[0]!r}.", param="muted")
    EmailPreference.objects.update_or_create(user=user, defaults={"muted": muted})
    return muted


def unsubscribe_token(*, user_id: int, event: str) -> str:
    return signing.dumps({"u": user_id, "e": event}, salt=UNSUBSCRIBE_SALT)


def unsubscribe_url(*, user_id: int, event: str) -> str:
    token = unsubscribe_token(user_id=user_id, event=event)
    return settings.PORTAL_BASE_URL + reverse("notifications:unsubscribe", args=[token])


def unsubscribe_read(token: str) -> tuple[User, str]:
    """The user and event a signed unsubscribe link names; InvalidRequest when it is not ours."""
    try:
        data = signing.loads(token, salt=UNSUBSCRIBE_SALT)
        user = User.objects.get(pk=int(data["u"]))
        event = str(data["e"])
    except (signing.BadSignature, User.DoesNotExist, KeyError, TypeError, ValueError):
        raise InvalidRequest("This unsubscribe link is not valid.", param="token") from None
    if event not in Event.values:
        raise InvalidRequest("This unsubscribe link is not valid.", param="token")
    return user, event


def unsubscribe_apply(*, token: str) -> tuple[User, str]:
    """Mute the event the link names for its user (no login: the signature is the proof)."""
    user, event = unsubscribe_read(token)
    with transaction.atomic():
        prefs, _ = EmailPreference.objects.select_for_update().get_or_create(user=user)
        if event not in prefs.muted:
            prefs.muted = sorted({*prefs.muted, event})
            prefs.save(update_fields=["muted", "updated_at"])
    log.info("notifications: unsubscribed", extra={"user_id": user.pk, "event": event})
    return user, event


def _require_admin(actor: Membership) -> None:
    if not actor.allows(Role.ADMIN):
        raise PermissionDeniedError(
            "This needs the admin role in the organization.", code="permission_denied"
        )


def org_thresholds(*, org_id: int) -> list[int]:
    stored = (
        OrgNotificationSettings.objects.filter(org_id=org_id)
        .values_list("thresholds", flat=True)
        .first()
    )
    return sorted(stored) if stored is not None else list(DEFAULT_THRESHOLDS)


def org_thresholds_set(*, actor: Membership, thresholds: Iterable[int]) -> list[int]:
    _require_admin(actor)
    try:
        values = sorted({int(t) for t in thresholds})
    except (TypeError, ValueError):
        raise InvalidRequest("Thresholds are percentages.", param="thresholds") from None
    if any(t not in THRESHOLD_CHOICES for t in values):
        raise InvalidRequest(
            f"Thresholds are among {', '.join(map(str, THRESHOLD_CHOICES))}.", param="thresholds"
        )
    OrgNotificationSettings.objects.update_or_create(
        org_id=actor.org_id, defaults={"thresholds": values}
    )
    return values


# --- email ------------------------------------------------------------------------------------


def notification_emails_send(*, notification_id: int) -> int:
    """Mail a notification to each recipient who has not muted its event (one message each:
    every message carries its own signed unsubscribe link). Returns how many were sent."""
    notification = Notification.objects.select_related("org").filter(pk=notification_id).first()
    if notification is None:
        return 0
    users = list(
        User.objects.filter(notification_items__notification=notification, is_active=True).order_by(
            "pk"
        )
    )
    muted = {
        p.user_id: set(p.muted)
        for p in EmailPreference.objects.filter(user__in=users).only("user_id", "muted")
    }
    sent = 0
    for user in users:
        if notification.event in muted.get(user.pk, set()):
            continue
        _mail(notification, user)
        sent += 1
    return sent


EVENT_SUBJECTS = {
    Event.QUOTA: "Quota alert",
    Event.KEY_EXPIRING: "API key expiring",
    Event.KEY_REVOKED: "API key revoked",
    Event.KEY_ROTATED: "API key rotated",
    Event.MEMBER_INVITED: "Member invited",
    Event.MEMBER_JOINED: "Member joined",
    Event.MEMBER_REMOVED: "Member removed",
    Event.KEY_LIVE: "You're live",
}


def _mail(notification: Notification, user: User) -> None:
    data = notification.data
    resets = data.get("resets_at")
    context = {
        "notification": notification,
        "org_name": notification.org.name,
        "figure": data.get("figure", ""),
        "resets_at": datetime.fromisoformat(resets) if resets else None,
        "action": data.get("action", ""),
        "action_url": settings.PORTAL_BASE_URL + data.get("action_url", "/notifications"),
        "notifications_url": settings.PORTAL_BASE_URL + "/notifications",
        "unsubscribe_url": unsubscribe_url(user_id=user.pk, event=notification.event),
        "event_label": Event(notification.event).label,
        "base_url": settings.PORTAL_BASE_URL,
    }
    subject = (
        f"{settings.ACCOUNT_EMAIL_SUBJECT_PREFIX}{EVENT_SUBJECTS[Event(notification.event)]}: "
        f"{notification.title}"
    )
    _send(
        subject=subject,
        to=user.email,
        template="notifications/email/notification",
        context=context,
        unsubscribe=context["unsubscribe_url"],
    )


def _send(*, subject: str, to: str, template: str, context: dict, unsubscribe: str = "") -> None:
    headers = {}
    if unsubscribe:
        # RFC 8058 one-click: mail clients POST to the link; it needs no login.
        headers["List-Unsubscribe"] = f"<{unsubscribe}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message = EmailMultiAlternatives(
        subject=subject.replace("\n", " ")[:250],
        body=render_to_string(f"{template}.txt", context),
        to=[to],
        headers=headers,
    )
    message.attach_alternative(render_to_string(f"{template}.html", context), "text/html")
    message.send()


# --- webhooks ---------------------------------------------------------------------------------


def webhook_event_body(notification: Notification) -> str:
    """The JSON a receiver gets: `id` to deduplicate on, `type`, `created`, the organization
    and the event's data. Compact and stable: the signature covers these exact bytes."""
    org = notification.org
    return json.dumps(
        {
            "id": notification.event_id,
            "object": "event",
            "type": notification.event,
            "created": int(notification.created_at.timestamp()),
            "organization": {"id": org.pk, "slug": org.slug, "name": org.name},
            "title": notification.title,
            "data": notification.data,
        },
        separators=(",", ":"),
        sort_keys=True,
    )


def webhook_signature(*, secret: str, body: bytes, timestamp: int) -> str:
    """Stripe's scheme: `t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


class AddressRefused(Exception):
    pass


def _refused_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_loopback
        or ip.is_link_local
        or ip.is_private
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
    )


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str  # the checked address the request goes to (no second DNS lookup)


def webhook_target(url: str) -> Target:
    """Check a webhook URL and resolve it: https (http only with DEBUG), no credentials, and
    (unless DEBUG) no loopback, link-local or private address among the ones it resolves to.
    Raises InvalidRequest for a bad URL, AddressRefused for a refused or unresolvable host."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidRequest("Enter a valid URL.", param="url", code="invalid_url") from None
    allowed = ("https", "http") if settings.DEBUG else ("https",)
    if parts.scheme not in allowed:
        raise InvalidRequest(
            "A webhook URL must use https.", param="url", code="webhook_https_required"
        )
    if not parts.hostname or parts.username or parts.password:
        raise InvalidRequest(
            "Enter a URL with a host and no credentials.", param="url", code="invalid_url"
        )
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise AddressRefused(f"{parts.hostname} does not resolve") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not settings.DEBUG:
        bad = [ip for ip in addresses if _refused_address(ip)]
        if bad:
            raise AddressRefused(
                f"{parts.hostname} resolves to a loopback, link-local or private address ({bad[0]})"
            )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, parts.hostname, port, path, str(addresses[0]))


def webhook_endpoint_create(
    *, actor: Membership, url: str, description: str = ""
) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint of the actor's organization (admins). Returns it and its signing
    secret, shown this once."""
    _require_admin(actor)
    url = (url or "").strip()
    if len(url) > 500:
        raise InvalidRequest("A URL has at most 500 characters.", param="url")
    try:
        webhook_target(url)
    except AddressRefused as exc:
        raise InvalidRequest(
            f"Refused: {exc}.", param="url", code="webhook_address_refused"
        ) from None
    if WebhookEndpoint.objects.filter(org_id=actor.org_id).count() >= 10:
        raise InvalidRequest("At most 10 endpoints per organization.", param="url")
    endpoint = WebhookEndpoint.objects.create(
        org_id=actor.org_id, url=url, description=description[:200], created_by=actor.user
    )
    log.info("webhook endpoint created", extra={"org_id": actor.org_id, "endpoint": endpoint.pk})
    return endpoint, endpoint.secret


def webhook_endpoint_rotate(*, actor: Membership, endpoint: WebhookEndpoint) -> str:
    """A new signing secret (shown once); the old one stops signing at once."""
    _require_admin(actor)
    secret = new_webhook_secret()
    WebhookEndpoint.objects.filter(pk=endpoint.pk, org_id=actor.org_id).update(secret=secret)
    endpoint.secret = secret
    return secret


def webhook_endpoint_enable(*, actor: Membership, endpoint: WebhookEndpoint) -> None:
    _require_admin(actor)
    WebhookEndpoint.objects.filter(pk=endpoint.pk, org_id=actor.org_id).update(
        disabled_at=None, disabled_reason="", failing_since=None
    )


def webhook_endpoint_delete(*, actor: Membership, endpoint: WebhookEndpoint) -> None:
    _require_admin(actor)
    WebhookEndpoint.objects.filter(pk=endpoint.pk, org_id=actor.org_id).delete()


def _retry_delay(attempts: int) -> float:
    base = settings.WEBHOOK_RETRY_BASE_SECONDS
    return min(base * 2 ** max(0, attempts - 1), settings.WEBHOOK_RETRY_MAX_SECONDS)


_pools: dict[tuple, urllib3.HTTPConnectionPool] = {}


def _post(target: Target, body: bytes, headers: dict[str, str]) -> int:
    """POST to the checked address (no second DNS lookup), TLS verified against the host name;
    no redirects; WEBHOOK_TIMEOUT_SECONDS in all. Returns the status code."""
    timeout = urllib3.Timeout(total=settings.WEBHOOK_TIMEOUT_SECONDS)
    host_header = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"
    pool: urllib3.HTTPConnectionPool
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            target.address,
            target.port,
            timeout=timeout,
            retries=False,
            server_hostname=target.host,
            assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED",
            ca_certs=settings.WEBHOOK_CA_BUNDLE or None,  # None: the system's CAs
            maxsize=1,
        )
    else:
        pool = urllib3.HTTPConnectionPool(
            target.address, target.port, timeout=timeout, retries=False, maxsize=1
        )
    with pool:
        response = pool.urlopen(
            "POST",
            target.path,
            body=body,
            headers={**headers, "Host": host_header},
            redirect=False,
            preload_content=False,
        )
        response.read(65536, decode_content=False)  # a bounded look; we keep only the status
        response.release_conn()
        return response.status


def webhook_deliver(*, delivery_id: int) -> str:
    """One attempt at a pending delivery that is due (or none if another worker holds it).
    Success: done. Failure: retried with exponential backoff for WEBHOOK_RETRY_WINDOW_SECONDS,
    then failed; an endpoint failing for WEBHOOK_DISABLE_AFTER_SECONDS is disabled and its
    owners told by email. Returns the delivery's status."""
    now = timezone.now()
    lease = now + timedelta(seconds=settings.WEBHOOK_TIMEOUT_SECONDS + 60)
    claimed = (
        WebhookDelivery.objects.filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .update(next_attempt_at=lease)
    )
    delivery = WebhookDelivery.objects.select_related("endpoint").filter(pk=delivery_id).first()
    if delivery is None:
        return "missing"
    if not claimed:
        return delivery.status
    endpoint = delivery.endpoint
    if not endpoint.enabled:
        _finish(delivery, status=WebhookDelivery.Status.FAILED, error="endpoint disabled")
        return delivery.status
    code: int | None = None
    error = ""
    try:
        target = webhook_target(endpoint.url)  # again now: DNS can change after registration
        body = delivery.body.encode()
        timestamp = int(time.time())
        code = _post(
            target,
            body,
            {
                "Content-Type": "application/json",
                "User-Agent": "Cortensor-Portal-Webhooks/1",
                SIGNATURE_HEADER: webhook_signature(
                    secret=endpoint.secret, body=body, timestamp=timestamp
                ),
                "Cortensor-Event-Id": delivery.event_id,
            },
        )
        if not 200 <= code < 300:
            error = f"HTTP {code}"
    except AddressRefused as exc:
        error = f"refused: {exc}"
    except InvalidRequest as exc:
        error = f"refused: {exc.message}"
    except urllib3.exceptions.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:300]
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"[:300]
    _after_attempt(delivery, code=code, error=error)
    return delivery.status


def _finish(delivery: WebhookDelivery, *, status: str, error: str = "", code=None) -> None:
    delivery.status = status
    delivery.last_error = error[:300]
    delivery.response_code = code
    delivery.next_attempt_at = None
    delivery.save(update_fields=["status", "last_error", "response_code", "next_attempt_at"])


def _after_attempt(delivery: WebhookDelivery, *, code: int | None, error: str) -> None:
    now = timezone.now()
    delivery.attempts += 1
    delivery.last_attempt_at = now
    delivery.response_code = code
    delivery.last_error = error[:300]
    endpoint = delivery.endpoint
    if not error:
        delivery.status = WebhookDelivery.Status.SUCCEEDED
        delivery.next_attempt_at = None
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=None)
    else:
        delay = _retry_delay(delivery.attempts)
        window = timedelta(seconds=settings.WEBHOOK_RETRY_WINDOW_SECONDS)
        if now + timedelta(seconds=delay) - delivery.created_at <= window:
            delivery.next_attempt_at = now + timedelta(seconds=delay)
        else:
            delivery.status = WebhookDelivery.Status.FAILED
            delivery.next_attempt_at = None
        WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=True).update(
            failing_since=now
        )
    delivery.save(
        update_fields=[
            "attempts",
            "last_attempt_at",
            "response_code",
            "last_error",
            "status",
            "next_attempt_at",
        ]
    )
    log.info(
        "webhook attempt",
        extra={"delivery": delivery.pk, "status": delivery.status, "code": code, "error": error},
    )
    if error:
        _disable_if_failing(endpoint.pk, now)


def _disable_if_failing(endpoint_id: int, now: datetime) -> None:
    cutoff = now - timedelta(seconds=settings.WEBHOOK_DISABLE_AFTER_SECONDS)
    with transaction.atomic():
        disabled = WebhookEndpoint.objects.filter(
            pk=endpoint_id, disabled_at__isnull=True, failing_since__lte=cutoff
        ).update(disabled_at=now, disabled_reason="failing for 3 days")
        if not disabled:
            return
        WebhookDelivery.objects.filter(
            endpoint_id=endpoint_id, status=WebhookDelivery.Status.PENDING
        ).update(status=WebhookDelivery.Status.FAILED, next_attempt_at=None)
        transaction.on_commit(lambda: _mail_endpoint_disabled(endpoint_id))
    log.warning("webhook endpoint disabled", extra={"endpoint": endpoint_id})


def _mail_endpoint_disabled(endpoint_id: int) -> None:
    endpoint = WebhookEndpoint.objects.select_related("org").filter(pk=endpoint_id).first()
    if endpoint is None:
        return
    owners = User.objects.filter(
        memberships__org_id=endpoint.org_id, memberships__role=Role.OWNER, is_active=True
    )
    for owner in owners:
        _send(
            subject=f"{settings.ACCOUNT_EMAIL_SUBJECT_PREFIX}Webhook endpoint disabled: "
            f"{endpoint.url}",
            to=owner.email,
            template="notifications/email/webhook_disabled",
            context={
                "endpoint": endpoint,
                "org_name": endpoint.org.name,
                "webhooks_url": settings.PORTAL_BASE_URL + "/notifications/webhooks",
                "base_url": settings.PORTAL_BASE_URL,
            },
        )


def webhook_deliveries_due(*, limit: int = 500) -> list[int]:
    return list(
        WebhookDelivery.objects.filter(
            status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=timezone.now()
        )
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )


def webhook_resend(*, delivery: WebhookDelivery, actor: User | None = None) -> WebhookDelivery:
    """Send a delivery's event again (same id and body: receivers deduplicate on the id), as a
    new delivery with its own log line. With an `actor` (staff), it is on record."""
    if actor is not None:
        staff_actions_record(
            actor=actor,
            action="webhook.resend",
            changes=[(delivery, {"status": delivery.status}, {"status": "pending"})],
        )
    copy = WebhookDelivery.objects.create(
        endpoint_id=delivery.endpoint_id,
        notification_id=delivery.notification_id,
        event_id=delivery.event_id,
        event=delivery.event,
        body=delivery.body,
        next_attempt_at=timezone.now(),
    )
    transaction.on_commit(lambda: tasks.deliver_webhook.delay(copy.pk))
    return copy

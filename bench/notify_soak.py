#!/usr/bin/env python
"""Benchmark: one run of the notifications detector over 10,000 organizations, each with a key
and its plan's day and month counters in Redis, on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_notify_bench \\
    REDIS_URL=redis://127.0.0.1:6379/9 .venv/bin/python bench/notify_soak.py [--orgs 10000]

Creates the database if missing and migrates it; inserts `--orgs` users, organizations (on one
plan with daily and monthly request and token quotas), owners and keys; writes their four
counters into Redis (one pipeline), one organization in ten past 80 % of its daily requests.
Then it times the detector (`notifications.services.notifications_detect`, what the Celery beat
task runs every minute): the first run records the crossings, their inbox rows, and enqueues
their mail tasks (in-memory broker, no worker); the next three are the steady state that runs
every minute (nothing new). Then it times the mail a worker would send for them (rendered,
handed to Django's locmem backend). Target: a detector run under 10 s. Prints the figures as
JSON and removes what it inserted (rows and counters).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

TARGET_SECONDS = 10.0


def fill(orgs: int, *, crossing_every: int = 10) -> dict:
    """Insert `orgs` organizations (one owner, one key each) on one quota plan and write their
    counters with the limits engine's key names: every `crossing_every`-th organization is at
    85 % of its daily requests, the others at 30 %. Returns what to clean up afterwards."""
    from django.conf import settings

    from accounts.models import Membership, Organization, Plan, Role, User
    from apikeys.models import ApiKey
    from core.redis import get_redis
    from metering.limits import keys
    from metering.limits.base import Periods

    tag = uuid.uuid4().hex[:8]
    plan = Plan.objects.create(
        name=f"soak-{tag}",
        requests_per_day=1000,
        tokens_per_day=1_000_000,
        requests_per_month=30_000,
        tokens_per_month=30_000_000,
    )
    users = User.objects.bulk_create(
        [User(email=f"soak-{tag}-{i}@example.com", password="!") for i in range(orgs)],
        batch_size=2000,
    )
    org_rows = Organization.objects.bulk_create(
        [Organization(name=f"Soak {i}", slug=f"soak-{tag}-{i}", plan=plan) for i in range(orgs)],
        batch_size=2000,
    )
    Membership.objects.bulk_create(
        [Membership(org=o, user=u, role=Role.OWNER) for o, u in zip(org_rows, users, strict=True)],
        batch_size=2000,
    )
    ApiKey.objects.bulk_create(
        [
            ApiKey(org=o, owner=u, name="soak", public_id=f"s{tag}{i}", secret_hash="0" * 64)
            for i, (o, u) in enumerate(zip(org_rows, users, strict=True))
        ],
        batch_size=2000,
    )
    if not settings.REDIS_URL:
        raise SystemExit("the soak needs REDIS_URL: its counters live in Redis")
    periods = Periods.at(int(time.time() * 1000))
    client = get_redis()
    pipe = client.pipeline(transaction=False)
    names = []
    crossing = 0
    for i, org in enumerate(org_rows):
        base = keys.org_base(org.pk)
        over = i % crossing_every == 0
        crossing += over
        values = {"rpd": 850 if over else 300, "tpd": 1000, "rpmo": 5000, "tpmo": 100_000}
        for short, value in values.items():
            name = keys.period(base, short, periods.day, periods.month)
            names.append(name)
            pipe.set(name, value, ex=2 * 86400)
    pipe.execute()
    return {"tag": tag, "plan": plan.pk, "names": names, "crossing": crossing}


def clean(filled: dict) -> None:
    from accounts.models import Organization, Plan, User
    from apikeys.models import ApiKey
    from core.redis import get_redis

    tag = filled["tag"]
    ApiKey.objects.filter(public_id__startswith=f"s{tag}").delete()
    Organization.objects.filter(slug__startswith=f"soak-{tag}-").delete()
    User.objects.filter(email__startswith=f"soak-{tag}-").delete()
    Plan.objects.filter(pk=filled["plan"]).delete()
    names = filled["names"]
    client = get_redis()
    for start in range(0, len(names), 5000):
        client.delete(*names[start : start + 5000])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--orgs", type=int, default=10_000)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")) or not os.environ.get("REDIS_URL"):
        print(
            "bench/notify_soak.py needs DATABASE_URL=postgres://…/portal_notify_bench and "
            "REDIS_URL",
            file=sys.stderr,
        )
        return 2
    os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings"
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ["EMAIL_URL"] = "locmem:"
    os.environ.setdefault("ALLOW_LOCAL_STATE", "1")
    from aggregate import ensure_database

    ensure_database(url)

    import django

    django.setup()
    from django.core import mail
    from django.core.management import call_command

    from notifications.models import Notification
    from notifications.services import notification_emails_send, notifications_detect
    from portal.celery import app

    # As in production, the detector only enqueues mail and webhook tasks: into an in-memory
    # broker here (no worker). The mail a worker then sends is timed separately below.
    app.conf.task_always_eager = False
    app.conf.broker_url = "memory://"
    call_command("migrate", verbosity=0, interactive=False)
    started = time.monotonic()
    filled = fill(args.orgs)
    fill_s = time.monotonic() - started
    mail.outbox = []
    try:
        first = notifications_detect()
        steady = [notifications_detect() for _ in range(3)]
        recorded = list(
            Notification.objects.filter(org__slug__startswith=f"soak-{filled['tag']}-").values_list(
                "pk", flat=True
            )
        )
        mail_started = time.monotonic()
        for notification_id in recorded:  # what the worker does with the enqueued tasks
            notification_emails_send(notification_id=notification_id)
        mail_s = time.monotonic() - mail_started
        figures = {
            "orgs": args.orgs,
            "keys": args.orgs,
            "counters_read": args.orgs * 4,
            "fill_seconds": round(fill_s, 2),
            "first_run_seconds": round(first.seconds, 3),
            "first_run_notified": first.quota,
            "worker_mail_seconds": round(mail_s, 2),
            "worker_mails": len(mail.outbox),
            "steady_run_seconds": [round(r.seconds, 3) for r in steady],
            "steady_run_notified": sum(r.quota for r in steady),
            "expected_crossings": filled["crossing"],
            "notifications_recorded": len(recorded),
            "target_seconds": TARGET_SECONDS,
        }
    finally:
        clean(filled)
    print(json.dumps(figures, indent=2))
    ok = (
        first.quota == filled["crossing"]
        and figures["steady_run_notified"] == 0
        and max(first.seconds, *(r.seconds for r in steady)) < TARGET_SECONDS
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""The plan's day and month counters move from each user's Redis keys to their personal
organization's (where the user's keys went, apikeys 0003), so a quota used before the
upgrade stays used after it. The per-minute windows and in-flight slots last a minute or a
lease: they are left to expire. Without REDIS_URL the counters live in each process's memory
and there is nothing to carry. Safe to run twice: a moved counter is deleted."""

import re

from django.conf import settings
from django.db import migrations

from core.redis import get_redis
from metering.limits import keys

_PERIOD = re.compile(r"^\{u(\d+)\}:(rd|td|rm|tm):(\d+)$")


def counters_to_organizations(apps, schema_editor):
    if not settings.REDIS_URL:
        return
    client = get_redis()
    if client is None:
        return
    Membership = apps.get_model("accounts", "Membership")
    personal = dict(
        Membership.objects.filter(org__personal=True, role="owner").values_list("user_id", "org_id")
    )
    head = keys.key_prefix() + ":"
    for raw in client.scan_iter(match=head + "{u*", count=1000):
        name = raw.decode()
        match = _PERIOD.match(name[len(head):])
        if match is None:
            continue  # a window, a slot or a key's refused counter: short-lived
        user_id, kind, period = int(match[1]), match[2], match[3]
        org_id = personal.get(user_id)
        value = client.get(name)
        if org_id is None or value is None:
            continue
        target = f"{keys.org_base(org_id)}:{kind}:{period}"
        expire_ms = client.pttl(name)
        pipe = client.pipeline(transaction=False)
        pipe.incrby(target, int(value))
        if expire_ms and expire_ms > 0:
            pipe.pexpire(target, expire_ms)
        pipe.delete(name)
        pipe.execute()


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0002_organizations"),
        ("metering", "0006_usage_organization"),
    ]

    operations = [
        migrations.RunPython(counters_to_organizations, migrations.RunPython.noop, elidable=False),
    ]

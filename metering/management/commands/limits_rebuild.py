"""Rebuild the limit counters in Redis from the usage records, after Redis lost its data.

UsageRecord is the source of truth. Today's and this month's admitted requests and their
tokens per user (a request refused by a limit or for bad input was never counted) become the
day and month counters; the last minute's records refill the per-minute windows of users and
keys. Safe to run any number of times: a counter is only raised to the database's count, never
lowered (it may hold requests admitted since Redis came back that have no record yet), unless
--force.
"""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand
from django.db.models import Count, Sum
from django.utils import timezone

from core.redis import get_redis
from metering.limits import keys
from metering.limits.base import WINDOW_MS, Periods, key_base, user_base
from metering.models import UsageRecord

# Raise a counter to at least the value given (or set it with force), and set its expiry.
SET_AT_LEAST = """
local cur = tonumber(redis.call('GET', KEYS[1])) or 0
local v = tonumber(ARGV[1])
if ARGV[3] == '1' or v > cur then redis.call('SET', KEYS[1], v) end
redis.call('EXPIREAT', KEYS[1], tonumber(ARGV[2]))
return 1
"""

# Put one finished request back into a per-minute window, once (keyed by its request id).
# KEYS: the window's request log, token log, token amounts, token sum (keys.window_keys).
ADD_TO_WINDOW = """
local m, at, tokens, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if not redis.call('ZSCORE', KEYS[1], m) then
  redis.call('ZADD', KEYS[1], at, m)
end
if not redis.call('ZSCORE', KEYS[2], m) then
  redis.call('ZADD', KEYS[2], at, m)
  redis.call('HSET', KEYS[3], m, tokens)
  redis.call('INCRBY', KEYS[4], tokens)
end
for _, k in ipairs(KEYS) do
  redis.call('PEXPIRE', k, ttl)
end
return 1
"""


class Command(BaseCommand):
    help = "Rebuild the day, month and per-minute limit counters in Redis from UsageRecord."

    def add_arguments(self, parser):
        parser.add_argument(
            "--force",
            action="store_true",
            help="Overwrite the day and month counters even when Redis holds "
            "more than the database (drops in-flight reservations).",
        )

    def handle(self, *args, force: bool = False, **options):
        client = get_redis()
        if client is None:
            self.stdout.write(
                "No REDIS_URL: limits live in each server process's memory; "
                "there is nothing to rebuild."
            )
            return
        now = timezone.now()
        periods = Periods.at(int(now.timestamp() * 1000))
        day_start = periods.day_end - timedelta(days=1)
        month_start = day_start.replace(day=1)
        counted = UsageRecord.objects.filter(admitted=True)

        set_at_least = client.register_script(SET_AT_LEAST)
        add_to_window = client.register_script(ADD_TO_WINDOW)
        pipe = client.pipeline(transaction=False)
        users = set()
        for since, span, expire_at in (
            (day_start, "d", periods.day_expire_at),
            (month_start, "m", periods.month_expire_at),
        ):
            rows = (
                counted.filter(created_at__gte=since)
                .order_by()
                .values("user_id")
                .annotate(n=Count("id"), tokens=Sum("total_tokens"))
            )
            for row in rows:
                base = user_base(row["user_id"])
                users.add(row["user_id"])
                names = ("rpd", "tpd") if span == "d" else ("rpmo", "tpmo")
                for name, value in zip(names, (row["n"], row["tokens"] or 0), strict=True):
                    set_at_least(
                        keys=[keys.period(base, name, periods.day, periods.month)],
                        args=[value, expire_at, "1" if force else "0"],
                        client=pipe,
                    )

        window_start = now - timedelta(milliseconds=WINDOW_MS)
        recent = (
            counted.filter(created_at__gt=window_start)
            .order_by()
            .values_list("request_id", "user_id", "key_id", "total_tokens", "created_at")
        )
        in_window = 0
        for request_id, user_id, key_id, tokens, created_at in recent.iterator():
            at = int(created_at.timestamp() * 1000)
            member = f"{request_id}:rebuilt"
            for base in (user_base(user_id), key_base(user_id, key_id)):
                add_to_window(
                    keys=keys.window_keys(base),
                    args=[member, at, tokens, WINDOW_MS + 1000],
                    client=pipe,
                )
            in_window += 1
        pipe.execute()
        self.stdout.write(
            self.style.SUCCESS(
                f"Rebuilt day ({periods.day}) and month ({periods.month}) counters for "
                f"{len(users)} user(s) and {in_window} request(s) of the last minute."
            )
        )

"""The usage table's monthly partitions on PostgreSQL (metering 0008): made ahead, dropped
whole once older than the retention.

`metering_usagerecord` is range-partitioned on `created_at`, one partition per UTC month
(`metering_usagerecord_pYYYY_MM`) and a default one for what falls outside them (a spooled or
journaled record of a month that has none, which should not happen while the beat task runs).
Beat (`metering.tasks.usage_partitions`, daily) and `manage.py usage_partitions` create the
months ahead; retention (`usage_prune`) drops a month once all of it is older than
USAGE_RETENTION_DAYS: dropping a partition is a catalog change that takes milliseconds,
where DELETE rewrites every page and leaves a vacuum behind.

On SQLite (and on a PostgreSQL table that is not partitioned) everything here does nothing.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import connection, transaction

log = logging.getLogger(__name__)

TABLE = "metering_usagerecord"
DEFAULT = f"{TABLE}_default"
MONTHS_AHEAD = 3
_NAME = re.compile(rf"^{TABLE}_p(\d{{4}})_(\d{{2}})$")
# Dropping a partition takes a short exclusive lock on the table: rather than queue every
# insert behind a long query that holds the table, give up and let the next run try again.
LOCK_TIMEOUT = "5s"


@dataclass(frozen=True, slots=True, order=True)
class Month:
    year: int
    month: int

    @classmethod
    def of(cls, moment: datetime) -> Month:
        moment = moment.astimezone(UTC)
        return cls(moment.year, moment.month)

    def plus(self, months: int) -> Month:
        index = self.year * 12 + self.month - 1 + months
        return Month(index // 12, index % 12 + 1)

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def name(self) -> str:
        return f"{TABLE}_p{self.year:04d}_{self.month:02d}"

    def literal(self) -> str:
        return f"'{self.year:04d}-{self.month:02d}-01 00:00:00+00'"


def is_partitioned() -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(%s)", [TABLE]
        )
        return cursor.fetchone() is not None


def usage_partitions() -> list[Month]:
    """The month partitions there are, oldest first ([] when the table is not partitioned)."""
    if not is_partitioned():
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(%s)",
            [TABLE],
        )
        names = [row[0] for row in cursor.fetchall()]
    months = []
    for name in names:
        match = _NAME.match(name)
        if match:
            months.append(Month(int(match[1]), int(match[2])))
    return sorted(months)


def usage_partitions_ensure(
    *, months_ahead: int = MONTHS_AHEAD, now: datetime | None = None
) -> list[str]:
    """Create this month's partition and the next `months_ahead` ones where missing; returns
    the names created. Records of such a month that went to the default partition meanwhile
    move into the new partition. Safe to run twice, or at once (an advisory lock)."""
    if not is_partitioned():
        return []
    current = Month.of(now or datetime.now(UTC))
    created = []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [TABLE])
        have = set(usage_partitions())
        for offset in range(months_ahead + 1):
            month = current.plus(offset)
            if month not in have:
                _create(cursor, month)
                created.append(month.name)
    if created:
        log.info("usage partitions created", extra={"partitions": created})
    return created


def _create(cursor, month: Month) -> None:
    lower, upper = month.literal(), month.plus(1).literal()
    # Made apart and attached, so that rows of this month waiting in the default partition can
    # move in first (attaching checks that the default holds none of the range). No insert
    # trigger fires here: the rows keep their ids, pending or folded as they were.
    cursor.execute(
        f"CREATE TABLE {month.name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
    )
    cursor.execute(
        f"WITH moved AS (DELETE FROM {DEFAULT} WHERE created_at >= {lower} "  # noqa: S608
        f"AND created_at < {upper} RETURNING *) INSERT INTO {month.name} SELECT * FROM moved"
    )
    cursor.execute(
        f"ALTER TABLE {TABLE} ATTACH PARTITION {month.name} FOR VALUES FROM ({lower}) TO ({upper})"
    )


@dataclass(frozen=True, slots=True)
class Dropped:
    name: str
    rows: int  # the planner's estimate (pg_class.reltuples): counting would read the month


def usage_partitions_drop(*, before: datetime) -> list[Dropped]:
    """Drop the month partitions that end at or before `before` and hold no record still
    waiting for aggregation (a month with one is kept, and logged, until it is folded)."""
    dropped = []
    for month in usage_partitions():
        if month.plus(1).start > before:
            break
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            cursor.execute(
                "SELECT EXISTS (SELECT 1 FROM metering_usagepending p "  # noqa: S608
                f"JOIN {month.name} r ON r.id = p.record_id)"
            )
            if cursor.fetchone()[0]:
                log.warning(
                    "usage partition kept: records not aggregated yet",
                    extra={"partition": month.name},
                )
                continue
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", [month.name]
            )
            rows = max(0, cursor.fetchone()[0])
            cursor.execute(f"DROP TABLE {month.name}")
        dropped.append(Dropped(month.name, rows))
        log.info("usage partition dropped", extra={"partition": month.name, "rows": rows})
    return dropped

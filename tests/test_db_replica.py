"""The read replica (DATABASE_REPLICA_URL): the heavy reads (usage page, CSV export, the
admin's usage lists) go to it; writes, an object's own admin page, `GET /v1/usage`, reads
inside a transaction and everything without a replica stay on the primary.

The "replica" alias here mirrors the test database (Django's TEST MIRROR, portal/test_settings.py),
so each query is told apart by the connection that ran it. The tests commit (transaction=True):
a mirror is another connection and sees only committed rows, like a real replica.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connections, transaction
from django.test.utils import CaptureQueriesContext

from core.db import read_replica, reads_alias, replica_alias
from metering.models import DailyUsage, UsageRecord
from metering.selectors import usage_for_key, usage_reads
from metering.services import usage_aggregate
from tests.builders import usage_records

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "replica"])

ROOT = Path(__file__).resolve().parent.parent
USAGE_TABLES = ("metering_usagerecord", "metering_dailyusage", "metering_usagepending")


@pytest.fixture(autouse=True)
def _close_the_replica():
    yield
    connections["replica"].close()  # or the test database cannot be dropped at the end


@pytest.fixture
def replica(settings):
    settings.READ_REPLICA = "replica"


class Queries:
    """What each database ran inside the block."""

    def __enter__(self):
        self.contexts = {alias: CaptureQueriesContext(connections[alias]) for alias in connections}
        for ctx in self.contexts.values():
            ctx.__enter__()
        return self

    def __exit__(self, *exc):
        for ctx in self.contexts.values():
            ctx.__exit__(*exc)

    def usage(self, alias: str) -> list[str]:
        return [
            q["sql"]
            for q in self.contexts[alias].captured_queries
            if any(table in q["sql"] for table in USAGE_TABLES)
        ]


@pytest.fixture
def usage(alice, alice_key):
    usage_records(alice, alice_key[0], n=3)
    usage_aggregate()
    usage_records(alice, alice_key[0], n=2)  # pending: read from the records themselves


def test_the_usage_page_reads_usage_from_the_replica(replica, usage, client, alice):
    client.force_login(alice)
    with Queries() as queries:
        response = client.get("/usage")
    assert response.status_code == 200
    assert "5" in response.content.decode()
    assert queries.usage("replica")
    assert queries.usage("default") == []
    # Sessions, users and memberships stay on the primary, where a page after a change finds them.
    assert queries.contexts["default"].captured_queries


def test_the_csv_export_streams_from_the_replica(replica, usage, client, alice):
    client.force_login(alice)
    with Queries() as queries:
        response = client.get("/usage/export.csv")
        body = b"".join(response.streaming_content).decode()
    assert response.status_code == 200
    assert len(body.strip().splitlines()) == 2  # the header and one ledger row
    assert any("metering_dailyusage" in sql for sql in queries.usage("replica"))
    assert queries.usage("default") == []


def test_admin_lists_read_the_replica_and_an_objects_page_the_primary(
    replica, usage, client, staff
):
    client.force_login(staff)
    record = UsageRecord.objects.first()
    ledger = DailyUsage.objects.first()
    assert record is not None and ledger is not None
    for url in ("/admin/metering/usagerecord/", "/admin/metering/dailyusage/"):
        with Queries() as queries:
            assert client.get(url).status_code == 200
        assert queries.usage("replica"), url
        assert queries.usage("default") == [], url
    with Queries() as queries:
        assert client.get(f"/admin/metering/usagerecord/{record.pk}/change/").status_code == 200
    assert queries.usage("default")
    assert queries.usage("replica") == []


def test_writes_and_reads_inside_a_transaction_stay_on_the_primary(replica, alice, alice_key):
    with read_replica(), Queries() as queries:
        assert reads_alias() == "replica"
        (record,) = usage_records(alice, alice_key[0], n=1)
        with transaction.atomic():
            assert reads_alias() == "default"
            assert UsageRecord.objects.filter(pk=record.pk).exists()
        assert usage_reads().filter(pk=record.pk).exists()
    assert len(queries.usage("default")) == 2  # the insert, the read in the transaction
    assert len(queries.usage("replica")) == 1


def test_the_api_usage_reads_the_primary(replica, usage, alice_key):
    key = alice_key[0]
    with Queries() as queries:
        totals = usage_for_key(org_id=key.org_id, key_id=key.pk)
    assert totals.key_today.requests == 5
    assert queries.usage("default") and queries.usage("replica") == []


def test_without_a_replica_everything_reads_the_primary(usage, client, alice):
    assert replica_alias() == "default"
    client.force_login(alice)
    with read_replica(), Queries() as queries:
        assert reads_alias() == "default"
        assert client.get("/usage").status_code == 200
    assert queries.usage("default")
    assert queries.contexts["replica"].captured_queries == []


def test_migrations_run_on_the_primary_only():
    from core.db import ReplicaRouter

    router = ReplicaRouter()
    assert router.allow_migrate("default", "metering")
    assert not router.allow_migrate("replica", "metering")


def _settings_with(**env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE"}}
    clean.update(env, DEBUG="1", ENV_FILE="")
    code = (
        "from django.conf import settings as s; "
        "print(s.READ_REPLICA, s.DATABASES['replica']['HOST'], "
        "sorted(s.DATABASES['replica']['OPTIONS']))"
    )
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "portal.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_database_replica_url_adds_the_replica_with_the_primarys_pool():
    result = _settings_with(
        DATABASE_URL="postgres://u@primary.example:5432/portal",
        DATABASE_REPLICA_URL="postgres://u@replica.example:5432/portal",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["replica", "replica.example", "['pool']"]


def test_a_replica_of_another_engine_stops_start_up():
    result = _settings_with(
        DATABASE_URL="postgres://u@primary.example:5432/portal",
        DATABASE_REPLICA_URL="sqlite:////tmp/replica.sqlite3",
    )
    assert result.returncode != 0
    assert "DATABASE_REPLICA_URL must be the same engine" in result.stderr


def test_the_request_log_and_its_csv_read_the_replica_and_a_requests_page_the_primary(
    replica, usage, client, alice
):
    record = UsageRecord.objects.filter(user=alice).first()
    client.force_login(alice)
    with Queries() as queries:
        page = client.get("/requests")
        csv_body = b"".join(client.get("/requests/export.csv").streaming_content).decode()
    assert page.status_code == 200 and record.request_id in page.content.decode()
    assert len(csv_body.strip().splitlines()) == 6  # the header and the five records
    assert any("metering_usagerecord" in sql for sql in queries.usage("replica"))
    assert queries.usage("default") == []
    with Queries() as queries:
        assert client.get(f"/requests/{record.request_id}").status_code == 200
    assert queries.usage("replica") == []
    assert queries.usage("default")

"""Spool drains running at once (beat schedules them and the worker runs tasks concurrently)
write every spooled record exactly once, and a drain that dies holding records leaves them
where the next drain finds them: the Redis spool and the file spool alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from django.conf import settings
from django.db import connection

from metering import recording
from metering.limits import keys
from metering.models import UsageRecord
from metering.recording import Usage, usage_spool_drain

RECORDS = 3000

# SQLite's in-memory test database takes one writer at a time (the embedded default runs its
# drains eagerly in one process anyway); concurrent drains are a PostgreSQL matter.
concurrent_db = pytest.mark.skipif(
    "postgres" not in settings.DATABASES["default"]["ENGINE"],
    reason="concurrent writers need PostgreSQL",
)


def _line(key, i: int) -> str:
    usage = Usage(
        request_id=f"req_spooled_{i}",
        user_id=key.owner_id,
        key_id=key.pk,
        endpoint="chat.completions",
        completion_tokens=1,
    )
    return json.dumps(usage.row(), default=str)


def _race(target, n: int = 2) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run():
        try:
            barrier.wait()
            target()
        except BaseException as exc:  # reported by the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


@pytest.fixture
def redis_spool():
    if not settings.REDIS_URL:
        pytest.skip("the Redis spool needs Redis")
    from core.redis import get_redis

    client = get_redis()
    stale = [keys.spool(), keys.spool_claims(), *client.zrange(keys.spool_claims(), 0, -1)]
    client.delete(*stale)
    yield client
    client.delete(keys.spool(), keys.spool_claims())


@pytest.mark.django_db(transaction=True)
def test_two_drains_racing_over_the_redis_spool_write_every_record_once(
    alice_key, redis_spool, monkeypatch
):
    key, _ = alice_key
    monkeypatch.setattr(recording, "DRAIN_BATCH", 100)  # many claims each, to interleave
    redis_spool.rpush(keys.spool(), *[_line(key, i) for i in range(RECORDS)])
    assert _race(usage_spool_drain) == []
    assert UsageRecord.objects.count() == RECORDS
    assert redis_spool.llen(keys.spool()) == 0
    assert redis_spool.zcard(keys.spool_claims()) == 0  # every claim cleaned up


@pytest.mark.django_db(transaction=True)
def test_a_dead_drains_redis_claim_is_taken_over(alice_key, redis_spool):
    key, _ = alice_key
    redis_spool.rpush(keys.spool(), *[_line(key, i) for i in range(250)])
    # A drain claims 200 records, then its process dies before inserting them.
    claim = keys.spool_claim("dead-drain")
    claim_script = redis_spool.register_script(recording.CLAIM_LUA)
    long_ago = 1_000_000
    claim_script(keys=[keys.spool(), claim, keys.spool_claims()], args=[200, long_ago])
    assert redis_spool.llen(claim) == 200
    assert usage_spool_drain() == 250
    assert UsageRecord.objects.count() == 250
    assert not redis_spool.exists(claim)


@concurrent_db
@pytest.mark.django_db(transaction=True)
def test_two_drains_racing_over_spool_files_write_every_record_once(alice_key, settings, tmp_path):
    key, _ = alice_key
    settings.USAGE_SPOOL_DIR = tmp_path
    for part in range(6):
        (tmp_path / f"{90000 + part}.jsonl").write_text(
            "".join(_line(key, i) + "\n" for i in range(part * 500, (part + 1) * 500))
        )
    assert _race(recording._drain_files) == []
    assert UsageRecord.objects.count() == RECORDS
    assert list(tmp_path.iterdir()) == []


@pytest.mark.django_db(transaction=True)
def test_a_spool_file_claimed_by_a_dead_drain_is_drained(alice_key, settings, tmp_path):
    key, _ = alice_key
    settings.USAGE_SPOOL_DIR = tmp_path
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(dead.stdout)
    claimed = tmp_path / f"4242.abcd.draining-{dead_pid}"
    claimed.write_text("".join(_line(key, i) + "\n" for i in range(40)))
    assert recording._drain_files() == 40
    assert UsageRecord.objects.count() == 40
    assert not claimed.exists()


@pytest.mark.django_db(transaction=True)
def test_a_claim_of_a_live_drain_is_left_to_it_until_it_is_stale(alice_key, settings, tmp_path):
    """A live drain's claim is its own (another drain taking it would write its records
    twice) until it has held it CLAIM_STALE_SECONDS (a hung drain): the file's age is set, not
    waited for."""
    key, _ = alice_key
    settings.USAGE_SPOOL_DIR = tmp_path
    claimed = tmp_path / f"4243.abcd.draining-{os.getpid()}"  # this process: alive
    claimed.write_text("".join(_line(key, i) + "\n" for i in range(7)))
    fresh = time.time() - recording.CLAIM_STALE_SECONDS + 60
    os.utime(claimed, (fresh, fresh))
    assert recording._drain_files() == 0
    assert claimed.exists() and UsageRecord.objects.count() == 0
    stale = time.time() - recording.CLAIM_STALE_SECONDS - 60
    os.utime(claimed, (stale, stale))
    assert recording._drain_files() == 7
    assert UsageRecord.objects.count() == 7
    assert list(tmp_path.iterdir()) == []


@pytest.mark.django_db(transaction=True)
def test_a_claim_without_a_drain_pid_is_drained(alice_key, settings, tmp_path):
    key, _ = alice_key
    settings.USAGE_SPOOL_DIR = tmp_path
    claimed = tmp_path / "4244.abcd.draining-x"  # no process to ask: nobody holds it
    claimed.write_text("".join(_line(key, i) + "\n" for i in range(3)))
    assert recording._drain_files() == 3
    assert list(tmp_path.iterdir()) == []


@concurrent_db
@pytest.mark.django_db(transaction=True)
def test_records_spooled_to_a_file_while_drains_run_are_all_written(alice_key, settings, tmp_path):
    """A writer appending while drains claim its file: each line lands in a file some drain
    reads after it was written (the writer locks the file and checks it was not claimed)."""
    key, _ = alice_key
    settings.USAGE_SPOOL_DIR = tmp_path
    written = threading.Event()

    def write():
        for i in range(1500):
            recording._spool_file_append(_line(key, i))
        written.set()

    def drain_until_written():
        try:
            while not written.is_set():
                recording._drain_files()
        finally:
            connection.close()

    writer = threading.Thread(target=write)
    drainers = [threading.Thread(target=drain_until_written) for _ in range(2)]
    for thread in (writer, *drainers):
        thread.start()
    for thread in (writer, *drainers):
        thread.join()
    recording._drain_files()
    connection.close()
    assert UsageRecord.objects.count() == 1500

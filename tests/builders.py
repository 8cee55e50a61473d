"""Builders for test data that several modules need: plans, users, keys, usage records.

Fixtures (conftest.py) give the named personas (alice, bob, staff) and their keys; these plain
functions make the rows a test sets up around them, so every module builds a usage record the
same way.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from django.utils import timezone

from metering.models import UsageRecord

LLAMA = "cortensor/llama-3.1-8b"
QWEN = "cortensor/qwen-2.5-7b"


def usage_record(
    user,
    key,
    *,
    at: datetime | None = None,
    model: str = LLAMA,
    outcome: str = "ok",
    prompt: int = 10,
    completion: int = 5,
    http_status: int | None = None,
    save: bool = True,
    **fields,
) -> UsageRecord:
    """A chat-completion record of `user`'s `key` (anything with a .pk), created now unless
    `at`; its status 200 when ok, else 429. `save=False` leaves it for a bulk_create."""
    record = UsageRecord(
        request_id=uuid.uuid4().hex,
        user_id=user.pk,
        key_id=key.pk,
        org_id=getattr(key, "org_id", None),
        model=model,
        endpoint="chat.completions",
        outcome=outcome,
        http_status=http_status if http_status is not None else 200 if outcome == "ok" else 429,
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        created_at=at if at is not None else timezone.now(),
        **fields,
    )
    if save:
        record.save(force_insert=True)
    return record


def usage_records(user, key, *, n: int, **values) -> list[UsageRecord]:
    """`n` records alike (see usage_record), in one bulk insert."""
    return UsageRecord.objects.bulk_create(
        [usage_record(user, key, save=False, **values) for _ in range(n)]
    )


def model_on_a_silent_port(port: int, *, connect_timeout: float, request_timeout: int) -> str:
    """A model whose pool's only router is a port that never answers the handshake (the
    `unanswered_port` fixture): its public id."""
    from catalog.models import CatalogModel, Router, RouterPool

    pool = RouterPool.objects.create(name=f"silent-{port}")
    Router.objects.create(
        pool=pool,
        base_url=f"http://127.0.0.1:{port}",
        session_id=1,
        token="t",
        connect_timeout=connect_timeout,
    )
    model = CatalogModel.objects.create(
        public_id=f"cortensor/silent-{port}",
        pool=pool,
        max_tokens=64,
        default_max_tokens=8,
        request_timeout=request_timeout,
    )
    return model.public_id

"""The lifecycle of a metered API request, owned in one place so its order always holds.

    metered = MeteredRequest.admit(usage=u, principal=p, plan=plan, reserve_tokens=n,
                                   prompt_tokens=est)      # 429/503 if refused by a limit
    ...                                                    # serve it, with metered.headers
    metered.keep_alive()   # from a long stream's loop: renews its lease now and then
    metered.release()      # the client has its whole answer: free the concurrency slot
    metered.finish()       # write the record, then settle tokens and the journal entry

`finish` releases the slot too, so a path that forgets `release` only frees it a little later.
The record is always written (or spooled, or quarantined) before the admission is settled:
settling deletes the admission journal entry, the record's last copy until then.

A request refused before admission (bad input, unknown model, a limit) goes through
`usage_refused`: its record takes the same batched writer (journaled whole, in the refused
counter's round trip, so a SIGKILLed process loses none of them either), and a key that keeps
sending refused requests is itself refused (429) past USAGE_REFUSED_PER_MINUTE, with no
record, so that bad requests cannot flood the usage table.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings

from apikeys.services import KeyPrincipal
from catalog.routing import PlanInfo
from metering.limits import Admission, BackendUnavailable, get_backend, keys, limits_admit
from metering.models import UsageRecord
from metering.recording import (
    Usage,
    journal_entry,
    record_writer,
    refused_journal_line,
    writes_at_once,
)

log = logging.getLogger(__name__)

# What a caller of this module needs and nothing more: it fills a `Usage` (what the request
# measured) and says how the request ended (`Outcome`); where and when the record is written,
# journaled or spooled stays in here.
__all__ = ["MeteredRequest", "Outcome", "Usage", "usage_refused"]

Outcome = UsageRecord.Outcome


class MeteredRequest:
    """An admitted, metered request: its admission and its usage record in the making."""

    __slots__ = ("_finished", "_next_renewal", "_renew_every", "admission", "usage")

    def __init__(self, *, usage: Usage, admission: Admission):
        self.usage = usage
        self.admission = admission
        self._finished = False
        # Renew well before the lease runs out, and never more often than every half second.
        self._renew_every = max(0.5, admission.lease_ms / 3000)
        self._next_renewal = time.monotonic() + self._renew_every

    @classmethod
    def admit(
        cls,
        *,
        usage: Usage,
        principal: KeyPrincipal,
        plan: PlanInfo | None,
        reserve_tokens: int,
        prompt_tokens: int,
    ) -> MeteredRequest:
        """Admit against the limits (one backend call) and journal the record-to-be."""
        admission = limits_admit(
            principal=principal,
            plan=plan,
            reserve_tokens=reserve_tokens,
            request_id=usage.request_id,
            journal=journal_entry(usage, prompt_tokens=prompt_tokens),
        )
        usage.admitted = True
        return cls(usage=usage, admission=admission)

    @property
    def headers(self) -> dict[str, str]:
        return self.admission.headers

    def keep_alive(self) -> None:
        """Called often (each chunk); renews the slot lease and journal due time at most once
        per interval, so a stream longer than the lease keeps both."""
        now = time.monotonic()
        if now < self._next_renewal or self._finished:
            return
        self._next_renewal = now + self._renew_every
        self.admission.renew()

    def release(self) -> None:
        """Free the concurrency slot now: the client has (or is about to have) its answer."""
        self.admission.release()

    def finish(self) -> None:
        """Release the slot, then hand the record to the writer, which writes it and only then
        settles the admission. Runs once; never raises."""
        if self._finished:
            return
        self._finished = True
        self.release()
        record_writer(self.admission).submit(self.usage, self.admission)


def usage_refused(usage: Usage) -> bool:
    """Record a request refused before admission, unless its key is over the refused-request
    rate: then False (answer 429, write nothing)."""
    limit = settings.USAGE_REFUSED_PER_MINUTE
    now_ms = int(time.time() * 1000)
    writer = record_writer()
    # A batched record waits in this process's memory: journaled, it outlives a SIGKILL.
    journal = None if writes_at_once(writer) else refused_journal_line(usage, now_ms=now_ms)
    try:
        within = get_backend().count_refused(
            base=keys.key_base(usage.org_id or 0, usage.key_id),
            limit=limit,
            now_ms=now_ms,
            journal=journal,
        )
    except BackendUnavailable as exc:
        log.warning("refused-request counter unavailable: %s", exc)
        within = True  # the record is still written: it is the limits that are down
    if not within:
        return False
    writer.submit(usage, None)
    return True
